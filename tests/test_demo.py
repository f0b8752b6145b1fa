"""The two-moons demo: python -m micrograd_c.demo trains to 100% and saves its plot."""
import sys

import pytest

from micrograd_c import demo, upstream


def test_demo_trains_to_full_accuracy(capsys):
    assert demo.main(["--no-plot", "--no-compare"]) == 0
    out = capsys.readouterr().out
    assert "training accuracy 100%" in out and "ms per step" in out


def test_demo_saves_the_decision_boundary(tmp_path, capsys):
    path = tmp_path / "moons.png"
    assert demo.main(["--steps", "3", "--out", str(path), "--no-compare"]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(path) in capsys.readouterr().out


def test_demo_without_the_extras_still_trains(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # importing it now fails
    monkeypatch.setitem(sys.modules, "tqdm", None)
    assert demo.main(["--steps", "12", "--out", str(tmp_path / "x.png"), "--no-compare"]) == 0
    out = capsys.readouterr().out
    assert "step  10" in out and "micrograd_c[demo]" in out
    assert not (tmp_path / "x.png").exists()


@pytest.mark.skipif(not upstream.installed(), reason="upstream micrograd is not installed")
def test_demo_measures_the_speedup_over_upstream(capsys):
    assert demo.main(["--steps", "1", "--no-plot"]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if "faster than upstream" in l][0]
    assert float(line.split("x faster")[0].split()[-1]) > 1


def test_bad_arguments():
    with pytest.raises(SystemExit):
        demo.main(["--steps", "0"])

"""The digits demo, python -m micrograd_c.demo digits: it trains, prints what it measured side by
side and saves its picture; without scikit-learn it names the extra. Oracles: the PNG signature,
and the lines the README describes. No test here asserts a time."""
import sys

import pytest

from micrograd_c import digits_demo

pytest.importorskip("sklearn", reason="the digits come with scikit-learn (in the test extra)")


def test_the_demo_command_trains_and_saves_its_picture(tmp_path, capsys):
    path = tmp_path / "digits.png"
    assert digits_demo.main(["--epochs", "3", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "ms per epoch" in out and "faster than rebuilding" in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_scikit_learn_it_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert digits_demo.main(["--no-plot"]) == 1
    assert "micrograd_c[demo]" in capsys.readouterr().out


def test_bad_arguments():
    for argv in (["--epochs", "0"], ["--batch-size", "0"], ["--batch-size", "100000"]):
        with pytest.raises(SystemExit):
            digits_demo.main(argv)

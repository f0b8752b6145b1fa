"""The two-moons demo: python -m micrograd_c.demo trains to 100% and saves its plot; with
--replay it trains to the same numbers, bit for bit (the oracle: the default, rebuilding run)."""
import random
import sys

import pytest

from micrograd_c import demo, moons, upstream
from micrograd_c.nn import MLP


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


def test_replayed_training_gives_the_bits_of_rebuilding():
    X, y = moons.demo_data()
    results = []
    for replay in (False, True):
        random.seed(0)
        model = MLP(2, [16, 16, 1])
        loss, accuracy, _ = demo.train(model, X, y, 25, replay)
        results.append((loss.hex(), accuracy, [p.data.hex() for p in model.parameters()]))
    assert results[0] == results[1]


def test_replay_prints_the_same_progress_and_its_speedup(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)          # a line every 10 steps instead
    outputs = []
    for extra in ([], ["--replay"]):
        assert demo.main(["--steps", "31", "--no-plot", "--no-compare"] + extra) == 0
        outputs.append(capsys.readouterr().out.splitlines())
    rebuilt, replayed = outputs

    def progress(lines):            # per-step loss and accuracy, and the final ones
        return [line for line in lines if line.startswith("step")] + \
            [line.split(" ms per step")[0].rsplit(",", 1)[0] for line in lines
             if line.startswith("final loss")]

    assert len(progress(replayed)) == 5 and progress(replayed) == progress(rebuilt)
    assert any("(graph compiled once, replayed)" in line for line in replayed)
    line = [line for line in replayed if "faster here than rebuilding the graph" in line][0]
    assert float(line.split("x faster")[0].split()[-1]) > 0
    assert "upstream" not in line
    assert any("--replay" in line for line in rebuilt)       # the hint, in the default run only
    assert not any("--replay" in line for line in replayed)


def test_replay_compares_with_upstream_when_asked(monkeypatch, capsys):
    monkeypatch.setattr(upstream, "missing", lambda: None)
    calls = []
    monkeypatch.setattr(demo, "speedups",
                        lambda name, baselines, rounds: calls.append((name, baselines)) or [8.5, 3210])
    assert demo.main(["--steps", "2", "--no-plot", "--replay"]) == 0
    assert calls == [("micrograd_c-replay", ["micrograd_c", "micrograd"])]
    out = capsys.readouterr().out
    assert "8.5x faster here than rebuilding" in out and "3,210x faster than upstream" in out


def test_bad_arguments():
    for argv in (["--steps", "0"], ["--seed", "-5"]):
        with pytest.raises(SystemExit):
            demo.main(argv)


def test_the_digits_demo_is_a_subcommand(capsys):
    pytest.importorskip("sklearn", reason="the digits come with scikit-learn")
    assert demo.main(["digits", "--epochs", "1", "--no-plot", "--no-compare"]) == 0
    assert "test accuracy" in capsys.readouterr().out

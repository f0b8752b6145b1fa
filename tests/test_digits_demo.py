"""The digits demo, python -m micrograd_c.demo digits: it trains, prints what it measured side by
side and saves its picture; without scikit-learn it names the extra. Oracles: the PNG signature,
and the lines the README describes. No test here asserts a time."""
import importlib.util
import re
import sys

import pytest

from micrograd_c import digits_demo

pytest.importorskip("sklearn", reason="the digits come with scikit-learn (in the test extra)")


def test_the_demo_command_trains_and_saves_its_picture(tmp_path, capsys):
    path = tmp_path / "digits.png"
    assert digits_demo.main(["--epochs", "3", "--out", str(path), "--no-compare"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "ms per epoch" in out and "faster than" not in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def milliseconds(line, label):
    """The time `line` gives after `label`, as in 'numpy by hand 0.16 ms'."""
    return float(re.search(re.escape(label) + r" ([0-9.]+) ms", line).group(1))


def test_a_step_is_timed_beside_rebuilding_numpy_and_pytorch(capsys):
    assert digits_demo.main(["--epochs", "1", "--no-plot"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rebuilding = [line for line in lines if "faster than rebuilding it every batch" in line]
    instead = [line for line in lines if line.startswith("the same step as matrix products")]
    assert len(rebuilding) == len(instead) == 1
    assert float(rebuilding[0].split("x faster")[0].split()[-1]) > 0
    assert milliseconds(instead[0], "numpy by hand") > 0
    if importlib.util.find_spec("torch") is None:
        assert "PyTorch tensors: torch is not installed" in instead[0]
    else:
        assert milliseconds(instead[0], "PyTorch tensors") > 0


def test_the_step_is_timed_on_batches_of_the_size_asked_for(capsys):
    from micrograd_c import digits

    # oracle: the graph of a batch of 4, built here (a batch of 32 has 4,172 nodes more)
    nodes = len(digits.Batch(digits.make_model(0), 4).step)
    records, _ = digits_demo.time_a_step(batch_size=4, rounds=1)
    assert records["micrograd_c-replay"]["nodes"] == nodes
    assert digits_demo.main(["--epochs", "1", "--no-plot", "--batch-size", "4"]) == 0
    assert "per training step on a batch of 4," in capsys.readouterr().out


def test_an_engine_that_cannot_run_is_named_with_its_reason():
    def record(seconds):
        return {"status": "ok", "median_s": seconds, "times_s": [seconds] * 5}

    records = {"micrograd_c-replay": record(2e-4), "micrograd_c": record(2e-3),
               "numpy": {"status": "fails at depth 3 (RecursionError)"}}
    lines = digits_demo.comparison(records, {"torch-tensors": "torch is not installed"})
    assert "is 10x faster than rebuilding it every batch here (0.20 vs 2.0 ms" in lines[0]
    assert "numpy by hand: fails at depth 3 (RecursionError), PyTorch tensors: torch is not " \
        "installed (full comparison" in lines[1]


def test_without_scikit_learn_it_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert digits_demo.main(["--no-plot"]) == 1
    assert "micrograd_c[demo]" in capsys.readouterr().out


def test_bad_arguments():
    for argv in (["--epochs", "0"], ["--batch-size", "0"], ["--batch-size", "100000"],
                 ["--seed", "-1"]):
        with pytest.raises(SystemExit):
            digits_demo.main(argv)

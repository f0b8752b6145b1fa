"""The benchmark's machinery: records, skipping, failure reporting, JSON and plot. Speed itself
is what the benchmark measures; no test here asserts a time."""
import json
import sys

import pytest

from micrograd_c import bench, upstream

needs_upstream = pytest.mark.skipif(not upstream.installed(), reason="upstream micrograd missing")


@needs_upstream
def test_records_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    assert bench.main(["--quick", "--engines", "micrograd_c", "micrograd", "micrograd-nogc",
                       "--workloads", "expression", "memory",
                       "--json", str(out), "--plot", str(png)]) == 0
    records = json.loads(out.read_text())
    timed = {r["engine"]: r for r in records if r["workload"] == "expression"}
    for r in timed.values():
        assert r["status"] == "ok" and r["median_s"] > 0 and r["nodes"] > 0
        assert {"workload", "engine", "median_s", "ratio_vs_micrograd", "nodes"} <= set(r)
    assert timed["micrograd"]["ratio_vs_micrograd"] == 1.0
    # the same expression is 39 nodes upstream (its constants are leaves), 30 here
    assert timed["micrograd"]["nodes"] == 100 * 39 and timed["micrograd_c"]["nodes"] == 100 * 30
    memory = {r["engine"]: r for r in records if r["workload"] == "memory"}
    assert memory["micrograd_c"]["bytes_per_node"] <= 80 < memory["micrograd"]["bytes_per_node"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "expression" in printed and "vs micrograd" in printed


@needs_upstream
def test_recursion_error_is_reported_not_raised():
    engines, _ = bench.available_engines(["micrograd_c", "micrograd"])
    failures = {}
    records = bench.measure(bench.Task("chain", lambda e: bench.chain(e, 2000), 1, 2000),
                            engines, tick=lambda: None, failures=failures)
    ours, theirs = records
    assert ours["status"] == "ok" and ours["ratio_vs_micrograd"] is None
    assert theirs["status"].startswith("fails at depth") and theirs["median_s"] is None
    depth = int(theirs["status"].split()[3].replace(",", ""))
    # the limit counts the caller's own stack frames too, so it moves a little with the caller
    assert 100 < depth <= 2000 and abs(depth - 1 - bench.recursion_limit_depth(engines[1])) < 10
    assert failures == {"micrograd": theirs["status"]}


def test_missing_engines_are_skipped(monkeypatch):
    monkeypatch.setattr(upstream, "missing", lambda: upstream.NOT_INSTALLED)
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(bench.engines.importlib.util, "find_spec",
                        lambda name: None if name == "torch" else object())
    engines, skipped = bench.available_engines()
    assert [e.name for e in engines] == ["micrograd_c", "micrograd_c-replay", "floats", "numpy"]
    assert set(skipped) == {"micrograd_c-unfused", "micrograd", "micrograd-nogc", "torch",
                            "torch-tensors"}
    with pytest.raises(ValueError):
        bench.available_engines(["nonesuch"])


def test_an_engine_named_by_module_path(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_port.py").write_text("from micrograd_c.engine import Value\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    engines, skipped = bench.available_engines(["micrograd_c"], ["my_port", "not_a_module_x"])
    assert [e.name for e in engines] == ["micrograd_c", "my_port"] and "not_a_module_x" in skipped
    records = bench.measure(bench.Task("chain", lambda e: bench.chain(e, 50, 2), 2, 50, repeats=2),
                            engines, tick=lambda: None)
    assert all(r["status"] == "ok" and r["nodes"] == 52 for r in records)


def test_unfused_engine_is_not_timed_twice_on_value_workloads():
    if not upstream.installed():
        pytest.skip("micrograd_c-unfused needs upstream's nn.py")
    engines, _ = bench.available_engines(["micrograd_c", "micrograd_c-unfused"])
    records = bench.measure(bench.Task("expression", lambda e: bench.expression(e, 2), 1),
                            engines, tick=lambda: None)
    assert records[1]["status"].startswith("same as micrograd_c")


def test_wide_mlp_l2_by_neuron_is_the_same_loss():
    from micrograd_c import moons
    from micrograd_c.engine import Value
    from micrograd_c.nn import MLP
    model = MLP(2, [8, 8, 1])
    X, y = moons.demo_data(n_samples=10)
    flat, _ = moons.loss(model, X, y, Value)
    by_neuron, _ = moons.loss(model, X, y, Value, l2_by_neuron=True)
    assert flat.data == pytest.approx(by_neuron.data, rel=1e-14)


def test_bad_arguments(tmp_path, capsys):
    for argv in (["--workloads", "nonesuch"],
                 ["--engines", "micrograd_c", "micrograd_c"],     # one row per name
                 ["--engine", "micrograd_c"],                      # the built-in's name
                 ["--json", str(tmp_path / "no such folder" / "out.json")],
                 ["--plot", str(tmp_path)]):                       # a folder, not a file
        with pytest.raises(SystemExit):
            bench.main(argv + ["--workloads", "expression"])       # refused before any run
        assert "expression" not in capsys.readouterr().out


def test_an_engine_module_that_fails_is_reported_and_the_others_still_run(tmp_path, monkeypatch,
                                                                           capsys):
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('broken port')\n")
    (tmp_path / "no_relu.py").write_text(
        "class Value:\n    def __init__(self, data):\n        self.data = data\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert bench.main(["--quick", "--engines", "micrograd_c", "--engine", "raises_on_import",
                       "--engine", "no_relu", "--workloads", "wide_mlp"]) == 0
    out = capsys.readouterr().out
    assert "cannot use it: RuntimeError: broken port" in out
    assert "no_relu" in out and "failed: " in out


def test_engines_that_dont_run_a_workload_say_so(capsys):
    assert bench.main(["--quick", "--engines", "numpy", "--workloads", "chain"]) == 1
    assert "none of the engines chosen runs chain\n" in capsys.readouterr().out


def test_a_spread_needs_two_times():
    from micrograd_c.bench.reporting import spread_cell
    assert spread_cell({"times_s": [0.5], "spread": 0.0}) == "-"     # was "±0%": looked stable
    assert spread_cell({"times_s": [0.5, 0.6], "spread": 0.05}) == "±5%"

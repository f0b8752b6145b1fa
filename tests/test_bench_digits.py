"""The bench's digits_epoch workload. Oracles: micrograd_c rebuilding each batch's graph (a
replay and upstream's nn.py on our Value must give its bits; upstream and torch its numbers to
1e-12), the Python SGD loop for optim.SGD, and node counts of a whole batch for their
extrapolation. No test here asserts a time."""
import struct
import sys

import pytest

from micrograd_c import bench, upstream
from micrograd_c.bench import measuring, workloads
from micrograd_c.bench.workloads import (DIGITS_BATCH, DIGITS_LOSSES, digits_data, digits_graph,
                                         digits_loss, digits_model, sgd)

pytest.importorskip("sklearn", reason="the digits come with scikit-learn (in the test extra)")


def bits(x):
    return struct.pack("<d", x)


def engines(*names):
    """The engines of `names` that can run here."""
    return bench.available_engines(list(names))[0]


@pytest.mark.parametrize("loss", DIGITS_LOSSES)
def test_replayed_and_unfused_steps_give_the_bits_of_rebuilt_ones(loss):
    after = {}
    for engine in engines("micrograd_c", "micrograd_c-replay", "micrograd_c-unfused"):
        model = digits_model(engine)
        run, _ = bench.digits_epoch(engine, loss, model=model)
        for _ in range(3):
            run()
        after[engine.name] = [bits(p.data) for p in model.parameters()]
    rebuilt = after.pop("micrograd_c")
    assert after and all(data == rebuilt for data in after.values()), list(after)


@pytest.mark.parametrize("loss", DIGITS_LOSSES)
def test_every_engine_computes_the_same_loss_gradients_and_step(loss):
    images, labels = digits_data()
    results = {}
    for engine in engines("micrograd_c", "micrograd", "torch"):
        try:
            loss_of = digits_loss(engine, loss)
        except bench.Unsupported:
            assert loss == "cross_entropy" and engine.name == "micrograd"
            continue
        model = digits_model(engine)
        optimizer = sgd(model, 0.1)
        # 8 examples, not 32: upstream takes seconds for a batch
        value = digits_graph(engine, model, loss_of, images[:8], labels[:8])
        optimizer.zero_grad()
        value.backward()
        grads = [float(p.grad) for p in model.parameters()]
        optimizer.step()
        results[engine.name] = (float(value.data), grads,
                                [float(p.data) for p in model.parameters()])
    ours = results.pop("micrograd_c")
    assert 0.5 < ours[0] < 5 and any(g != 0 for g in ours[1])
    for name, (value, grads, data) in results.items():
        assert value == pytest.approx(ours[0], rel=1e-12), name
        assert grads == pytest.approx(ours[1], rel=1e-12, abs=1e-15), name
        assert data == pytest.approx(ours[2], rel=1e-12, abs=1e-15), name


def test_optim_sgd_is_the_python_loop_to_the_bit():
    (engine,) = engines("micrograd_c")
    images, labels = digits_data()
    stepped = []
    for optimizer in (workloads.PythonSGD, sgd):
        model = digits_model(engine)
        step = optimizer(model, 0.1)
        assert isinstance(step, workloads.PythonSGD) == (optimizer is workloads.PythonSGD)
        for _ in range(2):
            value = digits_graph(engine, model, digits_loss(engine, "cross_entropy"), images[:4],
                                 labels[:4])
            step.zero_grad()
            value.backward()
            step.step()
        stepped.append([bits(p.data) for p in model.parameters()])
    assert stepped[0] == stepped[1]


def test_the_node_count_of_a_batch_is_its_graphs():
    images, labels = digits_data()
    for engine in engines("micrograd_c", "micrograd_c-unfused", "torch"):
        for loss in DIGITS_LOSSES:
            model = digits_model(engine)
            _, nodes = bench.digits_epoch(engine, loss, model=model)
            batch = digits_graph(engine, model, digits_loss(engine, loss), images[:DIGITS_BATCH],
                                 labels[:DIGITS_BATCH])
            assert nodes == engine.count_nodes(batch), (engine.name, loss)


def test_records_report_and_plot(tmp_path):
    found = engines("micrograd_c", "micrograd_c-replay")       # upstream and torch take seconds
    tasks = bench.plan(["digits_epoch"], quick=True)
    assert [t.variant for t in tasks] == list(DIGITS_LOSSES)
    records = []
    for task in tasks:
        task.rounds = 2
        records += bench.measure(task, found, tick=lambda: None)
    assert len(records) == 2 * len(found)
    for r in records:
        assert r["status"] == "ok" and r["median_s"] > 0 and len(r["times_s"]) == 2
        assert (r["batches_per_epoch"], r["epochs"]) == (1437 // 32, 20)
        assert r["variant"] in DIGITS_LOSSES and r["phase"] is None
    by_loss = {loss: {r["engine"]: r for r in records if r["variant"] == loss}
               for loss in DIGITS_LOSSES}
    assert by_loss["cross_entropy"]["micrograd_c"]["ratio_vs_micrograd_c"] == 1.0
    assert {"ratio_vs_micrograd_c", "ratio_vs_torch"} <= set(by_loss["cross_entropy"]["micrograd_c"])
    assert {"ratio_vs_micrograd", "ratio_vs_micrograd_nogc", "ratio_vs_torch"} <= \
        set(by_loss["squared_error"]["micrograd_c"])
    text = bench.report(records, {})
    assert "per batch" in text and "20 epochs" in text and "an epoch is 44 batches" in text
    assert "softmax cross-entropy" in text and "squared error against one-hot" in text
    png = tmp_path / "bench.png"
    bench.plot(records, png)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_upstream_has_no_cross_entropy_and_says_why():
    if not upstream.installed():
        pytest.skip("upstream micrograd missing")
    records = bench.measure(bench.Task("digits_epoch", lambda e: bench.digits_epoch(e), 1,
                                       variant="cross_entropy"),
                            engines("micrograd"), tick=lambda: None)
    assert records[0]["status"].startswith("skipped: micrograd's Value has no exp() or log()")


def test_a_slow_engine_is_timed_a_few_times_its_warm_up_first(monkeypatch):
    import time
    monkeypatch.setattr(measuring, "SLOW_RUN_S", 0.05)
    monkeypatch.setattr(measuring, "WARM_UP_S", 0.0)    # a short run's warm-up: one run
    fast, slow = bench.Engine("fast", float), bench.Engine("slow", float)
    runs = {"fast": lambda: None, "slow": lambda: time.sleep(0.1)}
    calls = {"fast": 0, "slow": 0}

    def setup(engine):
        def run():
            calls[engine.name] += 1
            runs[engine.name]()
        return run, 1

    task = bench.Task("digits_epoch", setup, 3, variant="squared_error", slow_rounds=2,
                      extra={"batches_per_epoch": 44, "epochs": 20})
    records = {r["engine"]: r for r in bench.measure(task, [fast, slow], tick=lambda: None)}
    assert len(records["fast"]["times_s"]) == 3 and len(records["slow"]["times_s"]) == 2
    # the slow one's warm-up is its first timed run; the fast one runs untimed before each
    assert calls == {"fast": 1 + 2 * 3, "slow": 2}
    assert records["fast"]["ratio_vs_micrograd"] is None
    text = " ".join(bench.report(list(records.values()), {}).split())      # unwrapped
    assert "slow: a batch takes over" in text and "timed on 2 batches (the others on 3)" in text


def test_without_scikit_learn_the_workload_is_skipped_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    digits_data.cache_clear()
    try:
        assert "micrograd_c[demo]" in bench.missing("digits_epoch")
        assert bench.main(["--quick", "--engines", "micrograd_c", "--workloads", "digits_epoch",
                           "expression"]) == 0
    finally:
        digits_data.cache_clear()
    out = capsys.readouterr().out
    assert "skipped workloads:\n  digits_epoch: the digits come with scikit-learn" in out
    assert "expression" in out and "per batch" not in out


def test_the_batched_mlps_refuse_what_they_would_compute_otherwise():
    # a misspelt loss ran as squared error, and a tanh model as relu, silently
    import numpy as np
    from micrograd_c import batched, digits
    from micrograd_c.nn import MLP
    X, onehot = np.zeros((2, 64)), np.eye(10)[:2]
    with pytest.raises(ValueError, match="loss"):
        batched.NumpyMLP(digits.make_model(0)).step(X, onehot, 0.1, loss="crossentropy")
    with pytest.raises(ValueError, match="tanh"):
        batched.NumpyMLP(MLP(64, [32, 10], activation="tanh"))
    with pytest.raises(ValueError, match="relu"):
        batched.NumpyMLP(MLP(64, [32, 10], output_activation="relu"))

"""The bench's replay engine and fastest_autograd workload. Oracles: the same step or graph
rebuilt by micrograd_c (a replay must give its bits), plain floats and torch for the graph's
values. No test here asserts a time."""
import math
import random
import struct

import pytest

from micrograd_c import bench, engine, moons, upstream
from micrograd_c.bench.workloads import ROGOZHNIKOV_INPUTS
from micrograd_c.engine import Value
from micrograd_c.nn import MLP


def bits(x):
    return struct.pack("<d", x)


def seeded_models(width, seed=7):
    random.seed(seed)
    rebuilt = MLP(2, [width, width, 1])
    random.seed(seed)
    return rebuilt, MLP(2, [width, width, 1])


@pytest.mark.parametrize("width,points,l2_by_neuron", [(16, 100, False), (8, 20, True)])
def test_replayed_steps_give_the_bits_of_rebuilt_steps(width, points, l2_by_neuron):
    X, y = moons.demo_data(n_samples=points)
    rebuilt, replayed = seeded_models(width)
    step = moons.replayed_sgd_step(replayed, X, y, l2_by_neuron)
    for k in range(8):
        expected = moons.sgd_step(rebuilt, X, y, Value, k, sum_values=engine.sum,
                                  l2_by_neuron=l2_by_neuron)
        loss, accuracy = step(k)
        assert (bits(loss), accuracy) == (bits(expected[0]), expected[1]), k
        assert [bits(p.data) for p in replayed.parameters()] == \
            [bits(p.data) for p in rebuilt.parameters()], k
        assert [bits(p.grad) for p in replayed.parameters()] == \
            [bits(p.grad) for p in rebuilt.parameters()], k


def test_a_step_updating_with_optim_sgd_gives_the_bits_of_the_demos_loop():
    # the bench's and the demo's fused steps update with optim.SGD: sgd_update's loop, the
    # demo notebook's, is the oracle
    from micrograd_c.optim import SGD
    X, y = moons.demo_data(n_samples=30)
    looped, bulk = seeded_models(8)
    optimizer = SGD(bulk.parameters(), lr=0.5)
    for k in range(6):
        expected = moons.sgd_step(looped, X, y, Value, k, steps=6, sum_values=engine.sum)
        got = moons.sgd_step(bulk, X, y, Value, k, steps=6, sum_values=engine.sum,
                             optimizer=optimizer)
        assert (bits(got[0]), got[1]) == (bits(expected[0]), expected[1]), k
        assert [(bits(p.data), bits(p.grad)) for p in bulk.parameters()] == \
            [(bits(p.data), bits(p.grad)) for p in looped.parameters()], k


def test_replay_engine_runs_where_a_graph_is_fixed():
    engines, _ = bench.available_engines(["micrograd_c", "micrograd_c-replay", "floats"])
    records = bench.measure(bench.Task("train_step", bench.train_step, 2), engines,
                            tick=lambda: None)
    assert [r["engine"] for r in records] == ["micrograd_c", "micrograd_c-replay", "floats"]
    ours, replay, floats = records
    assert replay["status"] == "ok" and replay["nodes"] == ours["nodes"] == 7_679
    assert {"ratio_vs_micrograd", "ratio_vs_micrograd_nogc", "ratio_vs_floats"} <= set(replay)
    assert floats["status"] == "ok" and floats["nodes"] is None   # no graph: only its time
    chain = bench.measure(bench.Task("chain", lambda e: bench.chain(e, 50), 1, 50), engines,
                          tick=lambda: None)
    assert [r["engine"] for r in chain] == ["micrograd_c"]
    memory = bench.memory_records(engines, 1000, tick=lambda: None)
    assert [r["engine"] for r in memory] == ["micrograd_c"]


def test_the_floats_engine_computes_the_demo_loss_of_upstreams_nn():
    # the floor of train_step: upstream's nn.py written out on floats gives the loss (and the
    # weights) that upstream's nn.py on micrograd_c's Values gives, from the same seed
    floats, = bench.available_engines(["floats"])[0]
    X, y = moons.demo_data()
    random.seed(5)
    model = floats.MLP(2, [16, 16, 1])
    on_floats, _ = moons.loss_and_scores(model, X, y, float, relu=floats.relu)
    random.seed(5)
    reference = upstream.nn_on(engine).MLP(2, [16, 16, 1])
    on_values, _ = moons.loss_and_scores(reference, X, y, Value)
    assert model.parameters() == [p.data for p in reference.parameters()]
    assert on_floats == pytest.approx(on_values.data, rel=1e-14)


def test_the_floor_without_shortcuts_computes_upstreams_numbers():
    # bench.phases' second floor: the same Python with weights, biases, inputs and sums that
    # take none of the interpreter's shortcuts for floats. Its sums add term by term, as
    # upstream's Values do, so its loss and scores are upstream's bit for bit on every CPython
    # (the floats' own sum() is compensated from 3.12 on: the floats floor is not).
    import micrograd.engine
    import micrograd.nn
    from micrograd_c.bench.engines import (DispatchedFloat, FloatMLP, float_relu,
                                           sum_one_by_one)
    X, y = moons.demo_data()
    random.seed(7)
    dispatched = FloatMLP(2, [16, 16, 1], number=DispatchedFloat)
    random.seed(7)
    reference = micrograd.nn.MLP(2, [16, 16, 1])
    assert all(type(p) is DispatchedFloat for p in dispatched.parameters())
    assert dispatched.parameters() == [p.data for p in reference.parameters()]
    loss, scores = moons.loss_and_scores(dispatched, X, y, DispatchedFloat, sum_one_by_one,
                                         relu=float_relu)
    upstream_loss, upstream_scores = moons.loss_and_scores(reference, X, y,
                                                           micrograd.engine.Value)
    assert struct.pack("<d", loss) == struct.pack("<d", upstream_loss.data)
    assert [struct.pack("<d", s) for s in scores] == \
        [struct.pack("<d", s.data) for s in upstream_scores]
    # a sum one by one adds each term in turn, from 0
    terms = [0.1, -0.0, 1e16, 1.0, -1e16, 2.5]
    by_hand = ((((0.1 + -0.0) + 1e16) + 1.0) + -1e16) + 2.5
    assert struct.pack("<d", sum_one_by_one(terms)) == struct.pack("<d", by_hand)
    assert struct.pack("<d", sum_one_by_one([-0.0])) == struct.pack("<d", 0 + -0.0)


def float_graph():
    return bench.rogozhnikov_graph(ROGOZHNIKOV_INPUTS, math.exp, math.log, sum)


def test_the_graph_has_the_published_shape_and_stays_in_range():
    values = float_graph()
    assert len(values) == 17_600
    # the inputs are i / 100 so that naive softplus does not overflow: every value made stays
    # within [0.0003, 3.95]
    assert 0.0003 < min(values[100:]) and max(values) < 3.95
    with pytest.raises(OverflowError):       # the published inputs, arange(100), overflow
        bench.rogozhnikov_graph([float(i) for i in range(100)], math.exp, math.log, sum)


def test_micrograd_c_computes_the_floats_values():
    nodes = graph_of_values()
    # a / b is a * b**-1 here, as upstream: not the bits of float division
    assert [v.data for v in nodes] == pytest.approx(float_graph(), rel=1e-12)


def graph_of_values():
    return bench.rogozhnikov_graph(map(Value, ROGOZHNIKOV_INPUTS), Value.exp, Value.log,
                                   engine.sum)


def test_replaying_the_graph_gives_the_bits_of_rebuilding_it():
    engines, _ = bench.available_engines(["micrograd_c-replay"])
    run, nodes = bench.fastest_autograd(engines[0])
    run()
    graph = graph_of_values()
    replay = engine.compile(graph[-1])
    assert len(replay) == nodes
    for _ in range(2):                      # as the bench's run: the inputs' grads restart
        for x in graph[:100]:
            x.grad = 0.0
        replay.forward()
        replay.backward()
    rebuilt = graph_of_values()
    rebuilt[-1].backward()
    assert [bits(v.data) for v in graph] == [bits(v.data) for v in rebuilt]
    assert [bits(v.grad) for v in graph] == [bits(v.grad) for v in rebuilt]
    # grads shrink along the graph: the first 873 values', inputs included, underflow to 0
    assert sum(v.grad != 0 for v in graph) > 14_000
    below_the_last, todo = set(), [graph[-1]]           # what backward() visits
    while todo:
        v = todo.pop()
        if id(v) not in below_the_last:
            below_the_last.add(id(v))
            todo.extend(v._prev)
    assert sum(id(v) in below_the_last for v in graph) == 15_012    # as --help says


def test_torch_computes_the_same_graph():
    torch = pytest.importorskip("torch")
    engines, _ = bench.available_engines(["torch"])
    tensors = bench.rogozhnikov_graph(map(engines[0].Value, ROGOZHNIKOV_INPUTS), engines[0].exp,
                                      engines[0].log, sum, 400)
    for t in tensors:
        t.retain_grad()
    tensors[-1].backward()
    nodes = bench.rogozhnikov_graph(map(Value, ROGOZHNIKOV_INPUTS), Value.exp, Value.log,
                                    engine.sum, 400)
    nodes[-1].backward()
    assert all(t.dtype == torch.float64 and t.dim() == 0 for t in tensors)
    assert [t.item() for t in tensors] == pytest.approx([v.data for v in nodes], rel=1e-12)
    grads = [0.0 if t.grad is None else t.grad.item() for t in tensors]
    assert sum(g != 0 for g in grads) > 500
    assert grads == pytest.approx([v.grad for v in nodes], rel=1e-9, abs=1e-300)


def test_upstream_cannot_run_it_and_says_why():
    if not upstream.installed():
        pytest.skip("upstream micrograd missing")
    engines, _ = bench.available_engines(["micrograd"])
    records = bench.measure(bench.Task("fastest_autograd", bench.fastest_autograd, 1), engines,
                            tick=lambda: None)
    assert records[0]["status"] == "skipped: micrograd's Value has no exp() or log()"


def test_fastest_autograd_records_report_and_plot(tmp_path):
    names = ["micrograd_c", "micrograd_c-unfused", "micrograd_c-replay", "micrograd", "torch",
             "floats"]
    engines, skipped = bench.available_engines(names)
    task = bench.Task("fastest_autograd", lambda e: bench.fastest_autograd(e, 400), 2)
    records = bench.measure(task, engines, tick=lambda: None)
    timed = {r["engine"]: r for r in records if r["status"] == "ok"}
    assert {"micrograd_c", "micrograd_c-replay", "floats"} <= set(timed)
    for r in timed.values():
        assert r["median_s"] > 0 and r["nodes"] > 0
        assert {"ratio_vs_micrograd_c", "ratio_vs_torch"} <= set(r)
        assert "ratio_vs_micrograd" not in r            # there is no upstream to compare with
    assert timed["micrograd_c"]["ratio_vs_micrograd_c"] == 1.0
    assert timed["floats"]["nodes"] == 100 + 400 // 4 * 7
    assert (timed["torch"]["ratio_vs_torch"] == 1.0) if "torch" in timed else "torch" in skipped
    text = bench.report(records, skipped, {e.name: e.note for e in engines if e.note})
    assert "per iteration" in text and "10k iterations" in text and "vs torch" in text
    assert "i / 100" in text and "hand-written C 0.99 s" in text and "M1 MacBook" in text
    assert "vs micrograd " not in text
    png = tmp_path / "bench.png"
    bench.plot(records, png)
    assert png.read_bytes()[:4] == b"\x89PNG"

"""The bench's replay engine. Oracle: the same step rebuilt by micrograd_c (a replay must give
its bits). No test here asserts a time."""
import random
import struct

import pytest

from micrograd_c import bench, engine, moons
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


def test_replay_engine_runs_where_a_graph_is_fixed():
    engines, _ = bench.available_engines(["micrograd_c", "micrograd_c-replay"])
    records = bench.measure(bench.Task("train_step", bench.train_step, 2), engines,
                            tick=lambda: None)
    assert [r["engine"] for r in records] == ["micrograd_c", "micrograd_c-replay"]
    ours, replay = records
    assert replay["status"] == "ok" and replay["nodes"] == ours["nodes"] == 7_679
    assert {"ratio_vs_micrograd", "ratio_vs_micrograd_nogc"} <= set(replay)
    chain = bench.measure(bench.Task("chain", lambda e: bench.chain(e, 50), 1, 50), engines,
                          tick=lambda: None)
    assert [r["engine"] for r in chain] == ["micrograd_c"]
    memory = bench.memory_records(engines, 1000, tick=lambda: None)
    assert [r["engine"] for r in memory] == ["micrograd_c"]

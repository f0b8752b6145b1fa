"""Workloads: what is run. Each setup returns (run, nodes): a function doing one timed run, and
the number of graph nodes one run makes. A workload that an engine can't do raises Unsupported."""
import random

from micrograd_c import moons

WORKLOADS = ("train_step", "chain", "expression", "wide_mlp", "memory")


class Unsupported(Exception):
    pass


def needs_mlp(engine):
    if engine.MLP is None:
        raise Unsupported("no MLP (its nn needs upstream micrograd installed)")


def train_step(engine, width=16, points=100, l2_by_neuron=False, seed=1337):
    """The demo's training step on `engine`; returns (run, nodes)."""
    needs_mlp(engine)
    X, y = moons.demo_data(n_samples=points)
    random.seed(seed)
    model = engine.MLP(2, [width, width, 1])
    if engine.replays:
        step = moons.replayed_sgd_step(model, X, y, l2_by_neuron)
    else:
        def step(k):
            return moons.sgd_step(model, X, y, engine.Value, k, sum_values=engine.sum_values,
                                  l2_by_neuron=l2_by_neuron)
    k = 0

    def run():
        nonlocal k
        step(k)
        k += 1

    loss, _ = moons.loss(model, X, y, engine.Value, engine.sum_values, l2_by_neuron)
    return run, engine.count_nodes(loss)


def wide_mlp(engine, points=20):
    # The L2 term is summed neuron by neuron: summed flat, its 4,481 terms make a chain deeper
    # than upstream's recursive backward() allows, and upstream could not run this at all.
    return train_step(engine, width=64, points=points, l2_by_neuron=True)


def chain(engine, size, repeats=1):
    """Build y = x * w * w * ... (size multiplications), then backward; `repeats` times per run."""
    def build(length):
        w = engine.Value(0.999999)
        y = engine.Value(1.0)
        for _ in range(length):
            y = y * w
        return y

    def run():
        for _ in range(repeats):
            build(size).backward()

    # A chain grows by the same number of nodes per op: count a short one, not a long one twice.
    short, shorter = engine.count_nodes(build(20)), engine.count_nodes(build(10))
    return run, shorter + (size - 10) * (short - shorter) // 10


def more_ops(Value):
    # upstream micrograd's test_more_ops expression
    a = Value(-4.0)
    b = Value(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    return g


def expression(engine, repeats=100):
    def run():
        for _ in range(repeats):
            more_ops(engine.Value).backward()

    return run, repeats * engine.count_nodes(more_ops(engine.Value))

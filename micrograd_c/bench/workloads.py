"""Workloads: what is run. Each setup returns (run, nodes): a function doing one timed run, and
the number of graph nodes one run makes. A workload that an engine can't do raises Unsupported."""
import random

import micrograd_c.engine
from micrograd_c import moons

WORKLOADS = ("train_step", "chain", "expression", "wide_mlp", "fastest_autograd", "memory")


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


# Rogozhnikov's inputs are arange(100), with a numerically stable softplus. Written as a micrograd
# user would, log(exp(x) + 1), exp overflows from there (values reach ~8,900); from i / 100 every
# value stays within [0.0003, 3.95].
ROGOZHNIKOV_INPUTS = [i / 100 for i in range(100)]
# What the article measured, on an M1 MacBook, for 10k iterations: quoted beside our figures.
PUBLISHED = ("PyTorch ~1,130 s (estimated), JAX jit 470 s incl. compile, numba 41 s, Rust 1.4 s, "
             "hand-written C 0.99 s")


def rogozhnikov_graph(inputs, exp, log, sum_values, n_operations=10_000):
    """The scalar graph of A. Rogozhnikov's "Fastest Autograd in the West" (2023): every value
    made, 17,600 from 100 inputs. exp and log are functions: Value.exp is x.exp()."""
    nodes = list(inputs)
    for i in range(n_operations):
        if i % 4 == 0:      # softplus, as (x.exp() + 1).log()
            nodes.append(log(exp(nodes[-10]) + 1))
        elif i % 4 == 1:    # a sum of 4
            nodes.append(sum_values(nodes[-30:-10:5]))
        elif i % 4 == 2:
            nodes.append(nodes[-20] * nodes[-10])
        else:               # softmax of the last 4
            exps = [exp(v) for v in nodes[-4:]]
            s = sum_values(exps)
            nodes.extend([e / s for e in exps])
    return nodes


def fastest_autograd(engine, n_operations=10_000):
    """Rogozhnikov's graph built from its inputs, then backward from its last value; an engine
    that replays builds and compiles it once, and a run is forward() and backward().

    Its grads shrink along the graph: those of the first 873 values, the inputs' included,
    underflow to 0, and ~1,900 nodes' are subnormal (slow on x86 for every engine)."""
    if engine.exp is None or engine.log is None:
        raise Unsupported(f"{engine.name}'s Value has no exp() or log()")

    def build():
        return rogozhnikov_graph(map(engine.Value, ROGOZHNIKOV_INPUTS), engine.exp, engine.log,
                                 engine.sum_values, n_operations)

    if engine.forward_only:
        return build, len(build())
    nodes = build()
    if engine.replays:
        replay = micrograd_c.engine.compile(nodes[-1])
        inputs = nodes[:len(ROGOZHNIKOV_INPUTS)]

        def run():
            for x in inputs:        # fresh inputs' grads, as a rebuilt graph's
                x.grad = 0.0
            replay.forward()
            replay.backward()

        return run, len(replay)

    def run():
        build()[-1].backward()

    return run, engine.count_nodes(*nodes)

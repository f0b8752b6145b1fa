"""Workloads: what is run. Each setup returns (run, nodes): a function doing one timed run, and
the number of graph nodes one run makes; a workload timed in phases (grad_graph) returns one
(run, nodes) per phase. A workload that an engine can't do raises Unsupported."""
import functools
import random

import numpy as np

import micrograd_c.engine
from micrograd_c import digits, moons, optim

WORKLOADS = ("train_step", "chain", "expression", "wide_mlp", "fastest_autograd", "digits_epoch",
             "grad_graph", "memory")


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
    if engine.forward_only:
        def run():
            moons.loss_and_scores(model, X, y, engine.Value, engine.sum_values, l2_by_neuron,
                                  engine.relu)

        return run, None
    if engine.replays:
        step = moons.replayed_sgd_step(model, X, y, l2_by_neuron)
    else:
        optimizer = bulk_sgd(model, moons.learning_rate(0))

        def step(k):
            return moons.sgd_step(model, X, y, engine.Value, k, sum_values=engine.sum_values,
                                  l2_by_neuron=l2_by_neuron, optimizer=optimizer)
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


# -- digits_epoch: mini-batch training of the digits classifier --------------------------------

DIGITS_BATCH = digits.BATCH_SIZE
DIGITS_EPOCHS = digits.EPOCHS       # the digits demo's defaults
DIGITS_LR = 0.1             # plain SGD: p.data -= lr * p.grad, on every engine (see sgd())
# Upstream has no exp() or log(), so no softmax: squared error is the loss every engine can run.
DIGITS_LOSSES = ("cross_entropy", "squared_error")
ONE_HOT = np.eye(digits.CLASSES)


@functools.lru_cache(maxsize=None)
def digits_data(seed=0):
    """The training digits, (images as lists of 64 floats, labels as ints), loaded once."""
    X, y, _, _ = digits.load(seed)
    return X.tolist(), y.tolist()


def missing(workload):
    """Why `workload` can't run here (a package it needs is not installed), or None."""
    if workload == "digits_epoch":
        try:
            digits_data()
        except ImportError as error:
            return str(error)
    return None


def squared_error(logits, targets, sum_values=sum):
    """The batch mean of sum((z - target)**2) over each example's logits and one-hot target."""
    return sum_values([(z - t) ** 2 for zs, ts in zip(logits, targets)
                       for z, t in zip(zs, ts)]) * (1.0 / len(logits))


def digits_loss(engine, loss):
    """loss(logits, one-hot targets) for `engine`: its softmax cross-entropy or squared error."""
    if loss == "squared_error":
        return lambda logits, targets: squared_error(logits, targets, engine.sum_values)
    if engine.cross_entropy is None:
        raise Unsupported(f"{engine.name}'s Value has no exp() or log(), so no softmax "
                          "cross-entropy (see the squared-error table)")
    return engine.cross_entropy


def digits_model(engine, seed=0):
    """engine's MLP(64, [32, 10]) with the weights of digits.make_model(seed), copied in."""
    needs_mlp(engine)
    model = engine.MLP(64, [32, digits.CLASSES])
    weights = [p.data for p in digits.make_model(seed).parameters()]
    parameters = model.parameters()
    if len(parameters) != len(weights):
        raise Unsupported(f"its MLP(64, [32, 10]) has {len(parameters)} parameters, not "
                          f"{len(weights)}")
    for p, w in zip(parameters, weights):
        engine.set_data(p, w)
    return model


def digits_graph(engine, model, loss_of, images, labels):
    """The loss of a batch of images (lists of floats) and labels, its graph built anew."""
    logits = [model(list(map(engine.Value, image))) for image in images]
    return loss_of(logits, ONE_HOT[labels].tolist())


class PythonSGD:
    """p.data -= lr * p.grad for each parameter, in Python, as upstream's demo updates: what
    every engine can run. zero_grad() is the model's."""

    def __init__(self, model, lr):
        self.model, self.parameters, self.lr = model, model.parameters(), lr

    def zero_grad(self):
        self.model.zero_grad()

    def step(self):
        for p in self.parameters:
            p.data -= self.lr * p.grad


def sgd(model, lr):
    """Plain SGD for model's parameters: bulk_sgd's, else PythonSGD."""
    optimizer = bulk_sgd(model, lr)
    return PythonSGD(model, lr) if optimizer is None else optimizer


def bulk_sgd(model, lr):
    """micrograd_c.optim.SGD for model's parameters if they are micrograd_c's Values, else None:
    the same update and numbers as the Python loop, in bulk. Measured on a replayed digits step,
    the loop and zero_grad() took 350 us of its 550 (optim.SGD: 60 us), and 7% of the demo's
    fused step: the loop, not the engine, would be timed. On the others it is ~1% of a step
    (torch: 21 ms of ~2 s)."""
    parameters = model.parameters()
    if all(isinstance(p, micrograd_c.engine.Value) for p in parameters):
        return optim.SGD(parameters, lr)
    return None


def digits_epoch(engine, loss="cross_entropy", seed=0, model=None, batch_size=DIGITS_BATCH):
    """One SGD step of the digits classifier on a batch of batch_size examples; returns (run,
    nodes). Each run trains `model` (default: digits_model(engine, seed)) on the next batch of
    a shuffled epoch, the same batches in the same order on every engine; an engine that
    replays builds and compiles one batch's graph (digits.Batch: the images and one-hot labels
    are leaves set in place)."""
    if engine.batched is not None:
        return batched_digits_epoch(engine, loss, seed, batch_size)
    loss_of = digits_loss(engine, loss)
    images, labels = digits_data(seed)
    model = digits_model(engine, seed) if model is None else model
    optimizer = sgd(model, DIGITS_LR)
    batches = digits.batches(len(images), batch_size, np.random.default_rng(seed))
    if engine.replays:
        batch = digits.Batch(model, batch_size, loss_of)
        X, y = np.array(images), np.array(labels)

        def step(rows):
            batch.set(X[rows], y[rows])
            batch.step.forward()
            optimizer.zero_grad()
            batch.step.backward()
            optimizer.step()
        nodes = len(batch.step)
    else:
        def step(rows):
            batch_loss = digits_graph(engine, model, loss_of, [images[i] for i in rows],
                                      [labels[i] for i in rows])
            optimizer.zero_grad()
            batch_loss.backward()
            optimizer.step()

        # A batch's graph grows by the same nodes per example: count graphs of 1 and 2 examples,
        # not a batch (upstream takes seconds to build one).
        one, two = (engine.count_nodes(digits_graph(engine, model, loss_of, images[:n],
                                                    labels[:n])) for n in (1, 2))
        nodes = one + (batch_size - 1) * (two - one)
    k = 0

    def run():
        nonlocal k
        step(batches[k % len(batches)])
        k += 1

    return run, nodes


def batched_digits_epoch(engine, loss="cross_entropy", seed=0, batch_size=DIGITS_BATCH):
    """digits_epoch for an engine that runs the whole batch as matrices (micrograd_c.batched:
    numpy by hand, PyTorch tensors): the same weights, batches, loss and SGD. It makes no graph
    of scalar nodes: nodes is None."""
    images, labels = digits_data(seed)
    X, onehot = np.array(images), ONE_HOT[labels]
    batches = digits.batches(len(images), batch_size, np.random.default_rng(seed))
    # A first step on another model loads what the library loads once (torch: ~1 s), which is
    # no batch's cost.
    engine.batched(digits.make_model(seed)).step(X[batches[0]], onehot[batches[0]], DIGITS_LR,
                                                 loss)
    mlp = engine.batched(digits.make_model(seed))
    k = 0

    def run():
        nonlocal k
        rows = batches[k % len(batches)]
        mlp.step(X[rows], onehot[rows], DIGITS_LR, loss)
        k += 1

    return run, None


# -- grad_graph: gradients as a graph, against the forward graph ------------------------------

GRAD_GRAPHS = ("demo_loss", "fastest_autograd")


def graph_to_differentiate(engine, graph="demo_loss", n_operations=10_000):
    """(build, inputs): build() makes the demo's loss or Rogozhnikov's graph (of n_operations)
    and returns every value made, the output last; its gradient is taken with respect to
    `inputs` (the model's parameters, or the 100 inputs)."""
    if graph == "demo_loss":
        needs_mlp(engine)
        X, y = moons.demo_data()
        random.seed(1337)
        model = engine.MLP(2, [16, 16, 1])
        return (lambda: [moons.loss_and_scores(model, X, y, engine.Value, engine.sum_values)[0]],
                model.parameters())
    if engine.exp is None or engine.log is None:
        raise Unsupported(f"{engine.name}'s Value has no exp() or log()")
    inputs = list(map(engine.Value, ROGOZHNIKOV_INPUTS))
    return (lambda: rogozhnikov_graph(inputs, engine.exp, engine.log, engine.sum_values,
                                      n_operations), inputs)


def grad_graph(engine, graph="demo_loss"):
    """Build a graph, then its gradient as a graph, grad(create_graph=True). Returns
    [(build, nodes it makes), (gradient, nodes it adds)]: the two phases to time."""
    if engine.gradient_graph is None:
        raise Unsupported(f"{engine.name} has no gradients as a graph (create_graph)")
    build, inputs = graph_to_differentiate(engine, graph)
    values = build()

    def gradient():
        return engine.gradient_graph(values[-1], inputs)

    made = engine.count_nodes(*values)
    gradients = [g for g in gradient() if g is not None]
    return [(build, made), (gradient, engine.count_nodes(*values, *gradients) - made)]

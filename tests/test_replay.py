"""engine.compile: a recorded graph replayed from new leaf data. The oracle is the same graph
rebuilt from that data the usual way: every node's data and grad must be the same bits."""
import gc
import math
import random
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from helpers import block_kernels, examples, traced_growth
from micrograd_c import engine, moons
from micrograd_c.engine import Value
from micrograd_c.nn import MLP
from programs import OPS, OURS, programs, run

fuzz = settings(max_examples=examples(200), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
BUILD_ERRORS = (ValueError, ZeroDivisionError, OverflowError)

numbers = st.one_of(st.floats(-3, 3), st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 1e300,
                                                       math.inf, math.nan]))


def walk(root):
    """Every node below root, in an order that depends only on the graph's structure."""
    order, seen, todo = [], set(), [root]
    while todo:
        node = todo.pop()
        if id(node) not in seen:
            seen.add(id(node))
            order.append(node)
            todo.extend(reversed(node._children))
    return order


def bits(x):
    """A float's bits, every NaN alike: which NaN an op returns when both operands are NaN
    depends on the order the compiler put them in, in each path (IEEE leaves it open)."""
    return b"nan" if math.isnan(x) else struct.pack("<d", x)


def state(nodes):
    return [(bits(n.data), bits(n.grad)) for n in nodes]


def replay_matches_rebuilding(root, rebuilt_root, kept=None):
    """kept: {id(leaf): grad} for the leaves a replay compiled with inputs leaves alone: their
    grads must be what they were, every other grad the rebuilt graph's."""
    ours, theirs = walk(root), walk(rebuilt_root)
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert a._op == b._op, k
        assert bits(a.data) == bits(b.data), (k, a._op, a.data, b.data)
        expected = kept[id(a)] if kept is not None and id(a) in kept else b.grad
        assert bits(a.grad) == bits(expected), (k, a._op, a.grad, expected)


def left_alone(root, named):
    """{id(leaf): its grad now} for the leaves below root that compile(root, inputs=named)
    leaves alone: those not named (constants that dot() made from numbers among them)."""
    named = {id(v) for v in named}
    return {id(v): v.grad for v in walk(root) if not v._children and id(v) not in named}


def replays_as_rebuilt(step, root, rebuilt):
    """step, compiled at root and its leaves' data set as rebuilt's, run forward and backward
    from fresh leaf grads (as zero_grad() leaves them): every node as the rebuilt graph's."""
    for leaf in walk(root):
        if not leaf._children:
            leaf.grad = 0.0
    assert bits(step.forward()) == bits(rebuilt.data)
    step.backward()
    rebuilt.backward()
    replay_matches_rebuilding(root, rebuilt)


@fuzz
@given(programs(OPS, numbers), st.lists(numbers, min_size=4, max_size=4), st.booleans())
def test_replay_gives_the_bits_of_a_rebuilt_graph(case, new_leaves, twice):
    leaves, program = case
    if twice:       # each node built twice from the same operands: replay computes the pair once
        program = [step for step in program for _ in range(2)]
    try:
        nodes, root = run(leaves, program, Value, OURS)
    except BUILD_ERRORS:
        assume(False)
    step = engine.compile(root)
    new_leaves = new_leaves[:len(leaves)]
    for leaf, x in zip(nodes, new_leaves):
        leaf.data = x
    try:
        _, rebuilt = run(new_leaves, program, Value, OURS)
    except BUILD_ERRORS:
        everything = walk(root)
        before = state(everything)
        with pytest.raises(BUILD_ERRORS, match="replaying node"):
            step.forward()
        assert state(everything) == before              # nothing half-written
        return
    replays_as_rebuilt(step, root, rebuilt)



@fuzz
@given(programs(OPS, numbers), st.lists(numbers, min_size=4, max_size=4),
       st.lists(st.booleans(), min_size=4, max_size=4), st.booleans())
def test_replay_with_inputs_sets_their_grads_and_leaves_the_other_leaves_alone(
        case, new_leaves, named, reorder):
    # The oracle: a graph rebuilt from the new data and back-propagated; a leaf not among the
    # inputs keeps the grad it had (a number not a grad can be mistaken for), every other
    # node gets the rebuilt graph's
    leaves, program = case
    try:
        nodes, root = run(leaves, program, Value, OURS)
    except BUILD_ERRORS:
        assume(False)
    inputs = [leaf for leaf, chosen in zip(nodes, named) if chosen]
    compile = engine.compile if reorder else engine._compile_without_layers
    step = compile(root, inputs=inputs)
    new_leaves = new_leaves[:len(leaves)]
    try:
        _, rebuilt = run(new_leaves, program, Value, OURS)
    except BUILD_ERRORS:
        assume(False)
    for leaf, x in zip(nodes, new_leaves):
        leaf.data = x
    named = {id(x) for x in inputs}
    for v in walk(root):
        v.grad = 0.0 if v._children or id(v) in named else 0.375
    kept = left_alone(root, inputs)
    assert bits(step.forward()) == bits(rebuilt.data)
    step.backward()
    rebuilt.backward()
    replay_matches_rebuilding(root, rebuilt, kept)


def test_compiles_inputs_arguments():
    x, y = Value(2.0), Value(3.0)
    z = x * y + 1.0
    for inputs, named in [(x, [x]), ([x], [x]), ((v for v in [y]), [y]), ([], []),
                          ([x, x, z, Value(5.0)], [x])]:    # twice, interior, not in the graph
        x.grad = y.grad = 0.5
        step = engine.compile(z, inputs=inputs)
        step.forward()
        step.backward()
        assert z.grad == 1.0
        assert x.grad == (3.5 if x in named else 0.5)
        assert y.grad == (2.5 if y in named else 0.5)
        assert set(map(id, step._left_alone)) == {id(v) for v in (x, y) if v not in named}
        assert repr(step) == repr(engine.compile(z))    # the same nodes and links
    with pytest.raises(TypeError,
                       match="compile\\(\\) inputs must be a Value or Values, not 'int'"):
        engine.compile(z, inputs=3)
    with pytest.raises(TypeError, match="compile\\(\\) inputs must be Values, not 'float'"):
        engine.compile(z, inputs=[x, 2.0])
    with pytest.raises(ValueError):
        engine.compile(z, inputs=[Value.__new__(Value)])
    with pytest.raises(TypeError):
        engine.compile(z, [x])                      # keyword only


def test_the_root_stays_last_above_what_only_a_hand_made_node_reaches():
    # Value(x, (child,), op) keeps its children for drawing, with no gradient (as upstream): no
    # link of the tape reaches what lies below it only, which by_depth found as shallow as the
    # root, and put after a dot root. forward() returned that node, backward() seeded it.
    a, b = Value(2.0), Value(3.0)
    hidden = a * b + 1.0
    custom = Value(5.0, (hidden,), "custom")
    root = engine.dot([custom, a], [a, b])              # 5 * 2 + 2 * 3
    step = engine.compile(root)
    assert step.forward() == 16.0
    step.backward()
    # by hand: d/da = custom + b, d/db = a, d/dcustom = a; nothing reaches hidden
    assert (root.grad, a.grad, b.grad, custom.grad, hidden.grad) == (1.0, 8.0, 2.0, 2.0, 0.0)


@fuzz
@given(programs(OPS, numbers), st.lists(numbers, min_size=4, max_size=4),
       st.sampled_from(["dot", "sum", "add"]))
def test_replay_below_a_hand_made_node_gives_the_bits_of_a_rebuilt_graph(case, new_leaves, top):
    leaves, program = case

    def build(xs, kept=None):
        # the program, a hand-made node over its result, and a root over that node
        nodes, below = run(xs, program, Value, OURS)
        a, b = nodes[0], nodes[1]
        custom = Value(below.data if kept is None else kept, (below,), "stop")
        root = engine.dot([custom, a], [a, b]) if top == "dot" else \
            engine.sum([custom, a * b]) if top == "sum" else custom * a + b
        return nodes[:len(xs)], custom, root

    try:
        inputs, custom, root = build(leaves)
        new_leaves = new_leaves[:len(leaves)]
        _, _, rebuilt = build(new_leaves, kept=custom.data)    # hand-made: it keeps its data
    except BUILD_ERRORS:
        assume(False)
    step = engine.compile(root)
    for leaf, x in zip(inputs, new_leaves):
        leaf.data = x
    replays_as_rebuilt(step, root, rebuilt)

# Every op, at numbers that include the points where a derivative changes its formula (relu
# and the powers at 0): a gradient graph is a function of its inputs like any other graph.
gradient_numbers = st.one_of(st.floats(-3, 3), st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0]))


@fuzz
@given(programs(OPS, gradient_numbers), st.lists(gradient_numbers, min_size=4, max_size=4))
def test_a_replayed_gradient_graph_gives_the_bits_of_a_rebuilt_one(case, new_leaves):
    # gradient graphs are made of IEEE nodes (they never raise) and repeat many local
    # derivatives: both take their own paths in replay
    leaves, program = case

    def gradient_graph(xs):
        nodes, root = run(xs, program, Value, OURS)
        grads = engine.grad(root, nodes[:len(xs)], create_graph=True)
        return nodes, engine.sum([g * g for g in grads])

    try:
        nodes, root = gradient_graph(leaves)
    except BUILD_ERRORS:
        assume(False)
    step = engine.compile(root)
    new_leaves = new_leaves[:len(leaves)]
    try:
        _, rebuilt = gradient_graph(new_leaves)
    except BUILD_ERRORS:
        assume(False)
    for leaf, x in zip(nodes, new_leaves):
        leaf.data = x
    replays_as_rebuilt(step, root, rebuilt)


@pytest.mark.parametrize("build,before,after", [
    (lambda x: (x * 3).relu(), 1.0, -1.0),          # relu's derivative: 3 before, 0 after
    (lambda x: x ** (x - 1), 1.0, 2.0),             # d/da a ** b at b == 0, then 1
    (lambda x: x ** x, 0.0, 2.0),                   # and d/db at a == 0 <= b, then 4 log 2
])
def test_a_gradient_graph_replayed_across_a_branch(build, before, after):
    # the gradient graph is compiled on one side of a point where relu's or a power's
    # derivative changes formula and replayed on the other: it must give what rebuilding gives
    def gradient_squared(x):
        g, = engine.grad(build(x), [x], create_graph=True)
        return g * g
    x = Value(before)
    step = engine.compile(gradient_squared(x))
    x.data = after
    rebuilt = gradient_squared(Value(after))
    assert bits(step.forward()) == bits(rebuilt.data)


def test_leaves_accumulate_and_interior_nodes_start_from_zero():
    x, w = Value(2.0), Value(-3.0)
    y = (x * w).tanh() + x ** 2
    step = engine.compile(y)
    step.backward()
    step.backward()                                     # no zero_grad: leaves accumulate
    z = (x * w).tanh() + x ** 2                         # the oracle: two backward() calls on
    gx, gw = x.grad, w.grad                             # two fresh graphs
    x.grad = w.grad = 0.0
    z.backward()
    (x * w).tanh().__add__(x ** 2).backward()
    assert (gx, gw) == (x.grad, w.grad)
    assert y.grad == 1.0 and y._children[0].grad == 1.0   # interior: as a fresh graph's


def test_every_node_kind_and_shared_nodes():
    a, b = Value(0.3), Value(-1.2)
    shared = a * b + 1.0
    custom = Value(7.0, (a, shared), "custom")           # hand-made: no gradient, as upstream
    empty = Value(2.0, (), "lonely")                      # hand-made without children: a leaf
    parts = [shared, shared.relu(), shared.tanh(), shared.exp(), (shared * shared).log(),
             shared.sigmoid(), 2 ** shared, shared ** 3, a ** b.exp(), -shared, 1 / shared,
             shared - 4, 4 - shared, engine.dot([a, b, 2.0], [b, 1.5, shared], shared),
             engine.dot([a], [b], 0.25), engine.sum([a, 3.0, shared, shared]), custom * empty,
             engine.sum([])]
    root = engine.sum(parts)
    step = engine.compile(root)

    def rebuild():
        s = a * b + 1.0
        c = Value(custom.data, (a, s), "custom")
        return engine.sum([s, s.relu(), s.tanh(), s.exp(), (s * s).log(), s.sigmoid(), 2 ** s,
                           s ** 3, a ** b.exp(), -s, 1 / s, s - 4, 4 - s,
                           engine.dot([a, b, 2.0], [b, 1.5, s], s), engine.dot([a], [b], 0.25),
                           engine.sum([a, 3.0, s, s]), c * empty, engine.sum([])])

    for x, y, e in ((0.7, 0.4, 2.0), (0.2, -2.5, -1.0), (1.5, -0.5, 0.5)):
        a.data, b.data, empty.data = x, y, e
        a.grad = b.grad = empty.grad = 0.0
        step.forward()
        step.backward()
        leaves = (a.grad, b.grad, empty.grad)
        a.grad = b.grad = empty.grad = 0.0
        oracle = rebuild()
        oracle.backward()
        assert leaves == (a.grad, b.grad, empty.grad)
        replay_matches_rebuilding(root, oracle)


def test_mini_batch_training_equals_rebuilding_every_step():
    X, y = moons.make_moons(60, seed=3)
    labels = (y * 2 - 1).astype(float)
    batch = 12

    def loss_of(model, xs, ys):
        scores = [model(x) for x in xs]
        losses = [(1 + -yi * s).relu() for yi, s in zip(ys, scores)]
        return engine.sum(losses) * (1.0 / len(losses))

    random.seed(0)
    rebuilt_model = MLP(2, [8, 8, 1])
    random.seed(0)
    model = MLP(2, [8, 8, 1])
    inputs = [[Value(0.0), Value(0.0)] for _ in range(batch)]
    targets = [Value(0.0) for _ in range(batch)]
    loss = loss_of(model, inputs, targets)
    step = engine.compile(loss)
    assert [run for run in step._runs if run[1] == 96] == [("dot", 96), ("ReLU", 96)] * 2
    flat_inputs = [v for row in inputs for v in row]
    for k in range(10):
        rows = slice(k * batch % 60, k * batch % 60 + batch)
        engine.copy_from_array(flat_inputs, np.ascontiguousarray(X[rows].ravel()))
        engine.copy_from_array(targets, np.ascontiguousarray(labels[rows]))
        replayed = step.forward()
        model.zero_grad()
        step.backward()
        expected = loss_of(rebuilt_model, X[rows].tolist(), labels[rows].tolist())
        rebuilt_model.zero_grad()
        expected.backward()
        assert bits(replayed) == bits(expected.data)
        for p, q in zip(model.parameters(), rebuilt_model.parameters()):
            assert bits(p.grad) == bits(q.grad)
            p.data -= 0.1 * p.grad
            q.data -= 0.1 * q.grad


@pytest.mark.parametrize("build,bad,error", [
    (lambda x: x.log(), -1.0, ValueError),
    (lambda x: x.log(), 0.0, ValueError),
    (lambda x: 1 / x, 0.0, ZeroDivisionError),
    (lambda x: x ** -2, 0.0, ZeroDivisionError),
    (lambda x: x ** 0.5, -4.0, ValueError),
    (lambda x: x ** x, -0.5, ValueError),
    (lambda x: (-2.0) ** x, 0.5, ValueError),
    (lambda x: x.exp(), 1000.0, OverflowError),
    (lambda x: x ** 3, 1e200, OverflowError),
    (lambda x: 10 ** x, 400.0, OverflowError),
])
def test_bad_values_raise_what_building_raises_and_change_nothing(build, bad, error):
    x = Value(2.0)
    y = build(x * 1.0) + x
    with pytest.raises(error) as building:
        build(Value(bad) * 1.0)
    step = engine.compile(y)
    y.backward()
    everything = walk(y)
    x.data = bad
    before = state(everything)
    with pytest.raises(error) as replaying:
        step.forward()
    assert str(building.value) in str(replaying.value)
    assert "replaying node" in str(replaying.value) and repr(y._children[0]._op) in \
        str(replaying.value) or "op" in str(replaying.value)
    assert state(everything) == before
    x.data = 2.0                                    # and it is still usable
    assert step.forward() == (build(Value(2.0) * 1.0) + 2.0).data
    step.backward()


def test_dropping_a_replay_returns_every_byte():
    def work():
        x = Value(0.5)
        y = x
        for _ in range(2000):
            y = (y * 1.0001).tanh() + x
        step = engine.compile(engine.sum([y, y * 2]))
        step.forward()
        step.backward()
        engine.compile(y, inputs=[x]).backward()
    grown = traced_growth(work, 5)
    assert grown < 16_000, grown


def test_a_replay_keeps_its_graph_alive():
    x = Value(3.0)
    step = engine.compile((x * x).tanh() * 2)
    gc.collect()
    x.data = 0.5
    assert step.forward() == math.tanh(0.25) * 2
    assert step.root.data == math.tanh(0.25) * 2


def test_a_replay_is_invisible_to_the_garbage_collector():
    # Its one object field is the root, a Value, which the collector never traverses: tracked,
    # a collection could clear `root` while the tape still pointed into the graph.
    x = Value(2.0)
    step = engine.compile(x * x)
    assert not gc.is_tracked(step) and not gc.is_tracked(x)
    x.__dict__["step"] = step                        # a cycle, as with any Value attribute
    gc.collect()
    assert step.forward() == 4.0 and step.root is not None
    del x.__dict__["step"]


def test_state_per_node_is_small():
    random.seed(0)
    model = MLP(2, [16, 16, 1])
    X, y = moons.demo_data()
    loss, _ = moons.loss(model, X, y, Value, engine.sum)
    step = engine.compile(loss)
    links = sum(len(n._children) if n._op not in ("",) else 0 for n in walk(loss))
    layers = step._layers                           # 32 bytes each, 4 per node in one
    assert len(layers) == 200
    blocks = step._blocks                           # 4 bytes per layer, and a scratch array
    assert blocks == [(100, 16, 2), (100, 16, 16)]  # as big as the biggest block needs: in
    assert step._in_place == [(True, True)] * 2     # place, its weights and biases once
    runs = step._runs                               # 8 bytes each
    assert runs[:4] == [("dot", 1600), ("ReLU", 1600)] * 2
    assert step.nbytes <= (40 * len(step) + 4 * links + 64 + 8 * len(runs) +
                           sum(32 + 4 * (dots + between) for dots, between, _ in layers) +
                           sum(4 * n for n, _, _ in blocks) +
                           max(8 * dots * (m + 1) for _, dots, m in blocks))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    again = engine.compile(loss)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert held <= again.nbytes + 1024


def test_a_leaf_root_and_bad_arguments():
    x = Value(4.0)
    step = engine.compile(x)
    assert step.forward() == 4.0 and len(step) == 1
    step.backward()
    assert x.grad == 1.0
    with pytest.raises(TypeError):
        engine.compile(4.0)
    with pytest.raises(TypeError):
        engine.Replay()
    with pytest.raises(ValueError):
        engine.compile(Value.__new__(Value))


# -- layers: dot nodes over the same inputs, replayed side by side ----------------------------

@st.composite
def layer_graphs(draw):
    """A layer of dots over shared inputs, the way a network's neurons are, with what can break
    computing them side by side drawn in now and then: a weight shared between dots, an input
    twice, a dot used by a later one of the run, number or Value biases, tiny grads."""
    n_inputs = draw(st.integers(1, 7))
    n_dots = draw(st.integers(1, 11))
    repeated_input = draw(st.booleans()) and draw(st.booleans()) and n_inputs > 1
    inputs = [k % (n_inputs - 1) if repeated_input else k for k in range(n_inputs)]
    size = n_inputs
    dots = []
    for d in range(n_dots):
        if draw(st.integers(0, 9)) == 0:            # a weight of an earlier dot, or an input
            weights = draw(st.lists(st.integers(0, size - 1), min_size=n_inputs,
                                    max_size=n_inputs))
        else:
            weights = list(range(size, size + n_inputs))
            size += n_inputs
        bias = draw(st.sampled_from(["none", "number", "value"]))
        if bias == "value":
            bias = size
            size += 1
        activation = draw(st.sampled_from(["relu", "tanh", "none", "reuse"]))
        dots.append((weights, bias, activation))
    scale = draw(st.sampled_from([1.0, 1.0, 1e-300, 1e-160]))  # tiny grads: times_grad's path
    values = st.lists(st.floats(-2, 2, allow_subnormal=False), min_size=size, max_size=size)
    return draw(values), inputs, dots, scale, draw(values)


def build_layer_graph(pool, inputs, dots, scale):
    leaves = [Value(x) for x in pool]
    xs = [leaves[i] for i in inputs]
    outs = []
    for weights, bias, activation in dots:
        b = leaves[bias] if isinstance(bias, int) else 0.5 if bias == "number" else None
        out = engine.dot([leaves[w] for w in weights], xs, b)
        if activation == "relu":
            out = out.relu()
        elif activation == "tanh":
            out = out.tanh()
        elif activation == "reuse" and outs:
            out = out * outs[-1]                    # a parent of an earlier dot in the run
        outs.append(out)
    return leaves, engine.sum(outs) * scale


@fuzz
@given(layer_graphs())
def test_layers_replay_the_bits_of_a_rebuilt_graph(case):
    pool, inputs, dots, scale, new = case
    for compile in (engine.compile, engine._compile_in_backward_order):  # relus between, or not
        leaves, root = build_layer_graph(pool, inputs, dots, scale)
        step = compile(root)
        for leaf, x in zip(leaves, new):
            leaf.data, leaf.grad = x, 0.0
        rebuilt_leaves, rebuilt = build_layer_graph(new, inputs, dots, scale)
        assert bits(step.forward()) == bits(rebuilt.data)
        step.backward()
        rebuilt.backward()
        replay_matches_rebuilding(root, rebuilt)


# -- blocks: a layer's dots for every example of a batch -------------------------------------

FLAWS = ["shared input", "weight as input", "reads a weight", "late input"]


@st.composite
def batch_graphs(draw):
    """A layer of dots with the same weights for each example of a batch, as a network's first
    layer, with what can break computing the examples together drawn in now and then (FLAWS):
    an input shared by two examples, an input that is a weight, a node between the examples'
    layers reading a weight, an input made from the first example's outputs; number or Value
    biases, activations, tiny grads; weights or inputs made by nodes that the tape has out of
    the rows' order (the block then gathers them)."""
    m = draw(st.integers(1, 9))
    n_dots = draw(st.integers(1, 9))
    n_examples = draw(st.integers(1, 6))
    shape = (m, n_dots, n_examples, draw(st.sampled_from(["none", "number", "value"])),
             draw(st.sampled_from(["relu", "tanh", "none"])),
             draw(st.sampled_from([None] * 4 + FLAWS)),
             draw(st.sampled_from([1.0, 1.0, 1e-300, 1e-160])),     # tiny: times_grad's path
             draw(st.sampled_from([None, None, "weights", "inputs"])))    # made out of place
    size = n_dots * (m + 1) + n_examples * m
    values = st.lists(st.floats(-2, 2, allow_subnormal=False), min_size=size, max_size=size)
    return draw(values), shape, draw(values)


def build_batch_graph(pool, shape):
    m, n_dots, n_examples, bias, activation, flaw, scale, made = shape
    leaves = [Value(x) for x in pool]
    weights = [leaves[d * m:(d + 1) * m] for d in range(n_dots)]
    biases = leaves[n_dots * m:n_dots * (m + 1)]
    inputs = [leaves[n_dots * (m + 1) + e * m:n_dots * (m + 1) + (e + 1) * m]
              for e in range(n_examples)]
    front = []
    if made:                            # read last to first by a node the tape meets first
        rows = [[x + 0.0 for x in row] for row in (weights if made == "weights" else inputs)]
        front = [engine.sum([x for row in reversed(rows) for x in reversed(row)]) * 0.0]
        if made == "weights":
            weights = rows
        else:
            inputs = rows
    if flaw == "shared input" and n_examples > 1:
        inputs[-1][0] = inputs[0][0]
    elif flaw == "weight as input":
        inputs[-1][0] = weights[0][0]
    outs = []
    for e, xs in enumerate(inputs):
        if flaw == "late input" and outs:
            xs = [xs[0] * outs[0]] + xs[1:]
        layer = []
        for d in range(n_dots):
            b = biases[d] if bias == "value" else 0.5 + d if bias == "number" else None
            out = engine.dot(weights[d], xs, b)
            layer.append(out.relu() if activation == "relu" else
                         out.tanh() if activation == "tanh" else out)
        total = engine.sum(layer)
        if flaw == "reads a weight":
            total = total * weights[-1][-1]
        outs.append(total)
    return leaves, engine.sum(front + outs) * scale


@fuzz
@given(batch_graphs())
def test_blocks_replay_the_bits_of_a_rebuilt_graph(case):
    pool, shape, new = case
    m, n_dots, n_examples, _, _, flaw, _, made = shape
    for kernels in engine._kernel_sets():       # each set of block kernels this CPU can run
        with block_kernels(kernels):
            for compile in (engine.compile, engine._compile_in_backward_order):
                leaves, root = build_batch_graph(pool, shape)
                step = compile(root)
                if n_examples > 1 and n_dots > 1:   # every example's layer in one block, but
                    whole = (n_examples, n_dots, m)     # where a flaw forbids it
                    assert step._blocks == [whole] if flaw is None else \
                        whole not in step._blocks
                    if flaw is None:            # leaves in place, made rows out of order gathered
                        assert step._in_place == [(made != "weights", made != "inputs")]
                for leaf, x in zip(leaves, new):
                    leaf.data, leaf.grad = x, 0.0
                _, rebuilt = build_batch_graph(new, shape)
                assert bits(step.forward()) == bits(rebuilt.data)
                step.backward()
                rebuilt.backward()
                replay_matches_rebuilding(root, rebuilt)


@fuzz
@given(batch_graphs())
def test_blocks_with_inputs_named_replay_the_bits_of_a_rebuilt_graph(case):
    # compile(root, inputs=the weights and biases): a block whose inputs are all leaves left
    # alone computes its weights' grads alone, which must be the same bits
    pool, shape, new = case
    m, n_dots, n_examples, _, _, flaw, _, made = shape
    for kernels in engine._kernel_sets():
        with block_kernels(kernels):
            leaves, root = build_batch_graph(pool, shape)
            parameters = leaves[:n_dots * (m + 1)]
            step = engine.compile(root, inputs=parameters)
            if n_examples > 1 and n_dots > 1 and flaw is None:
                assert step._input_grads == [made == "inputs"]  # made: nodes, whose grads count
            for leaf, x in zip(leaves, new):
                leaf.data, leaf.grad = x, 0.0 if leaf in parameters else -2.5
            kept = left_alone(root, parameters)
            _, rebuilt = build_batch_graph(new, shape)
            assert bits(step.forward()) == bits(rebuilt.data)
            step.backward()
            rebuilt.backward()
            replay_matches_rebuilding(root, rebuilt, kept)


@pytest.mark.parametrize("neurons", [1, 5, 6, 7, 10])
def test_a_blocks_last_neurons_padded_to_four_change_no_bit(neurons):
    # A block takes its neurons four at a time; the last N % 4 are padded with neurons that
    # must change nothing: no dot's value, and no input's grad, even -0.0 (which adding +0.0
    # would turn into +0.0). Weights -0.0 and dots' grads 1.0: every term of an input's grad is
    # -0.0, so an input that starts at -0.0 ends at -0.0, as Python's floats add; each weight's
    # grad is the sum of its input over the examples, the bias's the number of examples.
    m, examples = 3, 4
    for kernels in engine._kernel_sets():
        with block_kernels(kernels):
            weights = [[Value(-0.0) for _ in range(m)] for _ in range(neurons)]
            biases = [Value(0.5 * n) for n in range(neurons)]
            inputs = [[Value(1.0 + e + 0.25 * i) for i in range(m)] for e in range(examples)]
            dots = [engine.dot(w, x, b) for x in inputs for w, b in zip(weights, biases)]
            step = engine.compile(engine.sum(dots))
            if neurons > 1:
                assert step._blocks == [(examples, neurons, m)]
            for x in (x for row in inputs for x in row):
                x.grad = -0.0
            for p in (w for row in weights for w in row):
                p.grad = 0.0
            for b in biases:
                b.grad = 0.0
            assert step.forward() == sum(0.5 * n for n in range(neurons)) * examples
            assert [d.data for d in dots] == [0.5 * n for n in range(neurons)] * examples
            step.backward()
            assert all(bits(x.grad) == bits(-0.0) for row in inputs for x in row), kernels
            for i in range(m):
                expected = 0.0
                for e in range(examples - 1, -1, -1):   # the last example first, as backward()
                    expected += inputs[e][i].data
                assert all(bits(w[i].grad) == bits(expected) for w in weights), kernels
            assert [b.grad for b in biases] == [float(examples)] * neurons


def squared_error_of(model, X):
    # the batch's sum((z - t)**2) against one-hot targets: each -t is as deep as the last
    # layer's dots
    return engine.sum([(z - t) ** 2 for e, row in enumerate(X)
                       for k, z in enumerate(model([Value(x) for x in row]))
                       for t in [Value(float(k == e % 2))]])


@pytest.mark.parametrize("loss_of, sizes, blocks", [
    (lambda model, X: engine.sum([model([Value(x) for x in row]) for row in X]), [4, 4, 1],
     [(3, 4, 3), (3, 4, 4)]),
    (squared_error_of, [4, 2], [(3, 4, 3), (3, 2, 4)])])
def test_blocks_form_for_each_layer_of_a_network_a_batch_goes_through(loss_of, sizes, blocks):
    random.seed(0)
    model = MLP(3, sizes)
    X = [[0.5, -1.0, 2.0], [1.5, 0.2, -0.3], [0.1, 0.2, 0.3]]
    loss = loss_of(model, X)
    # in backward()'s order the second layer's inputs, the first's activations, are made between
    # the examples' first layers; ordered by depth (a depth's dots first), every example's first
    # layer comes first, then every activation, then every second layer: each layer is a block
    step = engine.compile(loss)
    assert step._by_depth and step._blocks == blocks
    assert step._in_place == [(True, True)] * len(blocks)     # no gathering
    if sizes[-1] == 1:  # numbers as inputs become leaves of their own; rebuilt in place, the same
        assert engine.compile(engine.sum([model(row) for row in X]))._blocks == blocks
    plain = engine._compile_without_layers(loss)
    assert plain._blocks == [] and not plain._by_depth
    for x in walk(loss):
        if not x._children:
            x.grad = 0.0
    step.forward()
    step.backward()
    replayed = state(walk(loss))
    for x in walk(loss):
        if not x._children:
            x.grad = 0.0
    plain.forward()
    plain.backward()
    assert state(walk(loss)) == replayed            # in backward()'s order: the same bits


def test_a_tape_by_depth_raises_where_backwards_order_meets_the_first_bad_node():
    # In backward()'s order the log (of a negative number) comes before the exp (which
    # overflows); by depth the exp, two nodes further from the root, comes first. Replay raises
    # what it raised in backward()'s order, and leaves every Value as it was.
    x, y = Value(1.0), Value(1.0)
    root = y.log() + (x.exp() * 1.0) * 1.0
    step = engine.compile(root)
    assert step._by_depth
    x.data, y.data = 1000.0, -1.0
    before = state(walk(root))
    with pytest.raises(ValueError, match="replaying node"):
        step.forward()
    assert state(walk(root)) == before
    with pytest.raises(ValueError):
        engine._compile_without_layers(root).forward()
    x.data, y.data = 2.0, 3.0
    assert step.forward() == math.log(3.0) + math.exp(2.0) * 1.0 * 1.0


def test_layers_form_where_a_networks_neurons_are_and_nowhere_else():
    random.seed(0)
    model = MLP(3, [4, 4, 1])
    X = [[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]]
    loss = engine.sum([model(x) for x in X])
    # per example: 4 dots of 3 weights, 4 of 4 weights, each with 3 relus between in
    # backward()'s order (by depth, the relus come after the layer); the last layer's one dot
    # is no layer
    assert sorted(engine.compile(loss)._layers) == [(4, 0, 3)] * 2 + [(4, 0, 4)] * 2
    assert sorted(engine._compile_in_backward_order(loss)._layers) == \
        [(4, 3, 3)] * 2 + [(4, 3, 4)] * 2
    assert engine._compile_without_layers(loss)._layers == []
    x = Value(1.0)
    assert engine.compile((x * 2).tanh() + x)._layers == []
    shared = [Value(0.5)] * 3                       # the same weight in every dot: no layer
    xs = [Value(1.0), Value(2.0), Value(3.0)]
    assert engine.compile(engine.sum([engine.dot(shared, xs) for _ in range(4)]))._layers == []


RUN_OPS = [("ReLU", lambda x: x.relu()), ("tanh", lambda x: x.tanh()), ("exp", lambda x: x.exp()),
           ("log", lambda x: x.log()), ("sigmoid", lambda x: x.sigmoid()),
           ("**", lambda x: x ** 3), ("+", lambda x: x + 2.5), ("*", lambda x: x * -1.5),
           ("**", lambda x: 1.5 ** x)]


@pytest.mark.parametrize("name, op", RUN_OPS)
def test_a_run_of_one_op_replays_as_rebuilt(name, op):
    # 20 nodes of one unary op next to each other on the tape: replay does them in a loop of
    # their own (src/replay.pxi, find_runs); data and grads are a rebuilt graph's, bit for bit
    rng = random.Random(3)
    xs = [Value(rng.uniform(0.1, 2.0)) for _ in range(20)]
    ws = [Value(k + 1.0) for k in range(20)]
    root = engine.sum([op(x) * w for x, w in zip(xs, ws)]).relu()
    step = engine.compile(root)
    assert step._runs == [(name, 20)]
    for x in xs:
        x.data = rng.uniform(0.1, 2.0)
        x.grad = 0.5                                # leaves accumulate, as in backward()
    copies = [Value(x.data) for x in xs]
    for c in copies:
        c.grad = 0.5
    rebuilt = engine.sum([op(c) * Value(k + 1.0) for k, c in enumerate(copies)]).relu()
    assert bits(step.forward()) == bits(rebuilt.data)
    step.backward()
    rebuilt.backward()
    replay_matches_rebuilding(root, rebuilt)


def cross_entropy_batch(logits, targets, scale):
    # a batch's losses side by side (a run), then a log that raises where scale < 0
    losses = [engine.cross_entropy(z, t) for z, t in zip(logits, targets)]
    return (engine.sum(losses) * scale).log()


@pytest.mark.parametrize("form", ["class index", "one-hot Values", "soft Values"])
def test_a_run_of_cross_entropies_replays_as_rebuilt_and_after_an_error(form):
    # A run of cross-entropy nodes keeps each lse(z) from forward() for the sweep. Oracle: the
    # same graph built anew from the same numbers, bit for bit; and after a forward() that
    # raised, backward() must use the last good pass's numbers, lse included.
    rng = random.Random(3)

    def numbers():
        logits = [[rng.uniform(-3, 3) for _ in range(5)] for _ in range(10)]
        if form == "class index":
            targets = [rng.randrange(5) for _ in range(10)]
        elif form == "one-hot Values":
            targets = [[float(k == rng.randrange(5)) for k in range(5)] for _ in range(10)]
        else:
            targets = [[rng.uniform(0, 1) for _ in range(5)] for _ in range(10)]
        return logits, targets

    def build(logits, targets):
        zs = [[Value(z) for z in row] for row in logits]
        ts = targets if form == "class index" else [[Value(t) for t in row] for row in targets]
        scale = Value(1.0)
        return zs, ts, scale, cross_entropy_batch(zs, ts, scale)

    first, second = numbers(), numbers()
    zs, ts, scale, root = build(*first)
    step = engine.compile(root)
    assert ("cross_entropy", 10) in step._runs
    leaves = [z for row in zs for z in row] + ([] if form == "class index" else
                                                [t for row in ts for t in row])
    for row, new in zip(zs, second[0]):             # a forward() on the second numbers
        for z, x in zip(row, new):
            z.data = x
    if form != "class index":
        for row, new in zip(ts, second[1]):
            for t, x in zip(row, new):
                t.data = x
    second_zs, second_ts, _, rebuilt = build(second[0], second[1] if form != "class index"
                                             else first[1])
    assert bits(step.forward()) == bits(rebuilt.data)
    for x in leaves:
        x.grad = 0.0
    step.backward()
    rebuilt.backward()
    replay_matches_rebuilding(root, rebuilt)
    for row, new in zip(zs, first[0]):              # new logits, and a forward() that raises
        for z, x in zip(row, new):
            z.data = x + 1.0
    scale.data = -1.0
    with pytest.raises(ValueError, match="math domain error"):
        step.forward()
    for x in leaves + [scale]:
        x.grad = 0.0
    step.backward()                                 # the second numbers' pass, as kept
    assert [bits(z.grad) for row in zs for z in row] == \
        [bits(z.grad) for row in second_zs for z in row]


def test_a_run_that_raises_leaves_everything_as_it_was():
    xs = [Value(float(k + 1)) for k in range(20)]
    root = engine.sum([x.log() for x in xs])
    step = engine.compile(root)
    assert step._runs == [("log", 20)]
    everything = walk(root)
    xs[12].data = -1.0                              # log(-1): the run's 13th node raises
    before = state(everything)
    with pytest.raises(ValueError, match="math domain error .replaying node"):
        step.forward()
    assert state(everything) == before
    xs[12].data = 13.0
    assert bits(step.forward()) == bits(engine.sum([Value(float(k + 1)).log()
                                                    for k in range(20)]).data)

"""Every op code is handled by every path: building (Value's ops, dot, sum), backward(), replay,
and grad() with and without create_graph. Oracles: math for values, central finite differences
of the float formulas for first derivatives, and of the first derivative for second ones."""
import importlib.util
import math

import pytest

from micrograd_c import engine
from micrograd_c.engine import Value
from programs import OPS as PROGRAM_OPS
from programs import OURS

def held_max(a, b):
    """max(a, b) held constant near the test points, which have 3 decimals: what largest(z) is
    to the derivatives (the finite differences below move a and b by 1e-5 at most)."""
    return max(round(a, 3), round(b, 3))


# name: (how a node of the op is built from Values a and b, the same on floats)
OPS = {
    "LEAF": (lambda a, b: a, lambda a, b: a),
    "CUSTOM": (lambda a, b: Value(a.data * b.data, (a, b), "hand-made"), None),
    "ADD": (lambda a, b: a + b, lambda a, b: a + b),
    "MUL": (lambda a, b: a * b, lambda a, b: a * b),
    "POW": (lambda a, b: a ** b, lambda a, b: a ** b),
    "ADD_CONST": (lambda a, b: a + 2.5, lambda a, b: a + 2.5),
    "MUL_CONST": (lambda a, b: a * -1.5, lambda a, b: a * -1.5),
    "POW_CONST": (lambda a, b: a ** 2.5, lambda a, b: a ** 2.5),
    "RPOW_CONST": (lambda a, b: 2.5 ** a, lambda a, b: 2.5 ** a),
    "RELU": (lambda a, b: a.relu(), lambda a, b: max(0.0, a)),
    "TANH": (lambda a, b: a.tanh(), lambda a, b: math.tanh(a)),
    "EXP": (lambda a, b: a.exp(), lambda a, b: math.exp(a)),
    "LOG": (lambda a, b: a.log(), lambda a, b: math.log(a)),
    "SIGMOID": (lambda a, b: a.sigmoid(), lambda a, b: 1 / (1 + math.exp(-a))),
    "DOT": (lambda a, b: engine.dot([a, b, 2.0], [b, a, a], a),
            lambda a, b: a + a * b + b * a + 2.0 * a),
    "SUM": (lambda a, b: engine.sum([a, b, 1.5, a]), lambda a, b: a + b + 1.5 + a),
    "LOGSUMEXP": (lambda a, b: engine.logsumexp([a, b, 0.5, a * b]),
                  lambda a, b: math.log(math.exp(a) + math.exp(b) + math.exp(0.5)
                                        + math.exp(a * b))),
    "CROSS_ENTROPY": (lambda a, b: engine.cross_entropy([a, b, a * b], 1),
                      lambda a, b: math.log(math.exp(a) + math.exp(b) + math.exp(a * b)) - b),
    # the ops gradient graphs are made of (grad(create_graph=True)): the data-dependent factors
    # of relu's and the powers' derivatives
    "MUL_NO_NAN": (lambda a, b: engine._gradient_op("mul_no_nan", a, b), lambda a, b: a * b),
    "POW_MASK": (lambda a, b: engine._gradient_op("pow_mask", a, b),
                 lambda a, b: 0.0 if a == 0 and b >= 0 else 1.0),
    "STEP": (lambda a, b: engine._gradient_op("step", a), lambda a, b: 1.0 if a > 0 else 0.0),
    # log_softmax's parts (engine.log_softmax): largest(z) is held constant (no derivative) and
    # log_total(z) takes logsumexp's whole derivative, so on floats their max is a number that
    # does not move with a and b (rounded to the points' 3 decimals)
    "LARGEST": (lambda a, b: engine._gradient_op("largest", a, b), lambda a, b: held_max(a, b)),
    "LOG_TOTAL": (lambda a, b: engine._gradient_op("log_total", a, b),
                  lambda a, b: math.log(math.exp(a - held_max(a, b))
                                        + math.exp(b - held_max(a, b)))),
    "LOG_SOFTMAX": (lambda a, b: engine._gradient_op("log_softmax", a, b),
                    lambda a, b: b - math.log(math.exp(a) + math.exp(b))),
    "CROSS_ENTROPY one-hot": (
        lambda a, b: engine.cross_entropy([a, b, 0.3], [b, 1.0, a]),
        lambda a, b: sum(t * (math.log(math.exp(a) + math.exp(b) + math.exp(0.3)) - z)
                         for z, t in zip([a, b, 0.3], [b, 1.0, a]))),
}
POINTS = [(0.7, 1.3), (1.9, -0.6), (0.4, 2.0)]


def test_every_op_code_is_listed_here():
    codes = {engine._op_code(build(Value(0.5), Value(0.5))) for build, _ in OPS.values()}
    missing = set(range(engine._N_OPS)) - codes
    assert not missing, f"op codes {missing} have no row in OPS, tests/test_ops.py"


def test_every_op_a_user_builds_is_in_the_random_programs():
    # the fuzz, replay and gradient-graph tests draw their graphs from tests/programs.py
    def codes(node):
        seen, todo = set(), [node]
        while todo:
            v = todo.pop()
            seen.add(engine._op_code(v))
            todo.extend(v._prev)
        return seen

    def code(name):
        return engine._op_code(OPS[name][0](Value(0.5), Value(0.5)))

    drawn = set().union(*(codes(on_values(Value(0.5), Value(0.7), 1.5, OURS))
                          for on_values, _ in PROGRAM_OPS.values()))
    not_built_by_users = {code(name) for name in ("LEAF", "CUSTOM", "MUL_NO_NAN", "POW_MASK",
                                                  "STEP", "LOG_SOFTMAX")}
    missing = {name for name in OPS if code(name) not in drawn | not_built_by_users}
    assert not missing, f"{missing} have no row in OPS, tests/programs.py"


@pytest.mark.parametrize("name", OPS)
def test_every_op_has_upstreams_op_string(name):
    node = OPS[name][0](Value(0.5), Value(0.5))
    try:
        spelled = node._op
    except KeyError:
        pytest.fail(f"{name} has no name in OP_NAMES, src/engine.pyx")
    assert isinstance(spelled, str) and (spelled or name == "LEAF")


def first_derivatives(f, a, b, h=1e-6):
    return ((f(a + h, b) - f(a - h, b)) / (2 * h), (f(a, b + h) - f(a, b - h)) / (2 * h))


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("point", POINTS)
def test_every_path_handles_the_op(name, point):
    build, on_floats = OPS[name]
    a, b = Value(point[0]), Value(point[1])
    out = build(a, b)
    # building: the op's value
    expected = out.data if on_floats is None else on_floats(*point)
    assert out.data == pytest.approx(expected, rel=1e-14), "value: src/ops.pxi, its section"
    # backward()
    (out * 1.0).backward()
    grads = (a.grad, b.grad)
    if on_floats is None:
        assert grads == (0.0, 0.0)                  # hand-made: no gradient, as upstream
    elif name != "LEAF":
        assert grads == pytest.approx(first_derivatives(on_floats, *point), rel=1e-6,
                                      abs=1e-8), "derivatives: src/ops.pxi, its section"
    # grad(), as floats and as a graph: backward()'s numbers
    floats = engine.grad(out * 1.0, [a, b])
    graph = engine.grad(out * 1.0, [a, b], create_graph=True)
    assert [g.data for g in floats] == list(grads), "grad(): src/grad.pxi"
    assert [g.data for g in graph] == list(grads), "src/grad.pxi, value_derivatives"
    # second derivatives: grad() of the gradient graph against finite differences of the first
    if on_floats is not None:
        def first(x, y):
            xa, yb = Value(x), Value(y)
            return engine.grad(build(xa, yb) * 1.0, [xa, yb])
        for k in range(2):
            second = [g.data for g in engine.grad(graph[k], [a, b])]
            numeric = first_derivatives(lambda x, y: first(x, y)[k].data, *point, h=1e-5)
            assert second == pytest.approx(numeric, rel=1e-5, abs=1e-6), (
                "second derivatives: src/grad.pxi, value_derivatives", k, second, numeric)
    # replay: new leaf data gives a rebuilt graph's data and grads
    step = engine.compile(out * 1.0)
    new = (point[0] * 1.1, point[1] * 0.9)
    a.data, b.data = new
    a.grad = b.grad = 0.0
    step.forward()
    step.backward()
    fresh_a, fresh_b = Value(new[0]), Value(new[1])
    rebuilt = build(fresh_a, fresh_b) * 1.0
    rebuilt.backward()
    if on_floats is None:                           # hand-made: no formula, its data is kept
        assert step.root.data == out.data
    else:
        assert step.root.data == rebuilt.data, "replay's forward: src/replay.pxi"
    if name != "LEAF":                              # a LEAF's "node" is a itself
        assert (a.grad, b.grad) == (fresh_a.grad, fresh_b.grad), "replay: src/replay.pxi"


# -- removable points: a derivative's limit, multiplied into the gradient like any other ---------

# (name, builds out from a and b, (a, b), the local derivatives there by hand: their limits;
# None where out does not depend on b)
REMOVABLE = [
    ("a ** 0 at 0", lambda a, b: a ** 0, (0.0, 1.0), (0.0, None)),
    ("a ** b at (0, 0)", lambda a, b: a ** b, (0.0, 0.0), (0.0, 0.0)),
    ("a ** b at (0, 2)", lambda a, b: a ** b, (0.0, 2.0), (0.0, 0.0)),
    ("a ** b at (2, 0)", lambda a, b: a ** b, (2.0, 0.0), (0.0, math.log(2.0))),
    ("0 ** a at 0", lambda a, b: 0.0 ** a, (0.0, 1.0), (0.0, None)),
    ("0 ** a at 1", lambda a, b: 0.0 ** a, (1.0, 1.0), (0.0, None)),
    ("relu(a) at -1", lambda a, b: a.relu(), (-1.0, 1.0), (0.0, None)),
]


def gradient_by_every_path(build, point, incoming):
    """(a.grad, b.grad) of incoming * out through backward(), replay, grad() and
    grad(create_graph=True), so that `out` receives the gradient `incoming`."""
    a, b, g = Value(point[0]), Value(point[1]), Value(incoming)
    root = build(a, b) * g
    paths = {"grad": tuple(d.data for d in engine.grad(root, [a, b])),
             "grad graph": tuple(d.data for d in engine.grad(root, [a, b], create_graph=True))}
    root.backward()
    paths["backward"] = (a.grad, b.grad)
    a.grad = b.grad = 0.0
    step = engine.compile(root)
    step.forward()
    step.backward()
    paths["replay"] = (a.grad, b.grad)
    return paths


@pytest.mark.parametrize("incoming", [3.0, math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("name,build,point,limits", REMOVABLE, ids=[r[0] for r in REMOVABLE])
def test_a_derivative_at_a_removable_point_is_its_limit_times_the_gradient(name, build, point,
                                                                           limits, incoming):
    # 0 times a finite gradient is 0; times inf or nan it is nan, as torch computes it and as
    # every other zero derivative (x * 0, an inactive relu) is multiplied
    expected = tuple(0.0 if d is None else d * incoming for d in limits)
    for path, got in gradient_by_every_path(build, point, incoming).items():
        for x, y in zip(got, expected):
            assert x == y or math.isnan(x) and math.isnan(y), (path, got, expected)


# Where torch masks the product with the gradient (not the derivative) to 0: d/da a ** b at
# b == 0, and relu; there an infinite or nan gradient gives 0 in torch, nan here (README).
TORCH_MASKS = {"a ** 0 at 0": "a", "a ** b at (0, 0)": "a", "a ** b at (2, 0)": "a",
               "relu(a) at -1": "a"}


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("incoming", [3.0, math.inf, math.nan])
@pytest.mark.parametrize("name,build,point,limits", REMOVABLE, ids=[r[0] for r in REMOVABLE])
def test_removable_points_follow_torch_but_where_it_masks_the_product(name, build, point, limits,
                                                                      incoming):
    import torch
    a, b = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in point)
    out = torch.relu(a) if "relu" in name else build(a, b)
    (out * incoming).backward()
    expected = [0.0 if t.grad is None else t.grad.item() for t in (a, b)]
    ours = gradient_by_every_path(build, point, incoming)["backward"]
    if name in TORCH_MASKS and not math.isfinite(incoming):
        assert expected[0] == 0.0 and math.isnan(ours[0])
        expected[0] = ours[0]
    for x, y in zip(ours, expected):
        assert x == y or math.isnan(x) and math.isnan(y), (ours, expected)

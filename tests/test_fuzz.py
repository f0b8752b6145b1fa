"""Property fuzzing: random graphs over every op, with numbers that include 0, -0.0, tiny, huge,
inf and NaN, reused nodes and constants on both sides.

Oracles: Python's own floats and math module for every forward value and every exception;
upstream micrograd for the gradients of its ops; finite differences for the gradients of all
ops on well-conditioned numbers; torch for all gradients where it is installed.

Examples per test: MICROGRAD_C_EXAMPLES (default 200), the same ones every run unless
MICROGRAD_C_HYPOTHESIS=random (tests/conftest.py). The long run, new examples each time:
    MICROGRAD_C_HYPOTHESIS=random MICROGRAD_C_EXAMPLES=20000 python -m pytest tests/test_fuzz.py
"""
import importlib.util
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from helpers import close, examples, same_float
from micrograd_c.engine import Value
from programs import BUILTIN, OPS, OURS, UPSTREAM_OPS, fsum, programs, run, torch_fused

UValue = pytest.importorskip("micrograd.engine", reason="upstream micrograd is an oracle").Value

fuzz = settings(max_examples=examples(200), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

EDGES = [0.0, -0.0, 5e-324, -5e-324, 1e-300, 1e-8, 0.5, 1.0, -1.0, 2.0, -3.0, 1e8, 1e300,
         -1e300, 1.7976931348623157e308, math.inf, -math.inf, math.nan]
extreme = st.one_of(st.sampled_from(EDGES), st.floats(), st.integers(-4, 4))
moderate = st.floats(0.5, 2.0)


def run_in_domain(leaves, program):
    """Our nodes and root after backward(), or skip the example where an op refused its input."""
    try:
        nodes, root = run(leaves, program, Value, OURS)
    except (ValueError, ZeroDivisionError, OverflowError):
        assume(False)
    root.backward()
    return nodes, root


def run_floats(leaves, program):
    """The program on plain floats; returns (values, None) or (None, exception type). The root
    is a left fold of float additions, as a sum of Values is: the built-in sum() of floats is
    compensated from Python 3.12 (sum([1.0, 5e-324, -1.0]) is 5e-324 there, 0.0 before)."""
    values = [float(x) for x in leaves]
    try:
        for op, i, j, c in program:
            values.append(float(OPS[op][1](values[i], values[j], c)))
        values.append(fsum(values[len(leaves):]))
    except (ValueError, ZeroDivisionError, OverflowError) as error:
        return None, type(error)
    return values, None


def rounding_scale(grads, numbers):
    """How large the rounding in backward may be. Gradients are sums of contributions, which are
    products of local derivatives, which are products and ratios of the graph's numbers (1/x,
    c * x**(c-1), ...). Contributions of 1e103 that cancel to a true gradient of 1 can round to
    0 or 2 depending on the order they are added in, and any order is right. So the scale is
    the largest gradient times the widest ratio among the numbers: tight when numbers are near
    1, loose when a graph mixes 1e-104 and 1e103, as floating point is."""
    widest = 1.0
    for v in numbers:
        if math.isfinite(v) and v != 0:
            widest = max(widest, abs(v), 1 / abs(v))
    biggest = max([1.0] + [abs(g) for g in grads if math.isfinite(g)])
    return biggest * widest * widest


def grads_agree(ours, theirs, scale, rel):
    if math.isfinite(ours) and math.isfinite(theirs):
        return abs(ours - theirs) <= rel * max(abs(theirs), scale)
    # NaN and infinity come out the same whatever the order of addition, unless finite
    # contributions overflowed on the way, which needs numbers near the edge of the range
    return close(ours, theirs) or scale > 1e100


# ---------------------------------------------------------------------------------------------

@fuzz
@given(programs(OPS, extreme))
def test_forward_values_and_errors_follow_python_floats(case):
    leaves, program = case
    expected, error = run_floats(leaves, program)
    if error is not None:
        with pytest.raises(error):
            run(leaves, program, Value, OURS)
        return
    nodes, root = run(leaves, program, Value, OURS)
    got = [n.data for n in nodes] + [root.data]
    assert all(same_float(a, b) for a, b in zip(got, expected)), (got, expected)
    root.backward()                      # never raises, whatever the numbers


@fuzz
@given(programs(UPSTREAM_OPS, extreme))
def test_gradients_follow_upstream_on_extreme_numbers(case):
    leaves, program = case
    # d/dx x**0 is 0 here, as in torch; upstream computes 0 * x**-1, which is NaN at inf/NaN
    assume(not any(op == "pow_c" and c == 0 for op, _, _, c in program))
    try:
        unodes, uroot = run(leaves, program, UValue, BUILTIN)
        assume(not any(isinstance(n.data, complex) for n in unodes))
        uroot.backward()
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        assume(False)        # upstream raised, or its Python pow failed inside backward()
    assume(not any(isinstance(n.grad, complex) for n in unodes))
    nodes, root = run(leaves, program, Value, OURS)
    root.backward()
    numbers = [n.data for n in nodes] + [c for _, _, _, c in program]
    scale = rounding_scale([n.grad for n in unodes], numbers)
    for ours, theirs in zip(nodes, unodes):
        assert grads_agree(ours.grad, theirs.grad, scale, 1e-9), (ours, theirs, scale)


@fuzz
@given(programs(OPS.keys() - {"relu"}, moderate, max_ops=6))
def test_gradients_follow_finite_differences(case):
    leaves, program = case
    nodes, root = run_in_domain(leaves, program)
    assume(math.isfinite(root.data) and abs(root.data) < 1e6)
    # b ** x has no derivative in x for b <= 0 (our NaN, like torch's, is the honest answer)
    assume(not any((op == "pow_v" and nodes[i].data <= 0) or (op == "c_pow" and c <= 0)
                   for op, i, _, c in program))
    # an infinite local derivative on the way (sqrt of (x - x) at 0: inf - inf is NaN, as in
    # torch) is a point finite differences can't speak to
    assume(all(math.isfinite(n.grad) for n in nodes))
    for k, x in enumerate(leaves):
        def central_difference(h):
            up, down = list(leaves), list(leaves)
            up[k], down[k] = x + h, x - h
            f_up, f_down = run_floats(up, program)[0], run_floats(down, program)[0]
            assume(f_up is not None and f_down is not None)
            return (f_up[-1] - f_down[-1]) / (2 * h)
        h = 1e-6 * max(1.0, abs(x))
        numeric, finer = central_difference(h), central_difference(h / 4)
        scale = max(1.0, abs(numeric), abs(nodes[k].grad))
        # near a pole (1 / (1 - x) at x = 0.99999) the difference itself is off: where two step
        # sizes disagree, it is no oracle
        assume(abs(numeric - finer) <= 1e-5 * scale)
        assert abs(nodes[k].grad - numeric) <= 1e-4 * scale, (k, nodes[k].grad, numeric)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@fuzz
@given(programs(OPS, extreme))
def test_gradients_follow_torch(case):
    import torch
    leaves, program = case
    nodes, root = run_in_domain(leaves, program)
    # relu's gradient is (out > 0) * grad, as upstream's: at a NaN input it is 0 where torch
    # passes the gradient on, and through a relu that is off an infinite or NaN gradient gives
    # NaN where torch masks it to 0
    made = nodes[len(leaves):]
    assume(not any(op == "relu" and (math.isnan(nodes[i].data) or made[k].data <= 0 and
                                     not math.isfinite(made[k].grad))
                   for k, (op, i, _, _) in enumerate(program)))
    # d/dx x ** y at y == 0 is 0, multiplied into the gradient as every derivative is, so an
    # infinite or NaN gradient gives NaN; torch masks the product there and gives 0 (README)
    assume(not any(op in ("pow_c", "pow_v") and (c if op == "pow_c" else nodes[j].data) == 0
                   and not math.isfinite(made[k].grad)
                   for k, (op, _, j, c) in enumerate(program)))
    # d/dx x**c at x = -0.0 for a fractional c < 1: ours is c * pow(-0.0, c - 1) = +inf (C99's
    # pow, as Python's math.pow), torch's kernel gives -inf
    assume(not any(op == "pow_c" and nodes[i].data == 0 and math.copysign(1, nodes[i].data) < 0
                   and c < 1 and math.isfinite(c) and c != math.floor(c)
                   for op, i, _, c in program))

    # cross-entropy and log_softmax with a logit of +inf are logsumexp(z) - z[c] here, as
    # engine.logsumexp (torch's too) gives it, with softmax's limits as their gradient; torch's
    # log_softmax subtracts inf from inf and gives NaN throughout (README)
    def softmax_op(op):
        return op.startswith("cross_entropy") or op == "log_softmax"
    assume(not any(softmax_op(op) and math.inf in (nodes[i].data, nodes[j].data, c)
                   for op, i, j, c in program))
    # an infinite gradient arriving at a cross-entropy or log_softmax is multiplied into each
    # logit's local derivative (p - 1 at the class: the limit, +-inf); torch's log-softmax
    # backward takes g - p * sum(g) there instead: inf - inf, NaN (README)
    assume(not any(softmax_op(op) and not math.isfinite(made[k].grad)
                   for k, (op, _, _, _) in enumerate(program)))

    def tensor(x):
        return torch.tensor(float(x), dtype=torch.float64, requires_grad=True)

    tnodes, troot = run(leaves, program, tensor, torch_fused())
    for t in tnodes:
        if not t.is_leaf:
            t.retain_grad()
    troot.backward()
    tgrads = [0.0 if t.grad is None else t.grad.item() for t in tnodes]
    scale = rounding_scale(tgrads, [n.data for n in nodes] + [c for _, _, _, c in program])
    for ours, tgrad in zip(nodes, tgrads):
        # torch's own formulas differ from ours in the last bits (sigmoid, tanh): 1e-7
        assert grads_agree(ours.grad, tgrad, scale, 1e-7), (ours, tgrad, scale)

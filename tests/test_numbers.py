"""Numbers and numpy arrays meeting Values. Oracles: the same op with float(number) as the
operand (Python's own floats), upstream micrograd on the same graph, and float() itself."""
import decimal
import fractions
import math
import operator
import re
import sys

import numpy as np
import pytest

from helpers import close
from micrograd_c import engine
from micrograd_c.engine import Value

micrograd = pytest.importorskip("micrograd.engine", reason="upstream micrograd is the oracle")
UValue = micrograd.Value

# Every kind of number Python's floats take in an op, including ones whose own arithmetic
# differs from float arithmetic (uint8 wraps when negated, int64 refuses negative powers,
# float32 rounds, Fraction is exact).
NUMBERS = [True, False, 3, -2, 2**70, fractions.Fraction(1, 3), 0.5,
           np.bool_(True), np.bool_(False),
           np.int8(-5), np.int16(7), np.int32(-9), np.int64(2), np.uint8(5), np.uint16(7),
           np.uint32(9), np.uint64(2**63 + 5),
           np.float16(1.5), np.float32(1.1), np.float64(-2.25)]

# (name, op on (value, number)): the number on either side, every operator
OPS = [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
       ("truediv", operator.truediv), ("pow", operator.pow),
       ("radd", lambda v, n: n + v), ("rsub", lambda v, n: n - v), ("rmul", lambda v, n: n * v),
       ("rtruediv", lambda v, n: n / v), ("rpow", lambda v, n: abs(n) ** v)]


def outcome(op, x, number, Value=Value):
    """(data, grad of the Value) of op(Value(x), number), or the exception type it raises."""
    v = Value(x)
    try:
        out = op(v, number)
        out.backward()          # upstream's backward may raise too (its pow at 0)
    except (ArithmeticError, ValueError, TypeError) as error:
        return type(error)
    return out.data, v.grad


def same(a, b):
    if isinstance(a, type) or isinstance(b, type):
        return a is b
    return all(math.isnan(p) and math.isnan(q) or p == q for p, q in zip(a, b))


@pytest.mark.parametrize("name,op", OPS)
@pytest.mark.parametrize("number", NUMBERS, ids=repr)
@pytest.mark.parametrize("x", [10.0, -3.0, 0.0])
def test_a_number_in_an_op_is_its_float(name, op, number, x):
    ours = outcome(op, x, number)
    as_float = outcome(op, x, float(number))
    assert type(ours) is type(as_float) and same(ours, as_float), (ours, as_float)
    # upstream builds the same nodes when given the float
    theirs = outcome(op, x, float(number), UValue)
    if not isinstance(theirs, type) and not any(isinstance(t, complex) for t in theirs):
        assert not isinstance(ours, type)
        assert ours[0] == theirs[0] and close(ours[1], theirs[1], rel=1e-15)


def test_numpy_scalars_act_as_their_float_where_their_own_arithmetic_differs():
    assert (Value(10) - np.uint8(5)).data == 5.0                  # not 261.0: -uint8 wraps
    assert (Value(10) / np.uint8(2)).data == 5.0                  # no OverflowError
    assert (Value(10) / np.int64(2)).data == 5.0                  # no ValueError
    assert (Value(10) / np.float32(1.5)).data == (Value(10) / 1.5).data
    assert (Value(10) / np.float32(1.1)).data == (Value(10) / float(np.float32(1.1))).data
    assert Value(np.bool_(True)).data == 1.0
    assert isinstance(np.bool_(True) * Value(3), Value) and (np.bool_(True) * Value(3)).data == 3


def test_numbers_too_big_for_a_float_raise_as_floats_do():
    for op in (operator.add, operator.mul, operator.sub, operator.truediv):
        with pytest.raises(OverflowError):
            op(1.0, 10**400)
        with pytest.raises(OverflowError):
            op(Value(1.0), 10**400)


OPERATORS = (operator.add, operator.sub, operator.mul, operator.truediv, operator.pow)


@pytest.mark.parametrize("other", ["x", b"1", None, [1.0], decimal.Decimal(1), object()],
                         ids=repr)
def test_what_floats_refuse_in_an_op_is_refused(other):
    for op in OPERATORS:
        with pytest.raises(TypeError):
            op(1.0, other)
        with pytest.raises(TypeError):
            op(Value(1.0), other)
        with pytest.raises(TypeError):
            op(other, Value(1.0))


def test_complex_numbers_are_refused():
    # floats would give a complex number; a Value never holds one
    for op in OPERATORS:
        for number in (1j, np.complex128(1j)):
            with pytest.raises(TypeError):
                op(Value(1.0), number)


class HasFloat:
    def __float__(self):
        return 2.5


class HasIndex:
    def __index__(self):
        return 7


@pytest.mark.parametrize("x", [3, True, 2**80, fractions.Fraction(3, 7), decimal.Decimal("0.1"),
                               np.float32(0.1), np.uint64(2**64 - 1), np.bool_(False),
                               np.array(2.5), np.array(3, dtype=np.int8), HasFloat(), HasIndex(),
                               float("inf"), float("nan")], ids=repr)
def test_value_takes_what_float_takes(x):
    v = Value(x)
    assert type(v.data) is float and (v.data == float(x) or math.isnan(v.data))


@pytest.mark.parametrize("x", ["1.5", b"1.5", None, [1.0], object()], ids=repr)
def test_value_refuses_what_is_not_a_number(x):
    message = f"Value() argument must be a real number, not '{type(x).__name__}'"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        Value(x)


def test_value_refuses_an_array_as_float_does():
    # numpy's own TypeError, whose wording changes with numpy's version
    with pytest.raises(TypeError) as expected:
        float(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match=f"^{re.escape(str(expected.value))}$"):
        Value(np.array([1.0, 2.0]))


def test_value_refuses_complex_with_floats_message_on_3_9_and_its_own_from_3_10():
    # Python 3.9's complex has a __float__ that raises, so Value(1j) says what float(1j) says
    # there; from 3.10 complex has none, and Value names the type as for any other non-number.
    if sys.version_info < (3, 10):
        message = "can't convert complex to float"
    else:
        message = "Value() argument must be a real number, not 'complex'"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        Value(1j)


def test_a_sum_of_values_is_the_left_fold_where_builtin_sum_of_floats_is_compensated_from_3_12():
    # The built-in sum() of floats adds with Neumaier's compensation from Python 3.12; of
    # Values it is a left fold of +, as upstream's, on every version: so is engine.sum.
    floats = [1.0, 5e-324, -1.0]
    left_fold = (0.0 + 1.0 + 5e-324) + -1.0
    assert left_fold == 0.0
    assert sum(floats) == (5e-324 if sys.version_info >= (3, 12) else left_fold)
    assert sum(Value(x) for x in floats).data == left_fold
    assert engine.sum(floats).data == left_fold
    assert engine.sum([Value(x) for x in floats]).data == left_fold


def test_value_refuses_ints_too_big_for_a_float():
    with pytest.raises(OverflowError):
        Value(10**400)


# -- numpy arrays: numpy applies the op element by element -------------------------------------

def both(values):
    return np.array([Value(x) for x in values]), np.array([UValue(x) for x in values])


def check(ours, theirs, our_leaves, their_leaves):
    """Same data for every output, and the same grads of the leaves after backward."""
    ours, theirs = np.atleast_1d(ours).ravel(), np.atleast_1d(theirs).ravel()
    assert [o.data for o in ours] == pytest.approx([t.data for t in theirs], rel=1e-15)
    engine.sum(list(ours)).backward()
    total = theirs[0]
    for t in theirs[1:]:
        total = total + t
    total.backward()
    assert [v.grad for v in our_leaves] == pytest.approx([v.grad for v in their_leaves], rel=1e-15)


# What micrograd_c computes, and how upstream computes the same: upstream's `v * array` wraps
# the whole array in one Value, so there the oracle is the op element by element.
EXPRESSIONS = {
    "x * v": None, "x + v": None, "x - v": None, "x / v": None, "x ** 2": None, "-x": None,
    "2.0 - x": None, "x * 3": None, "np.float64(2.0) * x": None, "W @ x": None,
    "np.dot(x, x)": None, "np.sum(x)": None, "x.sum()": None, "np.outer(x, x)": None,
    "W * v": None, "W + x": None, "np.tanh(1) * x": None, "np.array([1.5, -2.0]) * v": None,
    "np.arange(2) + v": None,
    "v * x": "np.array([v * e for e in x])", "v + x": "np.array([v + e for e in x])",
    "v - x": "np.array([v - e for e in x])", "v / x": "np.array([v / e for e in x])",
    "v * np.array([1.5, -2.0])": "np.array([v * 1.5, v * -2.0])",
}


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_object_arrays_of_values_match_upstream(expression):
    x, ux = both([1.5, -2.0])
    W, uW = both([0.5, -1.0, 2.0, 3.0])
    W, uW = W.reshape(2, 2), uW.reshape(2, 2)
    v, uv = Value(3.0), UValue(3.0)
    ours = eval(expression, {"np": np, "x": x, "W": W, "v": v})
    theirs = eval(EXPRESSIONS[expression] or expression, {"np": np, "x": ux, "W": uW, "v": uv})
    check(ours, theirs, list(x) + list(W.ravel()) + [v], list(ux) + list(uW.ravel()) + [uv])


def test_mean_over_an_object_array():
    # upstream can't: np.mean divides its sum by an np.int64, and upstream raises int64 ** -1
    x = np.array([Value(1.0), Value(2.0), Value(4.0)])
    m = np.mean(x)
    assert isinstance(m, Value)
    u = [UValue(1.0), UValue(2.0), UValue(4.0)]
    expected = (u[0] + u[1] + u[2]) / 3.0
    m.backward()
    expected.backward()
    assert m.data == expected.data and [v.grad for v in x] == [v.grad for v in u]


def test_a_numpy_scalar_times_a_value_is_a_value():
    for scalar in (np.float64(2.0), np.float32(2.0), np.int64(2), np.uint8(2), np.bool_(True)):
        for out in (scalar * Value(3.0), Value(3.0) * scalar, scalar + Value(3.0),
                    scalar - Value(3.0), scalar / Value(3.0), scalar ** Value(1.0)):
            assert type(out) is Value


def test_zero_d_arrays_in_ops_give_values_like_floats():
    for op in (operator.add, operator.sub, operator.mul, operator.truediv, operator.pow):
        for a, b in ((Value(10.0), np.array(2.0)), (np.array(2.0), Value(10.0))):
            out = op(a, b)
            assert type(out) is Value
            expected = op(*(Value(10.0) if isinstance(o, Value) else 2.0 for o in (a, b)))
            assert out.data == expected.data

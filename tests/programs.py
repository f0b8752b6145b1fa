"""Random programs over every op, for the fuzz and replay tests: each op spelled on Values and
on plain floats (the oracle), a hypothesis strategy that draws programs, and an interpreter."""
import math

from hypothesis import strategies as st

from micrograd_c import engine

# -- the float oracle: Python's float and math semantics, and ValueError where Python's pow
#    would return a complex number -----------------------------------------------------------

def fpow(a, b):
    # Python's float ** goes complex for a finite negative base and a finite fractional
    # exponent (and may overflow doing so); the contract is math.pow's ValueError there.
    if a < 0 and math.isfinite(a) and math.isfinite(b) and b != math.floor(b):
        raise ValueError("negative number to a fractional power")
    return float(a ** b)


def fsigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def fsum(items):
    total = 0.0
    for item in items:
        total = total + item
    return total


def fshift(items):
    # engine.logsumexp's parts (src/ops.pxi, Shift): the largest (nan if any is), then log1p
    # of exp(z - largest) added in turn for all but the (first) largest (0 if it is not finite)
    largest, top = -math.inf, 0
    for i, z in enumerate(items):
        if math.isnan(z):
            return z, 0.0
        if z > largest:
            largest, top = z, i
    if math.isinf(largest):
        return largest, 0.0
    return largest, math.log1p(fsum(math.exp(z - largest) for i, z in enumerate(items)
                                    if i != top))


def flogsumexp(items):
    largest, log_total = fshift(items)
    return largest + log_total


def flog_softmax(items, k):
    # z[k] - lse(z) as the engine computes it, without lse's rounding
    largest, log_total = fshift(items)
    return (items[k] - largest) - log_total


class Fused:
    """How each kind of operand spells the fused ops: floats, Values, upstream, torch.
    logsumexp(items), cross_entropy(items, a class index or one target per item) and
    log_softmax(items) (a list) are for the engines that have them."""

    def __init__(self, dot, sum, logsumexp=None, cross_entropy=None, log_softmax=None):
        self.dot = dot
        self.sum = sum
        self.logsumexp = logsumexp
        self.cross_entropy = cross_entropy
        self.log_softmax = log_softmax


def fcross_entropy(zs, target):
    # engine.cross_entropy's: -log_softmax(z)[target] for a class index, else for targets t,
    # sum(t[i] * -log_softmax(z)[i]) added in turn
    if isinstance(target, int):
        return -flog_softmax(zs, target)
    return fsum(t * -flog_softmax(zs, i) for i, t in enumerate(target))


FLOAT = Fused(lambda ws, xs, b: fsum([b] + [w * x for w, x in zip(ws, xs)]), fsum, flogsumexp,
              fcross_entropy, lambda zs: [flog_softmax(zs, i) for i in range(len(zs))])
OURS = Fused(engine.dot, engine.sum, engine.logsumexp, engine.cross_entropy, engine.log_softmax)
BUILTIN = Fused(lambda ws, xs, b: sum((w * x for w, x in zip(ws, xs)), b), sum)


def torch_fused():
    """The fused ops on 0-d float64 tensors (torch must be installed): dot and sum as sums of
    tensors, logsumexp and cross_entropy as torch's, on the stacked items."""
    import torch

    def stack(items):
        return torch.stack([t if isinstance(t, torch.Tensor) else
                            torch.tensor(float(t), dtype=torch.float64) for t in items])

    return Fused(BUILTIN.dot, BUILTIN.sum, lambda zs: torch.logsumexp(stack(zs), 0),
                 lambda zs, t: torch.nn.functional.cross_entropy(
                     stack(zs).unsqueeze(0),
                     torch.tensor([t]) if isinstance(t, int) else stack(t).unsqueeze(0)),
                 lambda zs: list(torch.log_softmax(stack(zs), 0).unbind()))


# name: (on Values, on floats). x, y are nodes, c a number. The Value side uses only what
# micrograd_c, upstream (for UPSTREAM_OPS) and torch tensors all spell the same way.
OPS = {
    "add": (lambda x, y, c, f: x + y, lambda x, y, c: x + y),
    # a - b is a + (-b), as upstream defines it: the same value, but -(int 0) is +0, so the
    # sign of a zero result follows upstream rather than plain float subtraction
    "sub": (lambda x, y, c, f: x - y, lambda x, y, c: x + (-y)),
    "mul": (lambda x, y, c, f: x * y, lambda x, y, c: x * y),
    "div": (lambda x, y, c, f: x / y, lambda x, y, c: x * fpow(y, -1)),
    "add_c": (lambda x, y, c, f: x + c, lambda x, y, c: x + c),
    # a number becomes a float before the op (so -int 0 is -0.0, as for floats)
    "sub_c": (lambda x, y, c, f: x - c, lambda x, y, c: x + (-float(c))),
    "mul_c": (lambda x, y, c, f: x * c, lambda x, y, c: x * c),
    "div_c": (lambda x, y, c, f: x / c, lambda x, y, c: x * fpow(c, -1)),
    "c_add": (lambda x, y, c, f: c + x, lambda x, y, c: c + x),
    "c_sub": (lambda x, y, c, f: c - x, lambda x, y, c: c + (-x)),
    "c_mul": (lambda x, y, c, f: c * x, lambda x, y, c: c * x),
    "c_div": (lambda x, y, c, f: c / x, lambda x, y, c: c * fpow(x, -1)),
    "neg": (lambda x, y, c, f: -x, lambda x, y, c: -x),
    "relu": (lambda x, y, c, f: x.relu(), lambda x, y, c: 0.0 if x < 0 else x),
    "pow_c": (lambda x, y, c, f: x ** c, lambda x, y, c: fpow(x, c)),
    "sum3": (lambda x, y, c, f: sum([x, y, x]), lambda x, y, c: fsum([x, y, x])),
}
UPSTREAM_OPS = set(OPS)
OPS.update({
    "tanh": (lambda x, y, c, f: x.tanh(), lambda x, y, c: math.tanh(x)),
    "exp": (lambda x, y, c, f: x.exp(), lambda x, y, c: math.exp(x)),
    "log": (lambda x, y, c, f: x.log(), lambda x, y, c: math.log(x)),
    "sigmoid": (lambda x, y, c, f: x.sigmoid(), lambda x, y, c: fsigmoid(x)),
    "pow_v": (lambda x, y, c, f: x ** y, lambda x, y, c: fpow(x, y)),
    "c_pow": (lambda x, y, c, f: c ** x, lambda x, y, c: fpow(c, x)),
    "dot": (lambda x, y, c, f: f.dot([x, y, x], [y, c, x], c),
            lambda x, y, c: FLOAT.dot([x, y, x], [y, c, x], c)),
    "dot_value_bias": (lambda x, y, c, f: f.dot([c, y], [x, y], x),
                       lambda x, y, c: FLOAT.dot([c, y], [x, y], x)),
    "fused_sum": (lambda x, y, c, f: f.sum([x, y, c, x]), lambda x, y, c: fsum([x, y, c, x])),
    "logsumexp": (lambda x, y, c, f: f.logsumexp([x, y, c]),
                  lambda x, y, c: flogsumexp([x, y, c])),
    "cross_entropy": (lambda x, y, c, f: f.cross_entropy([x, c, y], 2),
                      lambda x, y, c: fcross_entropy([x, c, y], 2)),
    "cross_entropy_targets": (lambda x, y, c, f: f.cross_entropy([x, y, c], [y, c, x]),
                              lambda x, y, c: fcross_entropy([x, y, c], [y, c, x])),
    "log_softmax": (lambda x, y, c, f: f.log_softmax([x, c, y])[2],
                    lambda x, y, c: flog_softmax([x, c, y], 2)),
})


@st.composite
def programs(draw, ops, numbers, max_ops=12):
    leaves = draw(st.lists(numbers, min_size=1, max_size=4))
    program = []
    for k in range(draw(st.integers(1, max_ops))):
        size = len(leaves) + k
        program.append((draw(st.sampled_from(sorted(ops))), draw(st.integers(0, size - 1)),
                        draw(st.integers(0, size - 1)), draw(numbers)))
    return leaves, program


def run(leaves, program, leaf, fused):
    """Builds the program on Values; returns (nodes, root) or raises what an op raised."""
    nodes = [leaf(x) for x in leaves]
    for op, i, j, c in program:
        nodes.append(OPS[op][0](nodes[i], nodes[j], c, fused))
    return nodes, sum(nodes[len(leaves):])

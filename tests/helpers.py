"""Shared by the tests: tolerant comparison, a tiny interpreter for random expression graphs,
and the number of examples property tests draw."""
import contextlib
import gc
import math
import os
import sys
import tracemalloc


def examples(default):
    """Examples per property test: `default`, or MICROGRAD_C_EXAMPLES when set (fewer under
    valgrind, 10,000 for the long fuzzing run)."""
    return int(os.environ.get("MICROGRAD_C_EXAMPLES", default))


def same_float(a, b):
    """Bit-for-bit equal, but for NaN payloads: same value and the same sign of zero."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def close(a, b, rel=1e-9, abs_=1e-9):
    """Equal within tolerance; nan equals nan, and infinities must match exactly."""
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


# Each op takes (x, y, c): two nodes of the graph and a number. They use only operators and
# methods that upstream micrograd, micrograd_c and torch tensors all spell the same way.
UPSTREAM_OPS = {
    "add": lambda x, y, c: x + y,
    "sub": lambda x, y, c: x - y,
    "mul": lambda x, y, c: x * y,
    "div": lambda x, y, c: x / y,
    "add_const": lambda x, y, c: x + c,
    "sub_const": lambda x, y, c: x - c,
    "mul_const": lambda x, y, c: x * c,
    "div_const": lambda x, y, c: x / c,
    "const_add": lambda x, y, c: c + x,
    "const_sub": lambda x, y, c: c - x,
    "const_mul": lambda x, y, c: c * x,
    "const_div": lambda x, y, c: c / x,
    "neg": lambda x, y, c: -x,
    "relu": lambda x, y, c: x.relu(),
    "pow": lambda x, y, c: x ** c,
    "sum": lambda x, y, c: sum([x, y, x]),
}
EXTRA_OPS = {
    "tanh": lambda x, y, c: x.tanh(),
    "exp": lambda x, y, c: x.exp(),
    "log": lambda x, y, c: x.log(),
    "sigmoid": lambda x, y, c: x.sigmoid(),
    "pow_value": lambda x, y, c: x ** y,
    "const_pow": lambda x, y, c: abs(c) ** x,
}
ALL_OPS = {**UPSTREAM_OPS, **EXTRA_OPS}


def build(leaf, leaves, program, ops=ALL_OPS):
    """Builds the graph of `program` ([(op, i, j, c)]) over leaves made by `leaf`; returns
    (nodes, root), where root is the sum of every node made, so that all of them get a grad."""
    nodes = [leaf(x) for x in leaves]
    for op, i, j, c in program:
        nodes.append(ops[op](nodes[i], nodes[j], c))
    made = nodes[len(leaves):]
    return nodes, sum(made) if made else nodes[0] * 1.0


def traced_growth(work, repeats):
    """Bytes still held after `repeats` calls to work(), against the state after the first
    call: what Python's allocator and numpy's hold (tracemalloc), and every Value still alive
    at its size. (Values live in slabs, which tracemalloc sees whole: a few leaked Values
    would hide in a slab, but never from the engine's own count.)"""
    from micrograd_c import engine
    node_bytes = sys.getsizeof(engine.Value(0.0))
    tracemalloc.start()
    try:
        work()
        gc.collect()
        baseline, nodes = tracemalloc.get_traced_memory()[0], engine._live_nodes()
        for _ in range(repeats):
            work()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - baseline
        return held + (engine._live_nodes() - nodes) * node_bytes
    finally:
        tracemalloc.stop()


@contextlib.contextmanager
def block_kernels(name):
    """Replayed blocks use the kernels `name` (engine._kernel_sets()) inside the with."""
    from micrograd_c import engine
    previous = engine._use_kernels(name)
    try:
        yield
    finally:
        engine._use_kernels(previous)

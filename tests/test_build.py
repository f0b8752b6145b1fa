"""The built extension: what setup.py decides per compiler and C library. Oracles: the C
library this process has loaded (/proc/self/maps), Python's own floats (which round every
product before adding it) and float **."""
import random
import struct
import sys

from micrograd_c import engine
from micrograd_c.engine import Value


# -- numbers to the bit whatever the platform ---------------------------------------------------

def loaded_c_library():
    """'glibc' or 'musl' if this process runs on one (Linux), else None: what is loaded, not
    what setup.py inferred when it built the engine."""
    if not sys.platform.startswith("linux"):
        return None
    with open("/proc/self/maps") as maps:
        mapped = maps.read()
    if "/ld-musl-" in mapped or "/libc.musl-" in mapped:
        return "musl"
    if "/libc.so.6" in mapped or "/libc-2." in mapped:
        return "glibc"
    return None


def test_the_pow_shortcut_is_built_only_where_pow_is_known_to_err_by_at_most_054_ulp():
    # power()'s exact shortcuts for x ** -1 and x ** -2 give pow's own bits only where pow
    # errs by at most 0.54 ulp: glibc's and musl's. Elsewhere (macOS, Windows' UCRT, another C
    # library) the build must call pow itself.
    assert engine._POW_SHORTCUT == (loaded_c_library() in ("glibc", "musl")), loaded_c_library()


def double(bits):
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def bits(x):
    return struct.pack("<d", x)


def test_power_gives_the_bits_of_float_pow_at_its_edges_and_in_every_binade():
    # tests/test_ops.py checks random doubles; these are where a shortcut can go wrong: the
    # edges of its ranges (1e-150, 1e150 for ** -1, 1e-75, 1e75 for ** -2) and of the normal
    # range, powers of two and their neighbours, and every binade's random mantissas.
    rng = random.Random(16)
    xs = []
    for edge in (1e-150, 1e150, 1e-75, 1e75, 2.0 ** -1022, 1.0, 2.0, 0.5, 3.0):
        (center,) = struct.unpack("<Q", struct.pack("<d", edge))
        xs += [double(center + k) for k in range(-2_000, 2_001)]
    xs += [double((rng.randrange(1, 2047) << 52) | rng.getrandbits(52)) for _ in range(450_000)]
    xs += [2.0 ** e for e in range(-1074, 1024)]
    checked = 0
    for x in xs:
        for x in (x, -x):
            for b in (-1.0, -2.0):
                try:
                    expected = x ** b                 # Python's float **: the C library's pow
                except (OverflowError, ZeroDivisionError):
                    continue
                assert bits(engine._power(x, b)) == bits(expected), (x, b)
                checked += 1
    assert checked > 1_000_000


# a * b rounds to 1.0 (the exact 1 - 2**-54 is a tie, to even), so a * b - 1 is 0.0 with two
# roundings and -2**-54 with one (a fused multiply-add)
A, B = 1.0 + 2.0 ** -27, 1.0 - 2.0 ** -27


def test_forward_products_are_rounded_before_they_are_added():
    assert A * B - 1.0 == 0.0                                    # Python: two roundings
    assert engine.dot([A], [B], -1.0).data == 0.0
    assert engine.dot([Value(A)], [Value(B)], Value(-1.0)).data == 0.0
    rng = random.Random(3)
    for _ in range(2_000):
        ws = [rng.uniform(-2, 2) for _ in range(5)]
        xs = [rng.uniform(-2, 2) for _ in range(5)]
        bias = rng.uniform(-2, 2)
        expected = bias
        for w, x in zip(ws, xs):
            expected = expected + w * x
        assert bits(engine.dot(ws, xs, bias).data) == bits(expected)


def test_backward_rounds_each_contribution_before_adding_it_to_a_grad():
    # x.grad starts at -1, and backward() adds A * B into it: 0.0 as floats add, on every path
    for path in ("backward", "replay", "dot"):
        x, w, v = Value(1.0), Value(A), Value(B)
        y = engine.dot([x], [w]) * v if path == "dot" else x * w * v
        x.grad = -1.0
        if path == "replay":
            step = engine.compile(y)
            step.forward()
            step.backward()
        else:
            y.backward()
        assert x.grad == -1.0 + A * B == 0.0, (path, x.grad)


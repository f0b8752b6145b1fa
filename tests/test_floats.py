"""The exact-float helpers of src/floats.pxi against the plain float operations they replace:
each must give the very bits Python's floats give."""
import math
import random
import struct

from helpers import same_float
from micrograd_c import engine
from micrograd_c.engine import Value


def test_the_pow_shortcuts_give_pows_own_bits():
    # a ** -1, a ** -2, a ** 2 and a ** 1 take a shortcut (src/floats.pxi, power) that must be
    # libm's pow to the bit, as Python's float ** and math.pow are; random doubles of every
    # size, near 1, and odd integers whose squares are 54 bits long: exactly halfway between
    # two doubles (which pow decides); near them, up to 30-bit integers and their halves
    rng = random.Random(7)
    xs = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(200_000)]
    xs += [rng.uniform(-4, 4) for _ in range(200_000)] + [rng.uniform(0.999, 1.001)
                                                           for _ in range(50_000)]
    xs += [float(2 * rng.randrange(47_453_133, 67_108_864) + 1) for _ in range(20_000)]
    xs += [rng.randrange(1, 1 << 30) / rng.choice([1, 2, 1 << 20]) for _ in range(50_000)]
    xs += [math.inf, -math.inf, math.nan, 0.0, -0.0, 5e-324, 1e-300, 1e300]
    for x in xs:
        for b in (-1.0, -2.0, 2.0, 1.0):
            if b < 0 and (not math.isfinite(x) or x == 0):
                continue
            try:
                expected = math.pow(x, b)
            except OverflowError:
                continue
            assert same_float(engine._power(x, b), expected), (x, b)


def test_a_tiny_grad_times_a_derivative_is_the_float_product():
    # Products into grads below 2**-969 are made without multiplying by a subnormal number
    # (src/ops.pxi, times_grad): they must be the hardware's product to the bit, sign of zero
    # included. Random subnormal and tiny normal grads against derivatives of every size, and
    # ties (half-integer multiples of 2**-1074) that must round to even.

    def double(bits):
        return struct.unpack("<d", struct.pack("<Q", bits))[0]

    rng = random.Random(11)
    sign = [1.0, -1.0]
    grads = [rng.choice(sign) * double(rng.randrange(1, 2**52)) for _ in range(60_000)]
    grads += [rng.choice(sign) * double(rng.randrange(2**52, 54 << 52)) for _ in range(30_000)]
    derivatives = [double(rng.getrandbits(64)) for _ in range(30_000)]
    derivatives += [rng.uniform(-4, 4) for _ in range(60_000)]
    pairs = list(zip(derivatives, grads))
    pairs += [((rng.randrange(-2**20, 2**20) + 0.5) * 2.0 ** rng.randrange(-3, 3),
               double(2 * rng.randrange(2**30) + 1)) for _ in range(30_000)]
    pairs += [(d, g) for d in (0.0, -0.0, math.inf, -math.inf, math.nan, 1e300, 2.0 ** -1074)
              for g in grads[:100] + [0.0, -0.0, 2.0 ** -1074]]
    for d, g in pairs:
        assert struct.pack("<d", engine._times_grad(d, g)) == struct.pack("<d", d * g), (d, g)


def test_backward_through_subnormal_grads_matches_upstream():
    # a chain whose grads shrink through the subnormal range, on every path that multiplies
    # them: backward() through mul and dot nodes, and replay; upstream's mul nodes the oracle
    from micrograd.engine import Value as Upstream
    factors = [0.41 + k % 7 * 0.001 for k in range(815)]

    def build(V, dot_every):
        x = V(0.9)
        y = x
        for k, f in enumerate(factors):
            y = engine.dot([y], [V(f)]) if dot_every and k % dot_every == 0 else y * V(f)
        return x, y

    u, v = build(Upstream, 0)
    v.backward()
    assert 0 < abs(u.grad) < 2.0 ** -1022                  # the oracle went subnormal
    for dot_every in (0, 3):
        x, y = build(Value, dot_every)
        y.backward()
        assert struct.pack("<d", x.grad) == struct.pack("<d", u.grad)
        x.grad = 0.0
        step = engine.compile(y)
        step.forward()
        step.backward()
        assert struct.pack("<d", x.grad) == struct.pack("<d", u.grad)

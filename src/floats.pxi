# Exact-float helpers: faster ways to the very bits Python's floats give. The ops (ops.pxi) use
# them; each is tested against the plain float operation it replaces (tests/test_floats.py).
# They are pure C (nogil), so a debug build's line tracing never enters them.

cdef extern from "math.h":
    double NAN
    double INFINITY
    double fabs(double x) nogil
    double copysign(double x, double y) nogil


# a ** b is the C library's pow, as Python's float ** is (setup.py builds with -fno-builtin-pow:
# GCC would fold pow(x, -1.0) into 1.0 / x, which is not glibc's pow in 0.08% of doubles). Four
# exponents are everywhere (a / b is a * b**-1, as upstream, and its derivative has b**-2; a
# squared error has a**2, and its derivative a**1) and have a shortcut that gives pow's own
# result: a**1 is a; the others the nearest double to the exact value, computed with one
# multiplication or division, whenever the exact value is not within 0.46 ulp of the next
# double (a midpoint between two doubles, as a**2 can be exactly, goes to pow). pow
# errs by at most 0.54 ulp (glibc's and musl's pow, since 2018), so there it returns the
# nearest double too; elsewhere pow itself is called. Checked against pow on 4e8 doubles here
# (** -1 and ** -2; ** 2 and ** 1 on 1.4e6), and in tests/test_floats.py. Where the C library is not known to meet that bound (setup.py
# decides: glibc and musl do), power() is pow itself.
cdef extern from *:                     # 1 or 0, decided by setup.py (pow_is_correctly_bounded)
    const bint POW_IS_CORRECTLY_BOUNDED "MICROGRAD_C_POW_IS_CORRECTLY_BOUNDED"
_POW_SHORTCUT = POW_IS_CORRECTLY_BOUNDED   # for tests/test_build.py


cdef union Bits:
    double value
    unsigned long long bits


cdef inline double shortcut(double r, double error, double a, double b) noexcept nogil:
    # r is within an ulp of the exact a ** b, which lies `error` (estimated to ~2**-100 of r)
    # from it: the nearest double if pow must give that one, else pow's own result.
    cdef Bits exponent
    cdef double ulp, step
    exponent.value = r
    exponent.bits &= 0x7ff0000000000000ULL
    ulp = exponent.value * 2.220446049250313e-16
    if fabs(error) > 0.5 * ulp:         # two roundings left r the other neighbour
        step = copysign(ulp, error)
        r += step
        error -= step
        exponent.value = r
        exponent.bits &= 0x7ff0000000000000ULL
        ulp = exponent.value * 2.220446049250313e-16
    exponent.value = r
    if exponent.bits & 0xfffffffffffffULL == 0 or fabs(error) >= 0.45 * ulp:
        return c_pow(a, b)              # a power of two (the double below is nearer), or close
    return r


cdef inline double product_error(double x, double y, double p) noexcept nogil:
    # x * y - p exactly, where p is x * y rounded: Dekker's product, in plain arithmetic (fma()
    # is a library call on baseline x86-64). Exact while |x|, |y| < 2**995 and |p| > 2**-960.
    cdef double xs = 134217729.0 * x, ys = 134217729.0 * y    # Veltkamp's split, 2**27 + 1
    cdef double xh = xs - (xs - x), yh = ys - (ys - y)
    cdef double xl = x - xh, yl = y - yh
    return ((xh * yh - p) + xh * yl + xl * yh) + xl * yl


@cython.cdivision(True)                 # divides only by an a or s far from 0
cdef inline double power(double a, double b) noexcept nogil:
    # 1 - x r is exact where r is 1 / x rounded: (1 - x r rounded, exact as it is near 1) less
    # the product's rounding error.
    cdef double r, s, t, u
    if not POW_IS_CORRECTLY_BOUNDED:
        return c_pow(a, b)
    if b == -1.0 and 1e-150 < fabs(a) < 1e150:
        r = 1.0 / a
        u = a * r
        return shortcut(r, ((1.0 - u) - product_error(a, r, u)) * r, a, b)     # (1 - a r) r
    if b == -2.0 and 1e-75 < fabs(a) < 1e75:
        s = a * a
        t = product_error(a, a, s)                              # a * a == s + t exactly
        r = 1.0 / s
        u = s * r
        return shortcut(r, ((1.0 - u) - product_error(s, r, u) - r * t) * r, a, b)  # 1/(s+t) - r
    if b == 2.0 and 1e-75 < fabs(a) < 1e75:                    # a ** 2 (a squared error), and
        s = a * a                                               # its derivative 2 a ** 1:
        return shortcut(s, product_error(a, a, s), a, b)        # a * a == s + error exactly
    if b == 1.0:                        # exact, a double: pow (< 1 ulp off) gives a itself
        return a
    return c_pow(a, b)


# Grads shrink along long graphs and become subnormal numbers (below 2**-1022). An x86
# multiplication with a subnormal operand or result takes a microcode assist, ~20 ns where it
# otherwise takes 0.3 (additions take none): that was a third of replaying fastest_autograd's
# backward. So each local derivative is multiplied into a grad by times_grad(), which does the
# tiny case without such a multiplication, with the same result: the nearest double.
#
# The tiny case is called through a pointer, which the C compiler cannot see through: called
# directly, GCC inlined tiny_product into times_grad, which then grew too big to be inlined
# into backprop_node, and every edge of backward() paid a call (measured: the unfused demo
# step's backward 15.2 -> 10.1 ns per node, the step 0.92x the time).
cdef double (*tiny_product_call)(double, double) noexcept nogil   # tiny_product, set below

cdef inline double times_grad(double d, double g) noexcept nogil:
    # d * g
    if fabs(g) < 2.004168360008973e-292 and g != 0.0:     # 2**-969: d g may be subnormal
        return tiny_product_call(d, g)
    return d * g


cdef double tiny_product(double d, double g) noexcept nogil:
    # d * g for 0 < |g| < 2**-969. With g = G 2**-1074 (G from g's bits if g is subnormal),
    # d G = P + E exactly (Dekker's product), and if P < 2**53 the result is a subnormal number
    # or in the lowest binade, whose bits count multiples of 2**-1074: they are d G rounded to
    # an integer, to even on a tie. A normal result, and a d out of the range where this is
    # exact, take the multiplication itself.
    cdef Bits x
    cdef double G, P, E, R, D
    cdef unsigned long long sign
    x.value = g
    sign = x.bits & 0x8000000000000000ULL
    x.bits ^= sign
    if x.bits < 0x0010000000000000ULL:                   # subnormal
        G = <double>x.bits
    else:                                                   # times 2**1074 in two exact steps
        G = x.value * 8.98846567431158e+307 * 2251799813685248.0
    x.value = d
    sign ^= x.bits & 0x8000000000000000ULL
    x.bits ^= x.bits & 0x8000000000000000ULL
    P = x.value * G
    if not (x.value < 3.3484643974570854e+299 and 1.0 < P < 9007199254740992.0):
        return d * g        # |d| >= 2**995, inf or nan; or d g is normal, or below 2**-1074
    E = product_error(x.value, G, P)
    if P >= 4503599627370496.0:         # 2**52: P is an integer, the nearest one to d G
        R = P
    else:
        R = (P + 4503599627370496.0) - 4503599627370496.0  # P rounded to an integer, to even
        D = P - R                                           # exact: |D| <= 0.5, and |E| is
        if D == 0.5 and E > 0.0:                            # below half P's ulp, so only a
            R += 1.0                                        # tie of P can turn either way
        elif D == -0.5 and E < 0.0:
            R -= 1.0
    x.bits = <unsigned long long>R | sign
    return x.value


tiny_product_call = tiny_product

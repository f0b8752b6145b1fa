# The ops, defined once: each op's value, the checks that make it raise where Python's floats
# raise, and its local derivatives. Every path calls these: the ops that build nodes (Value's
# methods, dot, sum), backward(), and replay's forward and backward (src/replay.pxi). The one
# other place an op's derivatives are written is grad(create_graph=True), which builds them from
# Values (src/grad.pxi), in the same order as op_derivatives here.
#
# a and b are the data of a node's first and second child, c is the number kept in the node
# (node.state), out is the node's own value. The op codes are listed in micrograd_c/engine.pxd.

cdef extern from "math.h":
    double NAN
    double INFINITY
    double fabs(double x) nogil
    double copysign(double x, double y) nogil


@cython.linetrace(False)
@cython.profile(False)
cdef inline bint is_binary(unsigned char op) noexcept nogil:
    return ADD <= op <= POW


@cython.linetrace(False)
@cython.profile(False)
cdef inline bint is_unary(unsigned char op) noexcept nogil:
    return ADD_CONST <= op <= SIGMOID


# a ** b is the C library's pow, as Python's float ** is (setup.py builds with -fno-builtin-pow:
# GCC would fold pow(x, -1.0) into 1.0 / x, which is not glibc's pow in 0.08% of doubles). Two
# exponents are everywhere (a / b is a * b**-1, as upstream, and its derivative has b**-2) and
# have a shortcut that gives pow's own result: the nearest double to the exact value, computed
# with one division, whenever the exact value is not within 0.46 ulp of the next double. pow
# errs by at most 0.54 ulp (glibc's and musl's pow, since 2018), so there it returns the
# nearest double too; elsewhere pow itself is called. Checked against pow on 4e8 doubles here,
# and in tests/test_ops.py.
cdef extern from *:                     # 1 or 0, decided by setup.py (pow_is_correctly_bounded)
    const bint POW_IS_CORRECTLY_BOUNDED "MICROGRAD_C_POW_IS_CORRECTLY_BOUNDED"
_POW_SHORTCUT = POW_IS_CORRECTLY_BOUNDED   # for tests/test_build.py


cdef union Bits:
    double value
    unsigned long long bits


@cython.linetrace(False)
@cython.profile(False)
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


@cython.linetrace(False)
@cython.profile(False)
cdef inline double product_error(double x, double y, double p) noexcept nogil:
    # x * y - p exactly, where p is x * y rounded: Dekker's product, in plain arithmetic (fma()
    # is a library call on baseline x86-64). Exact while |x|, |y| < 2**995 and |p| > 2**-960.
    cdef double xs = 134217729.0 * x, ys = 134217729.0 * y    # Veltkamp's split, 2**27 + 1
    cdef double xh = xs - (xs - x), yh = ys - (ys - y)
    cdef double xl = x - xh, yl = y - yh
    return ((xh * yh - p) + xh * yl + xl * yh) + xl * yl


@cython.cdivision(True)
@cython.linetrace(False)
@cython.profile(False)
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
    return c_pow(a, b)


# Grads shrink along long graphs and become subnormal numbers (below 2**-1022). An x86
# multiplication with a subnormal operand or result takes a microcode assist, ~20 ns where it
# otherwise takes 0.3 (additions take none): that was a third of replaying fastest_autograd's
# backward. So each local derivative is multiplied into a grad by times_grad(), which does the
# tiny case without such a multiplication, with the same result: the nearest double.
@cython.linetrace(False)
@cython.profile(False)
cdef inline double times_grad(double d, double g) noexcept nogil:
    # d * g
    if fabs(g) < 2.004168360008973e-292 and g != 0.0:     # 2**-969: d g may be subnormal
        return tiny_product(d, g)
    return d * g


@cython.linetrace(False)
@cython.profile(False)
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


@cython.linetrace(False)
@cython.profile(False)
cdef inline double sigmoid(double x) noexcept nogil:
    # 1 / (1 + exp(-x)) without overflow for large -x
    cdef double e
    if x >= 0.0:
        return 1.0 / (1.0 + exp(-x))
    e = exp(x)
    return e / (1.0 + e)


@cython.cdivision(True)
@cython.linetrace(False)
@cython.profile(False)
cdef inline double op_value(unsigned char op, double a, double b, double c) noexcept nogil:
    # The value of a unary or binary op, in IEEE arithmetic (inf and nan, never an error).
    if op == ADD:                       # a + b
        return a + b
    elif op == MUL:                     # a * b
        return a * b
    elif op == POW:                     # a ** b
        return power(a, b)
    elif op == ADD_CONST:               # a + c
        return a + c
    elif op == MUL_CONST:               # a * c
        return a * c
    elif op == POW_CONST:               # a ** c
        return power(a, c)
    elif op == RPOW_CONST:              # c ** a
        return power(c, a)
    elif op == RELU:                    # max(0, a), as upstream: relu(-0.0) is -0.0
        return 0.0 if a < 0 else a
    elif op == TANH:
        return tanh(a)
    elif op == EXP:
        return exp(a)
    elif op == LOG:
        return log(a)
    elif op == SIGMOID:
        return sigmoid(a)
    return NAN


# Where Python's floats and math raise instead of giving inf or nan.
cdef enum OpError:
    NO_ERROR
    ZERO_TO_NEGATIVE_POWER              # ZeroDivisionError
    NEGATIVE_TO_FRACTIONAL_POWER        # ValueError
    POW_OVERFLOW                        # OverflowError
    EXP_OVERFLOW                        # OverflowError
    LOG_DOMAIN                          # ValueError


@cython.linetrace(False)
@cython.profile(False)
cdef inline int pow_error(double a, double b, double out) noexcept nogil:
    # CPython's float ** float; its nan and inf cases are C99's pow
    if isfinite(a) and isfinite(b):
        if a == 0.0 and b < 0.0:
            return ZERO_TO_NEGATIVE_POWER
        if a < 0.0 and b != floor(b):
            return NEGATIVE_TO_FRACTIONAL_POWER
        if isinf(out):
            return POW_OVERFLOW
    return NO_ERROR


@cython.linetrace(False)
@cython.profile(False)
cdef inline int op_error(unsigned char op, double a, double b, double c, double out) noexcept nogil:
    # Each error's op gives inf or nan there (0 ** -1 is inf, (-1) ** 0.5 nan, log(0) -inf):
    # a finite value is never one, and needs no second dispatch on the op.
    if isfinite(out):
        return NO_ERROR
    if op == POW:
        return pow_error(a, b, out)
    elif op == POW_CONST:
        return pow_error(a, c, out)
    elif op == RPOW_CONST:
        return pow_error(c, a, out)
    elif op == EXP:
        return EXP_OVERFLOW if isinf(out) and isfinite(a) else NO_ERROR
    elif op == LOG:
        return LOG_DOMAIN if a <= 0.0 else NO_ERROR   # nan passes, as in math.log
    return NO_ERROR


cdef int raise_op_error(int error, str where) except -1:
    # The exception Python's floats or math raise for `error`; `where` names the op, or is ''.
    message = {
        ZERO_TO_NEGATIVE_POWER: "0.0 cannot be raised to a negative power",
        NEGATIVE_TO_FRACTIONAL_POWER: "negative number cannot be raised to a fractional power",
        POW_OVERFLOW: "(34, 'Numerical result out of range')",
        EXP_OVERFLOW: "math range error",
        LOG_DOMAIN: "math domain error",
    }[error] + where
    if error == ZERO_TO_NEGATIVE_POWER:
        raise ZeroDivisionError(message)
    if error == POW_OVERFLOW or error == EXP_OVERFLOW:
        raise OverflowError(message)
    raise ValueError(message)


# Which children op_derivatives gave a derivative for. Where a formula gives 0 * inf at a
# removable point, the derivative is left out (its limit, 0, as in torch): d/da a**0 and, at
# a == 0, d/db a**b = a**b * log(a).
cdef enum:
    TO_A = 1
    TO_B = 2


@cython.cdivision(True)
@cython.linetrace(False)
@cython.profile(False)
cdef inline int op_derivatives(unsigned char op, double a, double b, double c, double out,
                               double* da, double* db) noexcept nogil:
    # d(out)/da into da[0] and d(out)/db into db[0] for a unary or binary op; returns which.
    cdef int which = 0
    if op == ADD:                       # a + b
        da[0] = 1.0
        db[0] = 1.0
        return TO_A | TO_B
    elif op == MUL:                     # a * b
        da[0] = b
        db[0] = a
        return TO_A | TO_B
    elif op == POW:                     # a ** b
        if b != 0.0:
            da[0] = b * power(a, b - 1.0)
            which = TO_A
        if not (a == 0.0 and b >= 0.0):
            db[0] = out * log(a)
            which |= TO_B
        return which
    elif op == ADD_CONST:               # a + c
        da[0] = 1.0
    elif op == MUL_CONST:               # a * c
        da[0] = c
    elif op == POW_CONST:               # a ** c
        if c == 0.0:
            return 0
        da[0] = c * power(a, c - 1.0)
    elif op == RPOW_CONST:              # c ** a: c**a * log(c), none where c == 0 <= a
        if c == 0.0 and a >= 0.0:
            return 0
        da[0] = out * log(c)
    elif op == RELU:                    # as upstream: (out > 0), so relu(nan) passes nan on
        da[0] = out > 0
    elif op == TANH:
        da[0] = 1.0 - out * out
    elif op == EXP:
        da[0] = out
    elif op == LOG:                     # 1 / a, as a ** -1 (upstream's reciprocal: a pow node)
        da[0] = power(a, -1.0)
    elif op == SIGMOID:
        da[0] = out * (1.0 - out)
    else:
        return 0
    return TO_A


# -- n-ary ops: over a node's children, wherever they are --------------------------------------
# A Value's children are in its children tuple; on replay's tape they are indices into arrays
# of values and grads. Each n-ary formula is written once, over either (a fused type).

cdef struct TupleChildren:
    PyObject** items                    # the children tuple's items (borrowed)

cdef struct TapeChildren:
    const int* index                    # the children's positions on the tape
    const double* values
    double* grads

ctypedef fused Children:
    TupleChildren
    TapeChildren


@cython.linetrace(False)
@cython.profile(False)
cdef inline double child_data(Children children, Py_ssize_t i) noexcept:
    if Children is TupleChildren:
        return (<Value>children.items[i]).data
    else:
        return children.values[children.index[i]]


@cython.linetrace(False)
@cython.profile(False)
cdef inline void add_to_grad(Children children, Py_ssize_t i, double g) noexcept:
    if Children is TupleChildren:
        (<Value>children.items[i]).grad += g
    else:
        children.grads[children.index[i]] += g


@cython.linetrace(False)
@cython.profile(False)
cdef inline double logsumexp_of(Children children, Py_ssize_t n) noexcept:
    # log(sum(exp(z[i]))) over the first n children, with the largest subtracted inside the
    # exps, so that logits of 1e3 don't overflow; -inf for none, inf if one is inf.
    cdef Py_ssize_t i
    cdef double largest = -INFINITY, total = 0.0
    for i in range(n):
        if child_data(children, i) > largest:
            largest = child_data(children, i)
    if isinf(largest):
        return largest
    for i in range(n):
        total += exp(child_data(children, i) - largest)
    return largest + log(total)


@cython.cdivision(True)                 # n // 2 of a size: no floor-division code
@cython.linetrace(False)
@cython.profile(False)
cdef inline double nary_value(unsigned char op, Children children, Py_ssize_t n,
                              double c) noexcept:
    # The value of an n-ary op over its n children.
    cdef Py_ssize_t i, m = n // 2
    cdef double total, lse
    if op == DOT:                       # bias + sum(w[i] * x[i]): children w..., x..., bias?
        total = child_data(children, 2 * m) if n % 2 else c     # c: a number bias, or 0
        for i in range(m):
            total += child_data(children, i) * child_data(children, m + i)
        return total
    elif op == SUM:                     # sum(v[i])
        total = 0.0
        for i in range(n):
            total += child_data(children, i)
        return total
    elif op == LOGSUMEXP:
        return logsumexp_of(children, n)
    elif op == CROSS_ENTROPY:
        if c >= 0:                      # lse - z[c]
            return logsumexp_of(children, n) - child_data(children, <Py_ssize_t>c)
        lse = logsumexp_of(children, m)    # sum(t[i] * (lse - z[i])): children z[0..m), t[0..m)
        total = 0.0
        for i in range(m):
            total += child_data(children, m + i) * (lse - child_data(children, i))
        return total
    return NAN


@cython.cdivision(True)                 # n // 2 of a size: no floor-division code
@cython.linetrace(False)
@cython.profile(False)
cdef inline void nary_backprop(unsigned char op, Children children, Py_ssize_t n, double c,
                               double out, double g) noexcept:
    # Adds g times each local derivative into the children's grads.
    cdef Py_ssize_t i, m = n // 2
    cdef double lse, targets, softmax
    if op == DOT:                       # d/dw[i] = x[i], d/dx[i] = w[i], d/dbias = 1
        for i in range(m):
            add_to_grad(children, i, times_grad(child_data(children, m + i), g))
            add_to_grad(children, m + i, times_grad(child_data(children, i), g))
        if n % 2:
            add_to_grad(children, 2 * m, g)
    elif op == SUM:                     # d/dv[i] = 1
        for i in range(n):
            add_to_grad(children, i, g)
    elif op == LOGSUMEXP:               # d/dz[i] = softmax(z)[i] = exp(z[i] - out)
        for i in range(n):
            add_to_grad(children, i, times_grad(exp(child_data(children, i) - out), g))
    elif op == CROSS_ENTROPY:
        if c >= 0:                      # d/dz[i] = softmax(z)[i] - (i == c)
            lse = logsumexp_of(children, n)
            for i in range(n):
                softmax = exp(child_data(children, i) - lse)
                softmax -= 1.0 if i == <Py_ssize_t>c else 0.0
                add_to_grad(children, i, times_grad(softmax, g))
        else:                           # d/dz[i] = sum(t) * softmax(z)[i] - t[i]
            lse = logsumexp_of(children, m)    # d/dt[i] = lse - z[i]
            targets = 0.0
            for i in range(m):
                targets += child_data(children, m + i)
            for i in range(m):
                softmax = exp(child_data(children, i) - lse)
                add_to_grad(children, i, times_grad(targets * softmax - child_data(children, m + i), g))
            for i in range(m):
                add_to_grad(children, m + i, times_grad(lse - child_data(children, i), g))

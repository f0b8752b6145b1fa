# The ops, defined once. One section per op, in upstream's order and then the ops beyond it:
# its value, where it raises (as Python's floats and math raise), and its local derivatives.
# The dispatch at the end is the one place that maps an op code to its section; building
# (engine.pyx), backward() and replay (replay.pxi) all go through it, which is why they agree to
# the bit. grad(create_graph=True) writes the same derivatives with Value ops (grad.pxi,
# value_derivatives), case for case. To add an op, see the list in micrograd_c/engine.pxd.
#
# a and b are the data of a node's first and second child, c the number kept in the node
# (node.state), out the node's own value; d/da and d/db go to da[0] and db[0].
#
# Local derivatives are functions of the data, never a choice made once from the data at hand:
# a gradient graph replays like any other graph, so where a derivative depends on the data in
# another way than by arithmetic (relu's step, a power's removable points), that part is an op
# of its own (STEP, MUL_NO_NAN, POW_MASK, at the end).
#
# Everything here is pure C (nogil): a debug build's line tracing never enters it.

# Where Python's floats and math raise instead of giving inf or nan.
cdef enum OpError:
    NO_ERROR
    ZERO_TO_NEGATIVE_POWER              # ZeroDivisionError
    NEGATIVE_TO_FRACTIONAL_POWER        # ValueError
    POW_OVERFLOW                        # OverflowError
    EXP_OVERFLOW                        # OverflowError
    LOG_DOMAIN                          # ValueError


# -- a + b ---------------------------------------------------------------------------------------

cdef inline double add_value(double a, double b) noexcept nogil:
    return a + b

cdef inline void add_derivatives(double* da, double* db) noexcept nogil:
    da[0] = 1.0
    db[0] = 1.0


# -- a * b ---------------------------------------------------------------------------------------

cdef inline double mul_value(double a, double b) noexcept nogil:
    return a * b

cdef inline void mul_derivatives(double a, double b, double* da, double* db) noexcept nogil:
    da[0] = b
    db[0] = a


# -- a ** b: the C library's pow, as Python's float ** (floats.pxi: power) -----------------------

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

cdef inline void pow_derivatives(double a, double b, double out, double* da,
                                 double* db) noexcept nogil:
    # b * a ** (b - 1), which is 0 for b == 0 even where a ** -1 is inf; and a ** b * log(a),
    # taken as 0 where a == 0 <= b, as torch does (0 ** b is 0 for every b > 0)
    da[0] = mul_no_nan(power(a, b - 1.0), b)
    db[0] = mul_no_nan(out * log(a), pow_mask(a, b))


# -- relu(a): max(0, a), as upstream: relu(-0.0) is -0.0 and relu(nan) nan -----------------------

cdef inline double relu_value(double a) noexcept nogil:
    # 0.0 if a < 0 else a, without a branch (a network's relus take either side at random, and
    # a mispredicted branch costs more than the relu): a's bits, all cleared where a < 0
    cdef Bits x
    x.value = a
    x.bits &= <unsigned long long>(a < 0) - 1
    return x.value

cdef inline double relu_derivative(double out) noexcept nogil:
    return step_value(out)              # upstream's (out > 0): 0 for nan


# -- beyond upstream: a number c kept in the node instead of a leaf Value ------------------------
# a - b is a + (-b), a / b is a * b ** -1 and -a is a * -1, as upstream builds them.

cdef inline double add_const_value(double a, double c) noexcept nogil:        # a + c
    return a + c

cdef inline double mul_const_value(double a, double c) noexcept nogil:        # a * c
    return a * c

cdef inline double pow_const_derivative(double a, double c) noexcept nogil:   # a ** c
    return mul_no_nan(power(a, c - 1.0), c)         # c * a ** (c - 1): 0 for c == 0

cdef inline double rpow_const_derivative(double a, double c, double out) noexcept nogil:
    return mul_no_nan(out * log(c), pow_mask(c, a))     # c ** a: c ** a * log(c)


# -- tanh, exp, log, sigmoid ---------------------------------------------------------------------

cdef inline double tanh_derivative(double out) noexcept nogil:
    return 1.0 - out * out

cdef inline int exp_error(double a, double out) noexcept nogil:
    return EXP_OVERFLOW if isinf(out) and isfinite(a) else NO_ERROR

cdef inline int log_error(double a) noexcept nogil:
    return LOG_DOMAIN if a <= 0.0 else NO_ERROR     # nan passes, as in math.log

cdef inline double log_derivative(double a) noexcept nogil:
    return power(a, -1.0)               # 1 / a, as a ** -1 (upstream's reciprocal: a pow node)

@cython.cdivision(True)                 # by 1 + exp(...): at least 1 (or NaN), never 0
cdef inline double sigmoid_value(double a) noexcept nogil:
    # 1 / (1 + exp(-a)) without overflow for large -a
    cdef double e
    if a >= 0.0:
        return 1.0 / (1.0 + exp(-a))
    e = exp(a)
    return e / (1.0 + e)

cdef inline double sigmoid_derivative(double out) noexcept nogil:
    return out * (1.0 - out)


# -- the ops gradient graphs are made of, for what derivatives do beyond arithmetic --------------

cdef inline double mul_no_nan(double a, double b) noexcept nogil:
    # a * b, but 0 where b == 0, even if a is inf or nan: a derivative at a removable point.
    # Its derivatives are a * b's: b and a.
    return 0.0 if b == 0.0 else a * b

cdef inline double pow_mask(double a, double b) noexcept nogil:
    # where d/db a ** b is taken as 0 (a == 0 <= b): 0 there, else 1. Constant wherever it has
    # a derivative: none.
    return 0.0 if a == 0.0 and b >= 0.0 else 1.0

cdef inline double step_value(double a) noexcept nogil:
    # relu's derivative: 1 where a > 0, else 0 (nan too), without a branch (see relu_value).
    # No derivative (relu'' = 0).
    return <double>(a > 0.0)


# -- n-ary ops: over a node's children, wherever they are ----------------------------------------
# A Value's children are borrowed pointers (its children tuple's items, or its fields left and
# right copied into a pair); on replay's tape they are indices into arrays of values and grads.
# Each formula is written once, over either (a fused type).

cdef struct ValueChildren:
    PyObject** items                    # borrowed pointers to the children

cdef struct TapeChildren:
    const int* index                    # the children's positions on the tape
    const double* values
    double* grads

ctypedef fused Children:
    ValueChildren
    TapeChildren


cdef inline double child_data(Children children, Py_ssize_t i) noexcept nogil:
    if Children is ValueChildren:
        return (<Value>children.items[i]).data
    else:
        return children.values[children.index[i]]

cdef inline void add_to_grad(Children children, Py_ssize_t i, double g) noexcept nogil:
    cdef double* grad
    if Children is ValueChildren:
        grad = &(<Value>children.items[i]).grad     # a C field: no reference counting
    else:
        grad = &children.grads[children.index[i]]
    grad[0] += g


# -- dot(w, x, bias): bias + sum(w[i] * x[i]), one node for a whole neuron -----------------------
# Children w[0..m), x[0..m), then the bias if it is a Value (an odd count says so); a number
# bias is c (0 if none). The sum is upstream's order, bias first.

@cython.cdivision(True)                 # n // 2 of a size: no floor-division code
cdef inline double dot_value(Children children, Py_ssize_t n, double c) noexcept nogil:
    cdef Py_ssize_t i, m = n // 2
    cdef double total = child_data(children, 2 * m) if n % 2 else c
    for i in range(m):
        total += child_data(children, i) * child_data(children, m + i)
    return total

@cython.cdivision(True)                 # n // 2 of a size, as in dot_value
cdef inline void dot_backprop(Children children, Py_ssize_t n, double g) noexcept nogil:
    # d/dw[i] = x[i], d/dx[i] = w[i], d/dbias = 1
    cdef Py_ssize_t i, m = n // 2
    for i in range(m):
        add_to_grad(children, i, times_grad(child_data(children, m + i), g))
        add_to_grad(children, m + i, times_grad(child_data(children, i), g))
    if n % 2:
        add_to_grad(children, 2 * m, g)


# -- sum(v): d/dv[i] = 1 -------------------------------------------------------------------------

cdef inline double sum_value(Children children, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef double total = 0.0
    for i in range(n):
        total += child_data(children, i)
    return total

cdef inline void sum_backprop(Children children, Py_ssize_t n, double g) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        add_to_grad(children, i, g)


# -- logsumexp(z): log(sum(exp(z[i]))), and log_softmax ------------------------------------------
# lse(z) is largest + log_total: the largest logit, subtracted inside the exps so that logits of
# 1e3 don't overflow, and log_total = log(sum(exp(z[i] - largest))). Every formula below that
# needs z[i] - lse(z) computes it as (z[i] - largest) - log_total, as torch's log_softmax does:
# lse(z), rounded to the ulps of the largest logit, loses what is left of z[i] - lse(z) where
# one logit dominates (z = [30, 0]: -log_softmax[0] is 9.3576e-14, lse(z) - 30 is 9.237e-14),
# and derivatives of higher order multiply that loss (a softmax that a logit of 1,000
# dominates: the third derivative was 2.5e-7 off). A Shift is recomputed wherever it is needed
# (replay keeps those of cross-entropy runs, replay.pxi).

cdef struct Shift:
    double largest                      # the largest z[i]; nan if one is; -inf for none
    double log_total                    # log(sum(exp(z[i] - largest))); 0 unless largest is
                                        # finite

cdef inline double largest_of(Children children, Py_ssize_t n, Py_ssize_t* top) noexcept nogil:
    # The largest z[i], and the first i where it is; -inf for none, nan if one is nan (which no
    # comparison would pick as the largest).
    cdef Py_ssize_t i
    cdef double z, largest = -INFINITY
    top[0] = 0
    for i in range(n):
        z = child_data(children, i)
        if z > largest:
            largest = z
            top[0] = i
        elif isnan(z):
            return z
    return largest

cdef inline Shift shift_of(Children children, Py_ssize_t n) noexcept nogil:
    # Where the largest is not finite, log_total is 0 and lse(z) is the largest. Else log_total
    # is log1p of the others' exps, added in turn: the largest's is 1, and 1 + x would round x
    # away (a cross-entropy of 1e-17 where one logit leads by 39 would be 0).
    cdef Py_ssize_t i, top
    cdef double others = 0.0
    cdef Shift shift = Shift(largest_of(children, n, &top), 0.0)
    if not isfinite(shift.largest):
        return shift
    for i in range(n):
        if i != top:
            others += exp(child_data(children, i) - shift.largest)
    shift.log_total = log1p(others)
    return shift

cdef inline double log_softmax_of(Shift shift, double z) noexcept nogil:
    # z - lse(z), the log of z's softmax weight
    return (z - shift.largest) - shift.log_total

cdef inline double logsumexp_value(Children children, Py_ssize_t n) noexcept nogil:
    cdef Shift shift = shift_of(children, n)
    return shift.largest + shift.log_total

cdef inline void logsumexp_backprop(Children children, Py_ssize_t n, double g) noexcept nogil:
    # d/dz[i] = softmax(z)[i]
    cdef Py_ssize_t i
    cdef Shift shift = shift_of(children, n)
    for i in range(n):
        add_to_grad(children, i, times_grad(exp(log_softmax_of(shift, child_data(children, i))),
                                            g))


# -- largest(z) and log_total(z): lse(z)'s parts as nodes ---------------------------------------
# What log_softmax is made of (engine.log_softmax; the softmax in gradient graphs, grad.pxi):
# log_softmax(z)[i] = (z[i] - largest) - log_total, where only these two nodes have all of z as
# children (2n + 2 nodes of one or two children besides, not n nodes of n children). largest is
# held constant, a shift that log_softmax does not depend on: it passes no gradient on, and
# log_total passes on the whole derivative of lse(z), softmax(z). That is right only where
# they are subtracted together, as in log_softmax; nothing else makes them.

cdef inline double largest_value(Children children, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t top
    return largest_of(children, n, &top)

cdef inline double log_total_value(Children children, Py_ssize_t n) noexcept nogil:
    return shift_of(children, n).log_total


# -- log_softmax(z)[c]: (z[c] - largest) - log_total, as one node -------------------------------
# Made only by gradient graphs (grad.pxi, softmax_nodes), for a few logits: each node has all of
# z as children, but its derivative d/dz[i] = (i == c) - softmax(z)[i] comes in one piece. Made
# of largest and log_total instead, the 1 and the -softmax(z)[c] reach z[c] apart, in the sweep's
# order: where one logit saturates the softmax they are huge and nearly cancel, and the terms
# added between them lose their digits (a third derivative 2e-5 off, where this is exact).

cdef inline double log_softmax_value(Children children, Py_ssize_t n, double c) noexcept nogil:
    return log_softmax_of(shift_of(children, n), child_data(children, <Py_ssize_t>c))

cdef inline void log_softmax_backprop(Children children, Py_ssize_t n, double c,
                                      double g) noexcept nogil:
    cdef Py_ssize_t i
    cdef double d
    cdef Shift shift = shift_of(children, n)
    for i in range(n):
        d = -exp(log_softmax_of(shift, child_data(children, i)))
        if i == <Py_ssize_t>c:
            d += 1.0
        add_to_grad(children, i, times_grad(d, g))


# -- cross_entropy(z, target): -log(softmax(z)[target]) ------------------------------------------
# A class index c >= 0: -log_softmax(z)[c], with d/dz[i] = softmax(z)[i] - (i == c). For c < 0,
# targets t: children z[0..m), t[0..m), and sum(t[i] * -log_softmax(z)[i]), with
# d/dz[i] = sum(t) * softmax(z)[i] - t[i] and d/dt[i] = -log_softmax(z)[i].

@cython.cdivision(True)                 # n // 2 of a size, as in dot_value
cdef inline Shift cross_entropy_shift(Children children, Py_ssize_t n, double c) noexcept nogil:
    # what the value and the derivatives share (replay computes it once for both)
    return shift_of(children, n if c >= 0 else n // 2)

cdef inline double cross_entropy_value(Children children, Py_ssize_t n, double c) noexcept nogil:
    return cross_entropy_from(children, n, c, cross_entropy_shift(children, n, c))

@cython.cdivision(True)                 # n // 2 of a size, as in dot_value
cdef inline double cross_entropy_from(Children children, Py_ssize_t n, double c,
                                      Shift shift) noexcept nogil:
    cdef Py_ssize_t i, m = n // 2
    cdef double total = 0.0
    if c >= 0:
        return -log_softmax_of(shift, child_data(children, <Py_ssize_t>c))
    for i in range(m):
        total += child_data(children, m + i) * -log_softmax_of(shift, child_data(children, i))
    return total

cdef inline void cross_entropy_backprop(Children children, Py_ssize_t n, double c,
                                        double g) noexcept nogil:
    cross_entropy_backprop_from(children, n, c, cross_entropy_shift(children, n, c), g)

@cython.cdivision(True)                 # n // 2 of a size, as in dot_value
cdef inline void cross_entropy_backprop_from(Children children, Py_ssize_t n, double c,
                                             Shift shift, double g) noexcept nogil:
    cdef Py_ssize_t i, m = n // 2
    cdef double targets = 0.0, softmax
    if c >= 0:
        for i in range(n):
            softmax = exp(log_softmax_of(shift, child_data(children, i)))
            softmax -= 1.0 if i == <Py_ssize_t>c else 0.0
            add_to_grad(children, i, times_grad(softmax, g))
        return
    for i in range(m):
        targets += child_data(children, m + i)
    for i in range(m):
        softmax = exp(log_softmax_of(shift, child_data(children, i)))
        add_to_grad(children, i, times_grad(targets * softmax - child_data(children, m + i), g))
    for i in range(m):
        add_to_grad(children, m + i,
                    times_grad(-log_softmax_of(shift, child_data(children, i)), g))


# == Dispatch: an op code to its section ==========================================================
# The op codes of each kind are contiguous (engine.pxd); a kind ends where the next one begins.

cdef inline bint is_binary(unsigned char op) noexcept nogil:          # children a, b
    return ADD <= op < ADD_CONST

cdef inline bint is_unary(unsigned char op) noexcept nogil:           # child a, and c
    return ADD_CONST <= op < DOT

cdef inline bint has_formula(unsigned char op) noexcept nogil:        # all but LEAF, CUSTOM
    return op >= ADD

cdef inline bint keeps_tuple(unsigned char op) noexcept nogil:
    # n-ary and hand-made nodes keep their children as a tuple, in the node's field `right`
    return op >= DOT or op == CUSTOM


cdef inline double op_value(unsigned char op, double a, double b, double c) noexcept nogil:
    # The value of a unary or binary op, in IEEE arithmetic (inf and nan, never an error).
    if op == ADD:
        return add_value(a, b)
    elif op == MUL:
        return mul_value(a, b)
    elif op == POW:
        return power(a, b)
    elif op == MUL_NO_NAN:
        return mul_no_nan(a, b)
    elif op == POW_MASK:
        return pow_mask(a, b)
    elif op == ADD_CONST:
        return add_const_value(a, c)
    elif op == MUL_CONST:
        return mul_const_value(a, c)
    elif op == POW_CONST:
        return power(a, c)
    elif op == RPOW_CONST:
        return power(c, a)
    elif op == RELU:
        return relu_value(a)
    elif op == TANH:
        return tanh(a)
    elif op == EXP:
        return exp(a)
    elif op == LOG:
        return log(a)
    elif op == SIGMOID:
        return sigmoid_value(a)
    elif op == STEP:
        return step_value(a)
    return NAN


cdef inline int op_error(unsigned char op, double a, double b, double c,
                         double out) noexcept nogil:
    # Which error Python's floats or math raise for this op and value, or NO_ERROR. Each error's
    # op gives inf or nan there (0 ** -1 is inf, (-1) ** 0.5 nan, log(0) -inf): a finite value is
    # never one, and needs no second dispatch on the op.
    if isfinite(out):
        return NO_ERROR
    if op == POW:
        return pow_error(a, b, out)
    elif op == POW_CONST:
        return pow_error(a, c, out)
    elif op == RPOW_CONST:
        return pow_error(c, a, out)
    elif op == EXP:
        return exp_error(a, out)
    elif op == LOG:
        return log_error(a)
    return NO_ERROR


# Which children op_derivatives gave a derivative for: none for the ops that are constant
# wherever they have a derivative (POW_MASK, STEP). A derivative of 0 (a removable point, an
# inactive relu) is multiplied into the gradient like any other: 0 * inf is nan.
cdef enum:
    TO_A = 1
    TO_B = 2


cdef inline int op_derivatives(unsigned char op, double a, double b, double c, double out,
                               double* da, double* db) noexcept nogil:
    # d(out)/da into da[0] and d(out)/db into db[0] for a unary or binary op; returns which.
    if op == ADD:
        add_derivatives(da, db)
    elif op == MUL or op == MUL_NO_NAN:
        mul_derivatives(a, b, da, db)
    elif op == POW:
        pow_derivatives(a, b, out, da, db)
    elif op == ADD_CONST:
        da[0] = 1.0
        return TO_A
    elif op == MUL_CONST:
        da[0] = c
        return TO_A
    elif op == POW_CONST:
        da[0] = pow_const_derivative(a, c)
        return TO_A
    elif op == RPOW_CONST:
        da[0] = rpow_const_derivative(a, c, out)
        return TO_A
    elif op == RELU:
        da[0] = relu_derivative(out)
        return TO_A
    elif op == TANH:
        da[0] = tanh_derivative(out)
        return TO_A
    elif op == EXP:
        da[0] = out
        return TO_A
    elif op == LOG:
        da[0] = log_derivative(a)
        return TO_A
    elif op == SIGMOID:
        da[0] = sigmoid_derivative(out)
        return TO_A
    else:                               # POW_MASK, STEP
        return 0
    return TO_A | TO_B


cdef inline double nary_value(unsigned char op, Children children, Py_ssize_t n,
                              double c) noexcept nogil:
    if op == DOT:
        return dot_value(children, n, c)
    elif op == SUM:
        return sum_value(children, n)
    elif op == LOGSUMEXP:
        return logsumexp_value(children, n)
    elif op == CROSS_ENTROPY:
        return cross_entropy_value(children, n, c)
    elif op == LARGEST:
        return largest_value(children, n)
    elif op == LOG_TOTAL:
        return log_total_value(children, n)
    elif op == LOG_SOFTMAX:
        return log_softmax_value(children, n, c)
    return NAN


cdef inline void nary_backprop(unsigned char op, Children children, Py_ssize_t n, double c,
                               double out, double g) noexcept nogil:
    if op == DOT:
        dot_backprop(children, n, g)
    elif op == SUM:
        sum_backprop(children, n, g)
    elif op == LOGSUMEXP or op == LOG_TOTAL:
        logsumexp_backprop(children, n, g)
    elif op == CROSS_ENTROPY:
        cross_entropy_backprop(children, n, c, g)
    elif op == LOG_SOFTMAX:
        log_softmax_backprop(children, n, c, g)


# -- a node, whatever its kind: what backward(), replay and compile() share ----------------------

cdef inline double node_value(unsigned char op, Children children, Py_ssize_t n,
                              double c) noexcept nogil:
    if is_binary(op):
        return op_value(op, child_data(children, 0), child_data(children, 1), c)
    if is_unary(op):
        return op_value(op, child_data(children, 0), 0.0, c)
    return nary_value(op, children, n, c)


cdef inline int node_error(unsigned char op, Children children, double c,
                           double out) noexcept nogil:
    if is_binary(op):
        return op_error(op, child_data(children, 0), child_data(children, 1), c, out)
    if is_unary(op):
        return op_error(op, child_data(children, 0), 0.0, c, out)
    return NO_ERROR                     # the n-ary ops never raise


cdef inline int local_derivatives(unsigned char op, Children children, double c, double out,
                                  double* da, double* db) noexcept nogil:
    # op_derivatives for a unary or binary node
    return op_derivatives(op, child_data(children, 0),
                          child_data(children, 1) if is_binary(op) else 0.0, c, out, da, db)


cdef inline void send(Children children, int which, double da, double db,
                      double g) noexcept nogil:
    # the gradient g times the local derivatives, into the children named by `which`
    if which & TO_A:
        add_to_grad(children, 0, times_grad(da, g))
    if which & TO_B:
        add_to_grad(children, 1, times_grad(db, g))


cdef inline void node_backprop(unsigned char op, Children children, Py_ssize_t n, double c,
                               double out, double g) noexcept nogil:
    # One step of the chain rule: g = d(root)/d(node) times each local derivative, added into
    # each child's grad. IEEE arithmetic: never raises (1/0 is inf, as in torch).
    cdef double da, db
    cdef int which
    if is_binary(op) or is_unary(op):
        which = local_derivatives(op, children, c, out, &da, &db)
        send(children, which, da, db, g)
    elif has_formula(op):
        nary_backprop(op, children, n, c, out, g)


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

# The engine's C-level contract: the node layout, the op codes and every cdef signature.
# It lives here, beside the package, because Cython looks for the declarations of the module
# `micrograd_c.engine` at micrograd_c/engine.pxd; a copy in src/ would be silently ignored.

cimport cython
from cpython.ref cimport PyObject


cdef enum Op:
    # How each node was made. The forward formula and the local gradients of every op are
    # listed once, next to its `case` in `backprop_node` (src/engine.pyx). a and b are child
    # Values, c is a number kept in the node. As upstream, a - b is a + (-b), a / b is a * b**-1
    # and -a is a * -1: the same nodes give the same grads, even when backward() runs twice.
    LEAF          # Value(x)
    CUSTOM        # Value(x, _children, _op): children kept for drawing, no gradient (as upstream)
    ADD           # a + b
    MUL           # a * b
    POW           # a ** b
    ADD_CONST     # a + c
    MUL_CONST     # a * c
    POW_CONST     # a ** c
    RPOW_CONST    # c ** a
    RELU          # relu(a)
    TANH          # tanh(a)
    EXP           # exp(a)
    LOG           # log(a)
    SIGMOID       # 1 / (1 + exp(-a))
    DOT           # bias + sum(w[i] * x[i]), one node for a whole neuron
    SUM           # sum(v[i])
    N_OPS


@cython.final
cdef class Value:
    # Invariant: a graph of Values is acyclic. Children exist (are made) before their parent and
    # are fixed at creation, so the type can stay invisible to the cyclic GC (see __dealloc__
    # for how deep graphs are freed). The one field that may hold anything is `attributes`, the
    # node's __dict__: its label and what users add (EurekaLabs' p.m, p.v), NULL for the many
    # nodes that have none. A cycle through it (v.me = v) is invisible to the GC and lives until
    # it is broken.
    cdef double data            # the properties `data` and `grad` give Python floats
    cdef double grad
    cdef double state           # the op's constant: c in a * c, the exponent in a ** c, ...
    cdef Value left             # first child of a unary or binary op, else None
    cdef Value right            # second child of a binary op, else None
    cdef tuple children         # all children of DOT, SUM and CUSTOM nodes, else None
    cdef PyObject* attributes   # owned; the type's tp_dictoffset points here (see engine.pyx)
    cdef unsigned char op       # an Op
    cdef unsigned char visit    # backward's DFS state; always NOT_SEEN outside backward()
    cdef unsigned char made     # set once the node is made; until then it can't be an operand


# A growable array of borrowed or owned object pointers (the owner says which).
cdef struct PtrStack:
    PyObject** items
    Py_ssize_t size
    Py_ssize_t capacity

# Node construction: every op ends in one of these. They never fail except on MemoryError.
cdef Value unary(unsigned char op, double data, Value a, double state)
cdef Value binary(unsigned char op, double data, Value a, Value b)
cdef Value nary(unsigned char op, double data, tuple children, double state)

# Adds node's local gradients into its children (one step of the chain rule). Pure C.
cdef void backprop_node(Value node) noexcept
# Fills `order` with the nodes reachable from root, children before parents (pointers borrowed).
cdef int topological_order(Value root, PtrStack* order) except -1
# Applies backprop_node to `order` from the end, parents first, and clears every visit mark.
cdef void sweep(PtrStack* order) noexcept

# Python-float semantics for a ** b, but ValueError where Python would return a complex number.
cdef double float_pow(double a, double b) except? -1.0
# 1 and *out = float(x) if x is a number in an op (see is_number), 0 if it is not.
cdef int as_double(object x, double* out) except -1

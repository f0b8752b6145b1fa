# The engine's C-level contract: the node layout, the op codes, and the signatures that the
# engine's paths (building, backward, replay, grad) share. It lives here, beside the package,
# because Cython looks for the declarations of the module `micrograd_c.engine` at
# micrograd_c/engine.pxd; a copy in src/ would be silently ignored. The engine's other cdef
# functions are declared where they are defined (src/*.pxi, all included by src/engine.pyx).

cimport cython
from cpython.ref cimport PyObject


cdef enum Op:
    # How each node was made. a and b are child Values, c is a number kept in the node. As
    # upstream, a - b is a + (-b), a / b is a * b**-1 and -a is a * -1: the same nodes give the
    # same grads, even when backward() runs twice. The op codes of each kind are contiguous: a
    # kind ends where the next begins (ops.pxi: is_binary, is_unary), so a new op goes at the end
    # of its kind's list.
    #
    # To add an op (tests/test_ops.py fails, naming the place, until 1-6 are done; EXTRA_OPS
    # and step 7 are not checked):
    # 1. its code here, at the end of its kind (the replay's op byte holds 32 codes: an import
    #    check in src/replay.pxi says when they run out);
    # 2. its section in src/ops.pxi (value, error check, derivatives), and its line in each
    #    dispatch there (op_value, op_error if it can raise, op_derivatives; or nary_value and
    #    nary_backprop);
    # 3. its derivatives with Value ops in src/grad.pxi (value_derivatives, or value_backprop);
    # 4. its name in OP_NAMES (src/engine.pyx), and the Value method or function that builds it,
    #    with its stub in micrograd_c/engine.pyi and its name in Value's docstring and README's
    #    API table; an op that only gradient graphs make goes in _gradient_op (src/engine.pyx)
    #    instead of a method;
    # 5. a row in OPS of tests/test_ops.py: how to build it, and its value on floats;
    # 6. a row in OPS of tests/programs.py (random graphs for the fuzz, replay and gradient
    #    tests: on Values, on floats in the engine's order, on torch through Fused for an
    #    n-ary op), and in EXTRA_OPS of tests/helpers.py (random graphs of tests/test_engine.py);
    # 7. an activation also goes in neuron_output (src/engine.pyx: what engine.neuron and
    #    engine.layer make) and in nn.py's ACTIVATIONS and Neuron's repr.
    LEAF          # Value(x)
    CUSTOM        # Value(x, _children, _op): children kept for drawing, no gradient (as upstream)
    # binary: children a, b
    ADD           # a + b
    MUL           # a * b
    POW           # a ** b
    # binary, made only by grad(create_graph=True): the factors of a power's derivatives that
    # depend on the data, as nodes, so that a gradient graph replays like any other graph
    MUL_NO_NAN    # a * b, but 0 where b == 0 (even if a is inf or nan): a removable point
    POW_MASK      # 0 where a == 0 <= b (no d/db a ** b there, as in torch), else 1
    # unary: child a, and c
    ADD_CONST     # a + c
    MUL_CONST     # a * c
    POW_CONST     # a ** c
    RPOW_CONST    # c ** a
    RELU          # relu(a)
    TANH          # tanh(a)
    EXP           # exp(a)
    LOG           # log(a)
    SIGMOID       # 1 / (1 + exp(-a))
    STEP          # 1 where a > 0, else 0 (relu's derivative, made by grad(create_graph=True))
    # n-ary: a tuple of children
    DOT           # c + sum(w[i] * x[i]) (+ a bias Value), one node for a whole neuron
    SUM           # sum(v[i])
    LOGSUMEXP     # log(sum(exp(z[i]))), the max subtracted inside
    CROSS_ENTROPY # -log(softmax(z)[c]) for a class index c >= 0; for c < 0, children z..., t...
                  # and sum(t[i] * -log(softmax(z)[i])) for targets t (one-hot or soft)
    # n-ary, the two parts of logsumexp(z) = largest + log_total, as nodes: what log_softmax is
    # made of (engine.log_softmax, and the softmax in gradient graphs), (z[i] - largest) -
    # log_total, without a rounded logsumexp in between (ops.pxi)
    LARGEST       # max(z), held constant: no derivative (log_softmax does not depend on it)
    LOG_TOTAL     # log(sum(exp(z[i] - largest))), differentiated as logsumexp: softmax(z)
    # n-ary, made only by grad(create_graph=True) for up to CENTERED_SOFTMAX logits: one node
    # for each log-probability, whose derivative comes centred, (i == c) - softmax(z)[i]
    LOG_SOFTMAX   # (z[c] - largest) - log_total
    N_OPS


# final: no Python subclass (TypeError "not an acceptable base type"). Nodes are carved from
# slabs of 72-byte Values and freed by dealloc_node without calling Python; a subclass would be
# a bigger object with a __dict__ and the cyclic GC's header. (The engine's other cdef classes
# are final too: internal, never meant as bases.)
@cython.final
cdef class Value:
    # Invariant: a graph of Values is acyclic. Children exist (are made) before their parent and
    # are fixed at creation, so the type can stay invisible to the cyclic GC (see dealloc_node
    # for how deep graphs are freed). The one field that may hold anything is `attributes`, the
    # node's __dict__: its label and what users add (EurekaLabs' p.m, p.v), NULL for the many
    # nodes that have none. A cycle through it (v.me = v) is invisible to the GC and lives until
    # it is broken.
    cdef double data            # the properties `data` and `grad` give Python floats
    cdef double grad
    cdef double state           # the op's constant: c in a * c, the exponent in a ** c, ...
    cdef Value left             # first child of a unary or binary op, else None
    cdef object right           # second child of a binary op (a Value); every child of an n-ary
                                # or hand-made node, as a tuple (ops.pxi: keeps_tuple); else None.
                                # One field for both keeps a node at 72 bytes.
    cdef PyObject* attributes   # owned; the type's tp_dictoffset points here (see engine.pyx)
    cdef unsigned char op       # an Op
    cdef unsigned char visit    # backward's DFS state; always NOT_SEEN outside backward()
    cdef unsigned char made     # set once the node is made; until then it can't be an operand
    cdef unsigned char ieee     # computed in IEEE arithmetic, never raising (inf, nan): the nodes
                                # a gradient graph is made of (grad(create_graph=True))
    cdef unsigned char constant # a leaf that dot() or sum() made from a number: a rebuilt graph
                                # has a new one, so replay restarts its grad from zero


# A growable array of borrowed or owned object pointers (the owner says which).
cdef struct PtrStack:
    PyObject** items
    Py_ssize_t size
    Py_ssize_t capacity

# Node construction. unary_op and binary_op compute the op's value; checked, they raise what
# Python's floats raise, unchecked they make an IEEE node. nary takes the value made elsewhere.
# A child that was never made (Value.__new__) is refused with ValueError.
cdef Value unary_op(unsigned char op, Value a, double c, bint checked)
cdef Value binary_op(unsigned char op, Value a, Value b, bint checked)
cdef Value nary(unsigned char op, double data, tuple children, double state)

# Adds node's local gradients into its children (one step of the chain rule). Pure C.
cdef void backprop_node(PyObject* node) noexcept
# Fills `order` with the nodes reachable from the roots, children before parents (pointers
# borrowed), and marks each SEEN; on MemoryError every mark is cleared again.
cdef int topological_order(PyObject** roots, Py_ssize_t count, PtrStack* order) except -1
# Applies backprop_node to `order` from the end, parents first, and clears every visit mark.
cdef void sweep(PtrStack* order) noexcept

# 1 and *out = float(x) if x is a number in an op (see is_number), 0 if it is not.
cdef int as_double(object x, double* out) except -1

"""micrograd's scalar autograd engine, compiled.

    >>> from micrograd_c.engine import Value
    >>> a = Value(2.0)
    >>> b = (a * a).tanh()
    >>> b.backward()
    >>> a.grad                     # d tanh(a*a) / da = (1 - tanh(4)**2) * 2a
    0.0053634...

`Value` has upstream micrograd's API (same names, signatures, repr and gradient semantics:
backward() seeds the root with 1 and grads accumulate). Its nodes, op dispatch and backward
sweep are C; see micrograd_c/engine.pxd for the node layout and src/ops.pxi for the ops.

Beyond upstream: fused ops of many children, each one node (dot, sum, logsumexp,
cross_entropy; log_softmax, two shared nodes and three per item), and layer(neurons, inputs),
a layer of micrograd_c.nn's neurons in one call; compile(root), a graph recorded once and
replayed from its leaves' current data; grad(outputs, inputs, create_graph=False), gradients
as Values, to differentiate again; bulk operations on lists of Values (copy_to_array,
copy_from_array, zero_grads, descend).
"""

cimport cython
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_AsDouble
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyTypeObject
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF, Py_XINCREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from libc.math cimport exp, floor, isfinite, isinf, isnan, log, log1p, tanh
from libc.limits cimport INT_MAX
from libc.math cimport pow as c_pow
from libc.stdlib cimport free, realloc
from libc.string cimport memcmp, memcpy, memset

import numbers
import operator
import os
import sys
import collections.abc

# `from micrograd_c.engine import *` gives what upstream's engine gives: Value, and not a `sum`
# that would shadow the builtin.
__all__ = ["Value"]

# The engine relies on the GIL: backward() and the deallocator share C state and run without
# interruption. A free-threaded Python re-enables the GIL for this module unless told not to;
# refuse to run without it rather than corrupt memory.
if not getattr(sys, "_is_gil_enabled", lambda: True)():
    raise ImportError("micrograd_c needs the GIL: run without PYTHON_GIL=0 / -X gil=0")

cdef extern from *:
    """
    #define MICROGRAD_C_SPARE_TUPLES_KEPT (PY_VERSION_HEX < 0x030E0000)
    """
    bint SPARE_TUPLES_KEPT "MICROGRAD_C_SPARE_TUPLES_KEPT"     # see keep_spare

cdef extern from "Python.h":
    Py_ssize_t Py_REFCNT(PyObject* o)
    PyTypeObject* Py_TYPE(PyObject* o)
    PyObject** PySequence_Fast_ITEMS(object o)     # a list's or tuple's items, borrowed
    void incref "Py_INCREF"(PyObject* o)           # with no temporary reference around it
    void decref "Py_DECREF"(PyObject* o)
    PyTypeObject PyTuple_Type
    void PyObject_GC_UnTrack(void* o)
    void tuple_set_item "PyTuple_SET_ITEM"(object tuple, Py_ssize_t i, PyObject* item)
    void PyType_Modified(PyTypeObject* type)
    dict PyObject_GenericGetDict(object o, void* context)
    ctypedef struct PyTupleObject:
        PyObject* ob_item[1]

# `visit` marks during backward's depth-first search; every node is NOT_SEEN again afterwards.
cdef enum:
    NOT_SEEN = 0
    SEEN = 1

# A `todo` entry meaning "the children of this node are done". Object pointers are at least
# 8-byte aligned, so the low bit is free to say so.
cdef inline PyObject* done_mark(PyObject* node) noexcept nogil:
    return <PyObject*>(<size_t>node | 1)

cdef inline bint is_done_mark(PyObject* entry) noexcept nogil:
    return <size_t>entry & 1

cdef inline PyObject* node_of_done_mark(PyObject* entry) noexcept nogil:
    return <PyObject*>(<size_t>entry & ~(<size_t>1))


# ---------------------------------------------------------------------------------------------
# Small C helpers. Pure C functions are nogil: a debug build's line tracing (setup.py) never
# enters them. The few that hold the GIL and run while the engine's state is half-changed
# (visit marks set, the doomed list edited, grads holding tape positions) say so with
# @cython.linetrace(False): a trace function would run Python code in the middle of them.

# push returns -1 when memory runs out, without setting an exception: callers decide what that
# means (backward raises MemoryError).
cdef inline int push(PtrStack* stack, PyObject* item) noexcept nogil:
    if stack.size == stack.capacity and grow(stack) < 0:
        return -1
    stack.items[stack.size] = item
    stack.size += 1
    return 0


cdef int grow(PtrStack* stack) noexcept nogil:
    cdef Py_ssize_t capacity
    cdef PyObject** items
    capacity = stack.capacity * 2 if stack.capacity else 1024
    items = <PyObject**>realloc(stack.items, capacity * sizeof(PyObject*))
    if items == NULL:
        return -1
    stack.items = items
    stack.capacity = capacity
    return 0


cdef inline void release_storage(PtrStack* stack) noexcept nogil:
    free(stack.items)
    stack.items = NULL
    stack.size = 0
    stack.capacity = 0


include "floats.pxi"
include "ops.pxi"
include "slabs.pxi"


# Numbers. An operand of + - * / ** is a number where Python's own floats take it in that op:
# int, bool, float, Fraction, numpy's scalars (numbers.Real) and numpy's bool. It is converted to
# a double first, and the op is then built from that double as upstream builds it: so
# Value(10) - np.uint8(5) is 5.0 (negating the uint8 would wrap) and x / np.int64(2) is
# x * 2.0 ** -1 (not an integer to a negative power). Anything else, numpy arrays included, gets
# NotImplemented: an array then applies the op element by element, as it does with upstream's
# Values, and the rest raise TypeError as floats do.
cdef object numpy_bool = None       # numpy.bool_, once numpy is imported


cdef bint is_number(object x) except -1:
    global numpy_bool
    if isinstance(x, float) or isinstance(x, int) or isinstance(x, numbers.Real):
        return True
    if numpy_bool is None:
        numpy = sys.modules.get("numpy")
        if numpy is None:
            return False            # no numpy bool can exist yet
        numpy_bool = numpy.bool_
    return type(x) is numpy_bool


cdef int as_double(object x, double* out) except -1:
    if type(x) is float:
        out[0] = PyFloat_AS_DOUBLE(x)
        return 1
    if is_number(x):
        out[0] = PyFloat_AsDouble(x)    # float(x): big ints raise OverflowError, as in floats
        return 1
    return 0


cdef object operand(object x):
    # `other` in the derived ops: a Value as it is, a number as a float, else NotImplemented.
    cdef double c
    if isinstance(x, Value):
        return x
    if as_double(x, &c):
        return c
    return NotImplemented


# The primitives behind Value's operators: a Value a, and b a Value or a number (kept in the
# node: x * 2.0 is one node), else NotImplemented.

cdef object primitive(Value a, object b, unsigned char op, unsigned char op_with_number):
    cdef double c
    if isinstance(b, Value):
        return binary_op(op, a, b, True)
    if as_double(b, &c):
        return unary_op(op_with_number, a, c, True)
    return NotImplemented


cdef inline object add(Value a, object b):                 # a + b
    return primitive(a, b, ADD, ADD_CONST)


cdef inline object multiply(Value a, object b):            # a * b
    return primitive(a, b, MUL, MUL_CONST)


cdef inline object raise_to(Value a, object b):            # a ** b
    return primitive(a, b, POW, POW_CONST)


cdef object negated(object b):                     # -b: b * -1 for a Value, as upstream
    cdef double c
    if isinstance(b, Value):
        return unary_op(MUL_CONST, b, -1.0, True)
    if as_double(b, &c):
        return -c
    return NotImplemented


cdef object reciprocal(object b):                  # b ** -1, raising as Python's float ** does
    cdef double c, out
    cdef int error
    if isinstance(b, Value):
        return unary_op(POW_CONST, b, -1.0, True)
    if not as_double(b, &c):
        return NotImplemented
    out = power(c, -1.0)
    error = pow_error(c, -1.0, out)
    if error:
        raise_op_error(error, "")
    return out


cdef double number(object x, str what) except? -1.0:
    cdef double value
    if not as_double(x, &value):
        raise TypeError(f"{what} must be a real number, not '{type(x).__name__}'")
    return value


cdef double value_argument(object x) except? -1.0:
    # Value(x) takes what float(x) takes (0-d arrays, Decimal, anything with __float__ or
    # __index__), but not text: float('1.5') parses a string, Value('1.5') is a TypeError.
    if type(x) is float:
        return PyFloat_AS_DOUBLE(x)
    if not (hasattr(type(x), "__float__") or hasattr(type(x), "__index__")):
        raise TypeError(f"Value() argument must be a real number, not '{type(x).__name__}'")
    return PyFloat_AsDouble(x)


# ---------------------------------------------------------------------------------------------
# Node construction

# A node is made in new_node and handed on as the one reference its callers return, never held
# in a `Value` variable: that costs a Py_INCREF, then a Py_DECREF as the variable goes; from
# Python 3.12 the increment stores 32 bits of the count and the decrement reloads all 64, which
# the CPU can't forward from the store: it stalls (measured: a third of binary_op on 3.13, 8%
# of the unfused demo step).
#
# It comes from Value's tp_alloc, zeroed, not from Cython's tp_new: that stores None in `left`
# and `right`, which setting them then releases, and freeing (dealloc_node) stored None again
# before Cython's tp_dealloc released it: eight updates of None's reference count in a node's
# life, a real count before Python 3.12 (measured side by side on 3.11: the unfused demo step
# 0.976x, fastest_autograd rebuilt 0.978x without them). So the two fields are written here in
# C: Cython assigns an object field only by releasing what it held, and never NULL (which only a
# node being freed holds). The struct's name is Cython's for Value (another would not compile).
cdef extern from *:
    """
    #define MICROGRAD_C_OWNED(object) (object)
    #define MICROGRAD_C_FIELDS(node) ((struct __pyx_obj_11micrograd_c_6engine_Value*)(node))
    #define MICROGRAD_C_SET_LEFT(node, child) (MICROGRAD_C_FIELDS(node)->left = \
        (struct __pyx_obj_11micrograd_c_6engine_Value*)(child))
    #define MICROGRAD_C_SET_RIGHT(node, child) (MICROGRAD_C_FIELDS(node)->right = (child))
    """
    Value owned "MICROGRAD_C_OWNED"(PyObject* node)     # takes a reference the caller made
    void set_left "MICROGRAD_C_SET_LEFT"(PyObject* node, PyObject* child) noexcept nogil
    void set_right "MICROGRAD_C_SET_RIGHT"(PyObject* node, PyObject* child) noexcept nogil


cdef inline PyObject* allocate_value() except NULL:
    return (<TypeAllocation*>Value).tp_alloc(<PyTypeObject*>Value, 0)    # sets MemoryError


cdef inline Value new_node(unsigned char op, double data, double state, Value left,
                           object right, bint ieee):
    cdef PyObject* node = allocate_value()
    (<Value>node).made = True
    (<Value>node).data = data
    (<Value>node).op = op
    (<Value>node).state = state
    (<Value>node).ieee = ieee
    incref(<PyObject*>left)
    set_left(node, <PyObject*>left)
    incref(<PyObject*>right)
    set_right(node, <PyObject*>right)
    return owned(node)


cdef inline int check_made(Value child) except -1:
    # Value.__new__(Value) gives a node that __init__ has not made yet. Used as an operand and
    # then made with that result as its child, it would close a cycle no GC can see.
    if not child.made:
        unmade_operand()
    return 0


cdef int unmade_operand() except -1:
    raise ValueError("a Value made by Value.__new__ and never initialised can't be used in an "
                     "op or as a child: create it with Value(x)")


cdef Value leaf(double data):
    return new_node(LEAF, data, 0.0, None, None, False)


cdef Value unary_op(unsigned char op, Value a, double c, bint checked):
    cdef double out = op_value(op, a.data, 0.0, c)
    cdef int error
    if checked:
        error = op_error(op, a.data, 0.0, c, out)
        if error:
            raise_op_error(error, "")
    check_made(a)
    return new_node(op, out, c, a, None, not checked)


cdef Value binary_op(unsigned char op, Value a, Value b, bint checked):
    cdef double out = op_value(op, a.data, b.data, 0.0)
    cdef int error
    if checked:
        error = op_error(op, a.data, b.data, 0.0, out)
        if error:
            raise_op_error(error, "")
    check_made(a)
    check_made(b)
    return new_node(op, out, 0.0, a, b, not checked)


cdef Value nary(unsigned char op, double data, tuple children, double state):
    # The caller made sure every child is made.
    return new_node(op, data, state, None, children, False)


cdef inline tuple children_of(Value node):
    # the children of a node that keeps them as a tuple (keeps_tuple)
    return <tuple>node.right


# Names of the ops as upstream spells them (`_op`), for graph drawers. POW_CONST is spelled
# from the node's state; a hand-made node's _op (and one set) is kept in its __dict__.
OP_NAMES = {
    LEAF: '', CUSTOM: '', ADD: '+', MUL: '*', POW: '**', ADD_CONST: '+', MUL_CONST: '*',
    RPOW_CONST: '**', RELU: 'ReLU', TANH: 'tanh', EXP: 'exp', LOG: 'log', SIGMOID: 'sigmoid',
    DOT: 'dot', SUM: 'sum', LOGSUMEXP: 'logsumexp', CROSS_ENTROPY: 'cross_entropy',
    MUL_NO_NAN: 'mul_no_nan', POW_MASK: 'pow_mask', STEP: 'step', LARGEST: 'largest',
    LOG_TOTAL: 'log_total', LOG_SOFTMAX: 'log_softmax',
}
# For tests: every op code, and the code of a node, so that a test can check that every op is
# handled by every path (building, backward, replay, grad).
_N_OPS = N_OPS


def _op_code(Value node not None):
    return node.op


def _constant(Value node not None):
    """The number an op keeps in the node instead of a leaf (x * 2.0: 2.0), or None (viz)."""
    return node.state if node.op in (ADD_CONST, MUL_CONST, RPOW_CONST) else None


def _gradient_op(str name, Value a not None, Value b=None):
    # A node of an op that only gradient graphs and log_softmax() make, for tests: largest,
    # log_total and log_softmax (at b) of the logits (a, b).
    if name in ("largest", "log_total", "log_softmax"):
        if b is None:
            raise TypeError(f"{name} needs two logits")
        check_made(a)
        check_made(b)
        children = new_children(2)
        set_child(children, 0, a)
        set_child(children, 1, b)
        return nary_op({"largest": LARGEST, "log_total": LOG_TOTAL, "log_softmax": LOG_SOFTMAX}[
            name], children, 1.0 if name == "log_softmax" else 0.0)
    op = {"mul_no_nan": MUL_NO_NAN, "pow_mask": POW_MASK, "step": STEP}[name]
    return unary_op(op, a, 0.0, False) if b is None else binary_op(op, a, b, False)


def _power(double a, double b):
    return power(a, b)


def _times_grad(double d, double g):
    return times_grad(d, g)


cdef str exact_str(object label, str what="label"):
    if type(label) is str:
        return label
    if isinstance(label, str):
        return str.__str__(label)      # a str subclass could carry arbitrary objects
    raise TypeError(f"{what} must be a str, not '{type(label).__name__}'")


# Freeing. Dropping a graph recursively overflows the C stack (measured: a 1,000,000-deep chain
# segfaults), so a dying node hands every child whose last reference it holds to `doomed`, and
# the outermost deallocation frees them one at a time. `doomed` is a list threaded through the
# doomed Values themselves, in their `data` (no one can read it any more): freeing never needs
# memory, so it works when memory has run out. Python code can run in between (a dying node's
# __dict__ is released), so another thread may add to the list while one drains it.
cdef PyObject* doomed = NULL
cdef bint releasing = False


def _after_fork_in_child():
    # A fork taken while another thread was draining `doomed` (inside an attribute's __del__)
    # would leave `releasing` set with no thread left to drain: the next dealloc drains it.
    global releasing
    releasing = False


os.register_at_fork(after_in_child=_after_fork_in_child)


cdef union Link:               # a doomed Value's data field, reused as the list's next pointer
    double data
    PyObject* next


@cython.linetrace(False)                # edits the doomed list
cdef inline void doom(PyObject* child) noexcept:
    # `child` is a Value in a field of a dying node, about to be cleared. If the field holds its
    # last reference, the list takes one of its own, so clearing the field does not free it here.
    global doomed
    cdef Link link
    if Py_REFCNT(child) == 1:
        Py_XINCREF(child)
        link.next = doomed
        (<Value>child).data = link.data
        doomed = child


@cython.linetrace(False)                # edits the doomed list
cdef inline bint doom_children(PyObject* children) noexcept:
    # The children tuple of a dying node. Shared (a tuple a user passed as _children), dropping it
    # frees nothing. Ours alone, its slots are emptied here one at a time, so that of a Value
    # that fills several slots the last one dooms it, and freeing the tuple frees no Value.
    # Borrowed, not a `tuple` argument: Cython would pass a new reference to self.children, the
    # count would read 2, no slot would be emptied, and the tuple's dealloc would free the
    # children recursively (bounded only by the tuple's trashcan: 50 deep before Python 3.13,
    # ~10,000 deep in 3.13, which overflows a stack that can't grow when memory has run out).
    # Returns whether it emptied the tuple.
    cdef Py_ssize_t i
    cdef PyObject* child
    if Py_REFCNT(children) != 1:
        return False
    for i in range(PyTuple_GET_SIZE(<object>children)):
        child = PyTuple_GET_ITEM(<object>children, i)
        doom(child)
        tuple_set_item(<object>children, i, NULL)
        Py_XDECREF(child)
    return True


@cython.linetrace(False)                # edits the doomed list
cdef inline PyObject* next_doomed() noexcept:
    global doomed
    cdef Link link
    cdef PyObject* node = doomed
    link.data = (<Value>node).data
    doomed = link.next
    return node


# ---------------------------------------------------------------------------------------------
# The node

@cython.no_gc
@cython.final
cdef class Value:
    """Value(data, _children=(), _op='', label='')
--

    A scalar and its gradient, a node in a graph of operations.

    `data` and `grad` are floats. Build graphs with + - * / ** and relu(), tanh(), exp(),
    log(), sigmoid(); call backward() on the result to fill every node's grad.
    """

    def __init__(self, data, _children=(), _op='', label=''):
        # Once made, a node never changes its children, and they were made before it: that keeps
        # every graph acyclic. Everything is checked before anything is set.
        if self.made:
            raise TypeError("Value.__init__() can't remake an existing Value: create a new one")
        cdef double value = value_argument(data)
        if type(_op) is not str:
            raise TypeError(f"_op must be a str, not '{type(_op).__name__}'")
        children = tuple(_children)
        for child in children:
            if not isinstance(child, Value):
                raise TypeError(f"_children must hold Values, not '{type(child).__name__}'")
            check_made(child)
        label = exact_str(label)
        if self.made:                   # made meanwhile, by user code the checks above ran
            raise TypeError("Value.__init__() can't remake an existing Value: create a new one")
        if children or _op:
            self.op = CUSTOM
            self.right = children
        self.data = value
        if _op:                         # kept with the node, as label: freed with it
            attributes(self, True)["_op"] = _op
        if label:
            attributes(self, True)["label"] = label
        self.made = True

    # -- upstream's ops, in upstream's order -------------------------------------------------

    def __add__(self, other):  # self + other
        return add(self, other)

    def __mul__(self, other):  # self * other
        return multiply(self, other)

    def __pow__(self, other, modulo):  # self ** other
        return NotImplemented if modulo is not None else raise_to(self, other)

    def relu(self):
        """max(0, self), as upstream: relu(-0.0) is -0.0 and relu(nan) is nan."""
        return unary_op(RELU, self, 0.0, True)

    @cython.linetrace(False)            # between its steps every node is marked
    def backward(self):
        """Set self.grad to 1 and add d(self)/d(node) into every node's grad below it.

        Grads accumulate across calls, as upstream: zero them between steps.
        """
        cdef PtrStack order = PtrStack(NULL, 0, 0)
        cdef PyObject* root = <PyObject*>self
        try:
            topological_order(&root, 1, &order)
            self.grad = 1.0
            sweep(&order)
        finally:
            release_storage(&order)

    # The derived ops build upstream's nodes (a - b is a + (-b), a / b is a * b**-1) with the
    # primitives' C functions, not through Python's operator dispatch again. A number `other`
    # is a float first (see is_number); NotImplemented passes through add() and multiply().

    def __neg__(self):  # -self
        return multiply(self, -1.0)

    def __radd__(self, other):  # other + self
        return add(self, other)

    def __sub__(self, other):  # self - other
        return add(self, negated(other))

    def __rsub__(self, other):  # other - self
        return NotImplemented if operand(other) is NotImplemented else add(-self, other)

    def __rmul__(self, other):  # other * self
        return multiply(self, other)

    def __truediv__(self, other):  # self / other
        return multiply(self, reciprocal(other))

    def __rtruediv__(self, other):  # other / self
        return NotImplemented if operand(other) is NotImplemented else multiply(self**-1, other)

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"

    # -- beyond upstream ---------------------------------------------------------------------

    def __rpow__(self, other, modulo):  # other ** self
        cdef double c
        if modulo is not None or not as_double(other, &c):
            return NotImplemented
        return unary_op(RPOW_CONST, self, c, True)

    def tanh(self):
        """The hyperbolic tangent of self."""
        return unary_op(TANH, self, 0.0, True)

    def exp(self):
        """e ** self; OverflowError where math.exp raises it."""
        return unary_op(EXP, self, 0.0, True)

    def log(self):
        """The natural logarithm of self; ValueError for self <= 0, as math.log."""
        return unary_op(LOG, self, 0.0, True)

    def sigmoid(self):
        """1 / (1 + exp(-self)), computed without overflow."""
        return unary_op(SIGMOID, self, 0.0, True)

    # -- data, grad, label: always there, so they can be set but not deleted --------------------

    @property
    def data(self):
        """The node's value (float)."""
        return self.data

    @data.setter
    def data(self, value):
        self.data = value

    @data.deleter
    def data(self):
        raise AttributeError("can't delete a Value's data")

    @property
    def grad(self):
        """d(root)/d(node) after root.backward() (float); accumulates, as upstream."""
        return self.grad

    @grad.setter
    def grad(self, value):
        self.grad = value

    @grad.deleter
    def grad(self):
        raise AttributeError("can't delete a Value's grad")

    @property
    def label(self):
        """A name for drawing the graph (str, default ''), kept in the node's __dict__."""
        added = attributes(self, False)
        # Set through the __dict__ itself, it is checked here: never anything but a str.
        return '' if added is None else exact_str(added.get("label", ""))

    @label.setter
    def label(self, value):
        value = exact_str(value)
        if value or attributes(self, False) is not None:
            attributes(self, True)["label"] = value

    @label.deleter
    def label(self):
        raise AttributeError("can't delete a Value's label: set it to '' instead")

    @property
    def __dict__(self):
        """The node's own attributes (its label, and what you set), made on first use."""
        return attributes(self, True)

    # -- upstream's graph internals, computed on demand ----------------------------------------

    @property
    def _prev(self):
        """The set of child Values (numbers folded into an op, as in `x * 2.0`, are not nodes)."""
        if keeps_tuple(self.op):
            return set(children_of(self))
        if self.right is not None:
            return {self.left, self.right}
        if self.left is not None:
            return {self.left}
        return set()

    @property
    def _children(self):
        """The child Values in order, as given to Value(data, _children, _op): (a, b) of a + b."""
        if keeps_tuple(self.op):
            return children_of(self)
        if self.right is not None:
            return (self.left, self.right)
        if self.left is not None:
            return (self.left,)
        return ()

    @property
    def _op(self):
        """The op that made this node, spelled as upstream does: '+', '*', '**2', 'ReLU', ...;
        or the one given to Value() or set (for drawing), kept in the node's __dict__."""
        added = attributes(self, False)
        if added is not None and "_op" in added:
            return exact_str(added["_op"], "_op")
        if self.op == POW_CONST:
            integral = isfinite(self.state) and self.state == floor(self.state)
            exponent = int(self.state) if integral else self.state
            return f"**{exponent}"
        return OP_NAMES[self.op]

    @_op.setter
    def _op(self, value):
        attributes(self, True)["_op"] = exact_str(value, "_op")

    @_op.deleter
    def _op(self):
        raise AttributeError("can't delete a Value's _op: set it to '' instead")

    @property
    def _backward(self):
        """Adds this node's local gradients into its children (one step of backward()), as
        `v._backward()` does upstream. The gradient of each op is compiled, so a custom one can't
        be attached: assigning raises."""
        return BackwardStep(self)

    @_backward.setter
    def _backward(self, value):
        raise AttributeError(
            "micrograd_c computes every op's gradient in compiled code and can't call a custom "
            "_backward; build the op from Value's own ops (its gradient then comes for free)")

    # -- pickling and copying: a Value travels as a leaf ------------------------------------------

    def __reduce__(self):
        added = dict(attributes(self, False) or {})
        added.pop("label", None)
        added.pop("_op", None)          # a leaf's is ''
        if added:
            return (Value, (self.data,), (self.grad, self.label, added))
        return (Value, (self.data,), (self.grad, self.label))

    def __setstate__(self, state):
        # (grad, label) or (grad, label, attributes): all checked before anything is set
        if not isinstance(state, tuple) or len(state) not in (2, 3):
            raise TypeError("Value state must be a tuple (grad, label[, attributes])")
        cdef double grad = PyFloat_AsDouble(state[0])
        label = exact_str(state[1])
        added = dict(state[2]) if len(state) == 3 else {}
        for name in added:
            if type(name) is not str or hasattr(Value, name):
                raise TypeError(f"{name!r} can't be an added attribute of a Value")
        self.grad = grad
        self.label = label
        if added:
            attributes(self, True).update(added)


# Freeing a Value: its tp_dealloc is dealloc_node, which dooms the children it holds the last
# reference to and hands the node to Cython's own tp_dealloc (clear left and right, tp_free),
# then frees the doomed, one at a time. Not a __dealloc__ method: Cython wraps those in an
# exception save and restore that cost 2% of the demo step, and a Value runs no Python code of
# its own when freed (what users stored in its __dict__ may: CPython's finalizers save and
# restore the exception state themselves).
cdef extern from "Python.h":
    ctypedef void (*destructor)(PyObject*)
    ctypedef struct TypeDeallocation "PyTypeObject":
        destructor tp_dealloc

cdef destructor clear_and_free = NULL   # Cython's tp_dealloc of Value


@cython.linetrace(False)                # edits the doomed list
cdef void dealloc_node(PyObject* node) noexcept:
    global releasing
    if (<Value>node).attributes != NULL:
        Py_XDECREF((<Value>node).attributes)    # may run Python code (what users stored)
        (<Value>node).attributes = NULL
    # Each field is cleared (to NULL: see new_node) before the next is doomed: a child held
    # twice (x * x) is doomed by the second.
    cdef PyObject* child = <PyObject*>(<Value>node).left
    if child != <PyObject*>None:
        doom(child)
        set_left(node, NULL)
        decref(child)
    child = <PyObject*>(<Value>node).right
    if child != <PyObject*>None:
        if keeps_tuple((<Value>node).op):
            if doom_children(child):
                keep_spare(child)
        else:
            doom(child)
        set_right(node, NULL)
        decref(child)
    clear_and_free(node)
    if releasing:
        return                          # an outer dealloc_node is draining `doomed`
    releasing = True
    while doomed != NULL:
        Py_XDECREF(next_doomed())       # its own dealloc_node dooms its children
    releasing = False


cdef void use_dealloc_node(TypeDeallocation* type) noexcept:
    global clear_and_free
    clear_and_free = type.tp_dealloc
    type.tp_dealloc = dealloc_node


use_dealloc_node(<TypeDeallocation*>Value)


cdef dict attributes(Value node, bint make):
    # The node's __dict__ (its label and what users added), or None if it has none and `make`
    # is false: reading a label must not give every node a dict.
    if node.attributes != NULL:
        return <dict>node.attributes
    return PyObject_GenericGetDict(node, NULL) if make else None


# Values live in slabs (src/slabs.pxi) unless PYTHONMALLOC asks for the C library's malloc or a
# debug allocator: then tools such as valgrind see each one. Decided before any Value exists.
if os.environ.get("PYTHONMALLOC", "") != "malloc" and "debug" not in os.environ.get(
        "PYTHONMALLOC", ""):
    use_slabs(<TypeAllocation*>Value)


def _set_dict_offset():
    # Users' attributes go through CPython's own generic getattr/setattr, so that attribute
    # access and method calls on Values keep the interpreter's fast paths (a custom __getattr__
    # or __setattr__ loses them: measured 8% of the demo step). Cython's `cdef dict __dict__`
    # would make a dict for every node, so the type gets its dict offset here, once, before any
    # Value has a dict: a node's dict is then made when a first attribute is set.
    cdef Value probe = Value.__new__(Value)
    (<PyTypeObject*>Value).tp_dictoffset = <char*>&probe.attributes - <char*><PyObject*>probe
    PyType_Modified(<PyTypeObject*>Value)


_set_dict_offset()
del _set_dict_offset


@cython.final
cdef class BackwardStep:
    """A Value's `_backward`: calling it adds the node's local gradients into its children."""
    cdef Value node

    def __cinit__(self, Value node not None):
        self.node = node

    def __call__(self):
        backprop_node(<PyObject*>self.node)


# ---------------------------------------------------------------------------------------------
# Fused n-ary ops: one node where upstream's code makes two per term

cdef inline Value as_value(object x, str what):
    # Values pass through; a number becomes a leaf, so that the node can send it its gradient
    # and replay can read it.
    if isinstance(x, Value):
        check_made(<Value>x)
        return <Value>x
    cdef Value constant = leaf(number(x, what))
    constant.constant = True
    return constant


cdef tuple new_children(Py_ssize_t size):
    # A tuple holding only Values (untracked) can never be part of a reference cycle, so it
    # leaves the GC's view at once. Tracked, every node's tuple was traversed by each young
    # collection until the GC untracked it: measured at ~15% of the demo's forward pass.
    # The caller fills every slot with set_child before the tuple is used.
    global spare_bytes
    cdef PyObject* spare
    cdef tuple children
    if 0 < size <= SPARE_TUPLE_ITEMS and spare_tuples[size] != NULL:
        spare = spare_tuples[size]
        spare_tuples[size] = (<PyTupleObject*>spare).ob_item[0]
        (<PyTupleObject*>spare).ob_item[0] = NULL
        spare_bytes -= tuple_bytes(size)
        children = <tuple>spare
        decref(spare)                   # the list's reference, now children's
        return children
    children = PyTuple_New(size)
    PyObject_GC_UnTrack(<void*>children)
    return children


# Spare tuples: the emptied children tuples of dead nodes, kept for new nodes of the same size
# (as CPython keeps tuples of up to 20 items; a layer's are bigger). Making and freeing them
# was ~7% of the demo's fused step (PyTuple_New, tupledealloc, the allocator); reused, the
# step takes 0.86-0.89x the time (in-process A/B, four runs). spare_tuples[n] lists those of
# n items, linked through their first item, out of the GC's view, up to SPARE_TUPLE_BYTES in
# all; keeping one never allocates. Not from Python 3.14, whose tuples cache their hash.
cdef enum:
    SPARE_TUPLE_ITEMS = 1024
    SPARE_TUPLE_BYTES = 8 << 20

cdef PyObject* spare_tuples[SPARE_TUPLE_ITEMS + 1]
cdef Py_ssize_t spare_bytes = 0


cdef inline Py_ssize_t tuple_bytes(Py_ssize_t size) noexcept:
    return (size + 5) * sizeof(PyObject*)     # with its header and the GC's


cdef inline void keep_spare(PyObject* children) noexcept:
    # children: a node's tuple that doom_children emptied; the node's field, cleared next,
    # holds the one other reference
    global spare_bytes
    cdef Py_ssize_t size = PyTuple_GET_SIZE(<object>children)
    if SPARE_TUPLES_KEPT and Py_TYPE(children) == &PyTuple_Type and \
            0 < size <= SPARE_TUPLE_ITEMS and spare_bytes + tuple_bytes(size) <= SPARE_TUPLE_BYTES:
        PyObject_GC_UnTrack(<void*>children)    # a user's, given as _children, may be tracked
        incref(children)
        (<PyTupleObject*>children).ob_item[0] = spare_tuples[size]
        spare_tuples[size] = children
        spare_bytes += tuple_bytes(size)


def _spare_tuple_bytes():
    """Bytes of children tuples kept for reuse (for the memory tests)."""
    return spare_bytes


cdef inline void set_child(tuple children, Py_ssize_t i, Value child) noexcept:
    Py_INCREF(child)                    # PyTuple_SET_ITEM takes over a reference
    PyTuple_SET_ITEM(children, i, child)


cdef inline void set_children(tuple children, Py_ssize_t start, object values) noexcept:
    # The items of a list or tuple of made Values (all_values_in) into children[start:], read in
    # place: indexing each would incref and decref it, a pair that stalls from Python 3.12 (see
    # new_node; measured at three quarters of dot_node on 3.13).
    cdef PyObject** items = PySequence_Fast_ITEMS(values)
    cdef PyObject** slots = &(<PyTupleObject*>children).ob_item[start]
    cdef Py_ssize_t i
    for i in range(Py_SIZE(<PyObject*>values)):
        incref(items[i])
        slots[i] = items[i]


cdef inline ValueChildren items_of(PyObject* children) noexcept:
    # a children tuple's items, borrowed
    return ValueChildren(&(<PyTupleObject*>children).ob_item[0])


cdef extern from "Python.h":
    Py_ssize_t Py_SIZE(PyObject* o)


cdef Value nary_op(unsigned char op, tuple children, double c):
    cdef double out = nary_value(op, items_of(<PyObject*>children), PyTuple_GET_SIZE(children), c)
    return nary(op, out, children, c)


def dot(ws, xs, bias=None):
    """bias + sum(w * x for w, x in zip(ws, xs)), as one node.

    A neuron in one node instead of 2n: every w, x and the bias get their gradients. Items may
    be Values or numbers (a number becomes a leaf). The sum is taken in upstream's order, bias
    first, so the result equals `sum((w*x for w, x in zip(ws, xs)), bias)` on the same Values
    to the last bit. ws and xs must have the same length (zip would silently drop the extra
    items).
    """
    return dot_node(ws, tuple(xs), bias)


cdef Value dot_node(object ws, tuple x, object bias, bint x_checked=False):
    # The inputs are a snapshot (tuple() of a tuple is the tuple itself); x_checked says the
    # caller found every one a made Value (all_values_in). The weights are read in place when
    # they are a list of made Values and the bias needs no conversion (a layer's neuron):
    # checked once the children are allocated, as a garbage collection then could run a
    # finalizer that changes the list, and after it no Python code runs. Else they are a
    # snapshot too, taken then.
    cdef bint a_list = (type(ws) is list and
                        (bias is None or type(bias) is float or isinstance(bias, Value)))
    cdef tuple w = None if a_list else tuple(ws)
    cdef Py_ssize_t n = Py_SIZE(<PyObject*>ws) if a_list else len(w), i
    cdef bint bias_is_value = isinstance(bias, Value)
    cdef double number_bias = 0.0
    if len(x) != n:
        raise ValueError(f"dot() got {n} weights but {len(x)} inputs")
    if bias_is_value:
        check_made(<Value>bias)
    elif bias is not None:
        number_bias = number(bias, "dot() bias")
    # Children: w[0..n), x[0..n), then the bias if it is a Value (an odd count says so). A
    # number bias is kept in the node.
    cdef tuple children = new_children(2 * n + bias_is_value)
    if a_list and Py_SIZE(<PyObject*>ws) == n and all_values_in(ws) and \
            (x_checked or all_values_in(x)):
        set_children(children, 0, ws)
        set_children(children, n, x)
    else:
        if a_list:
            w = tuple(ws)
            if len(w) != n:
                raise RuntimeError("dot()'s list of weights changed while dot() read it")
        for i in range(n):
            set_child(children, i, as_value(w[i], "dot() operand"))
            set_child(children, n + i, as_value(x[i], "dot() operand"))
    if bias_is_value:
        set_child(children, 2 * n, bias)
    return nary_op(DOT, children, number_bias)


cdef bint all_values_in(object items):
    # True if every item of a list or tuple is a made Value: nothing to convert
    cdef Py_ssize_t i
    cdef PyObject** array = PySequence_Fast_ITEMS(items)
    for i in range(Py_SIZE(<PyObject*>items)):
        if Py_TYPE(array[i]) != <PyTypeObject*>Value or not (<Value>array[i]).made:
            return False
    return True


def neuron(self, x):
    """What a micrograd_c.nn Neuron computes (it is Neuron.__call__, hence upstream's
    signature): dot(self.w, x, self.b), then, if self.nonlin, its activation: self.activation,
    'relu' (upstream's one nonlinearity, and the default where the neuron has no such
    attribute), 'tanh' or 'linear'. A number among the inputs becomes a leaf Value. Attributes
    are read as self.w reads them, in that order.
    """
    cdef tuple inputs = layer_inputs(x)
    cdef NeuronLayout layout
    layout.type = NULL
    try:
        return neuron_output(self, inputs, all_values_in(inputs), &layout)
    finally:
        Py_XDECREF(layout.type)


cdef object NEURON_CALL = neuron       # the __call__ of a class whose neurons layer() makes


def layer(neurons, inputs):
    """[neuron(inputs) for neuron in neurons] in one call, for a layer of micrograd_c.nn's
    Neurons: a neuron whose class calls engine.neuron (Neuron's __call__), or has no __call__,
    is made here, the very nodes engine.neuron makes; a neuron of a class with a __call__ of
    its own is called. A number among the inputs becomes one leaf Value for the whole layer
    (for the neurons made here). Returns a list.
    """
    return layer_outputs(neurons, inputs)


def layer_call(self, x):
    """What a micrograd_c.nn Layer computes (it is Layer.__call__, hence upstream's signature):
    [n(x) for n in self.neurons], as engine.layer makes them; the one output itself where there
    is one, as upstream.
    """
    return layer_output(self, x)


def mlp_call(self, x):
    """What a micrograd_c.nn MLP computes (it is MLP.__call__, hence upstream's signature): each
    of self.layers in turn, x = layer(x). A layer whose class calls engine.layer_call (Layer's
    __call__) is run here, as that call would run it, without a call through Python.
    """
    for item in self.layers:
        if _PyType_Lookup(Py_TYPE(<PyObject*>item), <PyObject*>CALL) == <PyObject*>LAYER_CALL:
            x = layer_output(item, x)
        else:
            x = item(x)
    return x


cdef object LAYER_CALL = layer_call     # the __call__ of a class whose layers mlp_call() runs

# Each is a class's __call__ in micrograd_c.nn: a bound method pickles and copies as a look-up
# of its function's __name__ on the instance (model.__call__ sent to a worker process), which
# must be the attribute's. (Their __qualname__ stays, for pickling the functions themselves.)
neuron.__name__ = layer_call.__name__ = mlp_call.__name__ = "__call__"


cdef object layer_output(object self, object x):
    # layer_call(): the Python calls from MLP to Layer to layer() were 6% of the demo's step
    cdef list out = layer_outputs(self.neurons, x)
    return out[0] if len(out) == 1 else out


cdef list layer_outputs(object neurons, object inputs):
    cdef tuple x = None                 # the inputs as the neurons made here take them,
    cdef bint x_checked = False         # at the first: those called take them as they are
    cdef list out = []
    cdef NeuronLayout layout
    layout.type = NULL
    try:
        for item in neurons:
            if not made_here(item, &layout):
                out.append(item(inputs))
                continue
            if x is None:
                x = layer_inputs(inputs)
                x_checked = all_values_in(x)   # a tuple: it stays so
            out.append(neuron_output(item, x, x_checked, &layout))
    finally:
        Py_XDECREF(layout.type)
    return out


cdef tuple layer_inputs(object inputs):
    # the inputs as a tuple, a number as a leaf Value
    cdef tuple x = tuple(inputs)
    cdef Py_ssize_t i
    for i in range(len(x)):
        if not isinstance(x[i], Value):
            return x[:i] + tuple(v if isinstance(v, Value) else Value(v) for v in x[i:])
    return x


cdef Value neuron_output(object neuron, tuple x, bint x_checked, NeuronLayout* layout):
    # engine.neuron: read in the order Neuron.__call__ always read them
    w = neuron_attribute(neuron, NEURON_W, layout)
    b = neuron_attribute(neuron, NEURON_B, layout)
    cdef Value node = dot_node(w, x, b, x_checked)
    if not neuron_attribute(neuron, NEURON_NONLIN, layout):
        return node
    activation = neuron_attribute(neuron, NEURON_ACTIVATION, layout)
    if activation == "relu":
        return unary_op(RELU, node, 0.0, True)
    if activation == "tanh":
        return unary_op(TANH, node, 0.0, True)
    if activation != "linear":
        raise ValueError(f"a neuron's activation must be 'relu', 'tanh' or 'linear', not "
                         f"{activation!r}")
    return node


# A Neuron keeps w, b, nonlin and activation in __slots__ (micrograd_c.nn): layer() reads them
# where they are, as neuron.w would. Three getattrs a neuron were 9% of the demo's fused step (a
# lookup in the type, then in the instance's keys: ~13 ns each).
cdef extern from "structmember.h":
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
    int T_OBJECT_EX                     # the kind of slot __slots__ makes

cdef extern from "Python.h":
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    PyTypeObject* PyDescr_TYPE(PyObject* descriptor)    # the class whose layout it reads
    bint PyType_IsSubtype(PyTypeObject* a, PyTypeObject* b)
    PyTypeObject PyMemberDescr_Type
    PyObject* _PyType_Lookup(PyTypeObject* type, PyObject* name)    # borrowed; never raises
    ctypedef object (*getattrofunc)(object, object)
    object PyObject_GenericGetAttr(object o, object name)
    ctypedef struct TypeAttributes "PyTypeObject":
        getattrofunc tp_getattro

# A class's version tag, which CPython gives it in a lookup and takes away when the class or a
# base changes (measured on 3.9-3.13): from 3.10 by setting it to 0; 3.9 keeps the number and
# clears a flag (internal, and no longer set from 3.13).
cdef extern from *:
    """
    #if PY_VERSION_HEX < 0x030A0000
    #define MICROGRAD_C_TYPE_VERSION(type) \\
        (((type)->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) ? (type)->tp_version_tag : 0)
    #else
    #define MICROGRAD_C_TYPE_VERSION(type) ((type)->tp_version_tag)
    #endif
    """
    unsigned int type_version "MICROGRAD_C_TYPE_VERSION"(PyTypeObject* type)  # 0: none

cdef enum NeuronAttribute:
    NEURON_W, NEURON_B, NEURON_NONLIN, NEURON_ACTIVATION

cdef tuple NEURON_ATTRIBUTES = ("w", "b", "nonlin", "activation")
cdef tuple NEURON_DEFAULTS = (None, None, True, "relu")     # where a neuron has none (not w, b)
cdef str CALL = "__call__"

cdef struct NeuronLayout:               # where instances of a type keep w, b, nonlin, activation
    PyObject* type                      # owned (layer() releases it), so never another type
    unsigned int version                # at the same address; its version tag when looked up
    Py_ssize_t offsets[4]               # by NeuronAttribute; -1: read by getattr
    bint made                           # its instances made by layer(), not called


cdef inline bint fresh_layout(object neuron, NeuronLayout* layout) noexcept:
    # Makes `layout` the neuron's type's, unless it is; False if the neuron's type changed on
    # the way (releasing the last type may run Python code), and then nothing is known of it.
    # Python code can run between two reads (a property, a finalizer while layer() allocates,
    # a neuron called): each read checks the layout is still the type's, and the type unchanged.
    cdef PyTypeObject* type = Py_TYPE(<PyObject*>neuron)
    if <PyObject*>type == layout.type and layout.version != 0 and \
            type_version(type) == layout.version:
        return True
    look_up_layout(type, layout)
    return Py_TYPE(<PyObject*>neuron) == type


cdef inline bint made_here(object neuron, NeuronLayout* layout) noexcept:
    # layer() makes a neuron whose class calls engine.neuron, or has no __call__; calls others
    if fresh_layout(neuron, layout):
        return layout.made
    return calls_engine_neuron(Py_TYPE(<PyObject*>neuron))


cdef inline bint calls_engine_neuron(PyTypeObject* type) noexcept:
    cdef PyObject* call = _PyType_Lookup(type, <PyObject*>CALL)
    return call == NULL or call == <PyObject*>NEURON_CALL


cdef inline object neuron_attribute(object neuron, int which, NeuronLayout* layout):
    # neuron.w, .b, .nonlin or .activation: from the slot plain attribute access reads, if it
    # reads one; nonlin and activation Neuron's defaults where the neuron has none
    cdef PyObject* value
    if fresh_layout(neuron, layout) and layout.offsets[which] >= 0:
        value = (<PyObject**>(<char*><PyObject*>neuron + layout.offsets[which]))[0]
        if value != NULL:
            return <object>value
    if which == NEURON_NONLIN or which == NEURON_ACTIVATION:
        return getattr(neuron, NEURON_ATTRIBUTES[which], NEURON_DEFAULTS[which])
    return getattr(neuron, NEURON_ATTRIBUTES[which])


cdef void look_up_layout(PyTypeObject* type, NeuronLayout* layout) noexcept:
    # The offsets of w, b, nonlin and activation in instances of `type`, where plain attribute
    # access reads a __slots__ slot: no __getattribute__ of the class's own, and the class's
    # descriptor a slot's, of a class `type` derives from (`w = Neuron.w` in another class reads
    # nothing there: getattr raises); and whether layer() makes its instances. Releases the last
    # type first: that may run Python code (a class is freed by the cyclic GC, not here, in
    # practice), before anything is looked up.
    cdef PyObject* descriptor
    cdef int i
    Py_XDECREF(layout.type)
    layout.type = <PyObject*>type
    Py_XINCREF(layout.type)
    for i in range(4):
        layout.offsets[i] = -1
        if (<TypeAttributes*>type).tp_getattro != PyObject_GenericGetAttr:
            continue
        descriptor = _PyType_Lookup(type, <PyObject*>NEURON_ATTRIBUTES[i])
        if descriptor != NULL and Py_TYPE(descriptor) == &PyMemberDescr_Type and \
                (<PyMemberDescrObject*>descriptor).d_member.type == T_OBJECT_EX and \
                PyType_IsSubtype(type, PyDescr_TYPE(descriptor)):
            layout.offsets[i] = (<PyMemberDescrObject*>descriptor).d_member.offset
    layout.made = calls_engine_neuron(type)
    layout.version = type_version(type)       # _PyType_Lookup gives it one if it can


def sum(values):
    """The sum of an iterable of Values and numbers, as one node.

    Equals builtin sum() of the same Values (same order, same rounding: a left fold; from Python
    3.12, sum() of plain floats is compensated instead) without its n - 1 intermediate nodes.
    A number becomes a leaf, as in dot(). An empty iterable gives Value(0.0).
    """
    cdef tuple items = tuple(values)            # a snapshot, as in dot()
    cdef Py_ssize_t i
    cdef tuple children = new_children(len(items))
    if all_values_in(items):
        set_children(children, 0, items)
    else:
        for i in range(len(items)):
            set_child(children, i, as_value(items[i], "sum() item"))
    return nary_op(SUM, children, 0.0)


def logsumexp(values):
    """log(sum(exp(v) for v in values)), as one node, computed without overflow.

    The largest value is subtracted inside the exps, so logits of 1e3 are fine. Its gradient is
    the softmax of the values. Numbers become leaves, as in dot().
    """
    cdef tuple items = tuple(values)
    cdef tuple children = new_children(len(items))
    cdef Py_ssize_t i
    for i in range(len(items)):
        set_child(children, i, as_value(items[i], "logsumexp() item"))
    return nary_op(LOGSUMEXP, children, 0.0)


def log_softmax(values):
    """[v - logsumexp(values) for v in values]: the log-probabilities, as a list of Values.

    Each is computed as torch's log_softmax computes it, (v - max) - log(sum(exp(values - max))),
    not from a logsumexp rounded to the largest value's ulps, so that where one value dominates
    its log-probability keeps its digits (log_softmax([30, 0])[0] is -log1p(exp(-30)),
    -9.3576e-14; z - logsumexp(z) is -9.237e-14). The max and the log of the sum are one node
    each, shared by every item. Numbers become leaves, as in dot().
    """
    cdef tuple items = tuple(values)
    cdef tuple children = new_children(len(items))
    cdef Py_ssize_t i
    for i in range(len(items)):
        set_child(children, i, as_value(items[i], "log_softmax() item"))
    return log_softmax_nodes(children, True)


cdef list log_softmax_nodes(tuple z, bint checked):
    # (z[i] - largest(z)) - log_total(z) for each i (src/ops.pxi, largest(z) and log_total(z)),
    # the children z made: two nodes of n children, sharing z, then three of O(1) per item.
    # Unchecked, every node is an IEEE node (a gradient graph's); none of these ops raises.
    cdef Value largest = nary_op(LARGEST, z, 0.0)
    cdef Value log_total = nary_op(LOG_TOTAL, z, 0.0)
    largest.ieee = log_total.ieee = not checked
    cdef Value minus_largest = unary_op(MUL_CONST, largest, -1.0, checked)
    cdef Value minus_log_total = unary_op(MUL_CONST, log_total, -1.0, checked)
    cdef Py_ssize_t i
    return [binary_op(ADD, binary_op(ADD, <Value>z[i], minus_largest, checked), minus_log_total,
                      checked) for i in range(len(z))]


cdef TypeError not_a_target(object target):
    return TypeError("cross_entropy() target must be a class index (int) or one Value or "
                     f"number per logit, not '{type(target).__name__}'")


def cross_entropy(logits, target):
    """-log(softmax(logits)[target]), the classification loss, as one node.

    `target` is a class index (an int), or one Value or number per logit: a one-hot vector (the
    form to replay, whose labels can be set in place) or soft targets, for which the loss is
    sum(t * -log(softmax(logits))). Computed without overflow and without rounding the
    log-probabilities through a logsumexp: -log(softmax(z)[c]) is (max(z) - z[c]) + log1p of
    the other logits' exp(z - max(z)), so a confident prediction's loss keeps its digits. The
    gradient is softmax(logits) - target, as torch's cross_entropy.
    """
    cdef tuple z = tuple(logits)
    cdef Py_ssize_t n = len(z), i
    if n == 0:
        raise ValueError("cross_entropy() needs at least one logit")
    if isinstance(target, (collections.abc.Set, collections.abc.Mapping)):
        raise TypeError("cross_entropy() targets must come in the logits' order (a list, tuple "
                        f"or array), not a '{type(target).__name__}'")
    if isinstance(target, (str, bytes, bool, Value)):     # True is no class index
        raise not_a_target(target)
    # A 0-d array has __len__ (that raises): it is one class index, as np.int64(1) is.
    if hasattr(target, "__len__") and getattr(target, "ndim", 1) != 0:   # one per logit
        t = tuple(target)
        if len(t) != n:
            raise ValueError(f"cross_entropy() got {n} logits but {len(t)} targets")
        children = new_children(2 * n)
        for i in range(n):
            set_child(children, i, as_value(z[i], "cross_entropy() logit"))
            set_child(children, n + i, as_value(t[i], "cross_entropy() target"))
        return nary_op(CROSS_ENTROPY, children, -1.0)
    try:                                # compared with the range as a Python int (2**70 too)
        k = operator.index(target)
    except TypeError:
        raise not_a_target(target) from None
    if not 0 <= k < n:
        raise IndexError(f"cross_entropy() target {k} is out of range for {n} logits")
    children = new_children(n)
    for i in range(n):
        set_child(children, i, as_value(z[i], "cross_entropy() logit"))
    return nary_op(CROSS_ENTROPY, children, <double>k)


# ---------------------------------------------------------------------------------------------
# Bulk copies between Values and arrays (for optimizers and Module.get_params/set_params)

cdef object list_or_snapshot(values):
    # values as a list or tuple, read in place if it is one (a loop that runs no Python code
    # can't see it change), else a snapshot; not checked
    return values if type(values) is list or type(values) is tuple else tuple(values)


cdef check_sizes(Py_ssize_t values, Py_ssize_t size):
    if values != size:
        raise ValueError(f"{values} Values but an array of {size}")


# Each loop checks every item as it comes to it: a pass that checked them all first read every
# Value twice, which was 6% of a replayed digits step. So a non-Value raises TypeError after the
# items before it are done, as the Python loop would. (A Value that __init__ never made is as
# good as any here: only ops must refuse one, see check_made.) The loops run no Python code.

def zero_grads(values):
    """Set every Value's grad to 0.0, in a compiled loop (Module.zero_grad, the optimizers).

    An item that is not a Value raises TypeError, the items before it done (as a Python loop).
    """
    items = list_or_snapshot(values)
    cdef PyObject** p = PySequence_Fast_ITEMS(items)
    cdef Py_ssize_t i
    for i in range(Py_SIZE(<PyObject*>items)):
        check_item(p[i])
        (<Value>p[i]).grad = 0.0


def descend(values, double lr):
    """p.data -= lr * p.grad for every Value p, in a compiled loop (optim.SGD's plain step):
    the numbers of that Python loop, to the bit. An item that is not a Value raises TypeError,
    the items before it updated (as that loop)."""
    items = list_or_snapshot(values)
    cdef PyObject** p = PySequence_Fast_ITEMS(items)
    cdef Py_ssize_t i
    for i in range(Py_SIZE(<PyObject*>items)):
        check_item(p[i])
        # not -=, for which Cython holds a reference to the Value (two writes of its count)
        (<Value>p[i]).data = (<Value>p[i]).data - lr * (<Value>p[i]).grad


# Iterating the Values can run Python code (a generator that resizes the array): they are
# read before the array's buffer is taken, a list or tuple in place, anything else into a
# snapshot. Taking the buffer can run Python code too (an exporter's __buffer__), so the
# sizes are compared after it.
def copy_to_array(values, out, bint grads=False):
    """Write each Value's data (or grad, with grads=True) into out, a float64 array as long.

    Lengths that differ raise ValueError before anything is written; an item that is not a
    Value raises TypeError, the items before it written.
    """
    items = list_or_snapshot(values)
    cdef double[::1] view = out
    check_sizes(len(items), view.shape[0])
    cdef PyObject** p = PySequence_Fast_ITEMS(items)
    cdef Py_ssize_t i
    for i in range(view.shape[0]):
        check_item(p[i])
        view[i] = (<Value>p[i]).grad if grads else (<Value>p[i]).data


def copy_from_array(values, source, bint grads=False):
    """Set each Value's data (or grad, with grads=True) from source, a float64 array as long.

    Lengths that differ raise ValueError before anything is set; an item that is not a Value
    raises TypeError, the items before it set.
    """
    items = list_or_snapshot(values)
    cdef const double[::1] view = source
    check_sizes(len(items), view.shape[0])
    cdef PyObject** p = PySequence_Fast_ITEMS(items)
    cdef Py_ssize_t i
    for i in range(view.shape[0]):
        check_item(p[i])
        if grads:
            (<Value>p[i]).grad = view[i]
        else:
            (<Value>p[i]).data = view[i]


cdef inline int check_item(PyObject* item) except -1:
    if Py_TYPE(item) != <PyTypeObject*>Value:     # Value is final: no subclass to accept
        raise TypeError(f"expected Values, got '{type(<object>item).__name__}'")
    return 0


# ---------------------------------------------------------------------------------------------
# Backward

@cython.linetrace(False)                # runs while every node below the root is marked
cdef void backprop_node(PyObject* node) noexcept:
    # One step of the chain rule for a Value (src/ops.pxi, node_backprop). A unary or binary
    # node's children are its fields left and right: copied into a pair, every node has its
    # children in an array. (The node is borrowed and read through casts: held in a `Value`
    # variable it would cost two reference-count writes, and backward() is bound by memory
    # traffic.)
    cdef PyObject* pair[2]
    cdef PyObject* right = <PyObject*>(<Value>node).right
    cdef ValueChildren items
    cdef Py_ssize_t n = 2
    if keeps_tuple((<Value>node).op):
        items = items_of(right)
        n = Py_SIZE(right)
    else:
        pair[0] = <PyObject*>(<Value>node).left
        pair[1] = right
        items = ValueChildren(&pair[0])
    node_backprop((<Value>node).op, items, n, (<Value>node).state, (<Value>node).data,
                  (<Value>node).grad)


@cython.linetrace(False)                # runs while every node below the root is marked
cdef void sweep(PtrStack* order) noexcept:
    # Go one node at a time, parents before children, applying the chain rule; leave every
    # visit mark as topological_order found it.
    cdef Py_ssize_t i
    for i in range(order.size - 1, -1, -1):
        backprop_node(order.items[i])
        (<Value>order.items[i]).visit = NOT_SEEN


@cython.linetrace(False)                # runs while nodes are marked
cdef inline int push_unseen(PtrStack* todo, PyObject* child) noexcept:
    # A child already expanded is not pushed again. Reading the children's marks here, all of
    # a node's at once, lets the CPU fetch them in parallel; read when each is popped, every
    # cache miss waited for the one before (measured: 80% of the search on one instruction).
    if (<Value>child).visit:
        return 0
    return push(todo, child)


@cython.linetrace(False)                # marks nodes as it goes
cdef int topological_order(PyObject** roots, Py_ssize_t count, PtrStack* order) except -1:
    # An iterative depth-first search (recursion fails at depth ~1,000 in Python and overflows
    # the C stack near 1e5). Each entry of `todo` is a node to expand, or, once its children
    # are done, a node to append to `order`: that entry is the node's pointer with its low bit
    # set, so appending never has to load the node again (the sort is bound by memory loads).
    # Pointers are borrowed: the roots keep every node alive and nothing runs Python code here.
    # (Nodes are read through casts, never held in a `Value` variable: that would write each
    # node's reference count twice, measured at a third of the search.)
    cdef PtrStack todo = PtrStack(NULL, 0, 0)
    cdef PyObject* entry
    cdef PyObject* right
    cdef Py_ssize_t i
    cdef int failed = 0
    for i in range(count - 1, -1, -1):
        failed |= push(&todo, roots[i])
    while todo.size and not failed:
        todo.size -= 1
        entry = todo.items[todo.size]
        if is_done_mark(entry):
            if push(order, node_of_done_mark(entry)) < 0:
                todo.size += 1          # back where the reset below finds it
                failed = 1
            continue
        if (<Value>entry).visit:
            continue                    # pushed by several parents; expanded already
        (<Value>entry).visit = SEEN
        failed = push(&todo, done_mark(entry))
        right = <PyObject*>(<Value>entry).right
        if keeps_tuple((<Value>entry).op):
            for i in range(Py_SIZE(right) - 1, -1, -1):
                failed |= push_unseen(&todo, (<PyTupleObject*>right).ob_item[i])
        else:
            if right != <PyObject*>None:
                failed |= push_unseen(&todo, right)
            if (<Value>entry).left is not None:
                failed |= push_unseen(&todo, <PyObject*>(<Value>entry).left)
    if failed:
        # Leave every mark as we found it, so the graph can be used again.
        for i in range(todo.size):
            if not is_done_mark(todo.items[i]):
                (<Value>todo.items[i]).visit = NOT_SEEN
            else:
                (<Value>node_of_done_mark(todo.items[i])).visit = NOT_SEEN
        for i in range(order.size):
            (<Value>order.items[i]).visit = NOT_SEEN
        release_storage(&todo)
        raise MemoryError("not enough memory to order the graph for backward()")
    release_storage(&todo)
    return 0


include "replay.pxi"
include "grad.pxi"

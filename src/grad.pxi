# grad(): gradients as Values, without touching any node's grad; with create_graph=True, built
# from the engine's own ops, so that they can be differentiated again.
#
# Both paths record the graph on a tape (src/replay.pxi). The float path runs backward()'s sweep
# over the tape's own grads. The graph path runs the same sweep with Values in place of
# doubles: value_derivatives below is op_derivatives (src/ops.pxi) written with Value ops, case
# for case in the same order, so a gradient graph's data are the float path's bits (but for
# the sign of a zero gradient). Its nodes are IEEE nodes: like backward(), a gradient never
# raises, and gives inf or nan where the float formulas do.

def grad(outputs, inputs, grad_outputs=None, bint create_graph=False):
    """d(outputs)/d(input) for each input, as a tuple of Values; no node's grad changes.

        x, y = Value(1.5), Value(-0.5)
        f = (x * y).tanh() + x ** 3
        dfdx, dfdy = engine.grad(f, [x, y], create_graph=True)
        d2fdx2, = engine.grad(dfdx, [x])

    outputs is a Value or a list of Values; with several, the result is the gradient of
    sum(w * output) for the weights grad_outputs (a number or Value per output, default 1
    each; one number or Value for one output), as in torch.autograd.grad. An input the outputs
    don't depend on gets Value(0.0).

    With create_graph=False the gradients are new leaves. With create_graph=True they are built
    from Values, part of a graph over the inputs: differentiate them again with grad(), or call
    backward() through them. Either way they equal what backward() gives, bit for bit (but for
    the sign of a zero), and like backward() they never raise: where a derivative is infinite
    (d/dx sqrt(x) at 0) they are inf.
    """
    cdef tuple outs = values_of(outputs, "grad()", "outputs")
    cdef tuple ins = values_of(inputs, "grad()", "inputs")
    cdef Py_ssize_t i, count = len(outs)
    if not outs:
        raise ValueError("grad() needs at least one output")
    cdef tuple weights = (1.0,) * count if grad_outputs is None else weights_of(grad_outputs,
                                                                                create_graph)
    if len(weights) != count:
        raise ValueError(f"grad() got {count} outputs but {len(weights)} grad_outputs")
    cdef int* positions = NULL
    cdef PyObject** roots = NULL
    try:
        positions = <int*>allocate((count + len(ins)) * sizeof(int))
        roots = <PyObject**>allocate(count * sizeof(PyObject*))
        for i in range(count):
            roots[i] = <PyObject*>outs[i]
        tape = record(roots, count, outs + ins, positions)
        if create_graph:
            return gradient_graph(tape, weights, positions, positions + count, len(ins))
        return gradient_floats(tape, weights, positions, positions + count, len(ins))
    finally:
        PyMem_Free(positions)
        PyMem_Free(roots)


cdef tuple values_of(object x, str function, str what):
    # x, a Value or Values, as a tuple; `function`'s argument `what`, for the errors
    cdef tuple items
    if isinstance(x, Value):
        items = (x,)
    else:
        try:
            items = tuple(x)
        except TypeError:
            raise TypeError(f"{function} {what} must be a Value or Values, not "
                            f"'{type(x).__name__}'") from None
    for item in items:
        if not isinstance(item, Value):
            raise TypeError(f"{function} {what} must be Values, not '{type(item).__name__}'")
        check_made(<Value>item)
    return items


cdef tuple weights_of(object grad_outputs, bint create_graph):
    # Each weight a float, or with create_graph a Value that the gradient then depends on. One
    # Value or number stands for a one-item list, as for outputs.
    cdef list weights = []
    if isinstance(grad_outputs, Value) or is_number(grad_outputs):
        grad_outputs = (grad_outputs,)
    try:
        grad_outputs = tuple(grad_outputs)
    except TypeError:
        raise TypeError("grad() grad_outputs must be a number, a Value, or one of those per "
                        f"output, not '{type(grad_outputs).__name__}'") from None
    for w in grad_outputs:
        if isinstance(w, Value):
            check_made(<Value>w)
            weights.append(w if create_graph else (<Value>w).data)
        else:
            weights.append(number(w, "grad_outputs item"))
    return tuple(weights)


cdef tuple gradient_floats(Replay tape, tuple weights, int* outputs, int* inputs,
                           Py_ssize_t count):
    cdef Py_ssize_t i
    for i in range(tape.size):
        tape.grads[i] = 0.0
    for i in range(len(weights)):
        tape.grads[outputs[i]] += <double>weights[i]
    tape.sweep(False)
    return tuple(leaf(tape.grads[inputs[i]] if inputs[i] >= 0 else 0.0) for i in range(count))


cdef tuple gradient_graph(Replay tape, tuple weights, int* outputs, int* inputs,
                          Py_ssize_t count):
    # backward()'s sweep with Values: each node's gradient is made from what its parents
    # contributed when the sweep reaches it (then every parent is done), and then contributes to
    # its children in turn.
    cdef Contributions pending = Contributions(tape.size)
    cdef list results = [None] * tape.size      # gradients of the wanted nodes only
    cdef bytearray wanted = bytearray(tape.size)
    cdef Py_ssize_t i
    for i in range(count):
        if inputs[i] >= 0:
            wanted[inputs[i]] = 1
    for i in range(len(weights)):
        pending.add(outputs[i], 1.0, weights[i])
    for i in range(tape.size - 1, -1, -1):
        g = pending.total(i)
        if g is not None:
            if wanted[i]:
                results[i] = g
            value_backprop(tape, i, g, pending)
    # Each result is a new node (x * 1.0 is x to the bit): a gradient may be a node of the graph.
    return tuple(leaf(0.0) if inputs[i] < 0 or results[inputs[i]] is None
                 else leaf(results[inputs[i]]) if type(results[inputs[i]]) is float
                 else ieee_unary(MUL_CONST, results[inputs[i]], 1.0) for i in range(count))


cdef int value_backprop(Replay tape, Py_ssize_t i, object g, Contributions pending) except -1:
    # backprop_node with Values: node i's gradient g times each local derivative goes to its
    # children, in backprop_node's order.
    cdef Value node = <Value>tape.nodes[i]
    cdef unsigned char op = node.op
    cdef const int* links = tape.links + tape.first[i]
    cdef Py_ssize_t j, m, n = tape.first[i + 1] - tape.first[i]
    cdef tuple children = children_of(node) if keeps_tuple(op) else None
    if is_binary(op) or is_unary(op):
        da, db = value_derivatives(node)
        if da is not None:
            pending.add(links[0], da, g)
        if db is not None:
            pending.add(links[1], db, g)
    elif op == DOT:                     # d/dw[j] = x[j], d/dx[j] = w[j], d/dbias = 1
        m = n // 2
        for j in range(m):
            pending.add(links[j], children[m + j], g)
            pending.add(links[m + j], children[j], g)
        if n % 2:
            pending.add(links[2 * m], 1.0, g)
    elif op == SUM:                     # d/dv[j] = 1
        for j in range(n):
            pending.add(links[j], 1.0, g)
    elif op == LOGSUMEXP or op == LOG_TOTAL:    # d/dz[j] = softmax(z)[j]
        softmax = pending.softmax(children)
        for j in range(n):
            pending.add(links[j], softmax[j], g)
    elif op == CROSS_ENTROPY:
        value_cross_entropy_backprop(node, children, links, g, pending)
    elif op == LARGEST:                 # held constant (ops.pxi): no derivative
        pass
    elif op == LOG_SOFTMAX:             # d/dz[j] = (j == c) - softmax(z)[j]
        softmax = pending.softmax(children)
        for j in range(n):
            d = ieee_unary(MUL_CONST, <Value>softmax[j], -1.0)
            pending.add(links[j], ieee_unary(ADD_CONST, d, 1.0) if j == <Py_ssize_t>node.state
                        else d, g)
    elif has_formula(op):               # LEAF and CUSTOM pass nothing on, as in backward()
        raise SystemError(f"grad() does not know op {op} (src/grad.pxi, value_backprop)")
    return 0


cdef int value_cross_entropy_backprop(Value node, tuple z, const int* links, object g,
                                      Contributions pending) except -1:
    # nary_backprop's CROSS_ENTROPY case with Values, z the node's children
    cdef Py_ssize_t j, n = len(z), m = n // 2
    cdef tuple softmax
    cdef Value targets
    if node.state >= 0:                 # d/dz[j] = softmax(z)[j] - (j == target)
        softmax = pending.softmax(z)
        for j in range(n):
            pending.add(links[j], ieee_unary(ADD_CONST, <Value>softmax[j], -1.0)
                        if j == <Py_ssize_t>node.state else softmax[j], g)
        return 0
    logits = new_children(m)            # children z[0..m), then targets t[0..m)
    for j in range(m):
        set_child(logits, j, <Value>z[j])
    softmax = pending.softmax(logits)
    targets = ieee_nary(SUM, z[m:])
    for j in range(m):                  # d/dz[j] = sum(t) * softmax(z)[j] - t[j]
        pending.add(links[j], ieee_binary(ADD, ieee_binary(MUL, targets, <Value>softmax[j]),
                                          ieee_unary(MUL_CONST, z[m + j], -1.0)), g)
    for j in range(m):                  # d/dt[j] = -log_softmax(z)[j]
        pending.add(links[m + j], ieee_unary(MUL_CONST, (<Value>softmax[j]).left, -1.0), g)
    return 0


# Up to this many logits, a gradient graph's softmax is made of LOG_SOFTMAX nodes, whose
# derivatives come centred (ops.pxi), n nodes of n children each; beyond, of log_softmax_nodes,
# O(n) nodes and links in all, whose second derivatives can lose digits where one logit
# saturates the softmax. A gradient graph's softmax over 32 logits then has ~1,060 links; over
# 1,000 logits ~7,000 rather than 1,000,000.
cdef enum:
    CENTERED_SOFTMAX = 32

cdef tuple softmax_nodes(tuple z):
    # exp(log_softmax(z)[j]) for each j, as the float formulas compute them (src/ops.pxi)
    cdef Shift shift
    cdef Py_ssize_t j
    cdef Value log_softmax
    cdef list log_softmaxes = []
    if len(z) > CENTERED_SOFTMAX:
        log_softmaxes = log_softmax_nodes(z, False)
    else:                               # their values from one Shift, sharing the tuple z
        shift = shift_of(items_of(<PyObject*>z), len(z))
        for j in range(len(z)):
            log_softmax = nary(LOG_SOFTMAX, log_softmax_of(shift, (<Value>z[j]).data), z,
                               <double>j)
            log_softmax.ieee = True
            log_softmaxes.append(log_softmax)
    return tuple([ieee_unary(EXP, log_softmax, 0.0) for log_softmax in log_softmaxes])


cdef Value ieee_nary(unsigned char op, tuple items):
    cdef tuple children = new_children(len(items))
    cdef Py_ssize_t i
    for i in range(len(items)):
        set_child(children, i, <Value>items[i])
    cdef Value node = nary_op(op, children, 0.0)
    node.ieee = True
    return node


cdef struct Contribution:
    PyObject* local                     # owned: a local derivative, a Value or a float
    PyObject* grad                      # owned: the parent's gradient, a Value or a float
    Py_ssize_t next                     # the next contribution to the same node, or -1


@cython.final
cdef class Contributions:
    """What each node's parents contributed to its gradient (local derivative times their
    gradient), in backward()'s order, until the node's gradient is made from them."""
    cdef Contribution* items
    cdef Py_ssize_t size, capacity
    cdef Py_ssize_t* first              # per tape node: its first contribution, or -1
    cdef Py_ssize_t* last
    cdef dict softmaxes                 # id(z): (z, softmax_nodes(z)), made once per tuple z

    def __cinit__(self, Py_ssize_t nodes):
        cdef Py_ssize_t i
        self.first = <Py_ssize_t*>allocate(nodes * sizeof(Py_ssize_t))
        self.last = <Py_ssize_t*>allocate(nodes * sizeof(Py_ssize_t))
        for i in range(nodes):
            self.first[i] = -1

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.size):
            Py_XDECREF(self.items[i].local)
            Py_XDECREF(self.items[i].grad)
        PyMem_Free(self.items)
        PyMem_Free(self.first)
        PyMem_Free(self.last)

    cdef tuple softmax(self, tuple z):
        # softmax_nodes(z), made once for the logits z, shared by every node whose derivatives
        # need them (a cross-entropy node, and its gradient's log_total node)
        if self.softmaxes is None:
            self.softmaxes = {}
        made = self.softmaxes.get(id(z))
        if made is None:
            made = self.softmaxes[id(z)] = (z, softmax_nodes(z))
        return made[1]

    cdef int add(self, Py_ssize_t node, object local, object grad) except -1:
        cdef Contribution* grown
        if self.size == self.capacity:
            self.capacity = self.capacity * 2 if self.capacity else 1024
            grown = <Contribution*>PyMem_Realloc(self.items, self.capacity * sizeof(Contribution))
            if grown == NULL:
                raise MemoryError("not enough memory for a gradient graph")
            self.items = grown
        Py_XINCREF(<PyObject*>local)
        Py_XINCREF(<PyObject*>grad)
        self.items[self.size] = Contribution(<PyObject*>local, <PyObject*>grad, -1)
        if self.first[node] < 0:
            self.first[node] = self.size
        else:
            self.items[self.last[node]].next = self.size
        self.last[node] = self.size
        self.size += 1
        return 0

    cdef object total(self, Py_ssize_t node):
        # The node's gradient, sum(local * grad) over its contributions, as the float sweep adds
        # them up: a float if all are floats, else one node (a dot of the locals and the grads);
        # None if nothing reached the node.
        cdef Py_ssize_t k, count = 0
        cdef bint floats = True
        cdef double total = 0.0
        cdef Contribution* c
        k = self.first[node]
        while k >= 0:
            c = &self.items[k]
            floats &= type(<object>c.local) is float and type(<object>c.grad) is float
            count += 1
            k = c.next
        if count == 0:
            return None
        c = &self.items[self.first[node]]
        if floats:
            k = self.first[node]
            while k >= 0:
                total += <double><object>self.items[k].local * <double><object>self.items[k].grad
                k = self.items[k].next
            return total
        if count == 1:                  # one product, not a dot of one (x * 1.0 is x)
            return product(<object>c.local, <object>c.grad)
        cdef tuple children = new_children(2 * count)
        k = self.first[node]
        count = 0
        while k >= 0:
            set_child(children, count, gradient_value(<object>self.items[k].local))
            count += 1
            k = self.items[k].next
        k = self.first[node]
        while k >= 0:
            set_child(children, count, gradient_value(<object>self.items[k].grad))
            count += 1
            k = self.items[k].next
        cdef Value dot_node = nary_op(DOT, children, 0.0)
        dot_node.ieee = True
        return dot_node


cdef object product(object x, object y):
    # x * y for gradients, a Value or a float each (not both floats); x * 1.0 is x itself.
    if type(x) is float:
        x, y = y, x
    if type(y) is float:
        return x if <double>y == 1.0 else ieee_unary(MUL_CONST, x, y)
    return ieee_binary(MUL, x, y)


cdef Value gradient_value(object x):
    cdef Value constant
    if type(x) is float:
        constant = leaf(x)
        constant.constant = True
        return constant
    return <Value>x


cdef tuple value_derivatives(Value node):
    # op_derivatives (src/ops.pxi), case for case, with Values: (d/da, d/db), None where there is
    # none. out is the node itself, a and b its children, c its number. Each formula is computed
    # in the same order as its float one (the op's section in ops.pxi), for the same bits.
    cdef unsigned char op = node.op
    cdef Value a = node.left, b = <Value>node.right if is_binary(op) else None
    cdef double c = node.state
    da = db = None
    if op == ADD:                       # a + b
        return 1.0, 1.0
    elif op == MUL or op == MUL_NO_NAN: # a * b
        return b, a
    elif op == POW:                     # a ** b
        da = ieee_binary(MUL_NO_NAN, ieee_binary(POW, a, ieee_unary(ADD_CONST, b, -1.0)), b)
        db = ieee_binary(MUL_NO_NAN, ieee_binary(MUL, node, ieee_unary(LOG, a, 0.0)),
                         ieee_binary(POW_MASK, a, b))
    elif op == ADD_CONST:               # a + c
        da = 1.0
    elif op == MUL_CONST:               # a * c
        da = c
    elif op == POW_CONST:               # a ** c (mul_no_nan by a number c: 0, or times c)
        da = 0.0 if c == 0.0 else ieee_unary(MUL_CONST, ieee_unary(POW_CONST, a, c - 1.0), c)
    elif op == RPOW_CONST:              # c ** a (pow_mask(c, a) is 1 unless c == 0)
        da = ieee_unary(MUL_CONST, node, log(c))
        if c == 0.0:
            da = ieee_binary(MUL_NO_NAN, da, ieee_binary(POW_MASK, gradient_value(c), a))
    elif op == RELU:
        da = ieee_unary(STEP, node, 0.0)
    elif op == TANH:                    # 1 - out * out
        da = ieee_unary(ADD_CONST, ieee_unary(MUL_CONST, ieee_binary(MUL, node, node), -1.0), 1.0)
    elif op == EXP:
        da = node
    elif op == LOG:                     # a ** -1
        da = ieee_unary(POW_CONST, a, -1.0)
    elif op == SIGMOID:                 # out * (1 - out)
        da = ieee_binary(MUL, node, ieee_unary(ADD_CONST, ieee_unary(MUL_CONST, node, -1.0), 1.0))
    elif op == POW_MASK or op == STEP:  # constant where they have a derivative
        return None, None
    else:
        raise SystemError(f"grad() does not know op {op} (src/grad.pxi, value_derivatives)")
    return da, db


cdef inline Value ieee_unary(unsigned char op, Value a, double c):
    return unary_op(op, a, c, False)


cdef inline Value ieee_binary(unsigned char op, Value a, Value b):
    return binary_op(op, a, b, False)

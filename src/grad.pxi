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
    sum(w * output) for the weights grad_outputs (numbers or Values, default 1 each), as in
    torch.autograd.grad. An input the outputs don't depend on gets Value(0.0).

    With create_graph=False the gradients are new leaves. With create_graph=True they are built
    from Values, part of a graph over the inputs: differentiate them again with grad(), or call
    backward() through them. Either way they equal what backward() gives, bit for bit, and like
    backward() they never raise: where a derivative is infinite (d/dx sqrt(x) at 0) they are inf.
    """
    cdef tuple outs = values_of(outputs, "outputs")
    cdef tuple ins = values_of(inputs, "inputs")
    cdef Py_ssize_t i, count = len(outs)
    if not outs:
        raise ValueError("grad() needs at least one output")
    cdef tuple weights = (1.0,) * count if grad_outputs is None else weights_of(grad_outputs,
                                                                                create_graph)
    if len(weights) != count:
        raise ValueError(f"grad() got {count} outputs but {len(weights)} grad_outputs")
    cdef int* positions = <int*>allocate((count + len(ins)) * sizeof(int))
    cdef PyObject** roots = <PyObject**>allocate(count * sizeof(PyObject*))
    try:
        for i in range(count):
            roots[i] = <PyObject*>outs[i]
        tape = record(roots, count, outs + ins, positions)
        if create_graph:
            return gradient_graph(tape, weights, positions, positions + count, len(ins))
        return gradient_floats(tape, weights, positions, positions + count, len(ins))
    finally:
        PyMem_Free(positions)
        PyMem_Free(roots)


cdef tuple values_of(object x, str what):
    cdef tuple items
    if isinstance(x, Value):
        items = (x,)
    else:
        try:
            items = tuple(x)
        except TypeError:
            raise TypeError(f"grad() {what} must be a Value or Values, not "
                            f"'{type(x).__name__}'") from None
    for item in items:
        if not isinstance(item, Value):
            raise TypeError(f"grad() {what} must be Values, not '{type(item).__name__}'")
        check_made(<Value>item)
    return items


cdef tuple weights_of(object grad_outputs, bint create_graph):
    # Each weight a float, or with create_graph a Value that the gradient then depends on.
    cdef list weights = []
    for w in ((grad_outputs,) if isinstance(grad_outputs, Value) else grad_outputs):
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
    # slots[i]: the gradient of node i so far, a Value or a float (a constant), or None.
    cdef list slots = [None] * tape.size
    cdef Py_ssize_t i
    for i in range(len(weights)):
        slots[outputs[i]] = grad_add(slots[outputs[i]], weights[i])
    for i in range(tape.size - 1, -1, -1):
        if slots[i] is not None:
            value_backprop(tape, i, slots)
    # Each result is a new node (x * 1.0 is x to the bit): the slot may hold a node of the graph.
    return tuple(leaf(0.0) if inputs[i] < 0 or slots[inputs[i]] is None
                 else leaf(slots[inputs[i]]) if type(slots[inputs[i]]) is float
                 else unary_op(MUL_CONST, slots[inputs[i]], 1.0, False) for i in range(count))


cdef int value_backprop(Replay tape, Py_ssize_t i, list slots) except -1:
    # backprop_node with Values: adds the gradient of node i, times each local derivative, into
    # its children's slots.
    cdef Value node = <Value>tape.nodes[i]
    cdef unsigned char op = node.op
    cdef const int* links = tape.links + tape.first[i]
    cdef Py_ssize_t j, m, n
    cdef object g = slots[i]
    if is_binary(op) or is_unary(op):
        da, db = value_derivatives(node)
        if da is not None:
            slots[links[0]] = grad_add(slots[links[0]], grad_mul(da, g))
        if db is not None:
            slots[links[1]] = grad_add(slots[links[1]], grad_mul(db, g))
    elif op == DOT:                     # d/dw[j] = x[j], d/dx[j] = w[j], d/dbias = 1
        n = tape.first[i + 1] - tape.first[i]
        m = n // 2
        for j in range(m):
            slots[links[j]] = grad_add(slots[links[j]], grad_mul(node.children[m + j], g))
            slots[links[m + j]] = grad_add(slots[links[m + j]], grad_mul(node.children[j], g))
        if n % 2:
            slots[links[2 * m]] = grad_add(slots[links[2 * m]], g)
    elif op == SUM:                     # d/dv[j] = 1
        for j in range(tape.first[i + 1] - tape.first[i]):
            slots[links[j]] = grad_add(slots[links[j]], g)
    elif op != LEAF and op != CUSTOM:   # they pass nothing on, as in backward()
        raise SystemError(f"grad() does not know op {op}")
    return 0


cdef tuple value_derivatives(Value node):
    # op_derivatives (src/ops.pxi), case for case, with Values: (d/da, d/db), None where there is
    # none. out is the node itself, a and b its children, c its number. Each formula is computed
    # in the same order as the float one, so that it gives the same bits.
    cdef unsigned char op = node.op
    cdef Value a = node.left, b = node.right
    cdef double c = node.state
    da = db = None
    if op == ADD:                       # a + b
        return 1.0, 1.0
    elif op == MUL:                     # a * b
        return b, a
    elif op == POW:                     # a ** b
        if b.data != 0.0:
            da = ieee_binary(MUL, b, ieee_binary(POW, a, ieee_unary(ADD_CONST, b, -1.0)))
        if not (a.data == 0.0 and b.data >= 0.0):
            db = ieee_binary(MUL, node, ieee_unary(LOG, a, 0.0))
    elif op == ADD_CONST:               # a + c
        da = 1.0
    elif op == MUL_CONST:               # a * c
        da = c
    elif op == POW_CONST:               # a ** c
        if c != 0.0:
            da = ieee_unary(MUL_CONST, ieee_unary(POW_CONST, a, c - 1.0), c)
    elif op == RPOW_CONST:              # c ** a
        if not (c == 0.0 and a.data >= 0.0):
            da = ieee_unary(MUL_CONST, node, log(c))
    elif op == RELU:
        da = <double>(node.data > 0)
    elif op == TANH:                    # 1 - out * out
        da = ieee_unary(ADD_CONST, ieee_unary(MUL_CONST, ieee_binary(MUL, node, node), -1.0), 1.0)
    elif op == EXP:
        da = node
    elif op == LOG:                     # a ** -1
        da = ieee_unary(POW_CONST, a, -1.0)
    elif op == SIGMOID:                 # out * (1 - out)
        da = ieee_binary(MUL, node, ieee_unary(ADD_CONST, ieee_unary(MUL_CONST, node, -1.0), 1.0))
    else:
        raise SystemError(f"grad() does not know op {op}")
    return da, db


cdef inline Value ieee_unary(unsigned char op, Value a, double c):
    return unary_op(op, a, c, False)


cdef inline Value ieee_binary(unsigned char op, Value a, Value b):
    return binary_op(op, a, b, False)


cdef object grad_mul(object x, object y):
    # x * y for gradients, each a Value or a float; x * 1.0 is x itself (to the bit).
    if type(x) is float and type(y) is float:
        return <double>x * <double>y
    if type(x) is float:
        x, y = y, x
    if type(y) is float:
        return x if <double>y == 1.0 else ieee_unary(MUL_CONST, x, y)
    return ieee_binary(MUL, x, y)


cdef object grad_add(object total, object x):
    # total + x for gradients (None: nothing yet), each a Value or a float.
    if total is None:
        return x
    if type(total) is float and type(x) is float:
        return <double>total + <double>x
    if type(total) is float:
        return ieee_unary(ADD_CONST, x, total)
    if type(x) is float:
        return ieee_unary(ADD_CONST, total, x)
    return ieee_binary(ADD, total, x)

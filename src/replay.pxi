# Replay: a graph built once the usual way, then run forward and backward again in C.
#
# compile() records the graph as a tape, in backward()'s topological order: per node its op, its
# constant and the positions of its children, and two arrays of values and grads. forward()
# reads every leaf's data, recomputes every other node with the op's own formula (src/ops.pxi)
# in the same order and writes the values back to the Values; backward() does what backward()
# does on a freshly built graph, in the same order, so data and grads are the same bits.

# Tape op codes are the node's op, with these bits set: IEEE for IEEE nodes (they never raise),
# and GROUPED for nodes in a group of identical ones (same op, constant and children, as the
# four s ** -1 of a softmax written x / s): a group's value and local derivatives are computed
# once. Such a node has one link more, after its children: its group's index.
cdef enum:
    IEEE_NODE = 0x80
    GROUPED = 0x40
    OP_BITS = 0x3f

cdef struct Group:
    int first                           # the member forward() computes; the others copy it
    int last                            # the member backward() reaches first: it computes the
    int which                           # derivatives (which, da, db) that all members use
    double da
    double db


# Invisible to the cyclic GC, as Values are: its one object field is the root, a Value, which
# the GC never traverses, so a Replay can't be part of a cycle the GC could see. (Tracked, the
# GC could clear `root` while `nodes` still pointed into the graph.)
@cython.no_gc
@cython.final
cdef class Replay:
    """A graph recorded by engine.compile(root), run again with forward() and backward().

        step = engine.compile(loss)
        for k in range(steps):
            step.forward()          # every node recomputed from the leaves' current data
            model.zero_grad()
            step.backward()         # the grads loss.backward() gives on a rebuilt graph
            optimizer.step()

    forward() returns the root's new value. Leaves (Values without children) are read at each
    forward(): set their data in place to replay on new inputs. What the graph's structure holds
    is fixed: numbers folded into ops, and every decision the Python code took while building.
    """
    cdef readonly Value root
    cdef Py_ssize_t size                # nodes, in backward()'s topological order
    cdef PyObject** nodes               # borrowed: root keeps every node alive, and the
                                        # children of a node never change
    cdef unsigned char* ops             # the op, | IEEE_NODE; for nodes without children LEAF
                                        # (grads accumulate), or CUSTOM for the leaves dot() and
                                        # sum() made from numbers (grads restart from zero)
    cdef int* first                     # node i's children: links[first[i]:first[i + 1]]
    cdef int* links
    cdef double* constants              # node.state
    cdef double* values
    cdef double* grads
    cdef Group* groups
    cdef int n_groups
    cdef int* leaves                    # the positions of the LEAF nodes
    cdef Py_ssize_t n_leaves

    def __cinit__(self):
        self.root = None

    def __init__(self):
        raise TypeError("make a Replay with engine.compile(root)")

    def __dealloc__(self):
        PyMem_Free(self.nodes)
        PyMem_Free(self.ops)
        PyMem_Free(self.first)
        PyMem_Free(self.links)
        PyMem_Free(self.constants)
        PyMem_Free(self.values)
        PyMem_Free(self.grads)
        PyMem_Free(self.groups)
        PyMem_Free(self.leaves)

    def __len__(self):
        return self.size

    cdef int check_recorded(self) except -1:
        if self.nodes == NULL:
            raise TypeError("this Replay was not made by engine.compile(root)")
        return 0

    @property
    def nbytes(self):
        """Bytes of state the replay keeps beyond the Values themselves."""
        self.check_recorded()
        return (self.size * (sizeof(PyObject*) + 1 + 3 * sizeof(double)) +
                (self.size + 1 + self.first[self.size]) * sizeof(int) +
                self.n_groups * sizeof(Group) + self.n_leaves * sizeof(int))

    def __repr__(self):
        if self.nodes == NULL:
            return "Replay(not recorded)"
        return (f"Replay({self.size:,} nodes, {self.first[self.size] - self.n_grouped():,} links, "
                f"root={self.root!r})")

    cdef Py_ssize_t n_grouped(self):
        cdef Py_ssize_t i, n = 0
        for i in range(self.size):
            n += (self.ops[i] & GROUPED) != 0
        return n

    @cython.linetrace(False)            # Values are half-written between its steps
    def forward(self):
        """Recompute every node from the leaves' current data; returns the root's data.

        Raises what building the graph would raise (ZeroDivisionError, ValueError, OverflowError)
        and then leaves every Value and the replay as they were.
        """
        # The new values go into the grads array (backward() fills it afresh anyway) and to the
        # Values as they are made; the old ones stay in `values` until the pass is through, to
        # put back if a node raises. Then the two arrays swap.
        cdef Py_ssize_t i, k
        cdef unsigned char op
        cdef double out
        cdef int error
        cdef TapeChildren children
        cdef const Group* group
        self.check_recorded()
        cdef double* new = self.grads
        cdef const int* links = self.links
        cdef const int* first = self.first
        cdef const unsigned char* ops = self.ops
        cdef const double* constants = self.constants
        cdef PyObject** nodes = self.nodes
        for i in range(self.size):
            op = ops[i] & OP_BITS
            if not has_formula(op):
                new[i] = (<Value>nodes[i]).data
                continue
            k = first[i]
            if ops[i] & GROUPED:
                group = &self.groups[links[first[i + 1] - 1]]
                if group.first != i:
                    new[i] = new[group.first]
                    (<Value>nodes[i]).data = new[i]
                    continue
            children = TapeChildren(links + k, new, NULL)
            out = node_value(op, children, first[i + 1] - k, constants[i])
            if not ops[i] & IEEE_NODE:
                error = node_error(op, children, constants[i], out)
                if error:
                    self.undo_forward(i)
                    raise_op_error(error, self.where(i))
            new[i] = out
            (<Value>nodes[i]).data = out
        self.grads = self.values
        self.values = new
        return new[self.size - 1]

    @cython.linetrace(False)            # grads are half-written between its steps
    def backward(self):
        """Set every node's grad as backward() on a freshly built graph would: the root's to 1,
        interior nodes' from zero, and leaves' accumulated into what they hold (zero them first,
        as upstream). Uses the values of the last forward() (or of the graph as built)."""
        self.check_recorded()
        cdef Py_ssize_t i
        memset(self.grads, 0, self.size * sizeof(double))
        for i in range(self.n_leaves):
            self.grads[self.leaves[i]] = (<Value>self.nodes[self.leaves[i]]).grad
        self.grads[self.size - 1] = 1.0
        self.sweep(True)

    @cython.linetrace(False)            # grads are half-written between its steps
    cdef void sweep(self, bint write_back) noexcept:
        # backward()'s sweep over the tape, parents first; each grad is final when its node is
        # reached, and then written to its Value if write_back. A group's local derivatives are
        # computed by the member the sweep reaches first, and used by every member.
        cdef Py_ssize_t i, k
        cdef unsigned char op
        cdef double g
        cdef Group* group
        cdef TapeChildren children
        cdef double* values = self.values
        cdef double* grads = self.grads
        cdef const int* links = self.links
        cdef const int* first = self.first
        cdef const unsigned char* ops = self.ops
        cdef const double* constants = self.constants
        cdef PyObject** nodes = self.nodes
        for i in range(self.size - 1, -1, -1):
            g = grads[i]
            if write_back:
                (<Value>nodes[i]).grad = g
            op = ops[i] & OP_BITS
            k = first[i]
            children = TapeChildren(links + k, values, grads)
            if ops[i] & GROUPED:
                group = &self.groups[links[first[i + 1] - 1]]
                if group.last == i:
                    group.which = local_derivatives(op, children, constants[i], values[i],
                                                    &group.da, &group.db)
                send(children, group.which, group.da, group.db, g)
            else:
                node_backprop(op, children, first[i + 1] - k, constants[i], values[i], g)

    cdef void undo_forward(self, Py_ssize_t failed) noexcept:
        # The nodes before `failed` got new data: give them back the last good values.
        cdef Py_ssize_t i
        cdef unsigned char op
        for i in range(failed):
            if has_formula(self.ops[i] & OP_BITS):
                (<Value>self.nodes[i]).data = self.values[i]

    cdef str where(self, Py_ssize_t i):
        return f" (replaying node {i:,} of {self.size:,}, op {(<Value>self.nodes[i])._op!r})"


def compile(root):
    """Record the graph below `root` for replay: returns a Replay, see help(Replay).

    The graph is built once the usual way; the Replay keeps it alive and runs its forward and
    backward again in C, giving the data and grads that rebuilding it from the leaves' current
    data would give, bit for bit. What Python decided while building is baked in, as in
    torch.jit.trace: numbers folded into ops, a branch on `x.data > 0`, a max over data.
    """
    if not isinstance(root, Value):
        raise TypeError(f"compile() needs a Value, not '{type(root).__name__}'")
    check_made(root)
    cdef PyObject* start = <PyObject*>root
    cdef Replay tape = record(&start, 1, (), NULL)
    tape.root = root
    group_duplicates(tape)
    return tape


@cython.linetrace(False)                # while nodes' grads hold positions
cdef Replay record(PyObject** roots, Py_ssize_t count, tuple wanted, int* positions):
    # The tape of the graph below the roots (which the caller keeps alive), with the data its
    # nodes hold now; positions[k] is the tape position of wanted[k], or -1 if not in the graph.
    cdef Replay tape = Replay.__new__(Replay)
    cdef PtrStack order = PtrStack(NULL, 0, 0)
    cdef Py_ssize_t i, j, k, n, links = 0, k_leaf = 0
    cdef Value node
    try:
        topological_order(roots, count, &order)
    except BaseException:
        release_storage(&order)         # it cleared the marks; the array it filled is ours
        raise
    try:
        for i in range(order.size):
            node = <Value>order.items[i]
            links += tape_links(node)
            tape.n_leaves += is_leaf(node) and not node.constant
        if order.size >= INT_MAX or links >= INT_MAX:
            raise OverflowError("the graph is too big to record (2**31 nodes or links)")
        tape.nodes = <PyObject**>allocate(order.size * sizeof(PyObject*))
        tape.ops = <unsigned char*>allocate(order.size)
        tape.first = <int*>allocate((order.size + 1) * sizeof(int))
        tape.links = <int*>allocate(links * sizeof(int))
        tape.constants = <double*>allocate(order.size * sizeof(double))
        tape.values = <double*>allocate(order.size * sizeof(double))
        tape.grads = <double*>allocate(order.size * sizeof(double))
        tape.leaves = <int*>allocate(tape.n_leaves * sizeof(int))
    except BaseException:
        clear_marks(&order)
        release_storage(&order)
        raise
    # Each child's position is found through the child itself: while the tape is filled (no
    # Python code runs, nothing can fail), every node's grad holds its position; grads are
    # saved first and put back after.
    tape.size = order.size
    for i in range(order.size):
        node = <Value>order.items[i]
        tape.nodes[i] = order.items[i]
        tape.grads[i] = node.grad
        node.grad = <double>i
    for j in range(len(wanted)):
        node = <Value>wanted[j]
        positions[j] = <int>node.grad if node.visit == SEEN else -1
    k = 0
    for i in range(order.size):
        node = <Value>order.items[i]
        tape.first[i] = k
        tape.constants[i] = node.state
        tape.values[i] = node.data
        n = tape_links(node)
        if is_leaf(node):
            tape.ops[i] = CUSTOM if node.constant else LEAF
            if not node.constant:
                tape.leaves[k_leaf] = <int>i
                k_leaf += 1
        else:
            tape.ops[i] = node.op | (IEEE_NODE * node.ieee)
        if is_binary(node.op):
            tape.links[k] = <int>node.left.grad
            tape.links[k + 1] = <int>(<Value>node.right).grad
        elif is_unary(node.op):
            tape.links[k] = <int>node.left.grad
        else:
            for j in range(n):
                tape.links[k + j] = <int>(<Value>PyTuple_GET_ITEM(node.right, j)).grad
        k += n
    tape.first[order.size] = k
    for i in range(order.size):
        node = <Value>order.items[i]
        node.grad = tape.grads[i]
        node.visit = NOT_SEEN
    release_storage(&order)
    return tape


cdef inline bint is_leaf(Value node) noexcept:
    # A Value without children, or a hand-made one whose children are kept for drawing only
    return node.op == LEAF or node.op == CUSTOM and not node.right


cdef inline Py_ssize_t tape_links(Value node) noexcept:
    # How many children a node reads on the tape (a hand-made node reads none).
    if is_binary(node.op):
        return 2
    if is_unary(node.op):
        return 1
    if not has_formula(node.op):
        return 0
    return PyTuple_GET_SIZE(node.right)


cdef void* allocate(size_t size) except NULL:
    cdef void* memory = PyMem_Malloc(size if size else 1)
    if memory == NULL:
        raise MemoryError("not enough memory to record the graph for replay")
    return memory


cdef void clear_marks(PtrStack* order) noexcept:
    cdef Py_ssize_t i
    for i in range(order.size):
        (<Value>order.items[i]).visit = NOT_SEEN


cdef void group_duplicates(Replay tape) noexcept:
    # Puts identical unary and binary nodes (same op byte, constant bits and children) into
    # groups, found with an open-addressing hash table of tape positions, and gives each member
    # the link to its group.
    cdef Py_ssize_t i, j, k, n = tape.size, size = 16, grouped = 0
    cdef unsigned long long h
    cdef int count = 0
    cdef int* table
    cdef int* group_of
    cdef int* links
    cdef Group* groups
    while 2 * size < 3 * n:             # at most two thirds full
        size *= 2
    # Grouping only saves time: without the memory for it, the tape stays as recorded.
    table = <int*>PyMem_Malloc(size * sizeof(int))
    group_of = <int*>PyMem_Malloc(n * sizeof(int))
    if table == NULL or group_of == NULL:
        PyMem_Free(table)
        PyMem_Free(group_of)
        return
    for i in range(size):
        table[i] = -1
    for i in range(n):
        group_of[i] = -1
        if not (is_unary(tape.ops[i] & OP_BITS) or is_binary(tape.ops[i] & OP_BITS)):
            continue
        h = node_hash(tape, i) & (size - 1)
        while table[h] >= 0 and not same_node(tape, table[h], i):
            h = (h + 1) & (size - 1)
        if table[h] < 0:
            table[h] = <int>i
            continue
        j = table[h]                    # i is identical to j, its group's first member
        if group_of[j] < 0:
            group_of[j] = count
            count += 1
            grouped += 1
        group_of[i] = group_of[j]
        grouped += 1
    PyMem_Free(table)
    groups = NULL
    links = NULL
    if count and tape.first[n] + grouped < INT_MAX:
        groups = <Group*>PyMem_Malloc(count * sizeof(Group))
        links = <int*>PyMem_Malloc((tape.first[n] + grouped) * sizeof(int))
    if groups == NULL or links == NULL:
        PyMem_Free(group_of)
        PyMem_Free(groups)
        PyMem_Free(links)
        return
    for j in range(count):
        groups[j].first = -1
    k = 0
    for i in range(n):                  # the links again, each member's group after its children
        for j in range(tape.first[i], tape.first[i + 1]):
            links[k] = tape.links[j]
            k += 1
        tape.first[i] = <int>(k - (tape.first[i + 1] - tape.first[i]))
        if group_of[i] >= 0:
            links[k] = group_of[i]
            k += 1
            tape.ops[i] |= GROUPED
            if groups[group_of[i]].first < 0:
                groups[group_of[i]].first = <int>i
            groups[group_of[i]].last = <int>i
    tape.first[n] = <int>k
    PyMem_Free(tape.links)
    PyMem_Free(group_of)
    tape.links = links
    tape.groups = groups
    tape.n_groups = count


cdef inline unsigned long long node_hash(Replay tape, Py_ssize_t i) noexcept:
    cdef Bits constant
    cdef int k = tape.first[i]
    cdef unsigned long long h
    constant.value = tape.constants[i]
    h = (tape.ops[i] + <unsigned long long>0x1e3779b97f4a7c15 * <unsigned int>tape.links[k] +
         <unsigned long long>0x12b2ae3d27d4eb4f * constant.bits)
    if is_binary(tape.ops[i] & OP_BITS):
        h += <unsigned long long>0x165667b19e3779f9 * <unsigned int>tape.links[k + 1]
    return h ^ (h >> 29) ^ (h >> 47)


cdef inline bint same_node(Replay tape, Py_ssize_t i, Py_ssize_t j) noexcept:
    cdef Bits a, b
    cdef int ki = tape.first[i], kj = tape.first[j]
    a.value = tape.constants[i]
    b.value = tape.constants[j]
    return (tape.ops[i] == tape.ops[j] and a.bits == b.bits and
            tape.links[ki] == tape.links[kj] and
            (not is_binary(tape.ops[i] & OP_BITS) or tape.links[ki + 1] == tape.links[kj + 1]))

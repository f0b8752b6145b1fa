# Replay: a graph built once the usual way, then run forward and backward again in C.
#
# compile() records the graph as a tape, in backward()'s topological order, or in another one
# where every node's parents keep that order (by_depth): per node its op, its constant and the
# positions of its children, and two arrays of values and grads. forward() reads every leaf's
# data, recomputes every other node with the op's own formula (src/ops.pxi) in the tape's order
# and writes the values back to the Values; backward() does what backward() does on a freshly
# built graph, each grad gathering its parents' contributions in the same order, so data and
# grads are the same bits.

# Tape op codes are the node's op, with these bits set: IEEE for IEEE nodes (they never raise),
# GROUPED for nodes in a group of identical ones (same op, constant and children, as the
# four s ** -1 of a softmax written x / s): a group's value and local derivatives are computed
# once. Such a node has one link more, after its children: its group's index. IN_LAYER for the
# nodes of a layer (see group_layers): its dot nodes, and the nodes between them. A node
# without children (LEAF, or CUSTOM for a constant) is never grouped: there the bit means
# LEFT_ALONE, a leaf not among compile()'s inputs, whose Value's grad backward() neither reads
# nor writes (see leave_alone).
cdef enum:
    IEEE_NODE = 0x80
    GROUPED = 0x40
    LEFT_ALONE = 0x40
    IN_LAYER = 0x20
    OP_BITS = 0x1f

cdef enum:
    WEIGHTS_IN_PLACE = 1                # a block's weights: neuron n's at w + n m, w its first's
    INPUTS_IN_PLACE = 2                 # a block's inputs: example e's at x + e m, x its first's

if N_OPS > OP_BITS + 1:
    raise SystemError("the replay's op byte has no room for every op code (src/replay.pxi)")

cdef struct Group:
    int first                           # the member forward() computes; the others copy it
    int last                            # the member backward() reaches first: it computes the
    int which                           # derivatives (which, da, db) that all members use
    double da
    double db

cdef struct Layer:
    # Dot nodes of m weights over the same m inputs (the neurons of a layer, for one example),
    # computed side by side. Its members, then the nodes between them on the tape (the
    # members' activations), are layer_nodes[start:start + members + between].
    int start
    int members
    int between
    int m
    unsigned char bias                  # the members have a Value bias, child 2m
    unsigned char in_place              # on a block's first layer: which of WEIGHTS_IN_PLACE,
                                        # INPUTS_IN_PLACE its rows are (see place_leaves)
    unsigned char input_grads           # on a block's first layer: 0 if every input is a leaf
                                        # LEFT_ALONE, whose grads the block need not compute
    # Layers with the same weights (one per example of a batch) form a block, computed
    # together at its first layer (see group_blocks): block_layers[block:block + examples]
    # are its layers' indices, the first first. examples is 1 for a layer in no block (block
    # -1), the block's size on its first layer, 0 on the others.
    int examples
    int block


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

    compile(loss, inputs=model.parameters()) names the leaves whose grads backward() sets (as
    torch's backward(inputs=...)): the grads of the other leaves (a batch's images, say) are
    left as they are, and the work that only they need is skipped.
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
    cdef Layer* layers                  # in tape order; see group_layers
    cdef int n_layers
    cdef int* layer_nodes
    cdef int* block_layers              # see Layer
    cdef int n_block_layers
    cdef double* scratch                # see make_scratch
    cdef Py_ssize_t scratch_size
    cdef int* runs                      # see find_runs: run k is nodes runs[2k]:runs[2k + 1]
    cdef int n_runs
    cdef Shift* shifts                  # each cross-entropy node's lse(z) in a run, in tape order
    cdef Py_ssize_t n_shifts
    cdef int* leaves                    # the positions of the LEAF nodes
    cdef Py_ssize_t n_plain             # the tape's first nodes, those without children
    cdef bint by_depth                  # the tape's order is by_depth's, not backward()'s
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
        PyMem_Free(self.layers)
        PyMem_Free(self.layer_nodes)
        PyMem_Free(self.block_layers)
        PyMem_Free(self.scratch)
        PyMem_Free(self.leaves)
        PyMem_Free(self.runs)
        PyMem_Free(self.shifts)

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
                self.n_groups * sizeof(Group) + self.n_leaves * sizeof(int) +
                self.n_layers * sizeof(Layer) + self.n_layer_nodes() * sizeof(int) +
                self.n_block_layers * sizeof(int) + self.scratch_size * sizeof(double) +
                self.n_runs * 2 * sizeof(int) + self.n_shifts * sizeof(Shift))

    cdef inline Py_ssize_t first_dot(self, int k) noexcept nogil:
        # the tape position of layer k's first dot, or -1 past the last layer
        return self.layer_nodes[self.layers[k].start] if 0 <= k < self.n_layers else -1

    cdef inline Py_ssize_t last_dot(self, int k) noexcept nogil:
        # the tape position of layer k's last dot, or -1 before the first layer
        return self.layer_nodes[self.layers[k].start + self.layers[k].members - 1] \
            if 0 <= k < self.n_layers else -1

    cdef Py_ssize_t n_layer_nodes(self):
        if self.n_layers == 0:
            return 0
        cdef Layer* last = &self.layers[self.n_layers - 1]
        return last.start + last.members + last.between

    def __repr__(self):
        if self.nodes == NULL:
            return "Replay(not recorded)"
        layers = f"{self.n_layers:,} layers, " if self.n_layers else ""
        return (f"Replay({self.size:,} nodes, {self.first[self.size] - self.n_grouped():,} links, "
                f"{layers}root={self.root!r})")

    @property
    def _layers(self):
        """For tests: [(dots, nodes between them, weights per dot)] of each layer found."""
        self.check_recorded()
        return [(self.layers[i].members, self.layers[i].between, self.layers[i].m)
                for i in range(self.n_layers)]

    @property
    def _by_depth(self):
        """For tests: whether the tape is in by_depth's order (compile() keeps backward()'s
        order where that would change the order of some grad's contributions)."""
        self.check_recorded()
        return bool(self.by_depth)

    @property
    def _blocks(self):
        """For tests: [(examples, dots per example, weights per dot)] of each block found."""
        self.check_recorded()
        return [(self.layers[i].examples, self.layers[i].members, self.layers[i].m)
                for i in range(self.n_layers) if self.layers[i].examples > 1]

    @property
    def _runs(self):
        """For tests: [(op, nodes)] of each run found (see find_runs)."""
        self.check_recorded()
        return [(OP_NAMES.get(self.ops[self.runs[2 * k]] & OP_BITS, "**"),
                 self.runs[2 * k + 1] - self.runs[2 * k]) for k in range(self.n_runs)]

    @property
    def _in_place(self):
        """For tests: [(weights, inputs)] of each block found, whether it reads and writes them
        in place (see place_leaves) rather than gathered."""
        self.check_recorded()
        return [(bool(self.layers[i].in_place & WEIGHTS_IN_PLACE),
                 bool(self.layers[i].in_place & INPUTS_IN_PLACE))
                for i in range(self.n_layers) if self.layers[i].examples > 1]

    @property
    def _input_grads(self):
        """For tests: [whether it computes its inputs' grads] for each block found."""
        self.check_recorded()
        return [bool(self.layers[i].input_grads)
                for i in range(self.n_layers) if self.layers[i].examples > 1]

    @property
    def _left_alone(self):
        """For tests: the Values whose grads backward() leaves as they are, in tape order."""
        self.check_recorded()
        return [<object>self.nodes[i] for i in range(self.n_plain)
                if self.ops[i] & LEFT_ALONE]

    cdef Py_ssize_t n_grouped(self):
        # nodes with children only: on a node without, the bit means LEFT_ALONE
        cdef Py_ssize_t i, n = 0
        for i in range(self.n_plain, self.size):
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
        cdef int error = NO_ERROR
        cdef TapeChildren children
        cdef const Group* group
        cdef const Layer* layer
        cdef int next_layer = 0, r
        self.check_recorded()
        cdef Py_ssize_t layer_at = self.first_dot(0)       # where the next layer is computed
        cdef Py_ssize_t start, end, shift_at = 0
        cdef double* new = self.grads
        cdef const int* links = self.links
        cdef const int* first = self.first
        cdef const unsigned char* ops = self.ops
        cdef const double* constants = self.constants
        cdef PyObject** nodes = self.nodes
        for i in range(self.n_plain):
            new[i] = (<Value>nodes[i]).data
        start = self.n_plain
        for r in range(self.n_runs + 1):            # the nodes up to a run, then the run
            end = self.runs[2 * r] if r < self.n_runs else self.size
            for i in range(start, end):
                op = ops[i] & OP_BITS
                if not has_formula(op):
                    new[i] = (<Value>nodes[i]).data
                    continue
                if ops[i] & IN_LAYER and op == DOT:     # a layer's dots, all at its first
                    if i == layer_at:
                        self.compute_layer(next_layer, new)
                        next_layer += 1
                        layer_at = self.first_dot(next_layer)
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
                        self.fail(i, error)
                new[i] = out
                (<Value>nodes[i]).data = out
            if r < self.n_runs:
                start = self.runs[2 * r + 1]
                if ops[end] & IN_LAYER:             # layers' dots: the layers that begin there
                    while 0 <= layer_at < start:
                        self.compute_layer(next_layer, new)
                        next_layer += 1
                        layer_at = self.first_dot(next_layer)
                    continue
                if ops[end] & OP_BITS == CROSS_ENTROPY:
                    shift_at = cross_entropy_run_forward(self, end, start, new, shift_at)
                    continue
                i = self.unary_forward(ops[end] & OP_BITS, end, start, new,
                                       not ops[end] & IEEE_NODE, &error)
                if error:
                    self.fail(i, error)
        self.grads = self.values
        self.values = new
        return new[self.size - 1]

    cdef Py_ssize_t unary_forward(self, unsigned char op, Py_ssize_t start, Py_ssize_t end,
                                  double* new, bint checked, int* error) noexcept:
        # forward() over a run; returns its end, or where an error stopped it. relu, the
        # activation of nn's neurons, has a loop of its own (the op a constant there, out of
        # op_value's dispatch): most runs of a network are relus.
        if op == RELU:
            return unary_run_forward(self, RELU, start, end, new, checked, error)
        return unary_run_forward(self, op, start, end, new, checked, error)

    cdef void compute_layer(self, int k, double* new) noexcept:
        # layer k's dots (a block's, at its first layer), to new and to their Values
        cdef const Layer* layer = &self.layers[k]
        cdef int e
        if layer.examples == 1:
            layer_forward(self, layer, new)
            self.write_data(layer, new)
        elif layer.examples > 1:
            block_forward(self, layer, new)
            for e in range(layer.examples):
                self.write_data(&self.layers[self.block_layers[layer.block + e]], new)

    cdef int fail(self, Py_ssize_t i, int error) except -1:
        # node i raised in forward(): every Value as it was, and the error raised
        self.undo_forward(i)
        if self.by_depth:                   # raise at the node backward()'s order meets first
            compile_tape(self.root, False, False, None).forward()
        raise_op_error(error, self.where(i))

    cdef void write_data(self, const Layer* layer, const double* new) noexcept:
        cdef Py_ssize_t k
        for k in range(layer.start, layer.start + layer.members):
            (<Value>self.nodes[self.layer_nodes[k]]).data = new[self.layer_nodes[k]]

    @cython.linetrace(False)            # grads are half-written between its steps
    def backward(self):
        """Set every node's grad as backward() on a freshly built graph would: the root's to 1,
        interior nodes' from zero, and leaves' accumulated into what they hold (zero them first,
        as upstream), but for leaves not among compile()'s inputs, whose grads stay as they are.
        Uses the values of the last forward() (or of the graph as built)."""
        self.check_recorded()
        cdef Py_ssize_t i
        cdef double* grads = self.grads         # locals: the stores below might alias fields
        cdef const int* leaves = self.leaves
        cdef PyObject** nodes = self.nodes
        memset(grads, 0, self.size * sizeof(double))
        for i in range(self.n_leaves):
            grads[leaves[i]] = (<Value>nodes[leaves[i]]).grad
        grads[self.size - 1] = 1.0
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
        cdef const Layer* layer
        cdef int next_layer = self.n_layers - 1
        cdef Py_ssize_t layer_at = self.last_dot(next_layer)    # where the next layer is done
        cdef int r
        cdef Py_ssize_t start, end, shift_at = self.n_shifts
        cdef TapeChildren children
        cdef double* values = self.values
        cdef double* grads = self.grads
        cdef const int* links = self.links
        cdef const int* first = self.first
        cdef const unsigned char* ops = self.ops
        cdef const double* constants = self.constants
        cdef PyObject** nodes = self.nodes
        end = self.size
        for r in range(self.n_runs, -1, -1):        # the nodes after a run, then the run
            start = self.runs[2 * r - 1] if r > 0 else self.n_plain
            for i in range(end - 1, start - 1, -1):
                g = grads[i]
                if write_back:
                    (<Value>nodes[i]).grad = g
                op = ops[i] & OP_BITS
                if ops[i] & IN_LAYER:               # a layer's nodes, all at its last dot
                    if i == layer_at:
                        self.sweep_layer(next_layer)
                        next_layer -= 1
                        layer_at = self.last_dot(next_layer)
                    continue
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
            if r > 0:
                end = self.runs[2 * r - 2]
                if ops[end] & IN_LAYER:             # layers' dots: the layers that end there,
                    while layer_at >= end:          # then the dots' grads, all final
                        self.sweep_layer(next_layer)
                        next_layer -= 1
                        layer_at = self.last_dot(next_layer)
                    if write_back:
                        for i in range(end, start):
                            (<Value>nodes[i]).grad = grads[i]
                elif ops[end] & OP_BITS == CROSS_ENTROPY:
                    shift_at = cross_entropy_run_backward(self, end, start, write_back, shift_at)
                else:
                    self.unary_backward(ops[end] & OP_BITS, end, start, write_back)
        if write_back:                          # the nodes without children: nothing to send
            for i in range(self.n_plain):
                if not ops[i] & LEFT_ALONE:
                    (<Value>nodes[i]).grad = grads[i]

    cdef void sweep_layer(self, int k) noexcept:
        # the sweep over layer k (a block's, at its first layer): the nodes between its dots,
        # then the dots
        cdef const Layer* layer = &self.layers[k]
        between_backward(self, layer)
        if layer.examples == 1:
            layer_backward(self, layer)
        elif layer.examples > 1:
            block_backward(self, layer)

    cdef void unary_backward(self, unsigned char op, Py_ssize_t start, Py_ssize_t end,
                             bint write_back) noexcept:
        # the sweep over a run, from its end; relu's loop its own, as in unary_forward
        if op == RELU:
            unary_run_backward(self, RELU, start, end, write_back)
        else:
            unary_run_backward(self, op, start, end, write_back)

    cdef void undo_forward(self, Py_ssize_t failed) noexcept:
        # The nodes before `failed` got new data, and so did every dot of a layer that begins
        # before it: give them back the last good values.
        cdef Py_ssize_t i, k
        cdef const Layer* layer
        cdef const Layer* first
        for i in range(failed):
            if has_formula(self.ops[i] & OP_BITS):
                (<Value>self.nodes[i]).data = self.values[i]
        for i in range(self.n_layers):
            layer = &self.layers[i]
            first = layer if layer.block < 0 else &self.layers[self.block_layers[layer.block]]
            if self.layer_nodes[first.start] < failed:      # computed at its block's first
                for k in range(layer.start, layer.start + layer.members):
                    (<Value>self.nodes[self.layer_nodes[k]]).data = \
                        self.values[self.layer_nodes[k]]
        cross_entropy_shifts(self)

    cdef str where(self, Py_ssize_t i):
        return f" (replaying node {i:,} of {self.size:,}, op {(<Value>self.nodes[i])._op!r})"


def compile(root, *, inputs=None):
    """Record the graph below `root` for replay: returns a Replay, see help(Replay).

    The graph is built once the usual way; the Replay keeps it alive and runs its forward and
    backward again in C, giving the data and grads that rebuilding it from the leaves' current
    data would give, bit for bit. What Python decided while building is baked in, as in
    torch.jit.trace: numbers folded into ops, a branch on `x.data > 0`, a max over data.

    inputs (a Value or Values, default every leaf) are the leaves whose grads backward()
    accumulates, as torch's backward(inputs=...): name a model's parameters, and the grads of
    the other leaves (the images of a batch, say) stay as they are, while the work only they
    need is skipped. Every other node's grad, and every named leaf's, is what it would be
    without inputs. Values not in the graph are ignored, as backward() would leave them.
    """
    return compile_tape(root, True, True, inputs)


def _compile_without_layers(root, *, inputs=None):
    """For tests and measurements: compile(root), but with no layers (see group_layers) and in
    backward()'s order (see by_depth)."""
    return compile_tape(root, False, False, inputs)


def _compile_in_backward_order(root, *, inputs=None):
    """For tests: compile(root), with layers and blocks, but in backward()'s order."""
    return compile_tape(root, True, False, inputs)


cdef Replay compile_tape(object root, bint layers, bint reorder, object inputs):
    if not isinstance(root, Value):
        raise TypeError(f"compile() needs a Value, not '{type(root).__name__}'")
    check_made(root)
    cdef tuple wanted = () if inputs is None else values_of(inputs, "compile()", "inputs")
    cdef PyObject* start = <PyObject*>root
    cdef int* positions = <int*>allocate(len(wanted) * sizeof(int))
    cdef Replay tape
    try:
        tape = record(&start, 1, wanted, positions, reorder)
        if inputs is not None:
            leave_alone(tape, positions, len(wanted))
    finally:
        PyMem_Free(positions)
    tape.root = root
    group_duplicates(tape)
    if layers:
        group_layers(tape)
        group_blocks(tape)
        place_leaves(tape)
        make_scratch(tape)
    find_runs(tape)
    return tape


@cython.linetrace(False)                # while nodes' grads hold positions
cdef Replay record(PyObject** roots, Py_ssize_t count, tuple wanted, int* positions,
                   bint reorder=False):
    # The tape of the graph below the roots (which the caller keeps alive), with the data its
    # nodes hold now; positions[k] is the tape position of wanted[k], or -1 if not in the graph.
    # In backward()'s order, or, if reorder, in by_depth's where it keeps every sum's order.
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
        tape.n_plain = leaves_first(&order)
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
    if reorder and by_depth(&order, tape.grads):
        tape.by_depth = True
        for i in range(order.size):
            tape.nodes[i] = order.items[i]
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
        for j in range(n):
            tape.links[k + j] = child_position(node, j)
        k += n
    tape.first[order.size] = k
    for i in range(order.size):
        node = <Value>order.items[i]
        node.grad = tape.grads[i]
        node.visit = NOT_SEEN
    release_storage(&order)
    return tape


cdef void leave_alone(Replay tape, const int* positions, Py_ssize_t count) noexcept:
    # Marks LEFT_ALONE every node without children but those at positions[] (compile()'s inputs;
    # -1 for one not in the graph, past n_plain for one with children: backward() sets those
    # anyway). A leaf so marked is not read in: its grad on the tape starts from zero, as a
    # constant's, and is never written to its Value.
    cdef Py_ssize_t i
    for i in range(tape.n_plain):
        tape.ops[i] |= LEFT_ALONE
    for i in range(count):
        if 0 <= positions[i] < tape.n_plain:
            tape.ops[positions[i]] &= ~LEFT_ALONE
    find_leaves(tape)


cdef void find_leaves(Replay tape) noexcept:
    # tape.leaves: the positions of the leaves whose grads backward() reads in (LEAF, not
    # LEFT_ALONE), in tape order; as many as record() counted, or fewer
    cdef Py_ssize_t i, k = 0
    for i in range(tape.n_plain):
        if tape.ops[i] == LEAF:
            tape.leaves[k] = <int>i
            k += 1
    tape.n_leaves = k


cdef Py_ssize_t leaves_first(PtrStack* order) except -1:
    # Puts the nodes without children first, keeping the order within each part: still a
    # topological order, and every interior node comes after every leaf, so a layer of dot
    # nodes (group_layers) finds all its weights read before it, and the passes read and
    # write the leaves in a loop of their own. Returns how many leaves.
    cdef PyObject** sorted_items = <PyObject**>allocate(order.size * sizeof(PyObject*))
    cdef Py_ssize_t i, k = 0, leaves
    for i in range(order.size):
        if is_leaf(<Value>order.items[i]):
            sorted_items[k] = order.items[i]
            k += 1
    leaves = k
    for i in range(order.size):
        if not is_leaf(<Value>order.items[i]):
            sorted_items[k] = order.items[i]
            k += 1
    memcpy(order.items, sorted_items, order.size * sizeof(PyObject*))
    PyMem_Free(sorted_items)
    return leaves


cdef inline int child_position(Value node, Py_ssize_t j) noexcept:
    # The tape position of a node's child j, while record() keeps positions in the grads
    if is_binary(node.op):
        return <int>(node.left.grad if j == 0 else (<Value>node.right).grad)
    if is_unary(node.op):
        return <int>node.left.grad
    return <int>(<Value>PyTuple_GET_ITEM(node.right, j)).grad


cdef bint by_depth(PtrStack* order, double* saved) noexcept:
    # Puts the nodes after the leaves in order of depth (the longest path up to the root), the
    # deepest first, a depth's dots before its other nodes, keeping backward()'s order among
    # the dots of one depth and among its other nodes: still a topological order (a child is
    # deeper than its parents), in which the examples of a batch go through each layer one
    # after the other (every first-layer dot, then every activation, then every second-layer
    # dot...), so that group_blocks finds every layer's block, not the first layer's only (a
    # node as deep as a layer's dots, the negated target of a squared error z - t, would
    # otherwise come between them and split the layer). Kept only if each node's parents come
    # in the same order as before: the sweep then gives each grad its contributions in the
    # same order, and backward's bits are the same. The root stays last, where forward() and
    # backward() find it: a node below a hand-made one only (no tape link reaches it) is as
    # shallow as the root. record() calls it while every node's grad holds its position (saved[]
    # their grads); it puts the nodes, saved[] and the positions in the new order and returns
    # True, or changes nothing.
    cdef Py_ssize_t n = order.size, i, j, deepest = 0
    cdef int c, key
    cdef bint keeps = True, moves = False
    cdef Value node
    cdef int* depth = <int*>PyMem_Calloc(n + 1, sizeof(int))
    cdef int* place = <int*>PyMem_Malloc(n * sizeof(int) + 1)
    cdef int* latest = <int*>PyMem_Malloc(n * sizeof(int) + 1)    # each node's latest parent
    cdef int* starts = NULL
    cdef PyObject** items = <PyObject**>PyMem_Malloc(n * sizeof(PyObject*) + 1)
    cdef double* grads = <double*>PyMem_Malloc(n * sizeof(double) + 1)
    if depth != NULL and place != NULL and latest != NULL and items != NULL and grads != NULL:
        for i in range(n - 1, -1, -1):      # parents before children
            node = <Value>order.items[i]
            for j in range(tape_links(node)):
                c = child_position(node, j)
                depth[c] = max(depth[c], depth[i] + 1)
            deepest = max(deepest, depth[i])
        if deepest < (INT_MAX - 6) // 2:    # every key an int (a chain of 1e9 nodes is not)
            starts = <int*>PyMem_Calloc(2 * deepest + 6, sizeof(int))
    if starts != NULL:
        for i in range(n):                  # a counting sort, stable, by key: 0 for a leaf,
            node = <Value>order.items[i]    # else the deepest first, a depth's dots first,
            depth[i] = 0 if is_leaf(node) else \
                2 * (deepest + 1 - depth[i]) + (node.op != DOT)
            if i == n - 1 and depth[i]:     # and the root (not a leaf: the graph's only node)
                depth[i] = 2 * deepest + 4  # last
            starts[depth[i] + 1] += 1
        for key in range(1, 2 * deepest + 6):
            starts[key] += starts[key - 1]
        for i in range(n):
            place[i] = starts[depth[i]]
            starts[depth[i]] += 1
            moves |= place[i] != i
            latest[i] = -1
        for i in range(n):                  # parents in backward()'s order: their places rise
            node = <Value>order.items[i]
            for j in range(tape_links(node)):
                c = child_position(node, j)
                keeps &= place[i] >= latest[c]
                latest[c] = place[i]
        if keeps and moves:
            for i in range(n):
                items[place[i]] = order.items[i]
                grads[place[i]] = saved[i]
            for i in range(n):
                order.items[i] = items[i]
                saved[i] = grads[i]
                (<Value>items[i]).grad = <double>i
    moves &= keeps and starts != NULL
    PyMem_Free(depth)
    PyMem_Free(place)
    PyMem_Free(latest)
    PyMem_Free(starts)
    PyMem_Free(items)
    PyMem_Free(grads)
    return moves


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


# -- layers: dot nodes computed side by side --------------------------------------------------
# A dot node's sum is added in upstream's order (that is what makes it bit-identical), so each
# term waits for the add before it (~4 cycles). But the neurons of a layer are dots over the
# same inputs: computed side by side, each still adds its own terms in its own order, while
# the adder stays busy. group_layers finds them on the tape: a run of dots of m weights over
# the same m inputs, with nothing between them but unary nodes of theirs (their activations).
# forward() computes a layer's dots at the first; backward() reaches the last dot first and
# then does the nodes between (in the sweep's order) and every dot, which needs:
# - every dot's children before the first dot (leaves_first puts the weights there);
# - every dot's grad complete then: on the tape between the first dot and the last there is
#   nothing but the run (a dot's children come before the first dot, and a node between has
#   one child, a dot), so every other parent of a dot or of a node between comes after the
#   last dot, and the sweep has done it; each grad gathers its parents' contributions in the
#   same order as before;
# - each target of a contribution to appear once in the layer (a weight or a bias in one dot,
#   an input once in the inputs): then each grad still gathers the layer's contributions in the
#   sweep's order, input i's from the dots in turn.
# A graph where nothing groups replays as before; the layers cost 28 bytes each and 4 per node
# in them.

cdef inline bint same_shape_dot(Replay tape, Py_ssize_t i, Py_ssize_t leader, int m) noexcept:
    # node i is a dot of m weights, with a Value bias if the leader has one, over the same
    # inputs as the leader
    cdef int n = tape.first[i + 1] - tape.first[i]
    if tape.ops[i] & OP_BITS != DOT or tape.ops[i] & GROUPED or n // 2 != m or m == 0:
        return False
    if n != tape.first[leader + 1] - tape.first[leader]:
        return False
    return memcmp(tape.links + tape.first[i] + m, tape.links + tape.first[leader] + m,
                  m * sizeof(int)) == 0


cdef void group_layers(Replay tape) noexcept:
    # An optimisation: without the memory for it, the tape stays as it is.
    cdef Py_ssize_t n = tape.size, i, j, k
    cdef int m, count = 0, used = 0
    cdef char* marks = <char*>PyMem_Calloc(n, 1)
    cdef int* nodes = <int*>PyMem_Malloc(n * sizeof(int))           # the layers' nodes
    cdef Layer* layers = <Layer*>PyMem_Malloc((n // 2 + 1) * sizeof(Layer))
    cdef Layer* layer
    if marks == NULL or nodes == NULL or layers == NULL:
        PyMem_Free(marks)
        PyMem_Free(nodes)
        PyMem_Free(layers)
        return
    i = 0
    while i < n:                        # a run begins at each dot that starts none yet
        m = (tape.first[i + 1] - tape.first[i]) // 2
        if not same_shape_dot(tape, i, i, m):
            i += 1
            continue
        # The run: dots like node i, and unary nodes of theirs between (their activations).
        # Inside it the only dots are its own, so a unary node's child is one of them if it is
        # a dot at or after i.
        j = i
        k = used
        while j < n:
            if not (same_shape_dot(tape, j, i, m) or activation_of_run(tape, j, i)):
                break
            nodes[k] = <int>j
            k += 1
            j += 1
        while tape.ops[nodes[k - 1]] & OP_BITS != DOT:
            k -= 1                      # it ends at its last dot
        layer = &layers[count]
        layer.start = used
        layer.m = m
        layer.bias = (tape.first[i + 1] - tape.first[i]) % 2
        layer.examples = 1
        layer.block = -1
        layer.in_place = 0
        layer.input_grads = 1
        layer.members = sort_layer_nodes(tape, nodes + used, k - used)
        layer.between = <int>(k - used) - layer.members
        if layer.members >= 2 and layer_valid(tape, layer, nodes, marks):
            while used < k:
                tape.ops[nodes[used]] |= IN_LAYER
                used += 1
            count += 1
        i = j if j > i else i + 1       # on from where the run stopped
    PyMem_Free(marks)
    if count == 0:
        PyMem_Free(nodes)
        PyMem_Free(layers)
        return
    tape.layers = <Layer*>PyMem_Realloc(layers, count * sizeof(Layer))  # as big as what they
    tape.layer_nodes = <int*>PyMem_Realloc(nodes, used * sizeof(int))   # hold (nbytes counts it)
    if tape.layers == NULL:             # a shrinking realloc that failed: keep the old block
        tape.layers = layers
    if tape.layer_nodes == NULL:
        tape.layer_nodes = nodes
    tape.n_layers = count


cdef inline bint activation_of_run(Replay tape, Py_ssize_t j, Py_ssize_t start) noexcept:
    # node j is a unary node whose child is a dot at or after the run's start
    cdef Py_ssize_t child
    if not is_unary(tape.ops[j] & OP_BITS) or tape.ops[j] & GROUPED:
        return False
    child = tape.links[tape.first[j]]
    return child >= start and tape.ops[child] & OP_BITS == DOT


cdef int sort_layer_nodes(Replay tape, int* run, Py_ssize_t size) noexcept:
    # the dots first, then the nodes between, each in tape order (a stable partition); returns
    # how many dots
    cdef Py_ssize_t i, k, dots = 0
    cdef int held
    for i in range(size):
        if tape.ops[run[i]] & OP_BITS == DOT:
            held = run[i]
            for k in range(i, dots, -1):    # the nodes between move up one, in order
                run[k] = run[k - 1]
            run[dots] = held
            dots += 1
    return <int>dots


cdef bint layer_valid(Replay tape, const Layer* layer, const int* nodes, char* marks) noexcept:
    # Every dot's children before the first dot, and every target of the layer's contributions
    # once: the inputs once in their list, each weight and bias in one dot only.
    cdef const int* dots = nodes + layer.start
    cdef int m = layer.m, leader = dots[0], target
    cdef Py_ssize_t i, j
    cdef const int* links
    cdef bint valid = True
    for j in range(m):                  # the inputs, shared
        target = tape.links[tape.first[leader] + m + j]
        valid &= marks[target] == 0
        marks[target] = 1
    for i in range(layer.members):
        links = tape.links + tape.first[dots[i]]
        for j in range(m + layer.bias):     # weights, then the bias
            target = links[j] if j < m else links[2 * m]
            valid &= marks[target] == 0 and target < leader
            marks[target] = 1
    for j in range(m):                  # the marks cleared for the next run
        marks[tape.links[tape.first[leader] + m + j]] = 0
    for i in range(layer.members):
        links = tape.links + tape.first[dots[i]]
        for j in range(m + layer.bias):
            marks[links[j] if j < m else links[2 * m]] = 0
    return valid


cdef void layer_forward(Replay tape, const Layer* layer, double* new) noexcept nogil:
    # Each dot's value, as dot_value (src/ops.pxi) computes it: the bias (a Value's, or the
    # number c), then + w[i] * x[i] in turn. Four dots at a time, in four named accumulators
    # (an array of them spills to memory), each adding its own terms in its own order.
    cdef const int* dots = tape.layer_nodes + layer.start
    cdef int m = layer.m, count = layer.members, j, i
    cdef const int* x = tape.links + tape.first[dots[0]] + m
    cdef const int* w0
    cdef const int* w1
    cdef const int* w2
    cdef const int* w3
    cdef double a0, a1, a2, a3, xi
    j = 0
    while j + 4 <= count:
        w0 = tape.links + tape.first[dots[j]]
        w1 = tape.links + tape.first[dots[j + 1]]
        w2 = tape.links + tape.first[dots[j + 2]]
        w3 = tape.links + tape.first[dots[j + 3]]
        a0 = new[w0[2 * m]] if layer.bias else tape.constants[dots[j]]
        a1 = new[w1[2 * m]] if layer.bias else tape.constants[dots[j + 1]]
        a2 = new[w2[2 * m]] if layer.bias else tape.constants[dots[j + 2]]
        a3 = new[w3[2 * m]] if layer.bias else tape.constants[dots[j + 3]]
        for i in range(m):
            xi = new[x[i]]
            a0 += new[w0[i]] * xi
            a1 += new[w1[i]] * xi
            a2 += new[w2[i]] * xi
            a3 += new[w3[i]] * xi
        new[dots[j]] = a0
        new[dots[j + 1]] = a1
        new[dots[j + 2]] = a2
        new[dots[j + 3]] = a3
        j += 4
    while j < count:
        w0 = tape.links + tape.first[dots[j]]
        a0 = new[w0[2 * m]] if layer.bias else tape.constants[dots[j]]
        for i in range(m):
            a0 += new[w0[i]] * new[x[i]]
        new[dots[j]] = a0
        j += 1


cdef void between_backward(Replay tape, const Layer* layer) noexcept nogil:
    # The nodes between the dots, in the sweep's order (the tape's, from the end); then each
    # dot's grad is complete.
    cdef const int* between = tape.layer_nodes + layer.start + layer.members
    cdef int j, b
    for j in range(layer.between - 1, -1, -1):
        b = between[j]
        node_backprop(tape.ops[b] & OP_BITS, TapeChildren(tape.links + tape.first[b],
                                                            tape.values, tape.grads),
                      1, tape.constants[b], tape.values[b], tape.grads[b])


cdef void layer_backward(Replay tape, const Layer* layer) noexcept nogil:
    # The dots, in the sweep's order (the tape's, from the end), after between_backward.
    # dot_backprop (src/ops.pxi) adds, for each term, x[i] * g into w[i]'s grad and w[i] * g
    # into x[i]'s, then g into the bias's: here term i of four dots at a time, so that x[i]'s
    # grad gathers the four in the sweep's order (held in a register in between), and every
    # weight's and bias's grad its one.
    cdef const int* dots = tape.layer_nodes + layer.start
    cdef int m = layer.m, count = layer.members, j, i
    cdef const int* x = tape.links + tape.first[dots[0]] + m
    cdef const int* w0
    cdef const int* w1
    cdef const int* w2
    cdef const int* w3
    cdef double g0, g1, g2, g3, xi, gx
    cdef double* values = tape.values
    cdef double* grads = tape.grads
    j = count - 1
    while j >= 3:
        g0 = grads[dots[j]]
        g1 = grads[dots[j - 1]]
        g2 = grads[dots[j - 2]]
        g3 = grads[dots[j - 3]]
        if tiny(g0) or tiny(g1) or tiny(g2) or tiny(g3):
            break                       # times_grad's slow path: one dot at a time, below
        w0 = tape.links + tape.first[dots[j]]
        w1 = tape.links + tape.first[dots[j - 1]]
        w2 = tape.links + tape.first[dots[j - 2]]
        w3 = tape.links + tape.first[dots[j - 3]]
        for i in range(m):
            xi = values[x[i]]
            gx = grads[x[i]]
            grads[w0[i]] += xi * g0
            gx += values[w0[i]] * g0
            grads[w1[i]] += xi * g1
            gx += values[w1[i]] * g1
            grads[w2[i]] += xi * g2
            gx += values[w2[i]] * g2
            grads[w3[i]] += xi * g3
            gx += values[w3[i]] * g3
            grads[x[i]] = gx
        if layer.bias:
            grads[w0[2 * m]] += g0
            grads[w1[2 * m]] += g1
            grads[w2[2 * m]] += g2
            grads[w3[2 * m]] += g3
        j -= 4
    while j >= 0:
        dot_backprop(TapeChildren(tape.links + tape.first[dots[j]], values, grads),
                     2 * m + layer.bias, grads[dots[j]])
        j -= 1


# -- runs: a network's layers and activations side by side --------------------------------------
# by_depth puts a layer's dots, and then its neurons' activations (relu), next to each other on
# the tape, and a batch's losses too. A run is LONG_RUN or more such nodes with the same op
# byte: layers' dots, nodes of one unary op (not in a layer, not grouped), or cross-entropy
# nodes (not grouped). forward() and the sweep take a run as one: the layers that begin (end) in
# a run of dots at once, without visiting each dot; a unary run in a loop of its own, on the
# op's own formulas (op_value, local_derivatives), with the op chosen once for the run rather
# than at every node; a cross-entropy run on its formulas too, forward() keeping each node's
# lse(z) (a Shift, 16 bytes, src/ops.pxi) for the sweep, which would compute it again (half the
# exps of its derivatives). 16 bytes per cross-entropy node of a run.

cdef enum:
    LONG_RUN = 8

@cython.cdivision(True)                 # by LONG_RUN: no zero-division check
cdef void find_runs(Replay tape) noexcept:
    # An optimisation: without the memory for it, the tape has no runs.
    cdef Py_ssize_t i = tape.n_plain, end
    cdef int count = 0
    cdef int* runs = <int*>PyMem_Malloc((tape.size // LONG_RUN + 1) * 2 * sizeof(int))
    if runs == NULL:
        return
    while i < tape.size:
        end = i + 1
        while end < tape.size and tape.ops[end] == tape.ops[i]:
            end += 1
        if end - i >= LONG_RUN and (tape.ops[i] & ~IEEE_NODE == IN_LAYER | DOT or (
                is_unary(tape.ops[i] & OP_BITS) and not tape.ops[i] & (GROUPED | IN_LAYER)) or
                tape.ops[i] & ~IEEE_NODE == CROSS_ENTROPY):
            runs[2 * count] = <int>i
            runs[2 * count + 1] = <int>end
            count += 1
            if tape.ops[i] & OP_BITS == CROSS_ENTROPY:
                tape.n_shifts += end - i
        i = end
    if tape.n_shifts:
        tape.shifts = <Shift*>PyMem_Malloc(tape.n_shifts * sizeof(Shift))
        if tape.shifts == NULL:         # no memory for them: no cross-entropy runs
            tape.n_shifts = 0
            count = drop_cross_entropy_runs(tape, runs, count)
    if count == 0:
        PyMem_Free(runs)
        return
    tape.runs = <int*>PyMem_Realloc(runs, count * 2 * sizeof(int))     # as big as they are
    if tape.runs == NULL:               # a shrinking realloc that failed: keep the old block
        tape.runs = runs
    tape.n_runs = count
    cross_entropy_shifts(tape)


cdef int drop_cross_entropy_runs(Replay tape, int* runs, int count) noexcept:
    # runs[] without its cross-entropy runs (no memory for their shifts), in place; returns how
    # many are left
    cdef int r, kept = 0
    for r in range(count):
        if tape.ops[runs[2 * r]] & OP_BITS != CROSS_ENTROPY:
            runs[2 * kept] = runs[2 * r]
            runs[2 * kept + 1] = runs[2 * r + 1]
            kept += 1
    return kept


cdef void cross_entropy_shifts(Replay tape) noexcept:
    # each cross-entropy run's shifts, from the values: those of the graph as built, or of the
    # last good forward()
    cdef Py_ssize_t i, k = 0
    cdef int r
    for r in range(tape.n_runs if tape.n_shifts else 0):
        if tape.ops[tape.runs[2 * r]] & OP_BITS == CROSS_ENTROPY:
            for i in range(tape.runs[2 * r], tape.runs[2 * r + 1]):
                tape.shifts[k] = cross_entropy_shift(
                    TapeChildren(tape.links + tape.first[i], tape.values, NULL),
                    tape.first[i + 1] - tape.first[i], tape.constants[i])
                k += 1


cdef Py_ssize_t cross_entropy_run_forward(Replay tape, Py_ssize_t start, Py_ssize_t end,
                                          double* new, Py_ssize_t shift_at) noexcept:
    # forward() over a run of cross-entropy nodes (which never raise), keeping their shifts
    # from shifts[shift_at] on; returns the index of the next run's first shift
    cdef Py_ssize_t i, n
    cdef Shift shift
    cdef TapeChildren children
    for i in range(start, end):
        n = tape.first[i + 1] - tape.first[i]
        children = TapeChildren(tape.links + tape.first[i], new, NULL)
        shift = cross_entropy_shift(children, n, tape.constants[i])
        tape.shifts[shift_at] = shift
        shift_at += 1
        new[i] = cross_entropy_from(children, n, tape.constants[i], shift)
        (<Value>tape.nodes[i]).data = new[i]
    return shift_at


cdef Py_ssize_t cross_entropy_run_backward(Replay tape, Py_ssize_t start, Py_ssize_t end,
                                           bint write_back, Py_ssize_t shift_at) noexcept:
    # the sweep over a run of cross-entropy nodes, from its end, with the shifts forward()
    # kept (shifts[:shift_at] are this run's and the earlier runs'); returns how many the
    # earlier runs have
    cdef Py_ssize_t i
    for i in range(end - 1, start - 1, -1):
        shift_at -= 1
        if write_back:
            (<Value>tape.nodes[i]).grad = tape.grads[i]
        cross_entropy_backprop_from(
            TapeChildren(tape.links + tape.first[i], tape.values, tape.grads),
            tape.first[i + 1] - tape.first[i], tape.constants[i], tape.shifts[shift_at],
            tape.grads[i])
    return shift_at


cdef inline Py_ssize_t unary_run_forward(Replay tape, unsigned char op, Py_ssize_t start,
                                         Py_ssize_t end, double* new, bint checked,
                                         int* error) noexcept:
    cdef Py_ssize_t i
    cdef double a, out
    cdef const int* links = tape.links          # locals: the stores below might alias fields
    cdef const int* first = tape.first
    cdef const double* constants = tape.constants
    cdef PyObject** nodes = tape.nodes
    for i in range(start, end):
        a = child_data(TapeChildren(links + first[i], new, NULL), 0)
        out = op_value(op, a, 0.0, constants[i])
        if checked and not isfinite(out):
            error[0] = op_error(op, a, 0.0, constants[i], out)
            if error[0]:
                return i
        new[i] = out
        (<Value>nodes[i]).data = out
    return end


cdef inline void unary_run_backward(Replay tape, unsigned char op, Py_ssize_t start,
                                    Py_ssize_t end, bint write_back) noexcept:
    cdef Py_ssize_t i
    cdef double g, da, db
    cdef int which
    cdef TapeChildren children
    cdef const double* values = tape.values     # locals: the stores below might alias fields
    cdef double* grads = tape.grads
    cdef const int* links = tape.links
    cdef const int* first = tape.first
    cdef const double* constants = tape.constants
    cdef PyObject** nodes = tape.nodes
    for i in range(end - 1, start - 1, -1):
        g = grads[i]
        if write_back:
            (<Value>nodes[i]).grad = g
        children = TapeChildren(links + first[i], values, grads)
        which = local_derivatives(op, children, constants[i], values[i], &da, &db)
        send(children, which, da, db, g)


cdef inline bint tiny(double g) noexcept nogil:
    # a grad times_grad (src/floats.pxi) multiplies without the hardware's multiplication
    return fabs(g) < 2.004168360008973e-292 and g != 0.0


# -- blocks: a layer's dots for every example of a batch ----------------------------------------
# The examples of a batch go through the same layers: each example's layer (above) has the same
# weights. group_blocks makes a block of such layers, and it is computed at its first layer,
# on its weights and inputs as rows of arrays (no index load per term: where the tape has them
# so, see place_leaves, else gathered into a scratch array), many sums side by
# side, each adding its own terms in its own order: forward, four examples by four neurons
# (sixteen sums); backward, two examples by four neurons, two terms at a time (each term's
# grads are sums of their own). A block needs, on top of what each of its layers needs:
# - forward() computes every example's dots at the block's first dot: each example's inputs come
#   before it on the tape (true of a first layer, whose inputs are leaves; of a second, whose
#   inputs are the first's activations, only on a tape by_depth: in backward()'s order they are
#   made between the examples' layers);
# - backward() runs each layer's nodes between at the layer's last dot, as before (then its
#   dots' grads are complete), and every example's dots when it reaches the block's first layer:
#   so no other node between the block's first dot and its last may have a child whose grad the
#   block adds to (a weight, a bias, an input), and the examples' inputs are distinct and are not
#   weights. Each such grad then gathers the block's contributions in the sweep's order: a
#   weight's from the examples from the last to the first, an input's from the neurons from the
#   last to the first.
# A block costs 4 bytes per layer in it; one scratch array serves every block, as big as the
# biggest needs (block_scratch): for a block in place, its weights and biases once.

# The two kernels that do a block's arithmetic, in C: vector code on two doubles side by side
# where every CPU of the build's target has it (SSE2 on x86-64, NEON on aarch64), unless the
# build defines MICROGRAD_C_SCALAR (setup.py: MICROGRAD_C_SCALAR=1); plain C otherwise. Each
# lane of a vector operation is the scalar operation on that lane's numbers, rounded alike (no
# FMA: setup.py's -ffp-contract=off), so all give the same bits; an AVX variant (below) is
# chosen at import where the CPU has it. The block tests run every variant the CPU can run;
# CI's wheels have the vector and AVX ones, its sdist build plain C.
cdef extern from *:
    """
    #if !defined(MICROGRAD_C_SCALAR) && (defined(__SSE2__) || defined(_M_X64))
    #include <emmintrin.h>
    #define MICROGRAD_C_VECTOR 1
    #define MICROGRAD_C_BUILD_KERNELS "sse2"
    typedef __m128d micrograd_c_pair;
    #define MICROGRAD_C_LOAD _mm_loadu_pd
    #define MICROGRAD_C_STORE _mm_storeu_pd
    #define MICROGRAD_C_ADD _mm_add_pd
    #define MICROGRAD_C_MUL _mm_mul_pd
    #define MICROGRAD_C_SPLAT _mm_set1_pd
    #elif !defined(MICROGRAD_C_SCALAR) && (defined(__aarch64__) || defined(_M_ARM64))
    #include <arm_neon.h>
    #define MICROGRAD_C_VECTOR 1
    #define MICROGRAD_C_BUILD_KERNELS "neon"
    typedef float64x2_t micrograd_c_pair;
    #define MICROGRAD_C_LOAD vld1q_f64
    #define MICROGRAD_C_STORE vst1q_f64
    #define MICROGRAD_C_ADD vaddq_f64
    #define MICROGRAD_C_MUL vmulq_f64
    #define MICROGRAD_C_SPLAT vdupq_n_f64
    #else
    #define MICROGRAD_C_VECTOR 0
    #define MICROGRAD_C_BUILD_KERNELS "plain C"
    #endif

    /* Four examples by four neurons, forward: for i in turn, a[4 e + k] += w[k][i] * x[e][i],
       where w[k][i] is w4[4 i + k] and x[e][i] is x[e m + i]. Vectors hold neurons k, k + 1. */
    static void micrograd_c_four_by_four_forward(int m, const double* w4, const double* x,
                                                 double* a)
    {
        int i;
    #if MICROGRAD_C_VECTOR
        micrograd_c_pair a0 = MICROGRAD_C_LOAD(a), b0 = MICROGRAD_C_LOAD(a + 2),
                         a1 = MICROGRAD_C_LOAD(a + 4), b1 = MICROGRAD_C_LOAD(a + 6),
                         a2 = MICROGRAD_C_LOAD(a + 8), b2 = MICROGRAD_C_LOAD(a + 10),
                         a3 = MICROGRAD_C_LOAD(a + 12), b3 = MICROGRAD_C_LOAD(a + 14), w01, w23, s;
        for (i = 0; i < m; i++) {
            w01 = MICROGRAD_C_LOAD(w4 + 4 * i);
            w23 = MICROGRAD_C_LOAD(w4 + 4 * i + 2);
            s = MICROGRAD_C_SPLAT(x[i]);
            a0 = MICROGRAD_C_ADD(a0, MICROGRAD_C_MUL(w01, s));
            b0 = MICROGRAD_C_ADD(b0, MICROGRAD_C_MUL(w23, s));
            s = MICROGRAD_C_SPLAT(x[m + i]);
            a1 = MICROGRAD_C_ADD(a1, MICROGRAD_C_MUL(w01, s));
            b1 = MICROGRAD_C_ADD(b1, MICROGRAD_C_MUL(w23, s));
            s = MICROGRAD_C_SPLAT(x[2 * m + i]);
            a2 = MICROGRAD_C_ADD(a2, MICROGRAD_C_MUL(w01, s));
            b2 = MICROGRAD_C_ADD(b2, MICROGRAD_C_MUL(w23, s));
            s = MICROGRAD_C_SPLAT(x[3 * m + i]);
            a3 = MICROGRAD_C_ADD(a3, MICROGRAD_C_MUL(w01, s));
            b3 = MICROGRAD_C_ADD(b3, MICROGRAD_C_MUL(w23, s));
        }
        MICROGRAD_C_STORE(a, a0); MICROGRAD_C_STORE(a + 2, b0);
        MICROGRAD_C_STORE(a + 4, a1); MICROGRAD_C_STORE(a + 6, b1);
        MICROGRAD_C_STORE(a + 8, a2); MICROGRAD_C_STORE(a + 10, b2);
        MICROGRAD_C_STORE(a + 12, a3); MICROGRAD_C_STORE(a + 14, b3);
    #else
        int k;
        for (i = 0; i < m; i++)
            for (k = 0; k < 16; k++)
                a[k] += w4[4 * i + k % 4] * x[(k / 4) * m + i];
    #endif
    }

    /* Two examples by four neurons, backward, as dot_backprop does each dot, the later example
       (inputs x + m, their grads gx + m, its dots' grads g[4..7]) before the earlier (x, gx,
       g[0..3]) and neuron 3 before neuron 0 (rows of w and gw, m apart): for k from 3 to 0,
       gw[k][i] += x1[i] g1[k], then += x0[i] g0[k]; gx1[i] += w[k][i] g1[k], gx0[i] likewise.
       Vectors hold terms i, i + 1: every operation is elementwise over i. Without gx (NULL:
       the inputs' grads are not wanted), the weights' grads alone, the same bits. */
    #define MICROGRAD_C_WEIGHT_TERM(k)                                                  \
        t = gw[k * m + i] + x[m + i] * g[4 + k];                                        \
        gw[k * m + i] = t + x[i] * g[k];
    #define MICROGRAD_C_TERM(k)                                                         \
        MICROGRAD_C_WEIGHT_TERM(k)                                                      \
        h1 += w[k * m + i] * g[4 + k];                                                  \
        h0 += w[k * m + i] * g[k];
    #define MICROGRAD_C_WEIGHT_TERMS(k)                                                 \
        u = MICROGRAD_C_ADD(MICROGRAD_C_LOAD(gw + k * m + i), MICROGRAD_C_MUL(x1, g1_##k)); \
        MICROGRAD_C_STORE(gw + k * m + i, MICROGRAD_C_ADD(u, MICROGRAD_C_MUL(x0, g0_##k)));
    #define MICROGRAD_C_TERMS(k)                                                        \
        MICROGRAD_C_WEIGHT_TERMS(k)                                                     \
        v = MICROGRAD_C_LOAD(w + k * m + i);                                            \
        v1 = MICROGRAD_C_ADD(v1, MICROGRAD_C_MUL(v, g1_##k));                           \
        v0 = MICROGRAD_C_ADD(v0, MICROGRAD_C_MUL(v, g0_##k));
    static void micrograd_c_two_by_four_backward(int m, const double* w, double* gw,
                                                 const double* x, double* gx, const double* g)
    {
        int i = 0;
        double t, h0, h1;
    #if MICROGRAD_C_VECTOR
        micrograd_c_pair g0_0 = MICROGRAD_C_SPLAT(g[0]), g0_1 = MICROGRAD_C_SPLAT(g[1]),
                         g0_2 = MICROGRAD_C_SPLAT(g[2]), g0_3 = MICROGRAD_C_SPLAT(g[3]),
                         g1_0 = MICROGRAD_C_SPLAT(g[4]), g1_1 = MICROGRAD_C_SPLAT(g[5]),
                         g1_2 = MICROGRAD_C_SPLAT(g[6]), g1_3 = MICROGRAD_C_SPLAT(g[7]),
                         x0, x1, v0, v1, u, v;
        for (; i + 2 <= m; i += 2) {
            x0 = MICROGRAD_C_LOAD(x + i);
            x1 = MICROGRAD_C_LOAD(x + m + i);
            v0 = MICROGRAD_C_LOAD(gx + i);
            v1 = MICROGRAD_C_LOAD(gx + m + i);
            MICROGRAD_C_TERMS(3) MICROGRAD_C_TERMS(2) MICROGRAD_C_TERMS(1) MICROGRAD_C_TERMS(0)
            MICROGRAD_C_STORE(gx + i, v0);
            MICROGRAD_C_STORE(gx + m + i, v1);
        }
    #endif
        for (; i < m; i++) {
            h0 = gx[i];
            h1 = gx[m + i];
            MICROGRAD_C_TERM(3) MICROGRAD_C_TERM(2) MICROGRAD_C_TERM(1) MICROGRAD_C_TERM(0)
            gx[i] = h0;
            gx[m + i] = h1;
        }
    }
    static void micrograd_c_two_by_four_weights(int m, double* gw, const double* x,
                                                const double* g)
    {
        int i = 0;
        double t;
    #if MICROGRAD_C_VECTOR
        micrograd_c_pair g0_0 = MICROGRAD_C_SPLAT(g[0]), g0_1 = MICROGRAD_C_SPLAT(g[1]),
                         g0_2 = MICROGRAD_C_SPLAT(g[2]), g0_3 = MICROGRAD_C_SPLAT(g[3]),
                         g1_0 = MICROGRAD_C_SPLAT(g[4]), g1_1 = MICROGRAD_C_SPLAT(g[5]),
                         g1_2 = MICROGRAD_C_SPLAT(g[6]), g1_3 = MICROGRAD_C_SPLAT(g[7]),
                         x0, x1, u;
        for (; i + 2 <= m; i += 2) {
            x0 = MICROGRAD_C_LOAD(x + i);
            x1 = MICROGRAD_C_LOAD(x + m + i);
            MICROGRAD_C_WEIGHT_TERMS(3) MICROGRAD_C_WEIGHT_TERMS(2)
            MICROGRAD_C_WEIGHT_TERMS(1) MICROGRAD_C_WEIGHT_TERMS(0)
        }
    #endif
        for (; i < m; i++) {
            MICROGRAD_C_WEIGHT_TERM(3) MICROGRAD_C_WEIGHT_TERM(2)
            MICROGRAD_C_WEIGHT_TERM(1) MICROGRAD_C_WEIGHT_TERM(0)
        }
    }

    /* The same kernels on four doubles side by side (AVX), compiled for x86-64 CPUs that
       have it whatever the build's target, and chosen when the CPU running them has it
       (micrograd_c_kernels). Each lane as above: the same bits. */
    #if MICROGRAD_C_VECTOR && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    #include <immintrin.h>
    #define MICROGRAD_C_AVX 1
    #define MICROGRAD_C_WIDE_WEIGHT_TERMS(k)                                            \
        u = _mm256_add_pd(_mm256_loadu_pd(gw + k * m + i), _mm256_mul_pd(x1, g1_##k));   \
        _mm256_storeu_pd(gw + k * m + i, _mm256_add_pd(u, _mm256_mul_pd(x0, g0_##k)));
    #define MICROGRAD_C_WIDE_TERMS(k)                                                   \
        MICROGRAD_C_WIDE_WEIGHT_TERMS(k)                                                \
        v = _mm256_loadu_pd(w + k * m + i);                                             \
        v1 = _mm256_add_pd(v1, _mm256_mul_pd(v, g1_##k));                               \
        v0 = _mm256_add_pd(v0, _mm256_mul_pd(v, g0_##k));
    __attribute__((target("avx")))
    static void micrograd_c_four_by_four_forward_avx(int m, const double* w4, const double* x,
                                                     double* a)
    {
        int i;
        __m256d a0 = _mm256_loadu_pd(a), a1 = _mm256_loadu_pd(a + 4),
                a2 = _mm256_loadu_pd(a + 8), a3 = _mm256_loadu_pd(a + 12), w;
        for (i = 0; i < m; i++) {
            w = _mm256_loadu_pd(w4 + 4 * i);
            a0 = _mm256_add_pd(a0, _mm256_mul_pd(w, _mm256_broadcast_sd(x + i)));
            a1 = _mm256_add_pd(a1, _mm256_mul_pd(w, _mm256_broadcast_sd(x + m + i)));
            a2 = _mm256_add_pd(a2, _mm256_mul_pd(w, _mm256_broadcast_sd(x + 2 * m + i)));
            a3 = _mm256_add_pd(a3, _mm256_mul_pd(w, _mm256_broadcast_sd(x + 3 * m + i)));
        }
        _mm256_storeu_pd(a, a0); _mm256_storeu_pd(a + 4, a1);
        _mm256_storeu_pd(a + 8, a2); _mm256_storeu_pd(a + 12, a3);
    }
    /* Two fours of neurons (weights w4 and v4, interleaved as above) over the same four
       examples: a[0..16) for w4's, a[16..32) for v4's. Each sum's adds wait on its last one;
       eight sums side by side (not four) keep the adders busy. */
    __attribute__((target("avx")))
    static void micrograd_c_four_by_eight_forward_avx(int m, const double* w4, const double* v4,
                                                      const double* x, double* a)
    {
        int i;
        __m256d a0 = _mm256_loadu_pd(a), a1 = _mm256_loadu_pd(a + 4),
                a2 = _mm256_loadu_pd(a + 8), a3 = _mm256_loadu_pd(a + 12),
                b0 = _mm256_loadu_pd(a + 16), b1 = _mm256_loadu_pd(a + 20),
                b2 = _mm256_loadu_pd(a + 24), b3 = _mm256_loadu_pd(a + 28), w, v, s;
        for (i = 0; i < m; i++) {
            w = _mm256_loadu_pd(w4 + 4 * i);
            v = _mm256_loadu_pd(v4 + 4 * i);
            s = _mm256_broadcast_sd(x + i);
            a0 = _mm256_add_pd(a0, _mm256_mul_pd(w, s));
            b0 = _mm256_add_pd(b0, _mm256_mul_pd(v, s));
            s = _mm256_broadcast_sd(x + m + i);
            a1 = _mm256_add_pd(a1, _mm256_mul_pd(w, s));
            b1 = _mm256_add_pd(b1, _mm256_mul_pd(v, s));
            s = _mm256_broadcast_sd(x + 2 * m + i);
            a2 = _mm256_add_pd(a2, _mm256_mul_pd(w, s));
            b2 = _mm256_add_pd(b2, _mm256_mul_pd(v, s));
            s = _mm256_broadcast_sd(x + 3 * m + i);
            a3 = _mm256_add_pd(a3, _mm256_mul_pd(w, s));
            b3 = _mm256_add_pd(b3, _mm256_mul_pd(v, s));
        }
        _mm256_storeu_pd(a, a0); _mm256_storeu_pd(a + 4, a1);
        _mm256_storeu_pd(a + 8, a2); _mm256_storeu_pd(a + 12, a3);
        _mm256_storeu_pd(a + 16, b0); _mm256_storeu_pd(a + 20, b1);
        _mm256_storeu_pd(a + 24, b2); _mm256_storeu_pd(a + 28, b3);
    }
    __attribute__((target("avx")))
    static void micrograd_c_two_by_four_backward_avx(int m, const double* w, double* gw,
                                                     const double* x, double* gx, const double* g)
    {
        int i = 0;
        double t, h0, h1;
        __m256d g0_0 = _mm256_set1_pd(g[0]), g0_1 = _mm256_set1_pd(g[1]),
                g0_2 = _mm256_set1_pd(g[2]), g0_3 = _mm256_set1_pd(g[3]),
                g1_0 = _mm256_set1_pd(g[4]), g1_1 = _mm256_set1_pd(g[5]),
                g1_2 = _mm256_set1_pd(g[6]), g1_3 = _mm256_set1_pd(g[7]), x0, x1, v0, v1, u, v;
        for (; i + 4 <= m; i += 4) {
            x0 = _mm256_loadu_pd(x + i);
            x1 = _mm256_loadu_pd(x + m + i);
            v0 = _mm256_loadu_pd(gx + i);
            v1 = _mm256_loadu_pd(gx + m + i);
            MICROGRAD_C_WIDE_TERMS(3) MICROGRAD_C_WIDE_TERMS(2)
            MICROGRAD_C_WIDE_TERMS(1) MICROGRAD_C_WIDE_TERMS(0)
            _mm256_storeu_pd(gx + i, v0);
            _mm256_storeu_pd(gx + m + i, v1);
        }
        for (; i < m; i++) {
            h0 = gx[i];
            h1 = gx[m + i];
            MICROGRAD_C_TERM(3) MICROGRAD_C_TERM(2) MICROGRAD_C_TERM(1) MICROGRAD_C_TERM(0)
            gx[i] = h0;
            gx[m + i] = h1;
        }
    }
    __attribute__((target("avx")))
    static void micrograd_c_two_by_four_weights_avx(int m, double* gw, const double* x,
                                                    const double* g)
    {
        int i = 0;
        double t;
        __m256d g0_0 = _mm256_set1_pd(g[0]), g0_1 = _mm256_set1_pd(g[1]),
                g0_2 = _mm256_set1_pd(g[2]), g0_3 = _mm256_set1_pd(g[3]),
                g1_0 = _mm256_set1_pd(g[4]), g1_1 = _mm256_set1_pd(g[5]),
                g1_2 = _mm256_set1_pd(g[6]), g1_3 = _mm256_set1_pd(g[7]), x0, x1, u;
        for (; i + 4 <= m; i += 4) {
            x0 = _mm256_loadu_pd(x + i);
            x1 = _mm256_loadu_pd(x + m + i);
            MICROGRAD_C_WIDE_WEIGHT_TERMS(3) MICROGRAD_C_WIDE_WEIGHT_TERMS(2)
            MICROGRAD_C_WIDE_WEIGHT_TERMS(1) MICROGRAD_C_WIDE_WEIGHT_TERMS(0)
        }
        for (; i < m; i++) {
            MICROGRAD_C_WEIGHT_TERM(3) MICROGRAD_C_WEIGHT_TERM(2)
            MICROGRAD_C_WEIGHT_TERM(1) MICROGRAD_C_WEIGHT_TERM(0)
        }
    }
    #else
    #define MICROGRAD_C_AVX 0
    #endif

    /* Which kernels blocks use: 2 the AVX ones, 1 this build's (vector or plain C); the best
       the CPU has at import, lower for tests (engine._use_kernels). */
    static int micrograd_c_kernels = 1;
    static int micrograd_c_has_avx(void)
    {
    #if MICROGRAD_C_AVX
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx") != 0;
    #else
        return 0;
    #endif
    }
    static void micrograd_c_block_forward(int m, const double* w4, const double* x, double* a)
    {
    #if MICROGRAD_C_AVX
        if (micrograd_c_kernels == 2) {
            micrograd_c_four_by_four_forward_avx(m, w4, x, a);
            return;
        }
    #endif
        micrograd_c_four_by_four_forward(m, w4, x, a);
    }
    static void micrograd_c_block_forward8(int m, const double* w4, const double* v4,
                                           const double* x, double* a)
    {
    #if MICROGRAD_C_AVX
        if (micrograd_c_kernels == 2) {
            micrograd_c_four_by_eight_forward_avx(m, w4, v4, x, a);
            return;
        }
    #endif
        micrograd_c_block_forward(m, w4, x, a);   /* SSE2, NEON, plain C: eight sums already */
        micrograd_c_block_forward(m, v4, x, a + 16);
    }
    static void micrograd_c_block_backward(int m, const double* w, double* gw, const double* x,
                                           double* gx, const double* g)
    {
    #if MICROGRAD_C_AVX
        if (micrograd_c_kernels == 2) {
            if (gx)
                micrograd_c_two_by_four_backward_avx(m, w, gw, x, gx, g);
            else
                micrograd_c_two_by_four_weights_avx(m, gw, x, g);
            return;
        }
    #endif
        if (gx)
            micrograd_c_two_by_four_backward(m, w, gw, x, gx, g);
        else
            micrograd_c_two_by_four_weights(m, gw, x, g);
    }
    """
    bint VECTOR_KERNELS "MICROGRAD_C_VECTOR"
    const char* BUILD_KERNELS "MICROGRAD_C_BUILD_KERNELS"
    int kernels_in_use "micrograd_c_kernels"
    bint has_avx "micrograd_c_has_avx"() noexcept nogil
    void four_by_four_forward "micrograd_c_block_forward"(
        int m, const double* w4, const double* x, double* a) noexcept nogil
    void four_by_eight_forward "micrograd_c_block_forward8"(
        int m, const double* w4, const double* v4, const double* x, double* a) noexcept nogil
    void two_by_four_backward "micrograd_c_block_backward"(
        int m, const double* w, double* gw, const double* x, double* gx,
        const double* g) noexcept nogil

_vector_kernels = VECTOR_KERNELS     # for tests: whether this build's blocks use vector code
if has_avx():
    kernels_in_use = 2


def _kernel_sets():
    """For tests and measurements: the kernels blocks can use here, the ones in use first: the
    build's ("sse2", "neon" or "plain C"), and "avx" where the CPU has it (used then)."""
    build = BUILD_KERNELS.decode()
    available = (build,) + (("avx",) if has_avx() else ())
    in_use = "avx" if kernels_in_use == 2 else build
    return (in_use,) + tuple(name for name in available if name != in_use)


def _use_kernels(str name):
    """For tests and measurements: make blocks use the kernels `name` (see _kernel_sets());
    returns the name of those used before."""
    global kernels_in_use
    if name not in _kernel_sets():
        raise ValueError(f"no kernels {name!r} here: {_kernel_sets()}")
    previous = _kernel_sets()[0]
    kernels_in_use = 2 if name == "avx" else 1
    return previous


cdef inline const int* dot_links(Replay tape, const Layer* layer, int j) noexcept nogil:
    # the links of a layer's dot j: its m weights, its m inputs, then its bias if a Value
    return tape.links + tape.first[tape.layer_nodes[layer.start + j]]


cdef inline const Layer* block_layer(Replay tape, const Layer* first, int e) noexcept nogil:
    return &tape.layers[tape.block_layers[first.block + e]]


cdef bint same_weights(Replay tape, const Layer* a, const Layer* b) noexcept:
    cdef int j, m = a.m
    cdef const int* wa
    cdef const int* wb
    if m != b.m or a.bias != b.bias or a.members != b.members:
        return False
    for j in range(a.members):
        wa = dot_links(tape, a, j)
        wb = dot_links(tape, b, j)
        if memcmp(wa, wb, m * sizeof(int)) != 0 or a.bias and wa[2 * m] != wb[2 * m]:
            return False
    return True


cdef void group_blocks(Replay tape) noexcept:
    # An optimisation, as group_layers. Candidates for a layer's block are the later layers
    # whose first dot has the same first weight (a list per weight: next_with[]).
    cdef int n = tape.n_layers, a, b, count, used = 0, k
    cdef Layer* first
    if n < 2:
        return
    cdef char* marks = <char*>PyMem_Calloc(tape.size, 1)
    cdef char* taken = <char*>PyMem_Calloc(n, 1)
    cdef int* head = <int*>PyMem_Malloc(tape.size * sizeof(int))
    cdef int* next_with = <int*>PyMem_Malloc(n * sizeof(int))
    cdef int* chosen = <int*>PyMem_Malloc(n * sizeof(int))
    cdef int* block_layers = <int*>PyMem_Malloc(n * sizeof(int))
    if marks == NULL or taken == NULL or head == NULL or next_with == NULL or chosen == NULL \
            or block_layers == NULL:
        PyMem_Free(marks)
        PyMem_Free(taken)
        PyMem_Free(head)
        PyMem_Free(next_with)
        PyMem_Free(chosen)
        PyMem_Free(block_layers)
        return
    for k in range(tape.size):
        head[k] = -1
    for a in range(n - 1, -1, -1):      # each list in tape order
        k = dot_links(tape, &tape.layers[a], 0)[0]
        next_with[a] = head[k]
        head[k] = a
    for a in range(n):
        if taken[a]:
            continue
        first = &tape.layers[a]
        count = 0
        b = a
        while b >= 0:                   # each layer is tried once, with the first like it
            if not taken[b] and same_weights(tape, first, &tape.layers[b]):
                chosen[count] = b
                count += 1
                taken[b] = 1
            b = next_with[b]
        if count < 2 or not block_valid(tape, chosen, count, marks):
            continue
        for k in range(count):
            tape.layers[chosen[k]].block = used
            tape.layers[chosen[k]].examples = 0
            block_layers[used + k] = chosen[k]
        first.examples = count
        used += count
    PyMem_Free(marks)
    PyMem_Free(taken)
    PyMem_Free(head)
    PyMem_Free(next_with)
    PyMem_Free(chosen)
    if used == 0:
        PyMem_Free(block_layers)
        return
    tape.block_layers = block_layers
    tape.n_block_layers = used


cdef void make_scratch(Replay tape) noexcept:
    # The one scratch array every block shares, as big as the biggest block needs (after
    # place_leaves, which decides what a block must gather); without the memory for it, no
    # blocks: every layer alone.
    cdef Py_ssize_t size = 0
    cdef int a
    if tape.n_block_layers == 0:
        return
    for a in range(tape.n_layers):
        if tape.layers[a].examples > 1:
            size = max(size, block_scratch(&tape.layers[a]))
    tape.scratch = <double*>PyMem_Malloc(size * sizeof(double))
    if tape.scratch == NULL:
        PyMem_Free(tape.block_layers)
        tape.block_layers = NULL
        tape.n_block_layers = 0
        for a in range(tape.n_layers):
            tape.layers[a].examples = 1
            tape.layers[a].block = -1
        return
    tape.scratch_size = size


cdef inline Py_ssize_t block_scratch(const Layer* first) noexcept:
    # Doubles of scratch a block's passes use: forward, its weights four neurons interleaved
    # (padded to a multiple of four), each neuron's bias, and its inputs unless in place;
    # backward, its weights and inputs with their grads unless in place, the last N % 4
    # neurons' rows (block_backward) and each neuron's bias sum.
    cdef Py_ssize_t N = first.members, E = first.examples, m = first.m, N4 = padded(N)
    cdef Py_ssize_t weights = 0 if first.in_place & WEIGHTS_IN_PLACE else 2 * N * m
    cdef Py_ssize_t inputs = 0 if first.in_place & INPUTS_IN_PLACE else E * m
    return max(N4 * m + N4 + inputs, weights + 2 * inputs + 8 * m + N)


cdef inline int padded(int n) noexcept nogil:
    # n rounded up to a multiple of four: a block's neurons, four at a time (block_forward)
    return (n + 3) & ~3


cdef bint block_valid(Replay tape, const int* chosen, int count, char* marks) noexcept:
    # What a block needs (above) of layers with the same weights, chosen[] in tape order.
    # marks: 1 for the grads the block adds to, 2 for the block's own nodes; cleared after.
    cdef const Layer* first = &tape.layers[chosen[0]]
    cdef const Layer* layer
    cdef const Layer* last = &tape.layers[chosen[count - 1]]
    cdef int m = first.m, i, j, k, start = tape.layer_nodes[first.start]
    cdef int end = tape.layer_nodes[last.start + last.members - 1]
    cdef const int* w
    cdef const int* x
    cdef bint valid = True
    for j in range(first.members):      # weights and biases, each once (layer_valid)
        w = dot_links(tape, first, j)
        for i in range(m + first.bias):
            marks[w[i] if i < m else w[2 * m]] = 1
    for k in range(count):
        layer = &tape.layers[chosen[k]]
        x = dot_links(tape, layer, 0) + m
        for i in range(m):              # inputs before the block, each once in the block
            valid &= marks[x[i]] == 0 and x[i] < start
            marks[x[i]] = 1
    for k in range(count):
        layer = &tape.layers[chosen[k]]
        for j in range(layer.start, layer.start + layer.members + layer.between):
            marks[tape.layer_nodes[j]] = 2
    for i in range(start, end + 1):     # nothing else in between adds to the block's grads
        if marks[i] == 2:
            continue
        for j in range(tape.first[i], tape.first[i + 1] - (tape.ops[i] & GROUPED != 0)):
            valid &= marks[tape.links[j]] != 1
    for k in range(count):              # the marks cleared for the next block
        layer = &tape.layers[chosen[k]]
        for j in range(layer.start, layer.start + layer.members + layer.between):
            marks[tape.layer_nodes[j]] = 0
        for j in range(layer.members):
            w = dot_links(tape, layer, j)
            for i in range(2 * m + layer.bias):
                marks[w[i]] = 0
    return valid


cdef void place_leaves(Replay tape) noexcept:
    # The leaves can go anywhere before the other nodes: no number depends on where. Each
    # block's weights, where they are leaves, are put neuron after neuron, and its examples'
    # inputs example after example, so that the block reads and writes them in place instead
    # of gathering them (an input made by another layer is where the tape has it: by_depth
    # puts a layer's activations example after example). Without the memory for it, the
    # leaves stay where they are.
    cdef Py_ssize_t n = tape.n_plain, i, k, placed = 0
    cdef int a, j, e
    cdef const int* w
    cdef Layer* first
    if tape.n_block_layers == 0:
        return
    cdef int* place = <int*>PyMem_Malloc(n * sizeof(int) + 1)
    cdef PyObject** nodes = <PyObject**>PyMem_Malloc(n * sizeof(PyObject*) + 1)
    cdef double* numbers = <double*>PyMem_Malloc(2 * n * sizeof(double) + 1)
    cdef unsigned char* ops = <unsigned char*>PyMem_Malloc(n + 1)
    if place != NULL and nodes != NULL and numbers != NULL and ops != NULL:
        for i in range(n):
            place[i] = -1
        for a in range(tape.n_layers):
            first = &tape.layers[a]
            if first.examples < 2:
                continue
            for j in range(first.members):
                w = dot_links(tape, first, j)
                for i in range(first.m):
                    placed = place_leaf(place, w[i], n, placed)
            for e in range(first.examples):
                w = dot_links(tape, block_layer(tape, first, e), 0) + first.m
                for i in range(first.m):
                    placed = place_leaf(place, w[i], n, placed)
        for i in range(n):
            placed = place_leaf(place, <int>i, n, placed)
        for i in range(n):
            nodes[place[i]] = tape.nodes[i]
            ops[place[i]] = tape.ops[i]
            numbers[place[i]] = tape.constants[i]
            numbers[n + place[i]] = tape.values[i]
        memcpy(tape.nodes, nodes, n * sizeof(PyObject*))
        memcpy(tape.ops, ops, n)
        memcpy(tape.constants, numbers, n * sizeof(double))
        memcpy(tape.values, numbers + n, n * sizeof(double))
        for i in range(n, tape.size):       # a grouped node's last link is its group's index
            for k in range(tape.first[i], tape.first[i + 1] - (tape.ops[i] & GROUPED != 0)):
                if tape.links[k] < n:
                    tape.links[k] = place[tape.links[k]]
        find_leaves(tape)
    PyMem_Free(place)
    PyMem_Free(nodes)
    PyMem_Free(numbers)
    PyMem_Free(ops)
    for a in range(tape.n_layers):
        if tape.layers[a].examples > 1:
            tape.layers[a].in_place = rows_in_place(tape, &tape.layers[a])
            tape.layers[a].input_grads = not inputs_left_alone(tape, &tape.layers[a])


cdef inline Py_ssize_t place_leaf(int* place, int leaf, Py_ssize_t n, Py_ssize_t placed) noexcept:
    # gives a leaf not placed yet the next place; returns how many are placed
    if leaf < n and place[leaf] < 0:
        place[leaf] = <int>placed
        return placed + 1
    return placed


cdef unsigned char rows_in_place(Replay tape, const Layer* first) noexcept:
    cdef Py_ssize_t m = first.m, j, e, i
    cdef unsigned char found = WEIGHTS_IN_PLACE | INPUTS_IN_PLACE
    cdef const int* w
    cdef Py_ssize_t w0 = dot_links(tape, first, 0)[0], x0 = dot_links(tape, first, 0)[m]
    for j in range(first.members):
        w = dot_links(tape, first, j)
        for i in range(m):
            if w[i] != w0 + j * m + i:
                found &= ~WEIGHTS_IN_PLACE
    for e in range(first.examples):
        w = dot_links(tape, block_layer(tape, first, e), 0) + m
        for i in range(m):
            if w[i] != x0 + e * m + i:
                found &= ~INPUTS_IN_PLACE
    return found


cdef bint inputs_left_alone(Replay tape, const Layer* first) noexcept:
    # every input of the block's examples a leaf whose grad backward() does not write
    cdef Py_ssize_t m = first.m, e, i
    cdef const int* x
    for e in range(first.examples):
        x = dot_links(tape, block_layer(tape, first, e), 0) + m
        for i in range(m):
            if x[i] >= tape.n_plain or not tape.ops[x[i]] & LEFT_ALONE:
                return False
    return True


cdef void gather(double* out, const double* source, const int* index, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        out[i] = source[index[i]]


cdef void gather_strided(double* out, const double* source, const int* index,
                         int n) noexcept nogil:
    # gather() into every fourth double: a neuron's weights among four interleaved
    cdef int i
    for i in range(n):
        out[4 * i] = source[index[i]]


cdef void scatter(double* target, const int* index, const double* source, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        target[index[i]] = source[i]


cdef void block_forward(Replay tape, const Layer* first, double* new) noexcept nogil:
    # Every example's dots, as dot_value computes each: dot (e, n) = its bias, then
    # + W[n][i] * X[e][i] in turn; four examples and eight neurons at a time (four_by_eight;
    # four_by_four for the last four), the neurons padded to a multiple of four with zero
    # weights (their sums are dropped), the other examples a layer at a time.
    cdef int E = first.examples, N = first.members, m = first.m, N4 = padded(N), e, n, i, k, j
    cdef int width
    cdef const int* dots[4]
    cdef double* W = tape.scratch      # neurons n..n+3 at W + n m, weight i of n + k at 4 i + k;
    cdef double* B = W + N4 * m         # each neuron's bias, a Value's (every example's) or 0;
    cdef double* X = B + N4             # inputs in rows (in place, or gathered)
    cdef const double* row
    cdef double* w4
    cdef double starts[32]
    for n in range(N4):
        B[n] = new[dot_links(tape, first, n)[2 * m]] if first.bias and n < N else 0.0
        w4 = W + (n - n % 4) * m + n % 4
        if n >= N:
            for i in range(m):
                w4[4 * i] = 0.0
        elif first.in_place & WEIGHTS_IN_PLACE:
            row = new + dot_links(tape, first, 0)[0] + n * m
            for i in range(m):
                w4[4 * i] = row[i]
        else:
            gather_strided(w4, new, dot_links(tape, first, n), m)
    if first.in_place & INPUTS_IN_PLACE:
        X = new + dot_links(tape, first, 0)[m]
    else:
        for e in range(E - E % 4):
            gather(X + e * m, new, dot_links(tape, block_layer(tape, first, e), 0) + m, m)
    for e in range(0, E - E % 4, 4):
        for k in range(4):
            dots[k] = tape.layer_nodes + block_layer(tape, first, e + k).start
        for n in range(0, N4, 8):       # eight neurons at a time, the last four alone
            width = min(8, N4 - n)
            for j in range(width):
                for k in range(4):
                    starts[16 * (j // 4) + 4 * k + j % 4] = B[n + j] if first.bias or \
                        n + j >= N else tape.constants[dots[k][n + j]]
            if width == 8:
                four_by_eight_forward(m, W + n * m, W + (n + 4) * m, X + e * m, starts)
            else:
                four_by_four_forward(m, W + n * m, X + e * m, starts)
            for j in range(min(width, N - n)):
                for k in range(4):
                    new[dots[k][n + j]] = starts[16 * (j // 4) + 4 * k + j % 4]
    for e in range(E - E % 4, E):
        layer_forward(tape, block_layer(tape, first, e), new)


cdef void block_backward(Replay tape, const Layer* first) noexcept nogil:
    # Every example's dots, after each layer's between_backward, as layer_backward would do
    # them one layer at a time from the last: weights' and biases' grads gather the examples
    # from the last to the first, inputs' grads the neurons from the last to the first. Two
    # examples and four neurons at a time, on the weights, inputs and their grads in place or
    # gathered. The last N % 4 neurons go through the kernel as four, in rows of their own (TW,
    # TGW): the others' weights -0.0 and grads +0.0, so that each adds -0.0 * +0.0 = -0.0 to an
    # input's grad, which leaves every grad as it is (-0.0 too); their weights' grads dropped.
    # Where no input's grad is wanted (input_grads 0), the weights' and biases' grads alone.
    cdef int E = first.examples, N = first.members, m = first.m, P = E - E % 2, T = N - N % 4
    cdef int e, n, i, k
    cdef const int* d0
    cdef const int* d1
    cdef double* values = tape.values
    cdef double* grads = tape.grads
    cdef double* W = tape.scratch       # in this order (block_scratch): weights and their grads,
    cdef double* GW = W + N * m         # inputs and theirs (those gathered), the last neurons'
    cdef double* X = GW + N * m         # rows, each neuron's bias sum
    cdef double* GX
    cdef double* gx
    cdef double* TW
    cdef double* TGW
    cdef double* S
    cdef double g[8]
    if E % 2:                           # the last example, which the sweep reaches first
        layer_backward(tape, block_layer(tape, first, E - 1))
    if first.in_place & WEIGHTS_IN_PLACE:
        X = tape.scratch
        W = values + dot_links(tape, first, 0)[0]
        GW = grads + dot_links(tape, first, 0)[0]
    else:
        for n in range(N):
            gather(W + n * m, values, dot_links(tape, first, n), m)
            gather(GW + n * m, grads, dot_links(tape, first, n), m)
    GX = X + E * m
    TW = GX + E * m
    if first.in_place & INPUTS_IN_PLACE:
        TW = X
        X = values + dot_links(tape, first, 0)[m]
        GX = grads + dot_links(tape, first, 0)[m]
    else:
        for e in range(P):
            gather(X + e * m, values, dot_links(tape, block_layer(tape, first, e), 0) + m, m)
            if first.input_grads:
                gather(GX + e * m, grads, dot_links(tape, block_layer(tape, first, e), 0) + m,
                       m)
    TGW = TW + 4 * m
    S = TGW + 4 * m
    if T < N:
        for k in range(4):
            for i in range(m):
                TW[k * m + i] = W[(T + k) * m + i] if T + k < N else -0.0
                TGW[k * m + i] = GW[(T + k) * m + i] if T + k < N else 0.0
    if first.bias:
        for n in range(N):
            S[n] = grads[dot_links(tape, first, n)[2 * m]]
    # Four neurons at a time from the last, and for each four the examples in pairs, the later
    # of each pair first: each sum adds its terms in the order of a pass example by example,
    # and the four neurons' rows stay in the L1 cache while every example goes through them.
    n = padded(N)
    while n:
        n -= 4
        for e in range(P - 2, -1, -2):
            d0 = tape.layer_nodes + block_layer(tape, first, e).start
            d1 = tape.layer_nodes + block_layer(tape, first, e + 1).start
            for k in range(4):
                g[k] = grads[d0[n + k]] if n + k < N else 0.0
                g[4 + k] = grads[d1[n + k]] if n + k < N else 0.0
                if first.bias and n + k < N:
                    S[n + k] = S[n + k] + g[4 + k] + g[k]
            gx = GX + e * m if first.input_grads else NULL
            if n == T:
                pair_backward(m, TW, TGW, X + e * m, gx, g)
            else:
                pair_backward(m, W + n * m, GW + n * m, X + e * m, gx, g)
    if T < N:
        memcpy(GW + T * m, TGW, (N - T) * m * sizeof(double))
    if not first.in_place & WEIGHTS_IN_PLACE:
        for n in range(N):
            scatter(grads, dot_links(tape, first, n), GW + n * m, m)
    if first.input_grads and not first.in_place & INPUTS_IN_PLACE:
        for e in range(P):
            scatter(grads, dot_links(tape, block_layer(tape, first, e), 0) + m, GX + e * m, m)
    if first.bias:
        for n in range(N):
            grads[dot_links(tape, first, n)[2 * m]] = S[n]


cdef inline void pair_backward(int m, const double* w, double* gw, const double* x, double* gx,
                               const double* g) noexcept nogil:
    # two_by_four_backward (the kernel), or its arithmetic with each product by times_grad
    # where a grad is so small that the hardware's products would be subnormal (slow): the same
    # bits either way. gx NULL: the weights' grads alone.
    cdef int i, k
    for k in range(8):
        if tiny(g[k]):
            break
    else:
        two_by_four_backward(m, w, gw, x, gx, g)
        return
    for i in range(m):
        for k in range(3, -1, -1):
            gw[k * m + i] = gw[k * m + i] + times_grad(x[m + i], g[4 + k]) + \
                times_grad(x[i], g[k])
            if gx != NULL:
                gx[m + i] += times_grad(w[k * m + i], g[4 + k])
                gx[i] += times_grad(w[k * m + i], g[k])

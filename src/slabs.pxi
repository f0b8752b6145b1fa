# Where Values live: slabs of the engine's own.
#
# A training step makes tens of thousands of nodes and drops them all. Through CPython's
# allocator (pymalloc) that returned whole arenas to the OS and mapped them again every step
# (measured: ~12% of the demo step in page faults), and handed freed nodes back in an order
# unrelated to the graph. Here nodes come from 64 KiB slabs, each aligned to its size so that a
# node finds its slab from its address: a slab hands out its never-used slots in address order
# first, then the slots freed since, and a slab whose nodes are all dead starts over from its
# first slot. A graph built after the last one was dropped therefore lies in memory in creation
# order, which is a topological order, and backward() streams through it.
#
# Empty slabs are kept for the next graph, up to KEPT_EMPTY_BYTES; beyond that they go back to
# the C library, so dropping a big graph still returns its memory. Freeing never allocates (a
# freed slot is linked through its own first word), so dropping a graph works when memory has
# run out. tracemalloc sees each slab (PyTraceMalloc_Track), and _live_nodes() counts nodes,
# for the leak tests. PYTHONMALLOC=malloc or debug (valgrind, sanitizers) keeps Values in
# CPython's allocator, where those tools see each one.

cdef extern from *:
    """
    #ifdef _WIN32
    #include <malloc.h>
    static void* micrograd_c_aligned_alloc(size_t size) { return _aligned_malloc(size, size); }
    static void micrograd_c_aligned_free(void* p) { _aligned_free(p); }
    #else
    #include <stdlib.h>
    static void* micrograd_c_aligned_alloc(size_t size) {
        void* p;
        return posix_memalign(&p, size, size) ? NULL : p;
    }
    static void micrograd_c_aligned_free(void* p) { free(p); }
    #endif
    """
    void* aligned_alloc "micrograd_c_aligned_alloc"(size_t size) nogil
    void aligned_free "micrograd_c_aligned_free"(void* p) nogil

cdef extern from "Python.h":
    PyObject* PyObject_Init(PyObject* op, PyTypeObject* type)
    PyObject* PyErr_NoMemory()
    int PyTraceMalloc_Track(unsigned int domain, size_t ptr, size_t size)
    int PyTraceMalloc_Untrack(unsigned int domain, size_t ptr)
    ctypedef PyObject* (*allocfunc)(PyTypeObject*, Py_ssize_t)
    ctypedef void (*freefunc)(void*)
    ctypedef struct TypeAllocation "PyTypeObject":     # the slots of a type that allocate
        Py_ssize_t tp_basicsize
        allocfunc tp_alloc
        freefunc tp_free

cdef enum:
    SLAB_BYTES = 1 << 16
    SLAB_HEADER = 64
    KEPT_EMPTY_BYTES = 32 << 20         # the demo's step needs 5 MB, a digits batch 13
    TRACEMALLOC_DOMAIN = 0x6d67         # "mg": slabs are reported to tracemalloc under it

cdef struct Slab:                       # at the start of its SLAB_BYTES
    Slab* next                          # in the list of partial or of empty slabs
    Slab* previous
    char* unused                        # the first slot never handed out, or the end
    void* freed                         # slots freed since, linked through their first word
    Py_ssize_t live                     # nodes handed out and not freed
    int where                           # which list it is on (a SlabList), or none

cdef enum SlabList:
    NO_LIST                             # the current slab, or a full one
    PARTIAL                             # has freed slots, and live nodes
    EMPTY                               # no live node: starts over from its first slot

cdef Slab* current_slab = NULL          # where nodes are handed out now
cdef Slab* partial_slabs = NULL
cdef Slab* empty_slabs = NULL
cdef Py_ssize_t kept_empty = 0
cdef Py_ssize_t node_bytes = 0          # Value's size (a multiple of 8: its fields stay aligned)
cdef Py_ssize_t live_nodes = 0


cdef inline Slab* slab_of(void* node) noexcept nogil:
    return <Slab*>(<size_t>node & ~(<size_t>SLAB_BYTES - 1))


cdef inline char* slab_end(Slab* slab) noexcept nogil:
    return <char*>slab + SLAB_BYTES


cdef inline void start_over(Slab* slab) noexcept nogil:
    slab.unused = <char*>slab + SLAB_HEADER
    slab.freed = NULL


cdef inline void link(Slab** head, Slab* slab, int where) noexcept nogil:
    slab.where = where
    slab.previous = NULL
    slab.next = head[0]
    if head[0] != NULL:
        head[0].previous = slab
    head[0] = slab


cdef inline void unlink(Slab** head, Slab* slab) noexcept nogil:
    if slab.previous != NULL:
        slab.previous.next = slab.next
    else:
        head[0] = slab.next
    if slab.next != NULL:
        slab.next.previous = slab.previous
    slab.where = NO_LIST


cdef Slab* next_slab() noexcept:
    # An empty slab (the last one emptied: a dropped graph empties its slabs newest first, so
    # they are reused oldest first, in the order the graph was built), else one with freed
    # slots, else a new one. NULL, with MemoryError set, if there is no memory for one.
    global empty_slabs, partial_slabs, kept_empty
    cdef Slab* slab = empty_slabs
    if slab != NULL:
        unlink(&empty_slabs, slab)
        kept_empty -= 1
        return slab
    slab = partial_slabs
    if slab != NULL:
        unlink(&partial_slabs, slab)
        return slab
    slab = <Slab*>aligned_alloc(SLAB_BYTES)
    if slab == NULL:
        PyErr_NoMemory()
        return NULL
    PyTraceMalloc_Track(TRACEMALLOC_DOMAIN, <size_t>slab, SLAB_BYTES)
    start_over(slab)
    slab.live = 0
    slab.where = NO_LIST
    return slab


cdef inline void release(Slab* slab) noexcept:
    PyTraceMalloc_Untrack(TRACEMALLOC_DOMAIN, <size_t>slab)
    aligned_free(slab)


cdef PyObject* allocate_node(PyTypeObject* type, Py_ssize_t items) noexcept:
    # Value's tp_alloc: a zeroed node with its type and one reference, as PyType_GenericAlloc.
    global current_slab, live_nodes
    cdef Slab* slab = current_slab
    cdef void* node = NULL
    while node == NULL:
        if slab != NULL and slab.unused + node_bytes <= slab_end(slab):
            node = slab.unused
            slab.unused += node_bytes
        elif slab != NULL and slab.freed != NULL:
            node = slab.freed
            slab.freed = (<void**>node)[0]
        else:                           # the current slab is full: on to the next
            slab = next_slab()
            if slab == NULL:
                return NULL
            current_slab = slab
    slab.live += 1
    live_nodes += 1
    # node_bytes, as a constant the compiler clears in a few stores: a call to memset per node
    # was 2% of the unfused demo step (side by side: the step 0.98x, the fused one 0.97x)
    memset(node, 0, (sizeof(Value) + 7) & ~7)
    return PyObject_Init(<PyObject*>node, type)


cdef void free_node(void* node) noexcept:
    # Value's tp_free. Never allocates.
    global partial_slabs, empty_slabs, kept_empty, live_nodes
    cdef Slab* slab = slab_of(node)
    (<void**>node)[0] = slab.freed
    slab.freed = node
    slab.live -= 1
    live_nodes -= 1
    if slab == current_slab:
        if slab.live == 0:
            start_over(slab)
        return
    if slab.live == 0:
        if slab.where == PARTIAL:
            unlink(&partial_slabs, slab)
        if kept_empty * SLAB_BYTES >= KEPT_EMPTY_BYTES:
            release(slab)
            return
        start_over(slab)
        link(&empty_slabs, slab, EMPTY)
        kept_empty += 1
    elif slab.where == NO_LIST:         # it was full: it has a free slot now
        link(&partial_slabs, slab, PARTIAL)


cdef void use_slabs(TypeAllocation* type):
    # Makes slabs Value's allocator, before any Value exists.
    global node_bytes
    node_bytes = (type.tp_basicsize + 7) & ~7
    type.tp_alloc = allocate_node
    type.tp_free = free_node


def _trim_slabs():
    """For tests and the bench: give the empty slabs kept for reuse back to the C library, so
    that tracemalloc counts every slab a graph made after this needs."""
    global empty_slabs, kept_empty
    cdef Slab* slab
    while empty_slabs != NULL:
        slab = empty_slabs
        unlink(&empty_slabs, slab)
        release(slab)
    kept_empty = 0


def _live_nodes():
    """For tests: the number of Values alive (made and not yet freed), or -1 where Values live
    in CPython's allocator (PYTHONMALLOC=malloc or debug)."""
    return live_nodes if node_bytes else -1

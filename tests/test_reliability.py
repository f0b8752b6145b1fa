"""Reliability: nothing leaks, deep and wide graphs work, threads are safe, and running out of
memory in backward() is an exception the graph recovers from."""
import os
import pickle
import random
import subprocess
import sys
import textwrap
import threading
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import examples, traced_growth
from micrograd_c import engine, moons
from micrograd_c.engine import Value
from micrograd_c.nn import MLP
from micrograd_c.optim import SGD, Adam

# Memory that returns to a baseline may stay above it by what Python's own free lists and caches
# keep. (Values are counted exactly: traced_growth adds every Value still alive.)
SLACK_BYTES = 80 << 10


# -- leaks -----------------------------------------------------------------------------------

def test_graphs_are_freed():
    def work():
        x = Value(0.5)
        y = x
        for _ in range(50_000):
            y = (y * x).tanh() + engine.dot([y, x], [x, 1.0], x)
        y.backward()
    assert traced_growth(work, 5) < SLACK_BYTES


def test_models_and_optimizers_are_freed():
    X, y = moons.demo_data(n_samples=20)

    def work():
        model = MLP(2, [8, 8, 1])
        for opt in (SGD(model.parameters(), lr=0.1, momentum=0.9), Adam(model.parameters())):
            for _ in range(3):
                loss, _ = moons.loss(model, X, y, Value, engine.sum)
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.set_params(model.get_params() * 0.5)
    assert traced_growth(work, 10) < SLACK_BYTES


def test_pickle_round_trips_are_freed():
    model = MLP(2, [16, 16, 1])

    def work():
        clone = pickle.loads(pickle.dumps(model))
        clone([1.0, 2.0]).backward()
    assert traced_growth(work, 20) < SLACK_BYTES


FAILING_OPS = [
    lambda v: engine.dot([v] * 100 + ["x"], [v] * 101),
    lambda v: engine.dot([v] * 100, [v] * 100, "bias"),
    lambda v: engine.sum([v] * 100 + [None]),
    lambda v: v / 0,
    lambda v: Value(0.0) ** -1,
    lambda v: (-v) ** 0.5,
    lambda v: Value(-1.0).log(),
    lambda v: (v * 1000).exp(),
    lambda v: v + "x",
    lambda v: Value("x"),
    lambda v: Value(1.0, (v, "not a value")),
    lambda v: Value(1.0, label=3),
    lambda v: engine.copy_to_array([v, v], np.zeros(3)),
]


@pytest.mark.parametrize("op", FAILING_OPS)
def test_an_op_that_raises_leaks_nothing(op):
    v = Value(1.0)
    refcount = sys.getrefcount(v)

    def work():
        for _ in range(1000):
            with pytest.raises((TypeError, ValueError, ZeroDivisionError, OverflowError)):
                op(v)
    assert traced_growth(work, 5) < 4096
    assert sys.getrefcount(v) == refcount


def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc")
def test_resident_size_stays_flat_over_million_node_graphs():
    sizes = []
    for _ in range(20):
        x = Value(1.0)
        y = x
        for _ in range(500_000):
            y = y * x + 1.0                        # 1,000,000 nodes, 80 MB
        y.backward()
        del x, y
        sizes.append(resident_mb())
    # After some tests (tests/test_engine.py, run before this file alone) the C library's heap
    # settles into two states, ~55 MB apart, taken in turn: the lowest of the last rounds
    # against the lowest of the first shows growth, not which state a round ended in.
    assert min(sizes[-5:]) - min(sizes[1:6]) < 8, sizes


def test_a_dropped_graph_gives_back_all_but_the_slabs_kept_for_the_next():
    # Values live in 64 KiB slabs; empty ones are kept for the next graph up to 32 MiB, the
    # rest go back to the C library (src/slabs.pxi)
    engine._trim_slabs()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        x = Value(1.0)
        y = x
        for _ in range(400_000):
            y = y * x + 1.0                        # 800,000 nodes, 58 MB
        built = tracemalloc.get_traced_memory()[0] - before
        del y
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert built > 800_000 * 72 and kept <= (32 << 20) + (1 << 17), (built, kept)


def test_a_dropped_graph_gives_back_all_but_the_children_tuples_kept_for_the_next():
    # The tuples of children of dead n-ary nodes are kept for reuse up to 8 MiB (src/engine.pyx:
    # keep_spare); here 24 MB of them are dropped
    leaves = [Value(float(i)) for i in range(1000)]
    engine._trim_slabs()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sums = [engine.sum(leaves) for _ in range(3000)]
        built = tracemalloc.get_traced_memory()[0] - before
        del sums
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # and the sums' own slabs (3,000 nodes, four 64 KiB slabs) are kept for the next graph
    assert built > 3000 * 1000 * 8 and kept <= (8 << 20) + (1 << 19), (built, kept)
    assert engine._spare_tuple_bytes() <= 8 << 20


def test_nodes_made_from_kept_tuples_hold_their_own_children():
    # Hand-derived: every node of the second graph, made from the first's emptied tuples, sends
    # its grad to its own children only; a tuple the user still holds is never emptied or reused
    a = [Value(float(i)) for i in range(40)]
    mine = tuple(a[:3])
    first = [engine.sum(a[k:k + 20]) for k in range(0, 40, 20)] + [
        engine.dot(a[:10], a[10:20]), Value(1.0, mine, "f")]
    del first
    b = [Value(float(i + 100)) for i in range(40)]
    s1, s2 = engine.sum(b[:20]), engine.sum(b[20:])
    d = engine.dot(b[:10], b[10:20])
    kept = Value(2.0, mine, "g")
    total = s1 * 2.0 + s2 + d
    total.backward()
    assert s1._prev == set(b[:20]) and s2._prev == set(b[20:]) and d._prev == set(b[:20])
    assert total.data == 2 * sum(range(100, 120)) + sum(range(120, 140)) + sum(
        (100 + i) * (110 + i) for i in range(10))
    assert [v.grad for v in b] == [2.0 + 110.0 + i for i in range(10)] + [
        2.0 + 100.0 + i for i in range(10)] + [1.0] * 20
    assert all(v.grad == 0.0 for v in a)
    assert mine == tuple(a[:3]) and kept._prev == set(a[:3])


@settings(max_examples=examples(100), deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3000), st.floats(0, 1)), min_size=1, max_size=12))
def test_values_made_and_dropped_in_any_pattern_keep_their_numbers(rounds):
    # Each round makes n Values, then drops a fraction of all that live, picked at random:
    # slabs fill, empty, and reuse freed slots in every order
    rng = random.Random(len(rounds))
    live, start, made = [], engine._live_nodes(), 0
    for n, drop in rounds:
        live += [Value(float(made + k)) for k in range(n)]
        made += n
        rng.shuffle(live)
        del live[:int(len(live) * drop)]
        assert all(v.grad == 0.0 and v.data == int(v.data) for v in live)
        if start >= 0:
            assert engine._live_nodes() - start == len(live)
    assert len({v.data for v in live}) == len(live)  # no two share a slot
    del live
    assert engine._live_nodes() == start


# Values in CPython's allocator, as tools such as valgrind need them (PYTHONMALLOC=malloc)
SYSTEM_ALLOCATOR = textwrap.dedent("""
    from micrograd_c import engine
    from micrograd_c.engine import Value
    assert engine._live_nodes() == -1
    x = Value(2.0)
    y = x
    for _ in range(200_000):
        y = engine.sum([(y * x).tanh(), x])
    y.backward()
    step = engine.compile(y)
    step.forward()
    step.backward()
    d, = engine.grad(y, [x], create_graph=True)
    del y, step, d
    print(x.grad)
""")


@pytest.mark.parametrize("allocator", ["malloc", "debug"])
def test_values_in_cpythons_allocator_when_pythonmalloc_asks(allocator):
    result = subprocess.run([sys.executable, "-c", SYSTEM_ALLOCATOR], capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, PYTHONMALLOC=allocator))
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout) > 0


# -- deep and wide -----------------------------------------------------------------------------

def test_ten_million_deep_chain():
    x = Value(1.0)
    y = x
    for _ in range(10_000_000):
        y = y + x                                  # one node per op
    y.backward()
    assert y.data == 10_000_001.0 and x.grad == 10_000_001.0
    step = engine.compile(y)                       # replayed, too
    x.data, x.grad = 2.0, 0.0
    assert step.forward() == 20_000_002.0
    step.backward()
    assert x.grad == 10_000_001.0
    del y, step                                    # freed without recursion


def test_a_node_with_a_million_children():
    xs = [Value(float(i % 7)) for i in range(1_000_000)]
    total = engine.sum(xs)
    weights = engine.dot(xs, xs)
    out = total + weights
    out.backward()
    assert total.data == sum(float(i % 7) for i in range(1_000_000))
    assert all(x.grad == 1.0 + 2 * x.data for x in xs[:1000])
    del out, total, weights, xs


# -- threads -------------------------------------------------------------------------------------

@pytest.fixture
def frequent_thread_switches():
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def make_model(seed):
    random.seed(seed)              # the weights come from the global random, as upstream's do
    return MLP(2, [8, 8, 1]), moons.demo_data(n_samples=30, seed=seed)


def train(job):
    model, (X, y) = job
    losses = [moons.sgd_step(model, X, y, Value, k, sum_values=engine.sum)[0] for k in range(5)]
    return losses, model.get_params().tolist()


def run_in_threads(function, args):
    results = [None] * len(args)

    def target(i):
        results[i] = function(args[i])
    threads = [threading.Thread(target=target, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_threads_on_independent_graphs_match_serial(frequent_thread_switches):
    serial = [train(make_model(seed)) for seed in range(6)]
    jobs = [make_model(seed) for seed in range(6)]        # built in turn: random is global
    assert run_in_threads(train, jobs) == serial          # bit for bit


def test_threads_back_propagating_through_shared_parameters(frequent_thread_switches):
    # backward() runs start to end without releasing the GIL, so concurrent calls through
    # shared parameters add up exactly as if they ran one after another
    shared = [Value(random.uniform(-1, 1)) for _ in range(64)]

    def contribute(k):
        for _ in range(200):
            engine.dot(shared, [float(k)] * len(shared)).tanh().backward()

    expected = [0.0] * len(shared)
    for k in range(4):
        for _ in range(200):
            out = engine.dot(shared, [float(k)] * len(shared)).tanh()
            for i, p in enumerate(shared):
                expected[i] += (1 - out.data ** 2) * k
    run_in_threads(contribute, list(range(4)))
    assert [p.grad for p in shared] == pytest.approx(expected, rel=1e-12)


# -- running out of memory ---------------------------------------------------------------------

OUT_OF_MEMORY = textwrap.dedent("""
    import resource
    from micrograd_c.engine import Value

    def mapped():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()

    def zero_all_grads(root):              # intermediate grads accumulate too, as upstream's
        seen, todo = set(), [root]
        while todo:
            v = todo.pop()
            if id(v) not in seen:
                seen.add(id(v))
                v.grad = 0.0
                todo.extend(v._prev)

    x = Value(1.0)
    y = x
    for _ in range(50_000):
        y = y * 1.0 + 0.0                  # 100,000 nodes; backward's arrays grow to ~4 MB
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    outcomes = []
    for margin in range(0, 8_000_000, 100_000):
        resource.setrlimit(resource.RLIMIT_AS, (mapped() + margin, hard))
        try:
            y.backward()
            outcome = "ok"
        except MemoryError:
            outcome = "MemoryError"
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        zero_all_grads(y)
        y.backward()                       # with memory again: every node must be reached
        outcomes.append((outcome, x.grad))
    print(outcomes)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc")
def test_backward_recovers_from_running_out_of_memory():
    # With a fixed mmap threshold, glibc maps backward()'s arrays afresh each time and unmaps
    # them when freed, so the address-space limit bites at every size, not just the first.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    result = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    outcomes = eval(result.stdout)
    assert {outcome for outcome, _ in outcomes} == {"ok", "MemoryError"}
    assert all(grad == 1.0 for _, grad in outcomes), outcomes


# Freeing must never need memory: build a graph until memory runs out, then drop it.
FREE_WHEN_OUT_OF_MEMORY = textwrap.dedent("""
    import resource, sys
    from micrograd_c import engine
    from micrograd_c.engine import Value

    def mapped():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()

    kind, margin = sys.argv[1], int(sys.argv[2])
    x = Value(1.0)
    grow = {"mul_const": lambda y: y * 1.0, "add": lambda y: y + x,
            "sum": lambda y: engine.sum([x, y]), "dot": lambda y: engine.dot([y], [x]),
            "repeated": lambda y: engine.sum([y, y])}[kind]
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped() + margin, hard))
    y, depth = x, 0
    try:
        while True:
            y = grow(y)
            depth += 1
    except MemoryError:
        pass
    y = None                             # still out of memory: freeing must not allocate
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    z = x * 3.0
    z.backward()
    print(depth, x.grad)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc")
@pytest.mark.parametrize("kind", ["mul_const", "add", "sum", "dot", "repeated"])
@pytest.mark.parametrize("margin_mb", [40, 160])
def test_a_graph_built_until_memory_runs_out_is_freed(kind, margin_mb):
    result = subprocess.run([sys.executable, "-c", FREE_WHEN_OUT_OF_MEMORY, kind,
                             str(margin_mb << 20)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    depth, grad = result.stdout.split()
    assert int(depth) > 100_000 and float(grad) == 3.0


# Freeing never recurses, whatever the node kind: a deep graph freed in a thread whose stack is
# 256 KiB. (Children tuples were freed recursively, bounded by CPython's trashcan: 50 levels
# before 3.13, ~10,000 in 3.13, which overflowed a stack that could not grow.)
FREE_ON_A_SMALL_STACK = textwrap.dedent("""
    import sys, threading
    from micrograd_c import engine
    from micrograd_c.engine import Value

    x = Value(1.0)
    grow = {"mul_const": lambda y: y * 1.0, "add": lambda y: y + x,
            "sum": lambda y: engine.sum([x, y]), "dot": lambda y: engine.dot([y], [x]),
            "repeated": lambda y: engine.sum([y, y]),
            "logsumexp": lambda y: engine.logsumexp([y, x]),
            "cross_entropy": lambda y: engine.cross_entropy([y, x], 0),
            "hand-made": lambda y: Value(1.0, (y, x), "f")}[sys.argv[1]]

    def build_and_drop():
        y = x
        for _ in range(200_000):
            y = grow(y)
        del y

    threading.stack_size(256 << 10)
    thread = threading.Thread(target=build_and_drop)
    thread.start()
    thread.join()
    print("freed")
""")


@pytest.mark.parametrize("kind", ["mul_const", "add", "sum", "dot", "repeated", "logsumexp",
                                  "cross_entropy", "hand-made"])
def test_freeing_a_deep_graph_needs_no_stack(kind):
    result = subprocess.run([sys.executable, "-c", FREE_ON_A_SMALL_STACK, kind],
                            capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stdout) == (0, "freed\n"), result.stderr[-2000:]


def test_deep_chains_of_repeated_children_free():
    # a node that holds its child twice: freeing its children tuple must not free the child
    # recursively when the second slot is cleared
    for grow in (lambda y: engine.sum([y, y]), lambda y: y * y, lambda y: engine.dot([y], [y])):
        y = Value(1.0)
        for _ in range(300_000):
            y = grow(y)
        del y


# A fork while another thread drains a dropped graph (inside an attribute's __del__) must not
# leave the child unable to free Values.
FORK_WHILE_FREEING = textwrap.dedent("""
    import os, threading, time
    from micrograd_c.engine import Value

    class Slow:
        def __del__(self):
            time.sleep(0.5)

    class Flag:
        def __del__(self):
            print("freed", flush=True)

    def drop():
        a = Value(1.0)
        b = a * 2.0
        a.slow = Slow()
        del a, b

    thread = threading.Thread(target=drop)
    thread.start()
    time.sleep(0.2)                        # the thread is inside Slow.__del__, draining
    pid = os.fork()
    if pid == 0:
        x = Value(1.0)
        y = x + 1.0
        x.flag = Flag()
        del x, y
        os._exit(0)
    os.waitpid(pid, 0)
    thread.join()
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_during_freeing_leaves_the_child_able_to_free():
    result = subprocess.run([sys.executable, "-c", FORK_WHILE_FREEING], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["freed"]


# compile() and grad() out of memory: whatever they allocated is given back.
RECORD_OUT_OF_MEMORY = textwrap.dedent("""
    import resource
    from micrograd_c import engine
    from micrograd_c.engine import Value

    def mapped():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()

    def resident():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()

    xs = [Value(float(i)) for i in range(300_000)]
    y = engine.sum([engine.sum(xs[i:i + 1000]) for i in range(0, 300_000, 1000)]) * 2.0
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    failed = 0
    before = resident()
    for attempt in range(60):
        for work in (lambda: engine.compile(y), lambda: engine.grad(y, xs[:3])):
            resource.setrlimit(resource.RLIMIT_AS, (mapped() + 200_000 * (attempt % 10), hard))
            try:
                work()
            except MemoryError:
                failed += 1
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    grown = resident() - before
    y.backward()
    print(failed, grown, all(x.grad == 2.0 for x in xs))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc")
def test_compile_and_grad_give_back_memory_when_they_run_out():
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    result = subprocess.run([sys.executable, "-c", RECORD_OUT_OF_MEMORY], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    failed, grown, grads_ok = result.stdout.split()
    assert int(failed) >= 20 and grads_ok == "True"
    assert int(grown) < 8 << 20, grown

"""Measuring: the method, in one place. Alternated rounds, each engine paying for its own garbage,
median per-round ratios, RecursionError depths, bytes per node, and the plan of tasks and rounds."""
import gc
import os
import statistics
import sys
import time
import tracemalloc

import micrograd_c.engine

from micrograd_c.bench.engines import available_engines
from micrograd_c.bench.workloads import (DIGITS_BATCH, DIGITS_EPOCHS, DIGITS_LOSSES, GRAD_GRAPHS,
                                         Unsupported, chain, digits_data, digits_epoch,
                                         expression, fastest_autograd, grad_graph, train_step,
                                         wide_mlp)

# Each workload's engines are compared with upstream, as users run it and with its GC off.
# Upstream has no exp() or log() for fastest_autograd or softmax cross-entropy: there the
# baselines are micrograd_c, rebuilding its graph, and torch (where fastest_autograd's published
# figures start). Upstream has no gradients as graphs: grad_graph compares with torch.
# Where plain floats run (train_step, wide_mlp, fastest_autograd), each engine's ratio to them
# shows how far it is from the floor of any engine whose graph Python rebuilds.
BASELINES = {"train_step": ("micrograd", "micrograd-nogc", "floats"),
             "wide_mlp": ("micrograd", "micrograd-nogc", "floats"),
             "fastest_autograd": ("micrograd_c", "torch", "floats"),
             ("digits_epoch", "cross_entropy"): ("micrograd_c", "torch", "numpy", "torch-tensors"),
             ("digits_epoch", "squared_error"): ("micrograd", "micrograd-nogc", "torch", "numpy",
                                                 "torch-tensors"),
             "grad_graph": ("torch",)}
# The workloads on which an engine differing from another only by its nn is run
NN_WORKLOADS = ("train_step", "wide_mlp", "digits_epoch")


def baselines(workload, variant=None):
    return BASELINES.get((workload, variant),
                         BASELINES.get(workload, ("micrograd", "micrograd-nogc")))


def ratio_key(baseline):
    """The record's key for the ratio against `baseline`: ratio_vs_micrograd_nogc, ..."""
    return "ratio_vs_" + baseline.replace("-", "_")


def ratio(base, record):
    """How many times faster `record` ran than `base`: the median of per-round ratios."""
    if base is None or base["status"] != "ok" or record["status"] != "ok":
        return None
    return statistics.median(b / t for b, t in zip(base["times_s"], record["times_s"]))


def timed(engine, run):
    """Seconds for one run, including the collection of the garbage it leaves, and only that:
    what lives before it is frozen (gc.freeze; measure() unfreezes it at its end)."""
    gc.collect()
    # Else the run's collection scans every other live object: another engine's too. torch's
    # digits step leaves 2,410 gradient tensors, which made each later collection 110 us and a
    # 0.34 ms replayed step measure 0.65-0.77 ms.
    gc.freeze()
    if engine.gc_off:
        gc.disable()
        try:
            start = time.perf_counter()
            run()
            return time.perf_counter() - start
        finally:
            gc.enable()
            gc.collect()
    start = time.perf_counter()
    run()
    gc.collect()
    return time.perf_counter() - start


def warm_up(engine, run):
    """Runs `run` untimed (each run paying for its garbage, as a timed one) for WARM_UP_S, and
    at least once."""
    deadline = time.perf_counter() + WARM_UP_S
    timed(engine, run)
    while time.perf_counter() < deadline:
        timed(engine, run)


def recursion_limit_depth(engine):
    """The deepest chain this engine back-propagates, found by bisection (for 'fails at')."""
    works, fails = 1, 1
    while True:
        try:
            chain(engine, fails)[0]()
        except RecursionError:
            break
        works, fails = fails, fails * 2
    while fails - works > 1:
        middle = (works + fails) // 2
        try:
            chain(engine, middle)[0]()
            works = middle
        except RecursionError:
            fails = middle
    return works


class Task:
    """One workload (at one size, or one variant of it) to time on several engines.

    With `phases` (names), setup returns one (run, nodes) per phase, each timed in every round
    and recorded apart. An engine whose warm-up run takes over SLOW_RUN_S is timed `slow_rounds`
    times in all, its warm-up the first (None: in every round). `extra` goes into every
    record."""

    def __init__(self, workload, setup, rounds, size=None, warmup=True, repeats=1, variant=None,
                 phases=None, uses_nn=None, slow_rounds=None, extra=None):
        self.workload = workload
        self.setup = setup              # engine -> (run, nodes made by one repeat)
        self.rounds = rounds
        self.size = size
        self.warmup = warmup
        self.repeats = repeats          # a run does the workload this many times
        self.variant = variant
        self.phases = phases or (None,)
        self.uses_nn = workload in NN_WORKLOADS if uses_nn is None else uses_nn
        self.slow_rounds = slow_rounds
        self.extra = extra or {}


def external_failure(error):
    """The status of an engine given by --engine whose code raised: the others still run."""
    return f"failed: {type(error).__name__}: {error}"


def recursion_failure(engine, failures):
    """The status of an engine that hit RecursionError; failures memoizes it by engine name."""
    if engine.name not in failures:
        failures[engine.name] = (f"fails at depth {recursion_limit_depth(engine) + 1:,} "
                                 "(RecursionError)")
    return failures[engine.name]


# A run shorter than REPEAT_BELOW_S runs again, untimed, for WARM_UP_S (at least once) just
# before each timed run: then what came before it is its own previous runs, as in a training
# loop. Run right after another engine's (upstream's step leaves ~1 GB of garbage), a 0.2 ms
# replay step was measured at 0.3-0.6 ms: its data and the CPU's caches and TLB had been pushed
# out. One run was not enough either: right after torch's turn on fastest_autograd, a 0.46 ms
# replay measured 0.56 ms after one untimed run and 0.46 ms after 20 ms of them (and 0.85 ms
# after 10 ms of sleep: an idle core is slow to come back). Longer runs are not repeated: that
# cost is a small part of them.
REPEAT_BELOW_S = 0.05
WARM_UP_S = 0.02
# A run longer than this (upstream's digits batch takes seconds) is timed a few times only, if its
# task says so, its warm-up the first: what a warm-up is for (first-call costs, caches) is a
# small part of seconds. Its median is then of few runs, but its spread is small beside its
# ratio to the others.
SLOW_RUN_S = 1.0
# Within a round, engines run fastest first (by their last time; the order reverses every other
# round): a ratio is of runs made close together. In the given order, torch's 0.5 s run came
# between micrograd_c's and floats' on fastest_autograd, and this host's speed moves by up to 2x
# within seconds: floats measured 3.5 and 6.7 ms in rounds a few seconds apart, and the median
# of per-round ratios read 1.4x where the two runs' own medians were 1.06x apart.


def slow(task, seconds):
    return task.slow_rounds is not None and seconds > SLOW_RUN_S


def measure(task, engines, tick, failures=None):
    """Times task on every engine, alternating; returns one record per engine (and phase).
    `failures` remembers engines that hit RecursionError, so longer chains are not tried on
    them."""
    failures = {} if failures is None else failures
    records, runs, last = {}, [], {}        # records and last times by (engine name, phase)
    for engine in (e for e in engines if e.runs(task.workload)):
        mine = []
        for phase in task.phases:
            mine.append({"workload": task.workload, "size": task.size, "variant": task.variant,
                         "phase": phase, "engine": engine.name, "median_s": None, "nodes": None,
                         "times_s": [], "status": "ok", **task.extra})
            records[engine.name, phase] = mine[-1]
        status = engine.duplicate(task.uses_nn)
        if task.workload == "chain" and engine.name in failures:
            status = failures[engine.name]
        try:
            if status is None:
                setups = task.setup(engine)
                if task.phases == (None,):
                    setups = [setups]
                for record, (run, record["nodes"]) in zip(mine, setups):
                    runs.append((engine, record, run))
        except Unsupported as reason:
            status = f"skipped: {reason}"
        except RecursionError:
            status = recursion_failure(engine, failures)
        except Exception as error:
            if not engine.external:
                raise
            status = external_failure(error)
        for record in mine:
            record["status"] = status or "ok"
        tick()

    def time_once(engine, record, run, warmup=False):
        key = engine.name, record["phase"]
        try:
            if not warmup and last.get(key, 0.0) < REPEAT_BELOW_S:
                warm_up(engine, run)
            last[key] = timed(engine, run)
        except RecursionError:
            record["status"] = recursion_failure(engine, failures)
            return
        except Exception as error:
            if not engine.external:
                raise
            record["status"] = external_failure(error)
            return
        if not warmup or slow(task, last[key]):         # a slow warm-up is a timed run
            record["times_s"].append(last[key])

    try:
        for engine, record, run in (runs if task.warmup else []):
            time_once(engine, record, run, warmup=True)
        for r in range(task.rounds):
            if last:        # fastest first: engines of like speed run next to each other
                runs.sort(key=lambda item: last.get((item[0].name, item[1]["phase"]), 0.0))
            for engine, record, run in (runs if r % 2 == 0 else runs[::-1]):
                timed_enough = slow(task, last.get((engine.name, record["phase"]), 0.0)) and \
                    len(record["times_s"]) >= task.slow_rounds
                if record["status"] == "ok" and not timed_enough:
                    time_once(engine, record, run)
                tick()
    finally:
        gc.unfreeze()
    for record in records.values():
        if record["status"] != "ok":
            record["nodes"] = None
            record["times_s"] = []
            continue
        times = record["times_s"] = [t / task.repeats for t in record["times_s"]]
        record["median_s"] = statistics.median(times)
        record["spread"] = spread(times)
        record["ns_per_node"] = record["median_s"] / record["nodes"] * 1e9 if record["nodes"] \
            else None                   # plain floats make no nodes
    for baseline in baselines(task.workload, task.variant):
        for (_, phase), record in records.items():
            record[ratio_key(baseline)] = ratio(records.get((baseline, phase)), record)
    first = task.phases[0]
    for (name, phase), record in records.items():
        if phase != first:                  # e.g. times_forward: the grad graph / the forward
            record["times_" + first] = ratio(record, records[name, first])
    return list(records.values())


def side_by_side(task, names):
    """Times the built-in engines `names` on `task` with measure()'s method, quietly: for a demo's
    speed-up line. Returns ({name: record} for those that run here, {name: why not} for the
    others); a record whose engine failed or can't do the task says so in its status."""
    engines, skipped = available_engines(names)
    return {r["engine"]: r for r in measure(task, engines, tick=lambda: None)}, skipped


def spread(times):
    """Half the interquartile range, relative to the median."""
    if len(times) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return (q3 - q1) / 2 / statistics.median(times)


def bytes_per_node(engine, size):
    """Memory held by a chain of `size` nodes, per node, as Python's allocator sees it.
    micrograd_c's Values live in slabs, which tracemalloc sees whole: the empty ones kept for
    reuse are given back first, so that every slab the chain needs is counted."""
    w = engine.Value(0.5)
    if isinstance(w, micrograd_c.engine.Value):
        micrograd_c.engine._trim_slabs()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    y = w
    for _ in range(size):
        y = y * w
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del y
    gc.collect()
    return used / size


# torch allocates outside Python's allocator; in a fresh process the resident size shows it.
TORCH_MEMORY = """
import sys, torch
def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096
size = int(sys.argv[1])
w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
y = w * w
before = resident()
for _ in range(size):
    y = y * w
print((resident() - before) / size)
"""


def torch_bytes_per_node(size):
    import subprocess
    result = subprocess.run([sys.executable, "-c", TORCH_MEMORY, str(size)], capture_output=True,
                            text=True, check=True)
    return float(result.stdout)


def memory_records(engines, size, tick):
    records = []
    for engine in (e for e in engines if e.runs("memory")):
        record = {"workload": "memory", "size": size, "engine": engine.name, "median_s": None,
                  "nodes": size, "ratio_vs_micrograd": None, "ratio_vs_micrograd_nogc": None}
        if engine.duplicate(uses_nn=False):
            record.update(status=engine.duplicate(uses_nn=False), nodes=None)
        elif engine.name == "torch":
            if os.path.exists("/proc/self/statm") and os.sysconf("SC_PAGE_SIZE") == 4096:
                record.update(bytes_per_node=torch_bytes_per_node(size), status="ok",
                              method="resident size of a fresh process")
            else:
                record.update(status="skipped: resident size is read from Linux's /proc",
                              nodes=None)
        else:
            record.update(bytes_per_node=bytes_per_node(engine, size), status="ok",
                          method="tracemalloc")
        records.append(record)
        tick()
    return records


def plan(workloads, quick):
    """The tasks to run: quick finishes in under a minute on 2 cores, the full run in ~10."""
    tasks = []
    for workload in workloads:
        if workload == "train_step":
            tasks.append(Task("train_step", train_step, 3 if quick else 7))
        elif workload == "chain":
            sizes = [100, 1_000, 10_000, 100_000] + ([] if quick else [1_000_000])
            for i, size in enumerate(sizes):
                rounds = (3 if quick else 5) if size <= 10_000 else (1 if quick else 3) \
                    if size <= 100_000 else 1
                # short chains are repeated so that a run is not just the timer and the GC
                repeats = max(1, 10_000 // size)
                tasks.append(Task("chain", lambda e, n=size, r=repeats: chain(e, n, r), rounds,
                                  size, warmup=i == 0, repeats=repeats))
        elif workload == "expression":
            tasks.append(Task("expression", expression, 3 if quick else 7))
        elif workload == "wide_mlp":
            points = 10 if quick else 20
            tasks.append(Task("wide_mlp", lambda e: wide_mlp(e, points), 1 if quick else 3,
                              size=points))
        elif workload == "fastest_autograd":
            tasks.append(Task("fastest_autograd", fastest_autograd, 3 if quick else 11))
        elif workload == "digits_epoch":
            # A batch takes upstream and torch seconds: they are timed on 1 or 3 batches.
            extra = {"batches_per_epoch": len(digits_data()[0]) // DIGITS_BATCH,
                     "epochs": DIGITS_EPOCHS}
            for loss in DIGITS_LOSSES:
                tasks.append(Task("digits_epoch", lambda e, loss=loss: digits_epoch(e, loss),
                                  3 if quick else 7, variant=loss, slow_rounds=1 if quick else 3,
                                  extra=extra))
        elif workload == "grad_graph":
            # 3 rounds even when quick: next to torch's runs, a 7 ms forward measured 7-13 ms,
            # and one round's grad/forward could be off by 2x.
            for graph in GRAD_GRAPHS:
                tasks.append(Task("grad_graph", lambda e, graph=graph: grad_graph(e, graph),
                                  3 if quick else 9, variant=graph, phases=("forward", "grad"),
                                  uses_nn=graph == "demo_loss"))
    return tasks

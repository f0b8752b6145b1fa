"""Side-by-side speed comparison of micrograd engines: python -m micrograd_c.bench

Workloads
  train_step   micrograd's demo step: MLP(2, [16, 16, 1]), 100 two-moons points, hinge loss
               + 1e-4 L2, backward, SGD
  chain        build and backward a chain of n multiplications, n = 1e2 .. 1e6 (1e5 with --quick)
  expression   micrograd's test_more_ops expression, built and back-propagated 100 times
  wide_mlp     the demo step with MLP(2, [64, 64, 1]) on 20 points (10 with --quick): scaling
               with width
  memory       bytes per graph node, from a chain of 1e6 nodes (1e5 with --quick)

Engines: micrograd_c (micrograd_c.nn, fused neurons), micrograd_c-unfused (upstream's nn.py on
micrograd_c's Value), micrograd (upstream), micrograd-nogc (upstream with the cyclic GC off),
torch (0-d tensors on upstream's nn.py: the same scalar graph), and any module with micrograd's
API given by --engine. Engines that are not installed are listed as skipped.

Method (these machines are shared and noisy: no absolute time is trusted alone)
- One warm-up run, then rounds in which every engine runs once, in reversed order every other
  round; the ratio against upstream is taken round by round and the median reported.
- The cyclic GC runs at Python's default thresholds, as users have it. Each engine's timed
  region ends with a timed gc.collect(), after an untimed one before it, so each pays for its
  own garbage: upstream's nodes are reference cycles that only the GC frees, and would
  otherwise be collected during the next engine's turn. Objects made before timing starts
  (modules, models, data) are frozen (gc.freeze) so that this collection measures the engine's
  garbage, not the size of this process. micrograd-nogc runs with the GC off and is collected
  untimed afterwards.
"""
import argparse
import gc
import importlib
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc

import micrograd_c
from micrograd_c import moons, upstream

NOT_UPSTREAM = "upstream micrograd is not installed (pip install micrograd==0.1.0)"


# ---------------------------------------------------------------------------------------------
# Engines

class Engine:
    """An engine to time: how to make a leaf, an MLP and a sum, and its GC setting."""

    def __init__(self, name, Value, MLP=None, gc_off=False, sum_values=sum, nodes=None,
                 same_value_as=None):
        self.name = name
        self.Value = Value
        self.MLP = MLP
        self.gc_off = gc_off
        self.sum_values = sum_values
        self.count_nodes = nodes or count_value_nodes
        self.same_value_as = same_value_as      # only its nn differs from this engine's

    def duplicate_on(self, workload):
        """Why this engine is not run on `workload` (it would time another engine again), or None."""
        if self.same_value_as and workload not in ("train_step", "wide_mlp"):
            return f"same as {self.same_value_as} (only its nn differs)"
        return None


def count_value_nodes(root):
    """Nodes of a graph of micrograd-style Values (anything with _prev)."""
    seen, todo = set(), [root]
    while todo:
        v = todo.pop()
        if id(v) not in seen:
            seen.add(id(v))
            todo.extend(v._prev)
    return len(seen)


def count_torch_nodes(root):
    """Autograd nodes (grad_fn objects and leaf accumulators) of a 0-d tensor graph."""
    seen, todo = set(), [root.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            todo.extend(next_fn for next_fn, _ in fn.next_functions)
    return len(seen)


def torch_engine():
    import torch

    class TorchEngine:                       # micrograd's engine module, as upstream's nn sees it
        @staticmethod
        def Value(x):
            return torch.tensor(float(x), dtype=torch.float64, requires_grad=True)

    MLP = None
    if upstream.installed():
        class TorchMLP(upstream.nn_on(TorchEngine).MLP):
            def zero_grad(self):             # a tensor's grad is a tensor or None, never 0
                for p in self.parameters():
                    p.grad = None
        MLP = TorchMLP
    return Engine("torch", TorchEngine.Value, MLP, nodes=count_torch_nodes)


def module_engine(path):
    """An engine given by module path: a module with Value (or an .engine submodule with it),
    and MLP (or an .nn submodule with it); without one, upstream's nn.py is run on its Value."""
    module = importlib.import_module(path)
    value_module = module if hasattr(module, "Value") else importlib.import_module(path + ".engine")
    MLP = getattr(module, "MLP", None)
    if MLP is None:
        try:
            MLP = importlib.import_module(path + ".nn").MLP
        except (ImportError, AttributeError):
            MLP = upstream.nn_on(value_module).MLP if upstream.installed() else None
    return Engine(path, value_module.Value, MLP)


def builtin_engines():
    """{name: function making the Engine, or the reason it can't run here}."""
    import micrograd_c.engine
    import micrograd_c.nn

    makers = {"micrograd_c": lambda: Engine("micrograd_c", micrograd_c.engine.Value,
                                            micrograd_c.nn.MLP, sum_values=micrograd_c.engine.sum)}
    if upstream.installed():
        import micrograd.engine
        import micrograd.nn
        makers["micrograd_c-unfused"] = lambda: Engine(
            "micrograd_c-unfused", micrograd_c.engine.Value,
            upstream.nn_on(micrograd_c.engine).MLP, same_value_as="micrograd_c")
        makers["micrograd"] = lambda: Engine("micrograd", micrograd.engine.Value, micrograd.nn.MLP)
        makers["micrograd-nogc"] = lambda: Engine("micrograd-nogc", micrograd.engine.Value,
                                                  micrograd.nn.MLP, gc_off=True)
    else:
        for name in ("micrograd_c-unfused", "micrograd", "micrograd-nogc"):
            makers[name] = NOT_UPSTREAM
    has_torch = importlib.util.find_spec("torch") is not None
    makers["torch"] = torch_engine if has_torch else "torch is not installed"
    return makers


BUILTIN = ("micrograd_c", "micrograd_c-unfused", "micrograd", "micrograd-nogc", "torch")


def available_engines(names=None, modules=()):
    """Returns (engines, skipped): the engines that can run here, and {name: reason} for the
    rest. `names` picks built-in engines in the order given (None: all); `modules` adds engines
    by module path."""
    makers = builtin_engines()
    engines, skipped = [], {}
    for name in BUILTIN if names is None else names:
        if name not in makers:
            raise ValueError(f"unknown engine {name!r}; built in: {', '.join(BUILTIN)} "
                             "(name any other by module path with --engine)")
        if isinstance(makers[name], str):
            skipped[name] = makers[name]
        else:
            engines.append(makers[name]())
    for path in modules:
        try:
            engines.append(module_engine(path))
        except ImportError as error:
            skipped[path] = f"cannot import it: {error}"
    return engines, skipped


# ---------------------------------------------------------------------------------------------
# Workloads: each setup returns (run, nodes): a function doing one timed run, and the number
# of graph nodes one run makes. A workload that an engine can't do raises Unsupported.

class Unsupported(Exception):
    pass


def needs_mlp(engine):
    if engine.MLP is None:
        raise Unsupported("no MLP (its nn needs upstream micrograd installed)")


def train_step(engine, width=16, points=100, l2_by_neuron=False, seed=1337):
    """The demo's training step on `engine`; returns (run, nodes)."""
    needs_mlp(engine)
    X, y = moons.demo_data(n_samples=points)
    random.seed(seed)
    model = engine.MLP(2, [width, width, 1])
    k = 0

    def run():
        nonlocal k
        moons.sgd_step(model, X, y, engine.Value, k, sum_values=engine.sum_values,
                       l2_by_neuron=l2_by_neuron)
        k += 1

    loss, _ = moons.loss(model, X, y, engine.Value, engine.sum_values, l2_by_neuron)
    return run, engine.count_nodes(loss)


def wide_mlp(engine, points=20):
    # The L2 term is summed neuron by neuron: summed flat, its 4,481 terms make a chain deeper
    # than upstream's recursive backward() allows, and upstream could not run this at all.
    return train_step(engine, width=64, points=points, l2_by_neuron=True)


def chain(engine, size, repeats=1):
    """Build y = x * w * w * ... (size multiplications), then backward; `repeats` times per run."""
    def build(length):
        w = engine.Value(0.999999)
        y = engine.Value(1.0)
        for _ in range(length):
            y = y * w
        return y

    def run():
        for _ in range(repeats):
            build(size).backward()

    # A chain grows by the same number of nodes per op: count a short one, not a long one twice.
    short, shorter = engine.count_nodes(build(20)), engine.count_nodes(build(10))
    return run, shorter + (size - 10) * (short - shorter) // 10


def more_ops(Value):
    # upstream micrograd's test_more_ops expression
    a = Value(-4.0)
    b = Value(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    return g


def expression(engine, repeats=100):
    def run():
        for _ in range(repeats):
            more_ops(engine.Value).backward()

    return run, repeats * engine.count_nodes(more_ops(engine.Value))


# ---------------------------------------------------------------------------------------------
# Measuring

def timed(engine, run):
    """Seconds for one run, including the collection of the garbage it leaves."""
    gc.collect()
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
    """One workload (at one size) to time on several engines."""

    def __init__(self, workload, setup, rounds, size=None, warmup=True, repeats=1):
        self.workload = workload
        self.setup = setup              # engine -> (run, nodes made by one repeat)
        self.rounds = rounds
        self.size = size
        self.warmup = warmup
        self.repeats = repeats          # a run does the workload this many times


def recursion_failure(engine, failures):
    """The status of an engine that hit RecursionError; failures memoizes it by engine name."""
    if engine.name not in failures:
        failures[engine.name] = (f"fails at depth {recursion_limit_depth(engine) + 1:,} "
                                 "(RecursionError)")
    return failures[engine.name]


def measure(task, engines, tick, failures=None):
    """Times task on every engine, alternating; returns one record per engine. `failures`
    remembers engines that hit RecursionError, so longer chains are not tried on them."""
    failures = {} if failures is None else failures
    records, runs = {}, []
    for engine in engines:
        record = {"workload": task.workload, "size": task.size, "engine": engine.name,
                  "median_s": None, "nodes": None, "times_s": [], "status": "ok"}
        records[engine.name] = record
        if engine.duplicate_on(task.workload):
            record["status"] = engine.duplicate_on(task.workload)
            continue
        if task.workload == "chain" and engine.name in failures:
            record["status"] = failures[engine.name]
            continue
        try:
            run, record["nodes"] = task.setup(engine)
            if task.warmup:
                timed(engine, run)
            runs.append((engine, run))
        except Unsupported as reason:
            record["status"] = f"skipped: {reason}"
        except RecursionError:
            record["status"] = recursion_failure(engine, failures)
        tick()
    gc.freeze()
    try:
        for r in range(task.rounds):
            for engine, run in (runs if r % 2 == 0 else runs[::-1]):
                record = records[engine.name]
                if record["status"] != "ok":
                    continue
                try:
                    record["times_s"].append(timed(engine, run))
                except RecursionError:
                    record["status"] = recursion_failure(engine, failures)
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
        record["ns_per_node"] = record["median_s"] / record["nodes"] * 1e9
    for baseline, key in (("micrograd", "ratio_vs_micrograd"),
                          ("micrograd-nogc", "ratio_vs_micrograd_nogc")):
        base = records.get(baseline)
        for record in records.values():
            ok = base is not None and base["status"] == "ok" and record["status"] == "ok"
            record[key] = (statistics.median(b / t for b, t in zip(base["times_s"], record["times_s"]))
                           if ok else None)
    return list(records.values())


def spread(times):
    """Half the interquartile range, relative to the median."""
    if len(times) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return (q3 - q1) / 2 / statistics.median(times)


def bytes_per_node(engine, size):
    """Memory held by a chain of `size` nodes, per node, as Python's allocator sees it."""
    w = engine.Value(0.5)
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
    for engine in engines:
        record = {"workload": "memory", "size": size, "engine": engine.name, "median_s": None,
                  "nodes": size, "ratio_vs_micrograd": None, "ratio_vs_micrograd_nogc": None}
        if engine.duplicate_on("memory"):
            record.update(status=engine.duplicate_on("memory"), nodes=None)
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


# ---------------------------------------------------------------------------------------------
# Plan, report, plot

WORKLOADS = ("train_step", "chain", "expression", "wide_mlp", "memory")


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
    return tasks


def format_time(seconds):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def format_ratio(ratio):
    return "-" if ratio is None else f"{ratio:,.1f}x" if ratio < 100 else f"{ratio:,.0f}x"


def report(records, skipped):
    lines = []
    titles = {"train_step": "train_step: MLP(2, [16, 16, 1]), 100 moons points, loss + backward + SGD",
              "chain": "chain: build and backward n multiplications",
              "expression": "expression: upstream's test_more_ops expression x 100",
              "wide_mlp": "wide_mlp: MLP(2, [64, 64, 1]), loss + backward + SGD",
              "memory": "memory: bytes per node of a chain"}
    header = (f"  {'engine':<22}{'median':>11}{'ns/node':>10}{'vs micrograd':>14}"
              f"{'vs nogc':>10}{'spread':>9}{'nodes':>12}")
    keys = []
    for r in records:
        if (r["workload"], r["size"]) not in keys:
            keys.append((r["workload"], r["size"]))
    for workload, size in keys:
        group = [r for r in records if (r["workload"], r["size"]) == (workload, size)]
        if workload == "wide_mlp":
            title = titles[workload] + f", {size} moons points"
        else:
            title = titles[workload] + (f", n = {size:,}" if size and workload != "memory" else "")
        lines += ["", title]
        if workload == "memory":
            lines.append(f"  {'engine':<22}{'bytes/node':>12}  method (n = {size:,})")
            for r in group:
                if r["status"] == "ok":
                    lines.append(f"  {r['engine']:<22}{r['bytes_per_node']:>12,.0f}  {r['method']}")
                else:
                    lines.append(f"  {r['engine']:<22}  {r['status']}")
            continue
        lines.append(header)
        for r in group:
            if r["status"] != "ok":
                lines.append(f"  {r['engine']:<22}  {r['status']}")
                continue
            lines.append(f"  {r['engine']:<22}{format_time(r['median_s']):>11}"
                         f"{r['ns_per_node']:>10,.0f}{format_ratio(r['ratio_vs_micrograd']):>14}"
                         f"{format_ratio(r['ratio_vs_micrograd_nogc']):>10}"
                         f"{'±' + format(r['spread'], '.0%'):>9}{r['nodes']:>12,}")
    if skipped:
        lines += ["", "skipped engines:"] + [f"  {name}: {why}" for name, why in skipped.items()]
    return "\n".join(lines)


def plot(records, path):
    """Log-log cost against chain length per engine, and speed-up bars per workload."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    engines = []
    for r in records:
        if r["engine"] not in engines:
            engines.append(r["engine"])
    for name in engines:
        points = [(r["size"], r["median_s"]) for r in records
                  if r["workload"] == "chain" and r["engine"] == name and r["status"] == "ok"]
        if points:
            left.plot(*zip(*points), marker="o", label=name)
        failed = [r for r in records if r["workload"] == "chain" and r["engine"] == name
                  and r["status"].startswith("fails")]
        if failed and points:
            left.annotate(failed[0]["status"].split(" (")[0], points[-1], fontsize=8,
                          xytext=(5, -12), textcoords="offset points")
    left.set(xscale="log", yscale="log", xlabel="chain length (ops)", ylabel="build + backward (s)",
             title="cost against graph size")
    left.grid(True, which="both", alpha=0.3)
    if left.lines:
        left.legend()
    else:
        left.text(0.5, 0.5, "no chain workload in this run", ha="center", transform=left.transAxes)

    timed_workloads = [w for w in ("train_step", "expression", "wide_mlp")
                       if any(r["workload"] == w and r["ratio_vs_micrograd"] for r in records)]
    bar_engines = [e for e in engines if e != "micrograd"]
    width = 0.8 / max(1, len(bar_engines))
    for i, name in enumerate(bar_engines):
        ratios = [next((r["ratio_vs_micrograd"] or 0 for r in records
                        if r["workload"] == w and r["engine"] == name), 0) for w in timed_workloads]
        bars = right.bar([j + i * width for j in range(len(timed_workloads))], ratios, width,
                         label=name)
        right.bar_label(bars, labels=[format_ratio(v) if v else "" for v in ratios], fontsize=7)
    right.axhline(1, color="black", linewidth=0.8)
    right.set_xticks([j + width * (len(bar_engines) - 1) / 2 for j in range(len(timed_workloads))],
                     timed_workloads)
    right.set(yscale="log", ylabel="times faster than upstream micrograd",
              title="speed-up over upstream (median of alternated rounds)")
    if timed_workloads:
        right.legend()
    fig.suptitle(f"micrograd_c {micrograd_c.__version__}, Python {platform.python_version()}, "
                 f"{platform.machine()}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class Progress:
    """A tqdm bar when tqdm is installed; otherwise silence."""

    def __init__(self, total):
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc="benchmarking", unit="run", file=sys.stderr)
        except ImportError:
            self.bar = None

    def describe(self, text):
        if self.bar is not None:
            self.bar.set_description(text)

    def tick(self):
        if self.bar is not None:
            self.bar.update()

    def close(self):
        if self.bar is not None:
            self.bar.update(self.bar.total - self.bar.n)    # runs skipped or failed count as done
            self.bar.close()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m micrograd_c.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and sizes: under a minute on a 2-core machine")
    parser.add_argument("--json", metavar="FILE", help="write one record per result to FILE")
    parser.add_argument("--plot", metavar="FILE", help="save a PNG of the results (needs matplotlib)")
    parser.add_argument("--engines", nargs="+", metavar="NAME", choices=BUILTIN,
                        help=f"built-in engines to run (default: all of {', '.join(BUILTIN)})")
    parser.add_argument("--engine", action="append", default=[], metavar="MODULE",
                        help="also run an engine with micrograd's API, by module path (repeatable)")
    parser.add_argument("--workloads", nargs="+", metavar="NAME", choices=WORKLOADS,
                        default=list(WORKLOADS), help=f"workloads (default: all of {', '.join(WORKLOADS)})")
    args = parser.parse_args(argv)

    engines, skipped = available_engines(args.engines, args.engine)
    print(f"micrograd_c {micrograd_c.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs; "
          f"{'quick' if args.quick else 'full'} run. GC at Python's defaults; each engine pays "
          "for its own garbage (see --help); ratios are medians of per-round ratios.")
    if not engines:
        print(report([], skipped))
        return 1

    tasks = plan(args.workloads, args.quick)
    runs = sum(len(engines) * (task.rounds + 1) for task in tasks)
    runs += len(engines) if "memory" in args.workloads else 0
    progress = Progress(runs)
    records, failures = [], {}
    try:
        for task in tasks:
            progress.describe(task.workload + (f" n={task.size:,}" if task.size else ""))
            records += measure(task, engines, progress.tick, failures)
        if "memory" in args.workloads:
            progress.describe("memory")
            records += memory_records(engines, 100_000 if args.quick else 1_000_000, progress.tick)
    finally:
        progress.close()

    print(report(records, skipped))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(records, out, indent=1)
        print(f"\nrecords written to {os.path.abspath(args.json)}")
    if args.plot:
        try:
            plot(records, args.plot)
        except ImportError:
            print("\nmatplotlib is not installed: pip install 'micrograd_c[bench]' for --plot")
        else:
            print(f"plot saved to {os.path.abspath(args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

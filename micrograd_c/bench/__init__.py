"""Side-by-side speed comparison of micrograd engines: python -m micrograd_c.bench

Workloads
  train_step   micrograd's demo step: MLP(2, [16, 16, 1]), 100 two-moons points, hinge loss
               + 1e-4 L2, backward, SGD (micrograd_c.optim.SGD on micrograd_c's Values: the
               demo's loop over the parameters, the same numbers, was 7% of a fused step; the
               loop elsewhere)
  chain        build and backward a chain of n multiplications, n = 1e2 .. 1e6 (1e5 with --quick)
  expression   micrograd's test_more_ops expression, built and back-propagated 100 times
  wide_mlp     the demo step with MLP(2, [64, 64, 1]) on 20 points (10 with --quick): scaling
               with width
  fastest_autograd
               the scalar graph of A. Rogozhnikov's "Fastest Autograd in the West" (2023): 100
               inputs, 10,000 ops (softplus, sum of 4, product, softmax of 4 in turn), 17,600
               values, then backward from the last. Written as a micrograd user would:
               softplus = (x.exp() + 1).log(), x / s = x * s**-1 in micrograd. Its inputs are
               i / 100, not arange(100): written naively, softplus overflows exp there (values
               reach ~8,900); from i / 100 they stay in [0.0003, 3.95]. backward() visits only
               what the last value depends on (15,012 of the values), so does a replay; the
               engines that rebuild compute all 17,600. Reported per iteration and per 10k
               iterations (as published), against micrograd_c and torch (upstream has no exp)
  digits_epoch mini-batch training of the digits classifier (python -m micrograd_c.demo digits):
               MLP(64, [32, 10]) with the same weights on every engine, batches of 32 of
               scikit-learn's 1,437 training digits, loss + backward + plain SGD (lr 0.1). A run
               is one batch's step; an epoch is 44 of them and a full run 20 epochs (the demo's
               default): both the median batch times batches. Two tables: softmax cross-entropy
               (torch: F.cross_entropy of the 0-d tensors' stacked logits), against micrograd_c
               and torch; and squared error against one-hot, the loss upstream can express (it
               has no exp or log), against upstream and torch. SGD is micrograd_c.optim.SGD on
               micrograd_c's Values (the Python loop would be most of a replayed step), the loop
               p.data -= lr * p.grad elsewhere: the same numbers. Needs scikit-learn (pip install
               'micrograd_c[demo]'); without it the workload is skipped
  grad_graph   gradients as a graph: build a graph (forward), then grad(output, inputs,
               create_graph=True) on it (micrograd_c's engine.grad; torch.autograd.grad on 0-d
               tensors): each engine's grad/forward ratio (reverse mode: a small constant, ~3)
               and its grad against torch's. On the demo's loss (with respect to the 337
               parameters; torch and micrograd_c-unfused on upstream's nn.py: the same graph)
               and on fastest_autograd's graph (with respect to its 100 inputs)
  memory       bytes per graph node, from a chain of 1e6 nodes (1e5 with --quick)

Engines: micrograd_c (micrograd_c.nn, fused neurons), micrograd_c-unfused (upstream's nn.py on
micrograd_c's Value: run where an nn is used), micrograd_c-replay (micrograd_c with the graph
built and compiled once by engine.compile; a run replays it, updates with optim.SGD and, on
train_step and wide_mlp, counts the accuracy on the scores copied out with copy_to_array; the
MLPs' graphs compiled with inputs=the parameters, whose grads alone a training step needs, as
numpy's and torch's steps compute no input's grad; fastest_autograd's with every leaf's: on
train_step, wide_mlp, fastest_autograd, digits_epoch), micrograd (upstream), micrograd-nogc
(upstream with the cyclic GC off), torch (0-d float64 tensors, on upstream's nn.py for the MLPs:
the same scalar graph), floats (plain Python floats, forward only: the floor of any engine whose
graph Python rebuilds; on train_step, wide_mlp and fastest_autograd), numpy and torch-tensors
(the digits MLP written by hand as matrix products over the batch, and as torch.nn.Linear
layers: what a user would pick instead; on digits_epoch), and any module with micrograd's API
given by --engine. Engines that are not installed are listed as skipped.

Method (these machines are shared and noisy: no absolute time is trusted alone)
- One warm-up run, then rounds in which every engine runs once, fastest first (by its last
  time: engines of like speed run close together), in reversed order every other round; the
  ratio against upstream (on fastest_autograd: against micrograd_c and torch) is taken round
  by round and the median reported. nodes: the graph nodes one run makes (for a
  replay, the nodes it replays).
- A run shorter than 50 ms runs again, untimed, for 20 ms (at least once) just before each
  timed run, so that what precedes it is its own previous runs, as in a training loop, and
  not another engine's garbage, flushed caches and a core slowed down (which made a 0.2 ms
  replay step measure 0.3-0.6 ms, and a 0.46 ms one 0.56 ms after a single untimed run).
- On digits_epoch, an engine whose batch takes over 1 s (upstream's, torch's) is timed on 1
  batch (3 in a full run), its warm-up run the first: its epoch is extrapolated from 1 or 3
  batches, the others' from 3 or 7.
- The cyclic GC runs at Python's default thresholds, as users have it. Each engine's timed
  region ends with a timed gc.collect(), after an untimed one before it, so each pays for its
  own garbage: upstream's nodes are reference cycles that only the GC frees, and would
  otherwise be collected during the next engine's turn. What lives before each timed run
  (modules, models, data, other engines' gradients) is frozen (gc.freeze) so that this
  collection measures the engine's garbage, not the size of this process (torch's digits
  gradients made a replayed step measure twice its time). micrograd-nogc runs with the GC off
  and is collected untimed afterwards.
"""
import argparse
import json
import os
import platform
import sys

import micrograd_c
from micrograd_c.bench.engines import BUILTIN, Engine, available_engines
from micrograd_c.bench.measuring import (Task, measure, memory_records, plan, ratio,
                                         recursion_limit_depth, side_by_side)
from micrograd_c.bench.plotting import plot
from micrograd_c.bench.reporting import report
from micrograd_c.bench.workloads import (WORKLOADS, Unsupported, chain, digits_epoch, expression,
                                         fastest_autograd, grad_graph, missing, rogozhnikov_graph,
                                         squared_error, train_step, wide_mlp)

__all__ = ["BUILTIN", "WORKLOADS", "Engine", "Task", "Unsupported", "available_engines", "chain",
           "digits_epoch", "expression", "fastest_autograd", "grad_graph", "main", "measure",
           "memory_records", "missing", "plan", "plot", "ratio", "recursion_limit_depth", "report",
           "rogozhnikov_graph", "side_by_side", "squared_error", "train_step", "wide_mlp"]


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
    for path in (args.json, args.plot):         # before the run, not after it
        if path and (os.path.isdir(path) or not os.path.isdir(os.path.dirname(path) or ".")):
            parser.error(f"can't write {path!r}: not a file in an existing folder")
    try:
        engines, skipped = available_engines(args.engines, args.engine)
    except ValueError as error:
        parser.error(str(error))
    print(f"micrograd_c {micrograd_c.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs; "
          f"{'quick' if args.quick else 'full'} run. GC at Python's defaults; each engine pays "
          "for its own garbage (see --help); ratios are medians of per-round ratios.")
    if not engines:
        print(report([], skipped))
        return 1

    skipped_workloads = {w: why for w in args.workloads if (why := missing(w))}
    tasks = plan([w for w in args.workloads if w not in skipped_workloads], args.quick)
    # a setup, then a run per phase per round, for each engine
    runs = sum((1 + task.rounds * len(task.phases)) * sum(e.runs(task.workload) for e in engines)
               for task in tasks)
    runs += sum(e.runs("memory") for e in engines) if "memory" in args.workloads else 0
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

    if not records and tasks:
        print(f"\nnone of the engines chosen runs "
              f"{', '.join(dict.fromkeys(t.workload for t in tasks))}")
    print(report(records, skipped, {e.name: e.note for e in engines if e.note}, skipped_workloads))
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
    return 0 if records or not tasks else 1

"""Side-by-side speed comparison: python -m micrograd_c.bench

Runs the micrograd demo's training step (MLP(2, [16, 16, 1]), 100 two-moons points, hinge loss
+ 1e-4 L2, backward, SGD) on each engine, alternating engines round by round in one process,
and reports the median of the per-round time ratios against upstream micrograd.

How it stays fair (these machines are shared and noisy):
- Engines alternate every round, in reversed order every other round, so a slow spell hits all.
- Each engine pays for its own garbage: gc.collect() runs untimed before its timed region and
  timed at its end. Upstream's nodes are reference cycles that only the cyclic GC frees; without
  this, its garbage is collected during the next engine's timed region.
- Objects that exist before timing starts (modules, models, data) are moved out of the GC's
  view with gc.freeze(), so that the timed collection costs what the engine's garbage costs,
  not the size of this process.
- Upstream is reported as users run it (GC on) and with the cyclic GC off ("micrograd-nogc"),
  since most of its time is GC.
"""
import argparse
import gc
import platform
import random
import statistics
import sys
import time

import micrograd_c
from micrograd_c import moons, upstream


class Engine:
    """An engine to time: a name, its Value class, how to build an MLP, and its GC setting."""

    def __init__(self, name, Value, MLP, gc_off=False, sum_values=sum):
        self.name = name
        self.Value = Value
        self.MLP = MLP
        self.gc_off = gc_off
        self.sum_values = sum_values


def available_engines(names=None):
    """Returns (engines, skipped): the engines that can run here, and {name: reason} for the rest.

    `names` picks engines by name, in the order given; None means all of them.
    """
    import micrograd_c.engine
    import micrograd_c.nn

    makers = {"micrograd_c": lambda: Engine("micrograd_c", micrograd_c.engine.Value,
                                            micrograd_c.nn.MLP, sum_values=micrograd_c.engine.sum)}
    if upstream.installed():
        import micrograd.engine
        import micrograd.nn

        makers["micrograd_c-unfused"] = lambda: Engine(
            "micrograd_c-unfused", micrograd_c.engine.Value, upstream.nn_on(micrograd_c.engine).MLP)
        makers["micrograd"] = lambda: Engine("micrograd", micrograd.engine.Value, micrograd.nn.MLP)
        makers["micrograd-nogc"] = lambda: Engine("micrograd-nogc", micrograd.engine.Value,
                                                  micrograd.nn.MLP, gc_off=True)
    known = ["micrograd_c", "micrograd_c-unfused", "micrograd", "micrograd-nogc"]
    engines, skipped = [], {}
    for name in known if names is None else names:
        if name in makers:
            engines.append(makers[name]())
        elif name in known:
            skipped[name] = "upstream micrograd is not installed (pip install micrograd==0.1.0)"
        else:
            raise ValueError(f"unknown engine {name!r}; known: {', '.join(known)}")
    return engines, skipped


def train_step(engine, seed=1337):
    """The demo's training step on `engine`; returns a function that runs the next step."""
    X, y = moons.demo_data()
    random.seed(seed)
    model = engine.MLP(2, [16, 16, 1])
    k = 0

    def step():
        nonlocal k
        moons.sgd_step(model, X, y, engine.Value, k, sum_values=engine.sum_values)
        k += 1

    return step


def timed(engine, run):
    """Seconds for one run, including the collection of the garbage it leaves."""
    gc.collect()
    if engine.gc_off:
        gc.disable()
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        gc.enable()
        gc.collect()
        return seconds
    start = time.perf_counter()
    run()
    gc.collect()
    return time.perf_counter() - start


def compare(engines, make_workload, rounds):
    """Times every engine `rounds` times, alternating; returns {name: [seconds per round]}."""
    runs = [(engine, make_workload(engine)) for engine in engines]
    for engine, run in runs:
        timed(engine, run)                              # warm-up
    gc.freeze()
    try:
        times = {engine.name: [] for engine in engines}
        for r in range(rounds):
            for engine, run in (runs if r % 2 == 0 else runs[::-1]):
                times[engine.name].append(timed(engine, run))
    finally:
        gc.unfreeze()
    return times


def ratio(times, baseline, name):
    """Median over rounds of baseline time / engine time (how many times faster)."""
    return statistics.median(b / t for b, t in zip(times[baseline], times[name]))


def report(times, skipped):
    lines = [f"{'engine':<22}{'median step':>14}{'vs micrograd':>16}{'vs micrograd-nogc':>20}"]
    for name, seconds in times.items():
        cells = [f"{name:<22}", f"{statistics.median(seconds) * 1e3:>11.2f} ms"]
        for baseline, width in (("micrograd", 16), ("micrograd-nogc", 20)):
            faster = f"{ratio(times, baseline, name):.1f}x" if baseline in times else "-"
            cells.append(f"{faster:>{width}}")
        lines.append("".join(cells))
    for name, reason in skipped.items():
        lines.append(f"{name:<22}skipped: {reason}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m micrograd_c.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7,
                        help="timed rounds per engine (default 7; upstream takes ~1.5 s a step)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    engines, skipped = available_engines()
    print(f"micrograd_c {micrograd_c.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}; train_step: MLP(2, [16, 16, 1]), 100 moons points, "
          f"{args.rounds} alternated rounds, median of per-round ratios")
    if not engines:
        print(report({}, skipped))
        return 1
    times = compare(engines, train_step, args.rounds)
    print(report(times, skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())

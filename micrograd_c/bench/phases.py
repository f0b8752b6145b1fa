"""Where a rebuilt demo step's time goes, per graph node: python -m micrograd_c.bench.phases

The demo's loss (MLP(2, [16, 16, 1]), 100 moons points, hinge loss + 1e-4 L2) is built, back-
propagated and dropped, phase by phase, with micrograd_c's nn (fused: a neuron is one dot node)
and with upstream's nn.py unchanged on micrograd_c's Value (unfused: upstream's nodes); plain
floats run the same Python with no graph, the floor of building one. Rounds alternate the
three; each phase's median over the rounds is divided by the graph's nodes. The machine's
speed moves between runs: compare the columns of one run.
"""
import argparse
import gc
import random
import statistics
import time

from micrograd_c import engine, moons, upstream
from micrograd_c.bench.engines import FloatMLP, count_value_nodes, float_relu
from micrograd_c.engine import Value
from micrograd_c.nn import MLP


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m micrograd_c.bench.phases",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40, help="rounds (default 40)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    X, y = moons.demo_data()
    models = {}
    random.seed(1337)
    models["micrograd_c (fused)"] = (MLP(2, [16, 16, 1]), engine.sum)
    if upstream.installed():
        random.seed(1337)
        models["micrograd_c-unfused"] = (upstream.nn_on(engine).MLP(2, [16, 16, 1]), sum)
    random.seed(1337)
    floats = FloatMLP(2, [16, 16, 1])
    times = {name: ([], [], []) for name in models}
    floor = []
    nodes = {name: count_value_nodes(moons.loss(model, X, y, Value, total)[0])
             for name, (model, total) in models.items()}
    gc.collect()
    gc.freeze()
    for _ in range(args.rounds):
        for name, (model, total) in models.items():
            t0 = time.perf_counter()
            loss, _ = moons.loss_and_scores(model, X, y, Value, total)
            t1 = time.perf_counter()
            model.zero_grad()
            loss.backward()
            t2 = time.perf_counter()
            del loss, _
            t3 = time.perf_counter()
            for phase, seconds in zip(times[name], (t1 - t0, t2 - t1, t3 - t2)):
                phase.append(seconds)
        t0 = time.perf_counter()
        moons.loss_and_scores(floats, X, y, float, relu=float_relu)
        floor.append(time.perf_counter() - t0)
    gc.unfreeze()
    median = statistics.median
    print(f"{'':22}{'nodes':>8}{'build':>10}{'backward':>10}{'free':>10}{'step':>10}  "
          "(ns per node; step in ms)")
    for name, phases in times.items():
        build, backward, free = (median(p) * 1e9 / nodes[name] for p in phases)
        step = sum(median(p) for p in phases) * 1e3
        print(f"{name:22}{nodes[name]:8,}{build:10.1f}{backward:10.1f}{free:10.1f}{step:10.2f}")
    unfused = nodes.get("micrograd_c-unfused")
    per_node = f"{median(floor) * 1e9 / unfused:10.1f}" if unfused else f"{'-':>10}"
    print(f"{'floats (no graph)':22}{'':8}{per_node}{'':20}{median(floor) * 1e3:10.2f}"
          "  (per node of upstream's graph)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

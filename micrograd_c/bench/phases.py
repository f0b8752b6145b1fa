"""Where a rebuilt demo step's time goes, per graph node: python -m micrograd_c.bench.phases

The demo's loss (MLP(2, [16, 16, 1]), 100 moons points, hinge loss + 1e-4 L2) is built, back-
propagated and dropped, phase by phase, with micrograd_c's nn (fused: a neuron is one dot node)
and with upstream's nn.py unchanged on micrograd_c's Value (unfused: upstream's nodes); plain
floats run the same Python with no graph, the floor of building one. Part of that floor is
out of any engine's reach: the interpreter's shortcuts for floats (`*` and `+` of two floats
specialised in its loop; sum() of floats added in C doubles, no float made per term), where
each op on Values is a dispatch through the type and each term of a sum a node. The second
floor runs the same Python again without them (bench.engines.DispatchedFloat: weights, biases
and inputs of a float subclass, the loss's sums from one too), with upstream's numbers.
Rounds alternate the four; each phase's median over the rounds is divided by the graph's
nodes, and the unfused step's ratio to each floor is the median of the rounds' ratios. The
machine's speed moves between runs: compare the columns of one run.
"""
import argparse
import gc
import random
import statistics
import time

from micrograd_c import engine, moons, upstream
from micrograd_c.bench.engines import (DispatchedFloat, FloatMLP, count_value_nodes,
                                       float_relu, sum_one_by_one)
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
    random.seed(1337)
    dispatched = FloatMLP(2, [16, 16, 1], number=DispatchedFloat)
    times = {name: ([], [], []) for name in models}
    floor, dispatched_floor = [], []
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
        t1 = time.perf_counter()
        moons.loss_and_scores(dispatched, X, y, DispatchedFloat, sum_one_by_one,
                              relu=float_relu)
        t2 = time.perf_counter()
        floor.append(t1 - t0)
        dispatched_floor.append(t2 - t1)
    gc.unfreeze()
    median = statistics.median
    print(f"{'':22}{'nodes':>8}{'build':>10}{'backward':>10}{'free':>10}{'step':>10}  "
          "(ns per node; step in ms)")
    for name, phases in times.items():
        build, backward, free = (median(p) * 1e9 / nodes[name] for p in phases)
        step = sum(median(p) for p in phases) * 1e3
        print(f"{name:22}{nodes[name]:8,}{build:10.1f}{backward:10.1f}{free:10.1f}{step:10.2f}")
    unfused = nodes.get("micrograd_c-unfused")
    for name, seconds in (("floats (no graph)", floor),
                          ("floats, no shortcuts", dispatched_floor)):
        per_node = f"{median(seconds) * 1e9 / unfused:10.1f}" if unfused else f"{'-':>10}"
        print(f"{name:22}{'':8}{per_node}{'':20}{median(seconds) * 1e3:10.2f}"
              "  (per node of upstream's graph)")
    if unfused:
        steps = [sum(phase[k] for phase in times["micrograd_c-unfused"])
                 for k in range(args.rounds)]
        print("the unfused step: "
              f"{median(s / f for s, f in zip(steps, floor)):.2f}x the floats' time, "
              f"{median(s / f for s, f in zip(steps, dispatched_floor)):.2f}x without their "
              "shortcuts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""micrograd's two-moons demo on micrograd_c: python -m micrograd_c.demo

Trains MLP(2, [16, 16, 1]) on 100 two-moons points with the SVM max-margin loss + 1e-4 L2 and
SGD, exactly as micrograd's demo notebook, shows the progress, the time per step, the speed-up
over upstream micrograd when it is installed, and saves the decision boundary as a PNG.

With --replay the graph is built and compiled once (engine.compile) and replayed at every step:
every step uses all 100 points, so its structure never changes. The numbers are the same, bit
for bit; the demo then times replaying against rebuilding, side by side.

The second demo, `python -m micrograd_c.demo digits`, classifies handwritten digits (see
`python -m micrograd_c.demo digits --help`).
"""
import argparse
import os
import random
import sys
import time

import numpy as np

from micrograd_c import engine, moons, upstream
from micrograd_c.digits import EXTRA_HINT
from micrograd_c.engine import Value
from micrograd_c.nn import MLP
from micrograd_c.optim import SGD


def progress(steps):
    """tqdm's progress bar when installed; otherwise a line every 10 steps."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None, range(steps)
    bar = tqdm(range(steps), desc="training", unit="step")
    return bar, bar


def train(model, X, y, steps, replay=False):
    """Runs the demo's training loop, rebuilding the graph at every step or replaying one
    compiled graph; returns (loss, accuracy, seconds per step, compiling included)."""
    bar, ks = progress(steps)
    start = time.perf_counter()
    if replay:
        step = moons.replayed_sgd_step(model, X, y)
    else:
        optimizer = SGD(model.parameters(), lr=moons.learning_rate(0))

        def step(k, steps):
            return moons.sgd_step(model, X, y, Value, k, steps, sum_values=engine.sum,
                                  optimizer=optimizer)
    for k in ks:
        loss, accuracy = step(k, steps)
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4f}", accuracy=f"{accuracy:.0%}", refresh=False)
        elif k % 10 == 0 or k == steps - 1:
            print(f"step {k:3d}  loss {loss:.4f}  accuracy {accuracy:.0%}")
    return loss, accuracy, (time.perf_counter() - start) / steps


def speedups(name, baselines, rounds=3):
    """How many times faster bench engine `name` does the demo step than each of `baselines`,
    timed side by side in alternated rounds (see micrograd_c.bench)."""
    from micrograd_c import bench

    records, _ = bench.side_by_side(bench.Task("train_step", bench.train_step, rounds),
                                    [name, *baselines])
    return [bench.ratio(records[baseline], records[name]) for baseline in baselines]


def plot_decision_boundary(model, X, y, path):
    """Saves the classifier's decision regions and the points to `path`; needs matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X, y = np.asarray(X), np.asarray(y)
    h = 0.02
    x_min, x_max = X[:, 0].min() - 1, X[:, 0].max() + 1
    y_min, y_max = X[:, 1].min() - 1, X[:, 1].max() + 1
    xx, yy = np.meshgrid(np.arange(x_min, x_max, h), np.arange(y_min, y_max, h))
    grid = np.c_[xx.ravel(), yy.ravel()].tolist()
    Z = np.array([model(point).data > 0 for point in grid]).reshape(xx.shape)

    fig, ax = plt.subplots(figsize=(6, 5))
    ax.contourf(xx, yy, Z, cmap=plt.cm.Spectral, alpha=0.8)
    ax.scatter(X[:, 0], X[:, 1], c=y, s=40, cmap=plt.cm.Spectral, edgecolors="k")
    ax.set_xlim(xx.min(), xx.max())
    ax.set_ylim(yy.min(), yy.max())
    ax.set_title("micrograd_c: MLP(2, [16, 16, 1]) on two moons")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["digits"]:
        from micrograd_c import digits_demo
        return digits_demo.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m micrograd_c.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for the data and the weights (default 0)")
    parser.add_argument("--out", default="moons.png",
                        help="where to save the decision-boundary plot (default moons.png)")
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="skip the plot")
    parser.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True,
                        help="time upstream micrograd side by side when it is installed")
    parser.add_argument("--replay", action="store_true",
                        help="compile the graph once and replay it at every step, and time that "
                             "against rebuilding it")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.seed < 0:
        parser.error("--seed must be at least 0")     # numpy's generators take no other

    X, y = moons.demo_data(seed=args.seed)
    random.seed(args.seed)
    model = MLP(2, [16, 16, 1])
    print(f"{model}\nnumber of parameters: {len(model.parameters())}")

    loss, accuracy, seconds = train(model, X, y, args.steps, args.replay)
    print(f"final loss {loss:.4f}, training accuracy {accuracy:.0%}, "
          f"{seconds * 1e3:.2f} ms per step" + (" (graph compiled once, replayed)" * args.replay))

    why_not = upstream.missing()
    compare = args.compare and why_not is None
    if args.compare and why_not == upstream.NOT_INSTALLED:
        print(f"upstream micrograd is not installed: {EXTRA_HINT} to compare speed")
    elif args.compare and why_not:
        print(f"no speed comparison: {why_not}")
    if args.replay:
        rounds = 5
        print("timing the replayed step against rebuilding the graph, side by side"
              + (" and against upstream micrograd (a few seconds)" * compare) + "...")
        faster = speedups("micrograd_c-replay", ["micrograd_c"] + ["micrograd"] * compare, rounds)
        print(f"replaying is {faster[0]:.1f}x faster here than rebuilding the graph every step"
              + (f", and {faster[-1]:,.0f}x faster than upstream micrograd" if compare else "")
              + f" (median of {rounds} alternated rounds; "
              "full comparison: python -m micrograd_c.bench)")
    elif compare:
        print("timing upstream micrograd on the same step, side by side (a few seconds)...")
        rounds = 3
        faster, = speedups("micrograd_c", ["micrograd"], rounds)
        print(f"micrograd_c is {faster:.0f}x faster than upstream micrograd here "
              f"(median of {rounds} alternated rounds; "
              "full comparison: python -m micrograd_c.bench)")

    if args.plot:
        try:
            plot_decision_boundary(model, X, y, args.out)
        except ImportError:
            print(f"matplotlib is not installed: {EXTRA_HINT} for the decision-boundary plot")
        else:
            print(f"decision boundary saved to {os.path.abspath(args.out)}")
    if not args.replay:
        print("to replay one compiled graph instead of rebuilding it every step: "
              "python -m micrograd_c.demo --replay")
    return 0


if __name__ == "__main__":
    sys.exit(main())

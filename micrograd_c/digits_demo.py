"""The digits demo: python -m micrograd_c.demo digits

Classifies scikit-learn's bundled handwritten digits (1,797 8x8 images, no download) with an
MLP(64, [32, 10]) trained by softmax cross-entropy and Adam on batches of 32 (micrograd_c.digits).
One batch's graph is built once and replayed for every batch: its inputs and one-hot labels are
leaves, set in place before each forward(). Prints the test accuracy and the time per epoch,
times a training step side by side against rebuilding the graph every batch and against the same
MLP written as matrix products in numpy and PyTorch (the benchmark's method), and saves the
confusion matrix and test digits with their predicted labels as a PNG.
"""
import argparse
import functools
import os
import time

import numpy as np

from micrograd_c import digits
from micrograd_c.optim import Adam

# What a training step is timed on (bench engines): replaying the graph, rebuilding it, and what
# one would write instead of a scalar engine, with how the last ones are named in the output.
REPLAYED, REBUILT = "micrograd_c-replay", "micrograd_c"
INSTEAD = {"numpy": "numpy by hand", "torch-tensors": "PyTorch tensors"}
ROUNDS = 5


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m micrograd_c.demo digits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=digits.EPOCHS,
                        help=f"passes over the training set (default {digits.EPOCHS})")
    parser.add_argument("--batch-size", type=int, default=digits.BATCH_SIZE,
                        help=f"examples per step (default {digits.BATCH_SIZE})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for the split, the weights and the shuffles (default 0)")
    parser.add_argument("--out", default="digits.png",
                        help="where to save the confusion matrix and test digits (default "
                        "digits.png)")
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="skip the plot")
    parser.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True,
                        help="time a step side by side with rebuilding the graph every batch, "
                             "and with numpy and PyTorch")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be at least 1")
    if args.seed < 0:
        parser.error("--seed must be at least 0")     # numpy's generators take no other
    return parser, args


def train(model, X, y, epochs, batch_size, seed):
    """digits.train's loop with a progress bar per epoch (tqdm when installed, else a line every
    5 epochs); returns the seconds per epoch."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    optimizer = Adam(model.parameters(), lr=digits.learning_rate(0, epochs))
    batch = digits.Batch(model, batch_size)
    print(f"one batch's graph: {len(batch.step):,} nodes, compiled once and replayed per batch")
    rng = np.random.default_rng(seed)
    seconds = 0.0
    for epoch in range(epochs):
        optimizer.lr = digits.learning_rate(epoch, epochs)
        rows = digits.batches(len(X), batch_size, rng)
        bar = None if tqdm is None else tqdm(rows, desc=f"epoch {epoch + 1:2d}", unit="batch",
                                             leave=epoch == epochs - 1)
        show = None if bar is None else (lambda loss, accuracy: bar.set_postfix(
            loss=f"{loss:.3f}", accuracy=f"{accuracy:.1%}", refresh=False))
        start = time.perf_counter()
        loss, accuracy = digits.train_epoch(batch, optimizer, X, y, rows if bar is None else bar,
                                            show)
        seconds += time.perf_counter() - start
        if bar is not None:
            bar.close()
        elif epoch % 5 == 4 or epoch == epochs - 1:
            print(f"epoch {epoch + 1:3d}  loss {loss:.4f}  training accuracy {accuracy:.1%}")
    return seconds / epochs


def time_a_step(batch_size=digits.BATCH_SIZE, rounds=ROUNDS):
    """The benchmark's digits_epoch (the same batches of batch_size, softmax cross-entropy, plain
    SGD) on each engine compared, side by side in alternated rounds: ({name: record}, {name: why
    not})."""
    from micrograd_c import bench

    task = bench.Task("digits_epoch", functools.partial(bench.digits_epoch, batch_size=batch_size),
                      rounds, variant="cross_entropy")
    return bench.side_by_side(task, [REPLAYED, REBUILT, *INSTEAD])


def comparison(records, skipped, rounds=ROUNDS, batch_size=digits.BATCH_SIZE):
    """The lines that say what time_a_step() measured."""
    from micrograd_c.bench import ratio

    replayed, rebuilt = records[REPLAYED], records[REBUILT]
    instead = []
    for name, label in INSTEAD.items():
        if name in skipped:
            instead.append(f"{label}: {skipped[name]}")
        elif records[name]["status"] != "ok":
            instead.append(f"{label}: {records[name]['status']}")
        else:
            instead.append(f"{label} {records[name]['median_s'] * 1e3:.2f} ms")
    return [f"replaying the compiled graph is {ratio(rebuilt, replayed):.0f}x faster than "
            f"rebuilding it every batch here ({replayed['median_s'] * 1e3:.2f} vs "
            f"{rebuilt['median_s'] * 1e3:.1f} ms per training step on a batch of {batch_size}, "
            f"median of {rounds} alternated rounds)",
            "the same step as matrix products over the batch, timed in the same rounds: "
            + ", ".join(instead) + " (full comparison: python -m micrograd_c.bench --workloads "
            "digits_epoch)"]


def plot(model, X_test, y_test, path, predictions=None):
    """Saves the confusion matrix and a grid of test digits with their predicted labels
    (mistakes in red) to `path`; needs matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = digits.CLASSES
    predicted = np.array(digits.predict(model, X_test) if predictions is None else predictions)
    confusion = np.zeros((classes, classes), dtype=int)
    for true, guess in zip(y_test, predicted):
        confusion[true, guess] += 1
    accuracy = np.mean(predicted == y_test)

    fig = plt.figure(figsize=(13, 6))
    ax = fig.add_axes([0.04, 0.1, 0.36, 0.8])
    ax.imshow(confusion, cmap="Blues")
    for i in range(classes):
        for j in range(classes):
            if confusion[i, j]:
                ax.text(j, i, confusion[i, j], ha="center", va="center", fontsize=9,
                        color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    ax.set(xticks=range(classes), yticks=range(classes), xlabel="predicted", ylabel="true",
           title=f"confusion matrix, {len(y_test)} test digits: {accuracy:.1%} right")
    # the grid: every mistake first, then correct ones, 60 in all
    wrong = np.flatnonzero(predicted != y_test)
    right = np.flatnonzero(predicted == y_test)
    shown = np.concatenate([wrong, right])[:60]
    for k, i in enumerate(shown):
        cell = fig.add_axes([0.44 + (k % 10) * 0.055, 0.78 - (k // 10) * 0.14, 0.05, 0.1])
        cell.imshow(X_test[i].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        mistake = predicted[i] != y_test[i]
        cell.set_title(f"{predicted[i]} (not {y_test[i]})" if mistake else f"{predicted[i]}",
                       fontsize=8, color="red" if mistake else "black")
        cell.set_xticks([])
        cell.set_yticks([])
        if mistake:
            for side in cell.spines.values():
                side.set(color="red", linewidth=2)
    fig.text(0.44, 0.92, "test digits and what the model says (mistakes in red, first)",
             fontsize=11)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    """python -m micrograd_c.demo digits [--epochs N] [--batch-size B] [--seed S] ..."""
    parser, args = parse(argv)
    try:
        X, y, X_test, y_test = digits.load(args.seed)
    except ImportError as error:
        print(error)
        return 1
    if args.batch_size > len(X):
        parser.error(f"--batch-size can be at most {len(X)}, the training set")

    model = digits.make_model(args.seed)
    print(f"{len(X):,} training and {len(X_test):,} test digits; MLP(64, [32, 10]), "
          f"{len(model.parameters()):,} parameters, Adam, batches of {args.batch_size}")
    per_epoch = train(model, X, y, args.epochs, args.batch_size, args.seed)
    predictions = digits.predict(model, X_test)
    test_accuracy = np.mean(np.array(predictions) == y_test)
    print(f"test accuracy {test_accuracy:.1%} ({len(X_test)} digits), "
          f"{per_epoch * 1e3:.0f} ms per epoch")
    if args.compare:
        print("timing a training step side by side (a few seconds)...")
        records, skipped = time_a_step(args.batch_size)
        print("\n".join(comparison(records, skipped, batch_size=args.batch_size)))
    if args.plot:
        try:
            plot(model, X_test, y_test, args.out, predictions)
        except ImportError:
            print(f"matplotlib is not installed: {digits.EXTRA_HINT} for the picture")
        else:
            print(f"confusion matrix and test digits saved to {os.path.abspath(args.out)}")
    return 0

"""Handwritten digits: a 10-class classifier trained in mini-batches, with softmax cross-entropy.

scikit-learn's bundled digits (1,797 8x8 images, shipped inside the package: no download),
scaled to [0, 1] and split into train and test with a fixed seed; an MLP(64, [32, 10]) trained
with Adam on batches of 32. One batch's graph is built once and replayed for every batch: its
inputs and one-hot labels are leaves, set in place (engine.copy_from_array) before each
forward(). Used by the demo (python -m micrograd_c.demo digits), the benchmark and the tests.
"""
import math
import random

from micrograd_c import engine
from micrograd_c.engine import Value
from micrograd_c.nn import MLP, cross_entropy
from micrograd_c.optim import Adam

CLASSES = 10
EXTRA_HINT = "pip install 'micrograd_c[demo]'"     # as the moons demo says it


def load(seed=0, test_size=360):
    """(X_train, y_train, X_test, y_test): pixels scaled to [0, 1] (float64 arrays of 64) and
    labels 0-9, split with a fixed seed. Needs scikit-learn."""
    import numpy as np
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(f"the digits come with scikit-learn: {EXTRA_HINT}") from None
    digits = load_digits()
    X, y = digits.data / 16.0, digits.target
    order = np.random.default_rng(seed).permutation(len(X))
    test, train = order[:test_size], order[test_size:]
    return X[train], y[train], X[test], y[test]


def make_model(seed=0, sizes=(64, 32, 10)):
    """MLP(64, [32, 10]): upstream's init, uniform(-1, 1), scaled by 1/sqrt(fan-in) so that 64
    inputs don't saturate the first layer."""
    random.seed(seed)
    model = MLP(sizes[0], list(sizes[1:]))
    for layer in model.layers:
        for neuron in layer.neurons:
            for w in neuron.w:
                w.data /= math.sqrt(len(neuron.w))
    return model


class Batch:
    """One mini-batch's graph, built once: inputs and one-hot labels are leaf Values, set in
    place for each batch; `step` replays it (engine.compile). `loss(logits, labels)` is the
    batch's loss, softmax cross-entropy by default."""

    def __init__(self, model, size, loss=cross_entropy):
        self.size = size
        pixels = len(model.layers[0].neurons[0].w)
        self.inputs = [[Value(0.0) for _ in range(pixels)] for _ in range(size)]
        self.labels = [[Value(0.0) for _ in range(CLASSES)] for _ in range(size)]
        self.logits = [model(x) for x in self.inputs]
        self.loss = loss(self.logits, self.labels)
        self.step = engine.compile(self.loss)
        self._inputs = [v for row in self.inputs for v in row]
        self._labels = [v for row in self.labels for v in row]

    def set(self, X, y):
        """Put a batch of images X (size x 64 floats) and labels y into the graph's leaves."""
        import numpy as np
        engine.copy_from_array(self._inputs, np.ascontiguousarray(X, dtype=np.float64).ravel())
        engine.copy_from_array(self._labels, np.eye(CLASSES)[y].ravel())

    def correct(self, y):
        """How many of the batch's logits (after forward) pick the right class."""
        import numpy as np
        scores = np.empty(self.size * CLASSES)
        engine.copy_to_array([z for row in self.logits for z in row], scores)
        return int(np.sum(scores.reshape(self.size, CLASSES).argmax(axis=1) == y))


def argmax(logits):
    values = [z.data for z in logits]
    return values.index(max(values))


def learning_rate(epoch, epochs, start=1e-2, end=1e-3):
    """Adam's learning rate: from start down to end, linearly over the epochs."""
    return start + (end - start) * epoch / max(1, epochs)


def batches(n, size, rng):
    """Index arrays of shuffled full batches (the last, partial one is left out: the graph has
    a fixed size; the next epoch's shuffle uses those examples)."""
    order = rng.permutation(n)
    return [order[k:k + size] for k in range(0, n - size + 1, size)]


def replayed_step(batch, optimizer, X, y):
    """One training step on the replayed graph; returns (loss, correct)."""
    batch.set(X, y)
    loss = batch.step.forward()
    optimizer.zero_grad()
    batch.step.backward()
    optimizer.step()
    return loss, batch.correct(y)


def rebuilt_step(model, optimizer, X, y):
    """The same step with the graph built anew from floats, as micrograd code does."""
    logits = [model(list(map(float, row))) for row in X]
    targets = [[1.0 if k == label else 0.0 for k in range(CLASSES)] for label in y]
    loss = cross_entropy(logits, targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.data, sum(argmax(z) == label for z, label in zip(logits, y))


def predict(model, X):
    """The predicted class of each image."""
    return [argmax(model(list(map(float, row)))) for row in X]


def train_epoch(batch, optimizer, X, y, rows, on_batch=None):
    """One epoch of replayed steps over the batches `rows`; returns (last loss, accuracy).
    on_batch(loss, accuracy so far) is called after each step (for a progress bar)."""
    seen = correct = 0
    loss = math.nan
    for indices in rows:
        loss, right = replayed_step(batch, optimizer, X[indices], y[indices])
        seen += len(indices)
        correct += right
        if on_batch is not None:
            on_batch(loss, correct / seen)
    return loss, correct / max(1, seen)


def train(epochs=20, batch_size=32, seed=0):
    """Trains the classifier; returns (model, (X_train, y_train, X_test, y_test), history of
    (loss, training accuracy) per epoch)."""
    import numpy as np
    data = load(seed)
    X, y = data[0], data[1]
    model = make_model(seed)
    optimizer = Adam(model.parameters(), lr=learning_rate(0, epochs))
    batch = Batch(model, batch_size)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        optimizer.lr = learning_rate(epoch, epochs)
        history.append(train_epoch(batch, optimizer, X, y, batches(len(X), batch_size, rng)))
    return model, data, history


def plot(model, X_test, y_test, path, predictions=None):
    """Saves the confusion matrix and a grid of test digits with their predicted labels
    (mistakes in red) to `path`; needs matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    predicted = np.array(predict(model, X_test) if predictions is None else predictions)
    confusion = np.zeros((CLASSES, CLASSES), dtype=int)
    for true, guess in zip(y_test, predicted):
        confusion[true, guess] += 1
    accuracy = np.mean(predicted == y_test)

    fig = plt.figure(figsize=(13, 6))
    ax = fig.add_axes([0.04, 0.1, 0.36, 0.8])
    ax.imshow(confusion, cmap="Blues")
    for i in range(CLASSES):
        for j in range(CLASSES):
            if confusion[i, j]:
                ax.text(j, i, confusion[i, j], ha="center", va="center", fontsize=9,
                        color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    ax.set(xticks=range(CLASSES), yticks=range(CLASSES), xlabel="predicted", ylabel="true",
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


def speedup_over_rebuilding(rounds=5):
    """(seconds per replayed step, per rebuilt step, how many times faster replaying is): the
    benchmark's digits_epoch (the same batches, plain SGD), micrograd_c rebuilding each batch's
    graph and micrograd_c replaying one, timed side by side in alternated rounds."""
    from micrograd_c import bench

    records, _ = bench.side_by_side(bench.Task("digits_epoch", bench.digits_epoch, rounds),
                                    ["micrograd_c", "micrograd_c-replay"])
    rebuilt, replayed = records["micrograd_c"], records["micrograd_c-replay"]
    return replayed["median_s"], rebuilt["median_s"], bench.ratio(rebuilt, replayed)


def main(argv=None):
    """python -m micrograd_c.demo digits [--epochs N] [--batch-size B] [--seed S] ..."""
    import argparse
    import os
    import time

    import numpy as np
    parser = argparse.ArgumentParser(prog="python -m micrograd_c.demo digits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="passes over the training set "
                        "(default 20)")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for the split, the weights and the shuffles (default 0)")
    parser.add_argument("--out", default="digits.png",
                        help="where to save the confusion matrix and test digits (default "
                        "digits.png)")
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="skip the plot")
    parser.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True,
                        help="time rebuilding the graph every batch, side by side")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be at least 1")
    try:
        data = load(args.seed)
    except ImportError as error:
        print(error)
        return 1
    X, y, X_test, y_test = data
    if args.batch_size > len(X):
        parser.error(f"--batch-size can be at most {len(X)}, the training set")
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None

    model = make_model(args.seed)
    print(f"{len(X):,} training and {len(X_test):,} test digits; MLP(64, [32, 10]), "
          f"{len(model.parameters()):,} parameters, Adam, batches of {args.batch_size}")
    optimizer = Adam(model.parameters(), lr=learning_rate(0, args.epochs))
    batch = Batch(model, args.batch_size)
    print(f"one batch's graph: {len(batch.step):,} nodes, compiled once and replayed per batch")
    rng = np.random.default_rng(args.seed)
    seconds = 0.0
    for epoch in range(args.epochs):
        optimizer.lr = learning_rate(epoch, args.epochs)
        rows = batches(len(X), args.batch_size, rng)
        bar = None if tqdm is None else tqdm(rows, desc=f"epoch {epoch + 1:2d}", unit="batch",
                                             leave=epoch == args.epochs - 1)
        show = None if bar is None else (lambda loss, accuracy: bar.set_postfix(
            loss=f"{loss:.3f}", accuracy=f"{accuracy:.1%}", refresh=False))
        start = time.perf_counter()
        loss, accuracy = train_epoch(batch, optimizer, X, y, rows if bar is None else bar, show)
        seconds += time.perf_counter() - start
        if bar is not None:
            bar.close()
        elif epoch % 5 == 4 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1:3d}  loss {loss:.4f}  training accuracy {accuracy:.1%}")
    predictions = predict(model, X_test)
    test_accuracy = np.mean(np.array(predictions) == y_test)
    per_epoch = seconds / args.epochs
    print(f"test accuracy {test_accuracy:.1%} ({len(X_test)} digits), "
          f"{per_epoch * 1e3:.0f} ms per epoch")
    if args.compare:
        replayed, rebuilt, ratio = speedup_over_rebuilding()
        print(f"replaying the compiled graph is {ratio:.0f}x faster than rebuilding it every "
              f"batch here ({replayed * 1e3:.2f} vs {rebuilt * 1e3:.1f} ms per training step, "
              "median of 5 alternated rounds; full comparison: python -m micrograd_c.bench "
              "--workloads digits_epoch)")
    if args.plot:
        try:
            plot(model, X_test, y_test, args.out, predictions)
        except ImportError:
            print(f"matplotlib is not installed: {EXTRA_HINT} for the picture")
        else:
            print(f"confusion matrix and test digits saved to {os.path.abspath(args.out)}")
    return 0

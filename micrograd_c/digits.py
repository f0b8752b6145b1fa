"""Handwritten digits: a 10-class classifier trained in mini-batches, with softmax cross-entropy.

scikit-learn's bundled digits (1,797 8x8 images, shipped inside the package: no download),
scaled to [0, 1] and split into train and test with a fixed seed; an MLP(64, [32, 10]) trained
with Adam on batches of 32. One batch's graph is built once and replayed for every batch: its
inputs and one-hot labels are leaves, set in place (engine.copy_from_array) before each
forward(). A library, as moons.py is: the digits demo (micrograd_c.digits_demo, run as
python -m micrograd_c.demo digits), the benchmark and the tests use it.
"""
import math
import random

from micrograd_c import engine
from micrograd_c.engine import Value
from micrograd_c.nn import MLP, cross_entropy
from micrograd_c.optim import Adam

CLASSES = 10
BATCH_SIZE = 32                 # the demo's defaults, which the benchmark times too
EPOCHS = 20
EXTRA_HINT = "pip install 'micrograd_c[demo]'"     # what both demos say an optional part needs


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
    place for each batch; `step` replays it (engine.compile), setting the grads of the model's
    parameters only (the inputs' and labels' are not computed). `loss(logits, labels)` is the
    batch's loss, softmax cross-entropy by default."""

    def __init__(self, model, size, loss=cross_entropy):
        self.size = size
        pixels = len(model.layers[0].neurons[0].w)
        self.inputs = [[Value(0.0) for _ in range(pixels)] for _ in range(size)]
        self.labels = [[Value(0.0) for _ in range(CLASSES)] for _ in range(size)]
        self.logits = [model(x) for x in self.inputs]
        self.loss = loss(self.logits, self.labels)
        self.step = engine.compile(self.loss, inputs=model.parameters())
        self._inputs = [v for row in self.inputs for v in row]
        self._labels = [v for row in self.labels for v in row]
        import numpy as np
        self._one_hot = np.eye(CLASSES)     # row k: label k's one-hot vector

    def set(self, X, y):
        """Put a batch of images X (size x 64 floats) and labels y into the graph's leaves."""
        import numpy as np
        engine.copy_from_array(self._inputs, np.ascontiguousarray(X, dtype=np.float64).ravel())
        # take(): the rows picked without fancy indexing's general machinery (0.3 against
        # 1.1 us for a batch of 32, a thirtieth of a replayed step)
        engine.copy_from_array(self._labels, self._one_hot.take(y, axis=0).ravel())

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
    """Adam's learning rate in epoch `epoch` (0 to epochs - 1): start, then linearly down
    toward end, which epoch `epochs` would reach."""
    return start + (end - start) * epoch / max(1, epochs)


def batches(n, size, rng):
    """Index arrays of shuffled full batches (the last, partial one is left out: the graph has
    a fixed size; the next epoch's shuffle uses those examples)."""
    if not 1 <= size <= n:                  # else no batch at all: nothing would train
        raise ValueError(f"a batch of {size} from {n} examples")
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


def train(epochs=EPOCHS, batch_size=BATCH_SIZE, seed=0):
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

"""The two-moons problem of micrograd's demo notebook: the data, the loss and one SGD step,
rebuilt at every step (sgd_step) or, on micrograd_c, compiled once and replayed.

Written once and used by the demo, the benchmark and the tests, for any engine with micrograd's
API (pass its Value class), so that every engine runs exactly the same computation.
"""
import numpy as np

from micrograd_c import engine


def make_moons(n_samples=100, noise=0.1, seed=0):
    """Two interleaving half circles, as sklearn.datasets.make_moons (without sklearn).

    Returns X, a (n_samples, 2) float array, and y, an int array of 0s and 1s, shuffled.
    """
    n_outer = n_samples // 2
    n_inner = n_samples - n_outer
    outer = np.linspace(0, np.pi, n_outer)
    inner = np.linspace(0, np.pi, n_inner)
    X = np.concatenate([
        np.stack([np.cos(outer), np.sin(outer)], axis=1),
        np.stack([1 - np.cos(inner), 1 - np.sin(inner) - 0.5], axis=1),
    ])
    y = np.concatenate([np.zeros(n_outer, dtype=int), np.ones(n_inner, dtype=int)])
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_samples)
    X = X[order] + rng.normal(scale=noise, size=X.shape)
    return X, y[order]


def demo_data(n_samples=100, noise=0.1, seed=0):
    """The demo's inputs as Python floats and labels as -1/+1 ints, ready for any engine."""
    X, y = make_moons(n_samples, noise, seed)
    return X.tolist(), (y * 2 - 1).tolist()


def loss(model, X, y, Value, sum_values=sum, l2_by_neuron=False, relu=None):
    """micrograd demo's loss: SVM max-margin loss plus 1e-4 L2; returns (loss, accuracy)."""
    total_loss, scores = loss_and_scores(model, X, y, Value, sum_values, l2_by_neuron, relu)
    return total_loss, accuracy(scores, y)


def loss_and_scores(model, X, y, Value, sum_values=sum, l2_by_neuron=False, relu=None):
    """The loss of loss(), and the model's score node for each point (a replayed graph updates
    their data: accuracy() of them is the accuracy of the replayed step).

    `sum_values` sums a list of Values: the builtin, as upstream, or an engine's fused sum.
    `l2_by_neuron` sums the L2 term neuron by neuron: the same value, but a shallow graph. Summed
    flat, a big model's L2 term is a chain deeper than upstream's recursive backward() allows.
    `relu(v)` is v.relu() unless given (plain floats have none: max(0.0, v)).
    """
    inputs = [list(map(Value, xrow)) for xrow in X]
    scores = list(map(model, inputs))
    if relu is None:
        losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
    else:
        losses = [relu(1 + -yi * scorei) for yi, scorei in zip(y, scores)]
    data_loss = sum_values(losses) * (1.0 / len(losses))
    alpha = 1e-4
    if l2_by_neuron:
        squares = [sum_values([p * p for p in neuron.parameters()])
                   for layer in model.layers for neuron in layer.neurons]
    else:
        squares = [p * p for p in model.parameters()]
    reg_loss = alpha * sum_values(squares)
    total_loss = data_loss + reg_loss
    return total_loss, scores


def accuracy(scores, y):
    """The fraction of points whose score has the sign of their label."""
    correct = [(yi > 0) == (scorei.data > 0) for yi, scorei in zip(y, scores)]
    return sum(correct) / len(correct)


def learning_rate(k, steps=100):
    """The demo's learning rate at step k (counting from 0): from 1.0 down to 0.1."""
    return 1.0 - 0.9 * k / steps


def sgd_update(parameters, k, steps=100):
    """The demo's SGD update at step k (counting from 0), with its decaying learning rate."""
    lr = learning_rate(k, steps)
    for p in parameters:
        p.data -= lr * p.grad


def optimizer_update(optimizer, k, steps=100):
    """sgd_update, by a micrograd_c.optim.SGD optimizer over the parameters."""
    optimizer.lr = learning_rate(k, steps)
    optimizer.step()


def sgd_step(model, X, y, Value, k, steps=100, sum_values=sum, l2_by_neuron=False,
             optimizer=None):
    """One step of the demo's training loop (k counts from 0); returns (loss, accuracy).

    The update is sgd_update's, or, given an `optimizer` over model.parameters()
    (micrograd_c.optim.SGD), that optimizer's at the step's learning rate: the same numbers, in
    bulk (on the demo's model, the loop and zero_grad() were 7% of a fused step)."""
    total_loss, scores = loss_and_scores(model, X, y, Value, sum_values, l2_by_neuron)
    if optimizer is None:
        model.zero_grad()
        total_loss.backward()
        sgd_update(model.parameters(), k, steps)
    else:
        optimizer.zero_grad()
        total_loss.backward()
        optimizer_update(optimizer, k, steps)
    return total_loss.data, accuracy(scores, y)


def replayed_sgd_step(model, X, y, l2_by_neuron=False):
    """sgd_step for a micrograd_c model, with the graph built once and replayed at every step.

    Returns step(k, steps=100) -> (loss, accuracy), the same numbers as sgd_step's, bit for bit.
    Every step uses every point, so the graph's structure never changes: engine.compile records
    it once, and each step recomputes it from the parameters' current data, and the grads of
    the parameters alone (compile's inputs: not those of the points' constants). The update is
    micrograd_c.optim.SGD's, as a user of replay would write it (sgd_update's numbers, in bulk),
    and so is the accuracy: accuracy()'s count, on the scores' data copied out in bulk
    (engine.copy_to_array; the loop over 100 Values took an eighth of a replayed step).
    """
    from micrograd_c.optim import SGD
    total_loss, scores = loss_and_scores(model, X, y, engine.Value, engine.sum, l2_by_neuron)
    parameters = model.parameters()
    replay = engine.compile(total_loss, inputs=parameters)
    optimizer = SGD(parameters, lr=learning_rate(0))
    positive = np.array(y) > 0
    data = np.empty(len(scores))

    def step(k, steps=100):
        loss = replay.forward()
        optimizer.zero_grad()
        replay.backward()
        optimizer_update(optimizer, k, steps)
        engine.copy_to_array(scores, data)
        return loss, np.count_nonzero((data > 0) == positive) / len(scores)

    return step

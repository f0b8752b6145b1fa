"""The digits classifier: it reaches 95% on held-out digits and its replayed steps are the rebuilt
steps' numbers. The oracles: the test labels, rebuilding the graph every batch, and a softmax
cross-entropy computed by hand."""
import math

import numpy as np
import pytest

from micrograd_c import digits, engine
from micrograd_c.optim import Adam

pytest.importorskip("sklearn", reason="the digits come with scikit-learn (in the test extra)")


def test_training_reaches_95_percent_on_the_test_digits():
    model, (X, y, X_test, y_test), history = digits.train(epochs=20)
    assert (len(X), len(X_test)) == (1437, 360)
    accuracy = np.mean(np.array(digits.predict(model, X_test)) == y_test)
    assert accuracy >= 0.95, accuracy
    assert history[-1][1] > history[0][1]               # training accuracy went up


def test_replayed_steps_equal_rebuilt_steps():
    X, y, _, _ = digits.load()
    replayed, rebuilt = digits.make_model(1), digits.make_model(1)
    replay_optimizer = Adam(replayed.parameters(), lr=1e-2)
    rebuild_optimizer = Adam(rebuilt.parameters(), lr=1e-2)
    batch = digits.Batch(replayed, 16)
    rows = digits.batches(len(X), 16, np.random.default_rng(1))[:6]
    for indices in rows:
        loss, right = digits.replayed_step(batch, replay_optimizer, X[indices], y[indices])
        expected, expected_right = digits.rebuilt_step(rebuilt, rebuild_optimizer, X[indices],
                                                       y[indices])
        assert loss == expected and right == expected_right
        assert [p.data for p in replayed.parameters()] == [p.data for p in rebuilt.parameters()]


def test_the_batch_loss_is_softmax_cross_entropy():
    X, y, _, _ = digits.load()
    model = digits.make_model(2)
    batch = digits.Batch(model, 4)
    batch.set(X[:4], y[:4])
    loss = batch.step.forward()
    by_hand = []
    for row, label in zip(X[:4], y[:4]):
        z = [v.data for v in model(list(row))]
        top = max(z)
        by_hand.append(top + math.log(sum(math.exp(v - top) for v in z)) - z[label])
    assert loss == pytest.approx(sum(by_hand) / 4, rel=1e-13)
    assert engine.cross_entropy([0.0, 0.0], 1).data == pytest.approx(math.log(2))
    assert batch.correct(y[:4]) == sum(
        int(np.argmax([v.data for v in model(list(row))]) == label) for row, label in
        zip(X[:4], y[:4]))


def test_a_batch_the_data_cant_fill_is_refused():
    # no full batch: an epoch trained nothing, and train() returned the initial weights
    rng = np.random.default_rng(0)
    assert [len(b) for b in digits.batches(10, 4, rng)] == [4, 4]
    for size in (11, 0):
        with pytest.raises(ValueError, match="a batch of"):
            digits.batches(10, size, rng)

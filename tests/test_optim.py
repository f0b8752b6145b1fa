"""micrograd_c.optim against hand-computed steps, and against torch.optim where torch is installed."""
import importlib.util
import math

import pytest

from micrograd_c.engine import Value
from micrograd_c.optim import SGD, Adam

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch is not installed")

START = [0.5, -1.2, 2.0, 0.3, -0.7]


def loss_of(p):
    # the same function for Values and torch tensors: smooth, coupled, not quadratic
    return (p[0] * p[1]).tanh() + (p[2] - 1) ** 2 + 0.1 * p[3] ** 4 + (p[4] * 0.5).exp()


def run_ours(make, steps):
    params = [Value(x) for x in START]
    opt = make(params)
    for _ in range(steps):
        opt.zero_grad()
        loss_of(params).backward()
        opt.step()
    return [p.data for p in params]


# -- hand-computed steps: L = sum(p_i^2), so grad = 2p ----------------------------------------

def quadratic_steps(opt, params, steps):
    for _ in range(steps):
        opt.zero_grad()
        sum(p * p for p in params).backward()
        opt.step()


def test_sgd_steps_by_hand():
    p = [Value(1.0), Value(-2.0)]
    quadratic_steps(SGD(p, lr=0.1, weight_decay=0.5), p, 1)
    assert [v.data for v in p] == [1.0 - 0.1 * (2.0 + 0.5), -2.0 - 0.1 * (-4.0 - 1.0)]

    p = [Value(1.0)]
    quadratic_steps(SGD(p, lr=0.1, momentum=0.9), p, 2)
    v1 = 2.0
    p1 = 1.0 - 0.1 * v1
    v2 = 0.9 * v1 + 2 * p1
    assert p[0].data == pytest.approx(p1 - 0.1 * v2, rel=1e-15)


def test_adam_steps_by_hand():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p = [Value(3.0)]
    quadratic_steps(Adam(p, lr=lr), p, 1)
    assert p[0].data == pytest.approx(3.0 - lr * 6.0 / (6.0 + eps), rel=1e-15)

    p = [Value(3.0)]
    quadratic_steps(Adam(p, lr=lr, weight_decay=0.1), p, 2)
    x1 = 3.0 * (1 - lr * 0.1) - lr * 6.0 / (6.0 + eps)
    g2 = 2 * x1
    m = (1 - b1) * 6.0 * b1 + (1 - b1) * g2
    v = (1 - b2) * 36.0 * b2 + (1 - b2) * g2 * g2
    m_hat, v_hat = m / (1 - b1 ** 2), v / (1 - b2 ** 2)
    x2 = x1 * (1 - lr * 0.1) - lr * m_hat / (math.sqrt(v_hat) + eps)
    assert p[0].data == pytest.approx(x2, rel=1e-13)


def test_zero_grad_and_learning_rate_changes():
    p = [Value(1.0)]
    opt = SGD(p, lr=1.0)
    (p[0] * 3).backward()
    opt.zero_grad()
    assert p[0].grad == 0
    opt.lr = 0.5
    (p[0] * 3).backward()
    opt.step()
    assert p[0].data == 1.0 - 0.5 * 3


@pytest.mark.parametrize("make", [
    lambda: SGD([1.0], lr=0.1),
    lambda: SGD([Value(1.0)], lr=-1),
    lambda: SGD([Value(1.0)], lr=float("nan")),
    lambda: SGD([Value(1.0)], lr=0.1, momentum=-0.5),
    lambda: Adam([Value(1.0)], betas=(1.0, 0.999)),
    lambda: Adam([Value(1.0)], eps=-1),
])
def test_bad_settings_raise(make):
    with pytest.raises((TypeError, ValueError)):
        make()



@pytest.mark.parametrize("make", [
    lambda p: SGD(p, lr=0.1), lambda p: SGD(p, lr=0.1, momentum=0.9),
    lambda p: SGD(p, lr=0.1, weight_decay=1e-9), lambda p: Adam(p)])
def test_a_value_listed_twice_is_refused(make):
    # in bulk it got one update with some settings and two with others; the message says
    # which items (tied weights: Layer.parameters() lists a shared Value once per use)
    w = Value(1.0)
    with pytest.raises(ValueError, match="parameter 2 is parameter 0 again"):
        make([w, Value(2.0), w])
    make([w, Value(2.0)])

# -- torch.optim on the same problem, 20 steps ---------------------------------------------------

def run_torch(make, steps):
    import torch
    params = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in START]
    opt = make(params)
    for _ in range(steps):
        opt.zero_grad()
        loss_of(params).backward()
        opt.step()
    return [p.item() for p in params]


@needs_torch
@pytest.mark.parametrize("ours, theirs", [
    (lambda p: SGD(p, lr=0.05), "SGD(p, lr=0.05)"),
    (lambda p: SGD(p, lr=0.05, momentum=0.9), "SGD(p, lr=0.05, momentum=0.9)"),
    (lambda p: SGD(p, lr=0.05, momentum=0.5, weight_decay=0.1),
     "SGD(p, lr=0.05, momentum=0.5, weight_decay=0.1)"),
    (lambda p: Adam(p, lr=0.05), "Adam(p, lr=0.05)"),
    (lambda p: Adam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-6),
     "Adam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-6)"),
    (lambda p: Adam(p, lr=0.05, weight_decay=0.1), "AdamW(p, lr=0.05, weight_decay=0.1)"),
])
def test_matches_torch_optim_over_20_steps(ours, theirs):
    import torch
    expected = run_torch(lambda p: eval("torch.optim." + theirs, {"torch": torch, "p": p}), 20)
    got = run_ours(ours, 20)
    assert got != START
    for a, b in zip(got, expected):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12)

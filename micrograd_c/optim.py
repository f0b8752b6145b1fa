"""Optimizers over lists of Values: SGD and Adam, with torch.optim's update rules.

    opt = Adam(model.parameters(), lr=1e-2)
    for step in range(100):
        loss = ...
        opt.zero_grad()
        loss.backward()
        opt.step()

Parameters and their state live in numpy arrays during step(); the engine copies data and
grads in and out in compiled code.
"""
import math

import numpy as np

from micrograd_c import engine
from micrograd_c.engine import Value


class Optimizer:
    """Holds the parameters; step() is the update, zero_grad() resets their grads."""

    def __init__(self, params, lr):
        self.params = list(params)
        first = {}
        for i, p in enumerate(self.params):
            if not isinstance(p, Value):
                raise TypeError(f"an optimizer takes Values, not '{type(p).__name__}'")
            # Updated in bulk, a Value listed twice would get one update with some settings and
            # two with others (torch.optim warns of duplicates, and means to refuse them).
            if first.setdefault(id(p), i) != i:
                raise ValueError(f"parameter {i} is parameter {first[id(p)]} again (tied "
                                 "weights?): list each Value once")
        if not lr >= 0:
            raise ValueError(f"invalid learning rate: {lr}")
        self.lr = lr

    def zero_grad(self):
        engine.zero_grads(self.params)

    def step(self):
        data = self._array()
        grad = self._array(grads=True)
        self._update(data, grad)
        engine.copy_from_array(self.params, data)

    def _array(self, grads=False):
        out = np.empty(len(self.params))
        engine.copy_to_array(self.params, out, grads)
        return out

    def _update(self, data, grad):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay (torch.optim.SGD)."""

    def step(self):
        if self.momentum or self.weight_decay:
            super().step()
        else:                       # p.data -= lr * p.grad, without arrays in between
            engine.descend(self.params, self.lr)

    def __init__(self, params, lr, momentum=0, weight_decay=0):
        super().__init__(params, lr)
        if not momentum >= 0 or not weight_decay >= 0:
            raise ValueError("momentum and weight_decay must be >= 0")
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.velocity = None

    def _update(self, data, grad):
        if self.weight_decay:
            grad = grad + self.weight_decay * data
        if self.momentum:
            if self.velocity is None:
                self.velocity = grad.copy()
            else:
                self.velocity = self.momentum * self.velocity + grad
            grad = self.velocity
        data -= self.lr * grad


class Adam(Optimizer):
    """Adam (torch.optim.Adam); weight_decay is decoupled, as in torch.optim.AdamW."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
        super().__init__(params, lr)
        beta1, beta2 = betas
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"invalid betas: {betas}")
        if not eps >= 0 or not weight_decay >= 0:
            raise ValueError("eps and weight_decay must be >= 0")
        self.betas = (beta1, beta2)
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0
        self.m = np.zeros(len(self.params))
        self.v = np.zeros(len(self.params))

    def _update(self, data, grad):
        beta1, beta2 = self.betas
        self.t += 1
        if self.weight_decay:
            data *= 1 - self.lr * self.weight_decay
        # The same operations in the same order as torch.optim.Adam, so the results round alike.
        self.m += (grad - self.m) * (1 - beta1)
        self.v = self.v * beta2 + (1 - beta2) * grad * grad
        bias_correction1 = 1 - beta1 ** self.t
        bias_correction2 = 1 - beta2 ** self.t
        step_size = self.lr / bias_correction1
        denom = np.sqrt(self.v) / math.sqrt(bias_correction2) + self.eps
        data += (-step_size * self.m) / denom

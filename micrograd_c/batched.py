"""The digits classifier as one would write it without a scalar engine: MLP(64, [32, 10]) as
matrix products over a whole batch, in numpy by hand (float64) and in PyTorch tensors (float64,
one thread). What a user would pick instead of micrograd_c, timed beside it by the benchmark
and the digits demo.

Both start from the weights of a micrograd_c model (digits.make_model) and take the same step:
the batch's loss, its gradient, then plain SGD (p -= lr * grad), with the loss either softmax
cross-entropy (the batch mean) or squared error against one-hot targets (the batch mean of
sum((z - t)**2)), as micrograd_c's graphs compute them.
"""
import numpy as np

from micrograd_c.nn import applied_activation

LOSSES = ("cross_entropy", "squared_error")


def layer_arrays(model):
    """[(W, b)] per layer of a micrograd_c MLP: W[j] holds neuron j's weights. Its neurons
    must be what these MLPs compute: relu, and linear in the last layer."""
    for k, layer in enumerate(model.layers):
        for n in layer.neurons:
            activation = applied_activation(n)
            if activation != ("linear" if layer is model.layers[-1] else "relu"):
                raise ValueError(f"layer {k} has a {activation} neuron: these MLPs have relu "
                                 "hidden layers and a linear last layer")
    return [(np.array([[w.data for w in n.w] for n in layer.neurons]),
             np.array([n.b.data for n in layer.neurons])) for layer in model.layers]


def check_loss(loss):
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")


class NumpyMLP:
    """A relu MLP with a linear last layer, forward and backward written by hand."""

    def __init__(self, model):
        self.layers = layer_arrays(model)

    def logits(self, X):
        h = X
        for k, (W, b) in enumerate(self.layers):
            h = h @ W.T + b
            if k < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    def step(self, X, onehot, lr, loss="cross_entropy"):
        """One SGD step on a batch (X: n x 64, onehot: n x 10); returns the batch's loss."""
        check_loss(loss)
        n = len(X)
        inputs, pre = [X], []
        h = X
        for k, (W, b) in enumerate(self.layers):
            z = h @ W.T + b
            pre.append(z)
            h = np.maximum(z, 0.0) if k < len(self.layers) - 1 else z
            inputs.append(h)
        z = h
        if loss == "cross_entropy":
            top = z.max(axis=1, keepdims=True)
            e = np.exp(z - top)
            total = e.sum(axis=1, keepdims=True)
            value = float(np.mean(np.log(total) + top - (z * onehot).sum(axis=1, keepdims=True)))
            dz = (e / total - onehot) / n
        else:
            d = z - onehot
            value = float((d * d).sum() / n)
            dz = 2.0 * d / n
        for k in range(len(self.layers) - 1, -1, -1):
            W, b = self.layers[k]
            dW, db = dz.T @ inputs[k], dz.sum(axis=0)
            if k > 0:
                dz = (dz @ W) * (pre[k - 1] > 0)          # relu's derivative, as (out > 0)
            W -= lr * dW
            b -= lr * db
        return value


class TorchMLP:
    """The same MLP as torch.nn.Linear layers, float64, one thread, torch.optim.SGD."""

    def __init__(self, model):
        import torch
        torch.set_num_threads(1)
        self.torch = torch
        layers = []
        for W, b in layer_arrays(model):
            linear = torch.nn.Linear(W.shape[1], W.shape[0], dtype=torch.float64)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W))
                linear.bias.copy_(torch.from_numpy(b))
            layers += [linear, torch.nn.ReLU()]
        self.net = torch.nn.Sequential(*layers[:-1])
        self.optimizer = None

    def logits(self, X):
        with self.torch.no_grad():
            return self.net(self.torch.from_numpy(np.ascontiguousarray(X))).numpy()

    def step(self, X, onehot, lr, loss="cross_entropy"):
        check_loss(loss)
        torch = self.torch
        if self.optimizer is None or self.optimizer.param_groups[0]["lr"] != lr:
            self.optimizer = torch.optim.SGD(self.net.parameters(), lr=lr)
        z = self.net(torch.from_numpy(np.ascontiguousarray(X)))
        t = torch.from_numpy(onehot)
        if loss == "cross_entropy":
            value = torch.nn.functional.cross_entropy(z, t)
        else:
            value = ((z - t) ** 2).sum() / len(X)
        self.optimizer.zero_grad()
        value.backward()
        self.optimizer.step()
        return value.item()

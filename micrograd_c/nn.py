"""micrograd's neural-net library on the compiled engine: Module, Neuron, Layer, MLP, and the
classification loss: softmax cross-entropy.

Same signatures, weight init, reprs and return conventions as upstream's micrograd/nn.py, so a
seeded model equals upstream's. Each neuron is one fused `dot` node instead of 2n nodes.
"""
import random

from micrograd_c import engine
from micrograd_c.engine import Value

ACTIVATIONS = ("relu", "tanh", "linear")


class Module:

    def zero_grad(self):
        engine.zero_grads(self.parameters())

    def parameters(self):
        return []

    # numpy is imported where it is used: importing it costs 10x the rest of a small script's
    # start-up (0.17 s), and upstream's nn needs none.

    def get_params(self):
        """All parameters' data as one float64 array, in parameters() order."""
        import numpy as np
        params = self.parameters()
        out = np.empty(len(params))
        engine.copy_to_array(params, out)
        return out

    def set_params(self, values):
        """Set all parameters' data from an array-like of len(parameters()) numbers."""
        import numpy as np
        params = self.parameters()
        source = np.asarray(values)
        if source.dtype.kind not in "biuf":     # numpy would make None nan and parse text
            source = np.array([Value(v).data for v in source.ravel()]).reshape(source.shape)
        source = np.ascontiguousarray(source, dtype=np.float64)
        if source.shape != (len(params),):
            raise ValueError(f"expected {len(params)} values, got an array of shape {source.shape}")
        engine.copy_from_array(params, source)

    def get_grads(self):
        """All parameters' grads as one float64 array, in parameters() order."""
        import numpy as np
        params = self.parameters()
        out = np.empty(len(params))
        engine.copy_to_array(params, out, grads=True)
        return out


def applied_activation(neuron):
    """The activation engine.neuron applies to a neuron: 'linear' (none) unless its nonlin is
    true, then its activation ('relu' where it sets none, as upstream's neurons)."""
    return getattr(neuron, "activation", "relu") if getattr(neuron, "nonlin", True) else "linear"


class Neuron(Module):
    # Slots (other attributes still go to the instance's __dict__): engine.layer() reads them
    # in place, without a lookup per attribute. Pickled as one dict, as before they were
    # slots: every protocol works, and older pickles load.
    __slots__ = ("w", "b", "nonlin", "activation")

    def __init__(self, nin, nonlin=True, activation="relu"):
        """nonlin, as upstream: whether the neuron has a nonlinearity; activation: which one.
        'linear' is none: its nonlin is False."""
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")
        self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0)
        self.nonlin = nonlin if activation != "linear" else False
        self.activation = activation

    # dot(self.w, x, self.b), then self.activation if self.nonlin (relu where a subclass set no
    # activation, as upstream's): the engine's, which makes a Layer's neurons in one call
    # (engine.layer) unless their class has a __call__ of its own.
    __call__ = engine.neuron

    def parameters(self):
        return self.w + [self.b]

    def __repr__(self):
        activation = applied_activation(self)
        name = {"relu": "ReLU", "tanh": "Tanh", "linear": "Linear"}.get(activation, activation)
        return f"{name}Neuron({len(self.w)})"

    def __getstate__(self):
        # every class's slots, a subclass's too, and the instance's dict
        state = dict(getattr(self, "__dict__", {}))
        for cls in type(self).__mro__:
            slots = cls.__dict__.get("__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                if name.startswith("__") and not name.endswith("__") and \
                        cls.__name__.lstrip("_"):
                    name = f"_{cls.__name__.lstrip('_')}{name}"        # a private name
                if name not in ("__dict__", "__weakref__") and hasattr(self, name):
                    state[name] = getattr(self, name)
        return state

    def __setstate__(self, state):
        for name, value in state.items():
            setattr(self, name, value)


class Layer(Module):

    def __init__(self, nin, nout, **kwargs):
        self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]

    # [n(x) for n in self.neurons], the one output itself where there is one, as upstream: the
    # engine's, which makes the nodes of the neurons that call engine.neuron and calls the others.
    __call__ = engine.layer_call

    def parameters(self):
        # upstream's [p for n in self.neurons for p in n.parameters()], each neuron's list added
        # whole: half the time (5 us of the demo model's 10). extend, not +=, which would let an
        # array that parameters() returns add itself (numpy's __radd__) instead of its items.
        params = []
        for n in self.neurons:
            params.extend(n.parameters())
        return params

    def __repr__(self):
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):

    def __init__(self, nin, nouts, activation="relu", output_activation="linear"):
        """Hidden layers use `activation`, the last layer `output_activation` (upstream: linear)."""
        sz = [nin] + nouts
        last = len(nouts) - 1
        self.layers = [Layer(sz[i], sz[i+1], activation=output_activation if i == last else activation)
                       for i in range(len(nouts))]

    # for layer in self.layers: x = layer(x), as upstream: the engine's, which runs a Layer
    # without a call through Python.
    __call__ = engine.mlp_call

    def parameters(self):
        params = []                     # as Layer's
        for layer in self.layers:
            params.extend(layer.parameters())
        return params

    def __repr__(self):
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"


# -- classification: softmax and cross-entropy, computed without overflow ----------------------

def log_softmax(logits):
    """[z - logsumexp(logits) for z in logits]: log-probabilities, without overflow, and without
    a rounded logsumexp in between (engine.log_softmax)."""
    return engine.log_softmax(logits)


def softmax(logits):
    """Probabilities, exp(log_softmax(logits))."""
    return [p.exp() for p in log_softmax(logits)]


def cross_entropy(logits, target):
    """Softmax cross-entropy, as torch.nn.functional.cross_entropy: each example's loss is one
    node (engine.cross_entropy), with the exact gradient softmax - target.

    One example: `logits` a list of Values, `target` a class index or one Value per class (a
    one-hot vector: the form to replay, whose labels can be set in place). A batch: `logits` a
    list of such lists and `target` a list of targets; the result is the mean loss.
    """
    logits = list(logits)
    if logits and hasattr(logits[0], "__len__"):             # a batch: a list per example
        target = list(target)
        if len(target) != len(logits):
            raise ValueError(f"cross_entropy() got {len(logits)} examples but {len(target)} "
                             "targets")
        losses = [engine.cross_entropy(z, t) for z, t in zip(logits, target)]
        return engine.sum(losses) * (1.0 / len(losses))
    return engine.cross_entropy(logits, target)

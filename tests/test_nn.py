"""micrograd_c.nn against upstream's micrograd.nn on the same seed, and against hand-built
upstream graphs for what upstream lacks (tanh networks)."""
import gc
from decimal import Decimal
import importlib.util
import io
import math
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest

from helpers import close
from micrograd_c import engine, moons
from micrograd_c.engine import Value
from micrograd_c.nn import MLP, Layer, Module, Neuron, cross_entropy, log_softmax, softmax

unn = pytest.importorskip("micrograd.nn", reason="upstream micrograd is the oracle")
UValue = pytest.importorskip("micrograd.engine").Value


def pair(make, seed=0):
    """The same model built by micrograd_c.nn and upstream's nn from the same random seed."""
    random.seed(seed)
    ours = make(__import__("micrograd_c.nn", fromlist=["MLP"]))
    random.seed(seed)
    theirs = make(unn)
    return ours, theirs


def test_seeded_models_equal_upstream():
    for make in (lambda nn: nn.MLP(2, [16, 16, 1]), lambda nn: nn.MLP(3, [4, 4, 1]),
                 lambda nn: nn.Layer(3, 2), lambda nn: nn.Neuron(5),
                 lambda nn: nn.Neuron(5, nonlin=False)):
        ours, theirs = pair(make)
        assert repr(ours) == repr(theirs)
        assert [p.data for p in ours.parameters()] == [p.data for p in theirs.parameters()]


def test_forward_and_gradients_equal_upstream():
    ours, theirs = pair(lambda nn: nn.MLP(3, [8, 8, 2]), seed=4)
    rng = random.Random(1)
    for _ in range(5):
        x = [rng.uniform(-2, 2) for _ in range(3)]
        out, uout = ours(x), theirs([UValue(v) for v in x])
        loss = out[0] * out[1] + out[0]
        uloss = uout[0] * uout[1] + uout[0]
        assert loss.data == uloss.data
        ours.zero_grad()
        theirs.zero_grad()
        loss.backward()
        uloss.backward()
        for p, q in zip(ours.parameters(), theirs.parameters()):
            assert close(p.grad, q.grad, rel=1e-12, abs_=1e-12)


def test_demo_training_matches_upstream():
    ours, theirs = pair(lambda nn: nn.MLP(2, [16, 16, 1]), seed=2)
    X, y = moons.demo_data(n_samples=30, seed=2)       # upstream takes ~0.5 s a step on this
    for k in range(5):
        loss, acc = moons.sgd_step(ours, X, y, Value, k, sum_values=engine.sum)
        uloss, uacc = moons.sgd_step(theirs, X, y, UValue, k)
        assert close(loss, uloss, rel=1e-12) and acc == uacc
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert close(p.data, q.data, rel=1e-11, abs_=1e-13)



def test_nonlin_set_after_construction_counts_as_upstreams():
    # upstream reads nonlin at each call (and in repr): the usual way to make a layer linear
    for make in (lambda nn: nn.Layer(2, 3), lambda nn: nn.Layer(2, 3, nonlin=False)):
        ours, theirs = pair(make, seed=5)
        for flip in (True, False, True):
            for n, m in zip(ours.neurons, theirs.neurons):
                n.nonlin = m.nonlin = not flip if n is ours.neurons[0] else flip
            x = [-3.0, 0.5]
            assert repr(ours) == repr(theirs)
            assert [v.data for v in ours(x)] == [v.data for v in theirs([UValue(v) for v in x])]
            assert [n(x).data for n in ours.neurons] == \
                [m([UValue(v) for v in x]).data for m in theirs.neurons]
    ours, theirs = pair(lambda nn: nn.MLP(2, [3, 1]))
    assert [n.nonlin for layer in ours.layers for n in layer.neurons] == \
        [n.nonlin for layer in theirs.layers for n in layer.neurons]


def upstream_style_classes(nn, Value):
    """Neuron classes written against upstream's API: a weight init of one's own that doesn't
    call Neuron.__init__, a __call__ of one's own on a Neuron, and a neuron of another class."""

    class GaussNeuron(nn.Neuron):
        def __init__(self, nin, nonlin=True):
            self.w = [Value(random.gauss(0, 1)) for _ in range(nin)]
            self.b = Value(0)
            self.nonlin = nonlin

    class ScaledNeuron(nn.Neuron):
        def __call__(self, x):
            return super().__call__(x) * 10.0

    class OwnNeuron:
        def __init__(self, nin):
            self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
            self.b = Value(0.5)

        def __call__(self, x):
            return sum((wi * xi for wi, xi in zip(self.w, x)), self.b) ** 2

        def parameters(self):
            return self.w + [self.b]

    return GaussNeuron, ScaledNeuron, OwnNeuron


def test_neurons_of_upstream_style_classes_in_a_layer_give_upstreams_numbers():
    def make(nn):
        Value = nn.Value if hasattr(nn, "Value") else UValue
        gauss, scaled, own = upstream_style_classes(nn, Value)
        layer = nn.Layer(3, 1)
        layer.neurons = [gauss(3), gauss(3, nonlin=False), scaled(3), own(3), nn.Neuron(3)]
        return layer

    ours, theirs = pair(make, seed=6)
    x = [0.5, -1.5, 2.0]
    assert [repr(n) for n in ours.neurons[:3]] == [repr(n) for n in theirs.neurons[:3]]
    out, expected = ours([Value(v) for v in x]), theirs([UValue(v) for v in x])
    assert [v.data for v in out] == pytest.approx([v.data for v in expected], rel=1e-12)
    assert [n(x).data for n in ours.neurons] == pytest.approx([v.data for v in expected],
                                                               rel=1e-12)
    engine.sum(out).backward()
    sum(expected).backward()
    assert [p.grad for p in ours.parameters()] == \
        pytest.approx([p.grad for p in theirs.parameters()], rel=1e-12)


class Scaled(Neuron):
    __slots__ = ("scale", "__offset")

    def __init__(self, nin, scale):
        super().__init__(nin)
        self.scale = scale
        self.__offset = 0.5

    def __call__(self, x):
        return super().__call__(x) * self.scale + self.__offset


def test_a_neuron_subclass_keeps_its_own_slots_through_copy_and_pickle():
    import copy
    neuron = Scaled(2, 3.0)
    z = max(0.0, neuron.w[0].data * 1.0 + neuron.w[1].data * -2.0)    # by hand
    for clone in (copy.copy(neuron), copy.deepcopy(neuron),
                  pickle.loads(pickle.dumps(neuron)), pickle.loads(pickle.dumps(neuron, 0))):
        assert clone([1.0, -2.0]).data == z * 3.0 + 0.5

def test_a_layer_hands_its_inputs_as_they_are_to_the_neurons_it_calls():
    # upstream's Layer is [n(x) for n in neurons]: inputs no Value could hold are fine there
    class PairNeuron:
        def __call__(self, x):
            return Value(sum(a * b for a, b in x))

    layer = Layer(2, 1)
    layer.neurons = [PairNeuron(), PairNeuron()]
    assert [v.data for v in layer([(1.0, 2.0), (3.0, 4.0)])] == [14.0, 14.0]    # 1 * 2 + 3 * 4


class _(Neuron):                        # a name of underscores only: its private names unmangled
    __slots__ = ("__kept",)


def test_a_subclass_named_with_underscores_keeps_its_slots_through_copy():
    import copy
    neuron = _(2)
    setattr(neuron, "__kept", 7)
    assert getattr(copy.copy(neuron), "__kept") == 7

def test_layer_with_one_output_returns_a_value():
    layer = Layer(3, 1)
    out = layer([1.0, 2.0, 3.0])
    assert isinstance(out, Value)
    assert isinstance(Layer(3, 2)([1.0, 2.0, 3.0]), list)
    assert isinstance(MLP(2, [3, 1])([1.0, 2.0]), Value)


def test_an_mlp_calls_its_layers_as_upstreams_loop_does():
    # upstream's MLP.__call__ is `for layer in self.layers: x = layer(x)`: any callable, a Layer
    # subclass's own __call__ (one given after the first call too), read at each call
    class Doubled(Layer):
        def __call__(self, x):
            return [v * 2.0 for v in super().__call__(x)]

    class Shift(Module):
        def __call__(self, x):
            return [v + 1.0 for v in x]

    class Later(Layer):
        pass

    random.seed(3)
    model = MLP(2, [4, 3, 1])
    model.layers[0].__class__ = Doubled
    model.layers[1].__class__ = Later
    model.layers.insert(1, Shift())
    x = [0.5, -1.0]

    def by_hand():                      # the numbers upstream's loop computes
        h = [Value(v) for v in x]
        for layer in model.layers:
            h = [engine.dot(n.w, h, n.b) for n in layer.neurons] if hasattr(layer, "neurons") \
                else layer(h)
            if isinstance(layer, Doubled):
                h = [v.relu() * 2.0 for v in h]
            elif layer is not model.layers[-1] and hasattr(layer, "neurons"):
                h = [v.relu() for v in h]
        return h[0].data

    assert model(x).data == by_hand()
    Later.__call__ = lambda self, x: [Value(-7.0)] * 3
    assert model(x).data == sum(n.w[i].data * -7.0 for n in model.layers[-1].neurons
                                for i in range(3))
    del Later.__call__
    assert model(x).data == by_hand()
    model.layers = model.layers[-1:]
    assert model([1.0, 2.0, 3.0]).data == sum(w.data * v for w, v in
                                              zip(model.layers[0].neurons[0].w, (1.0, 2.0, 3.0)))


@pytest.mark.parametrize("make", [lambda: Neuron(2), lambda: Layer(2, 3), lambda: MLP(2, [3, 1])])
def test_a_models_bound_call_pickles_and_copies_as_upstreams_does(make):
    # a bound method pickles as getattr(instance, its function's __name__): sent to a worker
    # process (ProcessPoolExecutor().map(model.__call__, ...)) it must come back the same call
    import copy
    model = make()
    x = [0.5, -1.5]
    expected = model(x)
    for call in (pickle.loads(pickle.dumps(model.__call__)), copy.copy(model.__call__)):
        got = call(x)
        assert [v.data for v in got] == [v.data for v in expected] if isinstance(got, list) \
            else got.data == expected.data
    assert pickle.loads(pickle.dumps(engine.layer_call)) is engine.layer_call


def test_parameters_iterate_what_each_part_returns_as_upstreams_comprehension():
    # upstream's [p for n in self.neurons for p in n.parameters()] takes any iterable, an array
    # included (list += array would broadcast it instead)
    class ArrayNeuron(Neuron):
        def parameters(self):
            return np.array(self.w + [self.b], dtype=object)

    for nin in (2, 0):
        layer = Layer(nin, 2)
        for n in layer.neurons:
            n.__class__ = ArrayNeuron
        expected = [p for n in layer.neurons for p in n.parameters()]
        assert len(layer.parameters()) == len(expected) == 2 * (nin + 1)
        assert all(a is b for a, b in zip(layer.parameters(), expected))
        model = MLP(nin, [2])
        model.layers[0] = layer
        assert all(a is b for a, b in zip(model.parameters(), expected))


def test_layer_and_mlp_calls_are_the_engines_with_upstreams_signature():
    import inspect
    assert Layer.__call__ is engine.layer_call and MLP.__call__ is engine.mlp_call
    for call in (Layer.__call__, MLP.__call__):
        assert list(inspect.signature(call).parameters) == ["self", "x"]
    for not_a_model in (object(), Layer(1, 1)):       # as upstream's: self.layers raises
        with pytest.raises(AttributeError):
            MLP.__call__(not_a_model, [1.0])


@pytest.mark.parametrize("activation", ["relu", "tanh", "linear"])
def test_a_layer_makes_the_nodes_its_neurons_make(activation):
    # engine.layer, one call for the layer, against each neuron called on its own (the oracle:
    # Neuron.__call__, checked against upstream above): the same data, ops and grads, bit for bit
    random.seed(3)
    layer = Layer(4, 5, activation=activation)
    x = [Value(0.3), -1.2, Value(2.0), 0.0]                     # numbers among the inputs
    fused = layer(x)
    by_neuron = [n([xi if isinstance(xi, Value) else Value(xi) for xi in x])
                 for n in layer.neurons]
    assert [(v._op, v.data) for v in fused] == [(v._op, v.data) for v in by_neuron]
    engine.sum(fused).backward()
    grads = [p.grad for p in layer.parameters()] + [x[0].grad, x[2].grad]
    layer.zero_grad()
    x[0].grad = x[2].grad = 0.0
    engine.sum(by_neuron).backward()
    assert grads == [p.grad for p in layer.parameters()] + [x[0].grad, x[2].grad]
    # a number becomes one leaf for the whole layer
    leaves = {id(c) for v in fused for c in (v if activation == "linear" else v._prev.pop())
              ._children[4:8]}
    assert len(leaves) == 4


class ShadowedNeuron(Neuron):
    """A neuron whose w, b and activation are properties: each reads something other than what
    Neuron's slot holds, which is what neuron.w gives, so what a layer must use."""

    @property
    def w(self):
        return self.shadow_w

    @w.setter
    def w(self, value):
        Neuron.w.__set__(self, value)               # the slot gets the weights...
        self.shadow_w = [Value(2.0) for _ in value]     # ...neuron.w other ones

    @property
    def b(self):
        return Value(-0.5)

    @b.setter
    def b(self, value):
        Neuron.b.__set__(self, value)

    activation = property(lambda self: "tanh", lambda self, value: Neuron.activation.__set__(
        self, value))


class DuckNeuron:
    def __init__(self, nin):
        self.w = [Value(-1.5) for _ in range(nin)]
        self.b = 0.25
        self.activation = "linear"


def test_a_layer_reads_each_neurons_weights_bias_and_activation_as_neuron_w_does():
    # the oracle: dot(n.w, x, n.b) and the activation n.activation names, neuron by neuron
    random.seed(4)
    layer = Layer(3, 2)
    layer.neurons[1:1] = [ShadowedNeuron(3), DuckNeuron(3), ShadowedNeuron(3)]
    layer.neurons[3].extra = "kept"                 # a Neuron still takes other attributes
    x = [Value(0.3), Value(-1.2), Value(0.7)]
    expected = []
    for n in layer.neurons:
        act = engine.dot(n.w, x, n.b)
        expected.append({"relu": act.relu, "tanh": act.tanh}.get(n.activation, lambda: act)())
    assert [(v._op, v.data) for v in layer(x)] == [(v._op, v.data) for v in expected]
    assert [v._op for v in layer(x)] == ["ReLU", "tanh", "dot", "tanh", "ReLU"]
    layer.neurons[0].w = [Value(1.0)] * 3           # rebound: the layer sees the new list
    assert layer(x)[0].data == max(0.0, 0.3 - 1.2 + 0.7)
    del layer.neurons[4].b
    with pytest.raises(AttributeError, match="b"):
        layer(x)


def test_a_layer_reads_no_slot_through_a_descriptor_borrowed_by_another_class():
    # Neuron's slot descriptors put in a class of another layout: neuron.w raises TypeError
    # (the slot is not there), and so must the layer, not read memory at Neuron's offsets
    class Borrowing:
        w, b, activation = Neuron.w, Neuron.b, Neuron.activation

    with pytest.raises(TypeError, match="doesn't apply"):
        Borrowing().w
    with pytest.raises(TypeError, match="doesn't apply"):
        engine.layer([Neuron(2), Borrowing()], [Value(1.0), Value(2.0)])


def test_a_layer_reads_what_a_neuron_holds_when_it_reaches_it():
    # Python code running during the call (the neurons' iterator, a gc callback while the
    # layer allocates) may change a class: each neuron reads as neuron.w would then
    class Mutable(Neuron):
        __slots__ = ()

    tens = property(lambda self: [Value(10.0), Value(10.0)])

    def neurons(change):
        first, second = Mutable(2, activation="linear"), Mutable(2, activation="linear")
        first.w = second.w = [Value(1.0), Value(1.0)]
        yield first
        change()
        yield second

    def get_attribute(self, name):
        return [Value(10.0), Value(10.0)] if name == "w" else object.__getattribute__(self, name)

    x = [Value(1.0), Value(2.0)]
    for change in (lambda: setattr(Mutable, "w", tens),
                   lambda: setattr(Mutable, "__getattribute__", get_attribute)):
        assert [v.data for v in engine.layer(neurons(change), x)] == [3.0, 30.0]
        for name in ("w", "__getattribute__"):
            if name in vars(Mutable):
                delattr(Mutable, name)
    fired = []

    def callback(phase, info):
        if not fired:
            fired.append(phase)
            Mutable.w = tens

    # 43 inputs: children tuples of a size no other test leaves spare, so the layer allocates
    many = [Mutable(43, activation="linear") for _ in range(2000)]
    for neuron in many:
        neuron.w = [Value(1.0)] * 43
    x = [Value(1.0)] * 43
    tens = property(lambda self: [Value(10.0)] * 43)
    out = []
    thresholds = gc.get_threshold()
    gc.collect()
    gc.set_threshold(5)
    gc.callbacks.append(callback)
    try:
        out = engine.layer(many, x)
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*thresholds)
    data = [v.data for v in out]
    changed_at = data.index(430.0) if 430.0 in data else len(data)   # read after the callback
    assert fired and data == [43.0] * changed_at + [430.0] * (len(many) - changed_at)
    if sys.version_info < (3, 12):      # from 3.12 a collection waits for the interpreter's
        assert changed_at < len(many)   # next check, after layer() returns


def test_a_layer_survives_a_neuron_type_freed_during_the_call():
    # the first neuron's class freed after its neuron was read, a class of another layout then
    # made (often at the same address): the second reads as getattr does (no attribute w)
    def neurons():
        class First(Neuron):
            __slots__ = ()

        neuron = First(2)
        yield neuron
        neuron.__class__ = Neuron
        del First, neuron
        gc.collect()

        class Other(bytes):
            __slots__ = ()

        yield Other(b"A" * 64)

    with pytest.raises(AttributeError, match="'Other' object has no attribute 'w'"):
        engine.layer(neurons(), [1.0, 2.0])


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_neuron_pickles_and_copies_with_its_slots_and_other_attributes(protocol):
    import copy
    neuron = Neuron(2, activation="tanh")
    neuron.label = "first"
    model = MLP(2, [2, 1])
    for clone, original in ((pickle.loads(pickle.dumps(neuron, protocol)), neuron),
                            (copy.deepcopy(neuron), neuron), (copy.copy(neuron), neuron),
                            (pickle.loads(pickle.dumps(model, protocol)).layers[0].neurons[0],
                             model.layers[0].neurons[0])):
        assert [p.data for p in clone.parameters()] == [p.data for p in original.parameters()]
        assert (clone.activation, clone.nonlin) == (original.activation, original.nonlin)
        z = clone.b.data                        # the neuron by hand on floats, bias first
        for w, x in zip(clone.w, [0.5, -0.25]):
            z += w.data * x
        expected = {"tanh": math.tanh(z), "relu": max(0.0, z), "linear": z}[clone.activation]
        assert close(clone([0.5, -0.25]).data, expected, rel=1e-12)
    for clone in (pickle.loads(pickle.dumps(neuron, protocol)), copy.deepcopy(neuron)):
        assert [p.data for p in clone.parameters()] == [p.data for p in neuron.parameters()]
        assert (clone.activation, clone.nonlin, clone.label) == ("tanh", True, "first")
        assert clone([0.5, -0.25]).data == neuron([0.5, -0.25]).data


def test_a_neuron_pickled_before_its_attributes_were_slots_loads():
    # such a pickle holds one dict of the neuron's attributes, given to __setstate__
    import copyreg
    old_state = {"w": [Value(0.5), Value(-2.0)], "b": Value(0.25), "nonlin": True,
                 "activation": "relu", "label": "kept"}

    class OldPickler(pickle.Pickler):
        def reducer_override(self, obj):
            if type(obj) is Neuron:
                return copyreg.__newobj__, (Neuron,), old_state
            return NotImplemented

    buffer = io.BytesIO()
    OldPickler(buffer, 4).dump(Neuron(2))
    neuron = pickle.loads(buffer.getvalue())
    assert neuron.label == "kept" and neuron.activation == "relu"
    assert engine.dot(neuron.w, [1.0, 1.0], neuron.b).data == 0.25 + 0.5 + -2.0
    assert neuron([1.0, 1.0]).data == engine.layer([neuron], [1.0, 1.0])[0].data == 0.0  # relu
    neuron.b.data = 3.0
    assert engine.layer([neuron], [1.0, 1.0])[0].data == 3.0 + 0.5 + -2.0


def test_a_layer_refuses_an_unknown_activation():
    layer = Layer(2, 2)
    layer.neurons[1].activation = "gelu"
    with pytest.raises(ValueError, match="activation"):
        layer([1.0, 2.0])


def test_tanh_activation_against_hand_derived_gradients():
    random.seed(5)
    n = Neuron(3, activation="tanh")
    x = [0.5, -1.0, 2.0]
    out = n(x)
    out.backward()
    act = n.b.data + sum(p.data * xi for p, xi in zip(n.w, x))
    t = np.tanh(act)
    assert close(out.data, t, rel=1e-15)
    for p, xi in zip(n.w, x):
        assert close(p.grad, (1 - t * t) * xi, rel=1e-12)
    assert close(n.b.grad, 1 - t * t, rel=1e-12)
    assert repr(n) == "TanhNeuron(3)"


def test_activation_options():
    assert repr(MLP(2, [3, 1], activation="tanh")) == \
        "MLP of [Layer of [TanhNeuron(2), TanhNeuron(2), TanhNeuron(2)], Layer of [LinearNeuron(3)]]"
    assert repr(MLP(2, [1], output_activation="tanh")) == "MLP of [Layer of [TanhNeuron(2)]]"
    assert repr(Neuron(2, nonlin=False, activation="tanh")) == "LinearNeuron(2)"
    assert repr(Neuron(2, activation="linear")) == "LinearNeuron(2)"
    with pytest.raises(ValueError):
        Neuron(2, activation="gelu")
    out = MLP(2, [2, 1], activation="linear")([1.0, 1.0])
    assert "ReLU" not in {n._op for n in [out, *out._prev]}


def test_wrong_input_size_is_an_error_not_a_silent_truncation():
    with pytest.raises(ValueError):
        MLP(3, [4, 1])([1.0, 2.0])


def test_params_as_arrays():
    model = MLP(2, [4, 1])
    params = model.parameters()
    arr = model.get_params()
    assert arr.dtype == np.float64 and arr.tolist() == [p.data for p in params]
    model.set_params(arr * 2)
    assert [p.data for p in params] == (arr * 2).tolist()
    model.set_params([0.5] * len(params))                 # any array-like of numbers
    assert all(p.data == 0.5 for p in params)
    model(np.array([1.0, -1.0]).tolist()).backward()
    assert model.get_grads().tolist() == [p.grad for p in params]
    with pytest.raises(ValueError):
        model.set_params(np.zeros(len(params) + 1))
    with pytest.raises(ValueError):
        model.set_params(np.zeros((len(params), 1)))
    for bad in ([None] * len(params), ["2.5"] * len(params)):     # not nan, not parsed: as Value()
        with pytest.raises(TypeError):
            model.set_params(bad)
    assert all(p.data == 0.5 for p in params)
    model.set_params([Decimal("0.25")] + [True] * (len(params) - 1))   # numbers Value() takes
    assert [p.data for p in params] == [0.25] + [1.0] * (len(params) - 1)
    assert Module().parameters() == [] and Module().get_params().shape == (0,)


def test_models_pickle_with_their_weights():
    model = MLP(2, [4, 4, 1], activation="tanh")
    x = [0.3, -0.7]
    expected = model(x).data
    clone = pickle.loads(pickle.dumps(model))
    assert repr(clone) == repr(model)
    assert clone.get_params().tolist() == model.get_params().tolist()
    assert clone(x).data == expected
    assert all(p is not q for p, q in zip(clone.parameters(), model.parameters()))


def test_zero_grad():
    model = MLP(2, [3, 1])
    model([1.0, 2.0]).backward()
    assert any(p.grad != 0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad == 0 for p in model.parameters())


def test_importing_nn_does_not_import_numpy():
    # numpy costs ~0.17 s at start-up, 10x a small script's; upstream's nn needs none
    code = "import sys, micrograd_c.nn; print('numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


# -- softmax cross-entropy -----------------------------------------------------------------------


LOGITS = [
    [0.3, -1.2, 2.0, 0.0],
    [1e3, -1e3, 0.0],                       # far beyond exp's range
    [-1e3, -1e3, -1e3],                     # all equal, hugely negative
    [5.0, 5.0, 5.0, 5.0],                   # all equal
    [700.0, 1.0, -2.0],                     # one huge
    [2.5],                                  # one class
]
TARGETS = [2, 0, 1, 3, 1, 0]


def unfused_cross_entropy(z, k):
    """The same loss from exp, log, sum, shifted by the max by hand (the oracle), as
    log(sum(exp(z - m))) - (z[k] - m): log(...) + m - z[k] would round away what the loss is
    where m is large (log(3) at z = [-1e3] * 3 was 5e-14 off)."""
    m = max(v.data for v in z)
    shifted = [v - m for v in z]
    return (sum(s.exp() for s in shifted)).log() - shifted[k]


@pytest.mark.parametrize("row", range(len(LOGITS)))
def test_cross_entropy_equals_the_unfused_composition(row):
    z = [Value(x) for x in LOGITS[row]]
    loss = cross_entropy(z, TARGETS[row])
    loss.backward()
    fused_grads = [v.grad for v in z]
    for v in z:
        v.grad = 0.0
    oracle = unfused_cross_entropy(z, TARGETS[row])
    oracle.backward()
    assert loss.data == pytest.approx(oracle.data, rel=1e-14, abs=1e-14)
    assert fused_grads == pytest.approx([v.grad for v in z], rel=1e-12, abs=1e-15)
    assert all(math.isfinite(g) for g in fused_grads) and math.isfinite(loss.data)
    assert sum(fused_grads) == pytest.approx(0.0, abs=1e-12)       # softmax - onehot


@pytest.mark.parametrize("lead", [30.0, 39.0, 700.0])
def test_a_confident_prediction_keeps_every_digit_of_its_loss(lead):
    # loss = log(1 + exp(-lead)), by math.log1p; lse(z) - z[0] rounds it to the ulps of lead
    # (1.3% off at 30, 0.0 at 39), and so would log(1 + exp(-lead)) (0.1% off at 30, as torch)
    expected = math.log1p(math.exp(-lead))
    z = [Value(lead), Value(0.0)]
    assert cross_entropy(z, 0).data == pytest.approx(expected, rel=1e-15, abs=0.0)
    assert cross_entropy(z, [1.0, 0.0]).data == pytest.approx(expected, rel=1e-15, abs=0.0)
    assert engine.logsumexp([v - lead for v in z]).data == pytest.approx(expected, rel=1e-15,
                                                                         abs=0.0)
    assert log_softmax(z)[0].data == pytest.approx(-expected, rel=1e-15, abs=0.0)
    # replayed with the logits swapped: the largest is the other one now
    logp = log_softmax(z)
    step = engine.compile(engine.sum(logp))
    z[0].data, z[1].data = 0.0, lead
    step.forward()
    assert logp[1].data == pytest.approx(-expected, rel=1e-15, abs=0.0)
    assert logp[0].data == pytest.approx(-lead - expected, rel=1e-15)
    # and its derivatives are softmax's: d/dz[i] of sum(log_softmax(z)) = 1 - n * softmax[i]
    step.backward()
    weights = [1 / (1 + math.exp(lead)), 1 / (1 + math.exp(-lead))]
    assert [v.grad for v in z] == pytest.approx([1 - 2 * p for p in weights], rel=1e-15)


def test_cross_entropy_one_hot_and_soft_targets():
    z = [Value(x) for x in LOGITS[0]]
    onehot = [Value(1.0 if i == 2 else 0.0) for i in range(4)]
    by_index = cross_entropy(z, 2).data
    assert cross_entropy(z, onehot).data == pytest.approx(by_index, rel=1e-15)
    soft = [0.1, 0.2, 0.3, 0.4]
    loss = cross_entropy(z, soft)
    expected = -sum(t * p.data for t, p in zip(soft, log_softmax(z)))
    assert loss.data == pytest.approx(expected, rel=1e-14)
    # finite differences, logits and targets
    t = [Value(x) for x in soft]
    loss = cross_entropy(z, t)
    loss.backward()
    h = 1e-6
    for group in (z, t):
        for v in group:
            v.data += h
            up = cross_entropy([w.data for w in z], [w.data for w in t]).data
            v.data -= 2 * h
            down = cross_entropy([w.data for w in z], [w.data for w in t]).data
            v.data += h
            assert v.grad == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-8)


def test_softmax_and_log_softmax():
    z = [Value(x) for x in LOGITS[1]]
    p = softmax(z)
    assert [v.data for v in p] == pytest.approx([1.0, 0.0, 0.0], abs=1e-300)
    assert [v.data for v in log_softmax(z)] == pytest.approx([0.0, -2e3, -1e3])
    assert sum(v.data for v in softmax([Value(x) for x in LOGITS[0]])) == pytest.approx(1.0)


@pytest.mark.parametrize("logits", [[math.nan], [math.inf, math.nan], [1.0, math.nan, -2.0],
                                    [math.nan, math.inf], [-math.inf, math.nan]])
def test_nan_propagates_through_logsumexp_and_cross_entropy(logits):
    # the oracle is the formula on floats: log(sum(exp(z))) with a nan among z is nan, and so
    # is every softmax weight (torch gives nan for both, values and gradients)
    assert math.isnan(math.log(math.fsum(math.exp(x) for x in logits)))
    for loss in (lambda z: engine.logsumexp(z), lambda z: engine.cross_entropy(z, 0),
                 lambda z: engine.cross_entropy(z, [1.0] + [0.0] * (len(z) - 1))):
        z = [Value(x) for x in logits]
        out = loss(z)
        out.backward()
        assert math.isnan(out.data)
        assert all(math.isnan(v.grad) for v in z), [v.grad for v in z]


def test_numpy_targets():
    z = [Value(x) for x in LOGITS[0]]
    by_index = cross_entropy(z, 2).data
    assert cross_entropy(z, np.int64(2)).data == by_index
    assert cross_entropy(z, np.array(2)).data == by_index           # a 0-d array: one index
    assert cross_entropy(z, np.array([0.0, 0.0, 1.0, 0.0])).data == pytest.approx(by_index)


def test_a_batch_gives_the_mean_loss():
    rows = [[Value(x) for x in r] for r in LOGITS[:3]]
    mean = cross_entropy(rows, TARGETS[:3])
    assert mean.data == pytest.approx(sum(cross_entropy(r, k).data
                                          for r, k in zip(rows, TARGETS[:3])) / 3, rel=1e-15)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("row", range(len(LOGITS)))
def test_cross_entropy_and_log_softmax_equal_torch(row):
    import torch
    import torch.nn.functional as F
    z = [Value(x) for x in LOGITS[row]]
    t = torch.tensor([LOGITS[row]], dtype=torch.float64, requires_grad=True)
    loss = cross_entropy(z, TARGETS[row])
    loss.backward()
    expected = F.cross_entropy(t, torch.tensor([TARGETS[row]]))
    expected.backward()
    assert loss.data == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)
    assert [v.grad for v in z] == pytest.approx(t.grad[0].tolist(), rel=1e-12, abs=1e-12)
    assert [v.data for v in log_softmax(z)] == pytest.approx(
        F.log_softmax(t, dim=1)[0].tolist(), rel=1e-12, abs=1e-12)
    soft = torch.softmax(torch.arange(len(LOGITS[row]), dtype=torch.float64), 0)
    ours = cross_entropy([Value(x) for x in LOGITS[row]], soft.tolist()).data
    assert ours == pytest.approx(F.cross_entropy(t.detach(), soft[None]).item(), rel=1e-12,
                                 abs=1e-12)


@pytest.mark.parametrize("target,error,message", [
    (4, IndexError, "out of range"), (-1, IndexError, "out of range"),
    ([1.0, 0.0], ValueError, "4 logits but 2 targets"), (1.5, TypeError, "class index"),
    (True, TypeError, "class index"), ("a", TypeError, "class index"),
    # too big for a C integer: still out of range, not an OverflowError
    (2**70, IndexError, "out of range"), (2**63, IndexError, "out of range"),
    (np.uint64(2**63), IndexError, "out of range"), (np.array(1.0), TypeError, "class index"),
    # unordered: which target goes with which logit?
    ({0, 1, 2, 3}, TypeError, "order"), ({0: 1.0}, TypeError, "order"),
])
def test_bad_targets_are_refused_clearly(target, error, message):
    z = [Value(x) for x in LOGITS[0]]
    with pytest.raises(error, match=message):
        cross_entropy(z, target)
    with pytest.raises(ValueError, match="at least one logit"):
        engine.cross_entropy([], 0)
    with pytest.raises(ValueError, match="2 examples but 1 targets"):
        cross_entropy([z, z], [1])

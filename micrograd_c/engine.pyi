# Type stub for the compiled module micrograd_c.engine (src/engine.pyx).
from typing import Any, Callable, Iterable, SupportsFloat, Union, final

__all__ = ["Value"]

_Number = Union[int, float, SupportsFloat]

@final
class Value:
    """A scalar and its gradient, a node in a graph of operations."""

    data: float
    grad: float
    label: str
    _op: str                      # the op that made it, as upstream spells it; settable
    __dict__: dict[str, Any]      # made when a first attribute is set

    def __init__(
        self,
        data: _Number,
        _children: Iterable["Value"] = (),
        _op: str = "",
        label: str = "",
    ) -> None: ...
    def __add__(self, other: Union["Value", _Number], /) -> "Value": ...
    def __mul__(self, other: Union["Value", _Number], /) -> "Value": ...
    def __pow__(self, other: Union["Value", _Number], modulo: None = None, /) -> "Value": ...
    def relu(self) -> "Value":
        """max(0, self), as upstream: relu(-0.0) is -0.0 and relu(nan) is nan."""
        ...
    def backward(self) -> None:
        """Set self.grad to 1 and add d(self)/d(node) into every node's grad below it."""
        ...
    def __neg__(self) -> "Value": ...
    def __radd__(self, other: _Number, /) -> "Value": ...
    def __sub__(self, other: Union["Value", _Number], /) -> "Value": ...
    def __rsub__(self, other: _Number, /) -> "Value": ...
    def __rmul__(self, other: _Number, /) -> "Value": ...
    def __truediv__(self, other: Union["Value", _Number], /) -> "Value": ...
    def __rtruediv__(self, other: _Number, /) -> "Value": ...
    def __rpow__(self, other: _Number, modulo: None = None, /) -> "Value": ...
    def tanh(self) -> "Value":
        """The hyperbolic tangent of self."""
        ...
    def exp(self) -> "Value":
        """e ** self; OverflowError where math.exp raises it."""
        ...
    def log(self) -> "Value":
        """The natural logarithm of self; ValueError for self <= 0, as math.log."""
        ...
    def sigmoid(self) -> "Value":
        """1 / (1 + exp(-self)), computed without overflow."""
        ...
    @property
    def _prev(self) -> set["Value"]:
        """The set of child Values (numbers folded into an op, as in `x * 2.0`, are not nodes)."""
        ...
    @property
    def _children(self) -> tuple["Value", ...]:
        """The child Values in order, as given to Value(data, _children, _op): (a, b) of a + b."""
        ...
    @property
    def _backward(self) -> Callable[[], None]:
        """Adds this node's local gradients into its children (one step of backward()), as
        `v._backward()` does upstream. The gradient of each op is compiled, so a custom one
        can't be attached: assigning raises."""
        ...

def dot(
    ws: Iterable[Union[Value, _Number]],
    xs: Iterable[Union[Value, _Number]],
    bias: Union[Value, _Number, None] = None,
) -> Value:
    """bias + sum(w * x for w, x in zip(ws, xs)), as one node."""
    ...

def descend(values: Iterable[Value], lr: float) -> None:
    """p.data -= lr * p.grad for every Value p, in a compiled loop (optim.SGD's plain step):
    the numbers of that Python loop, to the bit. An item that is not a Value raises TypeError,
    the items before it updated (as that loop)."""
    ...

def neuron(self: Any, x: Iterable[Union[Value, _Number]]) -> Value:
    """What a micrograd_c.nn Neuron computes (it is Neuron.__call__, hence upstream's
    signature): dot(self.w, x, self.b), then, if self.nonlin, its activation: self.activation,
    'relu' (upstream's one nonlinearity, and the default where the neuron has no such
    attribute), 'tanh' or 'linear'. A number among the inputs becomes a leaf Value. Attributes
    are read as self.w reads them, in that order."""
    ...

def layer(neurons: Iterable[Any], inputs: Iterable[Union[Value, _Number]]) -> list[Any]:
    """[neuron(inputs) for neuron in neurons] in one call, for a layer of micrograd_c.nn's
    Neurons: a neuron whose class calls engine.neuron (Neuron's __call__), or has no __call__,
    is made here, the very nodes engine.neuron makes; a neuron of a class with a __call__ of
    its own is called. A number among the inputs becomes one leaf Value for the whole layer
    (for the neurons made here). Returns a list."""
    ...

def layer_call(self: Any, x: Iterable[Union[Value, _Number]]) -> Any:
    """What a micrograd_c.nn Layer computes (it is Layer.__call__, hence upstream's signature):
    [n(x) for n in self.neurons], as engine.layer makes them; the one output itself where there
    is one, as upstream."""
    ...

def mlp_call(self: Any, x: Any) -> Any:
    """What a micrograd_c.nn MLP computes (it is MLP.__call__, hence upstream's signature): each
    of self.layers in turn, x = layer(x). A layer whose class calls engine.layer_call (Layer's
    __call__) is run here, as that call would run it, without a call through Python."""
    ...

def sum(values: Iterable[Union[Value, _Number]]) -> Value:
    """The sum of an iterable of Values and numbers, as one node."""
    ...

def zero_grads(values: Iterable[Value]) -> None:
    """Set every Value's grad to 0.0, in a compiled loop (Module.zero_grad, the optimizers).

    An item that is not a Value raises TypeError, the items before it done (as a Python loop).
    """
    ...

def copy_to_array(values: Iterable[Value], out: Any, grads: bool = False) -> None:
    """Write each Value's data (or grad, with grads=True) into out, a float64 array as long.

    Lengths that differ raise ValueError before anything is written; an item that is not a
    Value raises TypeError, the items before it written.
    """
    ...

def copy_from_array(values: Iterable[Value], source: Any, grads: bool = False) -> None:
    """Set each Value's data (or grad, with grads=True) from source, a float64 array as long.

    Lengths that differ raise ValueError before anything is set; an item that is not a Value
    raises TypeError, the items before it set.
    """
    ...

@final
class Replay:
    """A graph recorded by engine.compile(root), run again with forward() and backward()."""

    @property
    def root(self) -> Value: ...
    @property
    def nbytes(self) -> int:
        """Bytes of state the replay keeps beyond the Values themselves."""
        ...
    @property
    def _layers(self) -> list[tuple[int, int, int]]:
        """For tests: [(dots, nodes between them, weights per dot)] of each layer found."""
        ...
    @property
    def _by_depth(self) -> bool:
        """For tests: whether the tape is in by_depth's order (compile() keeps backward()'s
        order where that would change the order of some grad's contributions)."""
        ...
    @property
    def _blocks(self) -> list[tuple[int, int, int]]:
        """For tests: [(examples, dots per example, weights per dot)] of each block found."""
        ...
    @property
    def _runs(self) -> list[tuple[str, int]]:
        """For tests: [(op, nodes)] of each run found (see find_runs)."""
        ...
    @property
    def _in_place(self) -> list[tuple[bool, bool]]:
        """For tests: [(weights, inputs)] of each block found, whether it reads and writes them
        in place (see place_leaves) rather than gathered."""
        ...
    @property
    def _input_grads(self) -> list[bool]:
        """For tests: [whether it computes its inputs' grads] for each block found."""
        ...
    @property
    def _left_alone(self) -> list[Value]:
        """For tests: the Values whose grads backward() leaves as they are, in tape order."""
        ...
    def forward(self) -> float:
        """Recompute every node from the leaves' current data; returns the root's data."""
        ...
    def backward(self) -> None:
        """Set every node's grad as backward() on a freshly built graph would: the root's to 1,
        interior nodes' from zero, and leaves' accumulated into what they hold (zero them first,
        as upstream), but for leaves not among compile()'s inputs, whose grads stay as they are.
        Uses the values of the last forward() (or of the graph as built)."""
        ...
    def __len__(self) -> int: ...

def compile(root: Value, *, inputs: Union[Value, Iterable[Value], None] = None) -> Replay:
    """Record the graph below `root` for replay: returns a Replay, see help(Replay)."""
    ...

def grad(
    outputs: Union[Value, Iterable[Value]],
    inputs: Union[Value, Iterable[Value]],
    grad_outputs: Union[Value, _Number, Iterable[Union[Value, _Number]], None] = None,
    create_graph: bool = False,
) -> tuple[Value, ...]:
    """d(outputs)/d(input) for each input, as a tuple of Values; no node's grad changes."""
    ...

def logsumexp(values: Iterable[Union[Value, _Number]]) -> Value:
    """log(sum(exp(v) for v in values)), as one node, computed without overflow."""
    ...

def log_softmax(values: Iterable[Union[Value, _Number]]) -> list[Value]:
    """[v - logsumexp(values) for v in values]: the log-probabilities, as a list of Values."""
    ...

def cross_entropy(
    logits: Iterable[Union[Value, _Number]],
    target: Union[int, Iterable[Union[Value, _Number]]],
) -> Value:
    """-log(softmax(logits)[target]), the classification loss, as one node."""
    ...

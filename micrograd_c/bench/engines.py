"""Engines: what is compared. Each engine is micrograd's API (a Value, an MLP) on one
implementation; available_engines() says which run here and why the others can't."""
import functools
import importlib
import importlib.util
import math
import random

from micrograd_c import upstream

# The workloads whose graph keeps its structure from run to run, which a replay can run; the
# others time building the graph.
REPLAYED = ("train_step", "wide_mlp", "fastest_autograd", "digits_epoch")


def set_data(value, x):
    value.data = x


class Engine:
    """An engine to time: how to make a leaf, an MLP and a sum, and its GC setting.

    `exp` and `log` are functions (default: the Value's methods, if it has them). An engine that
    `replays` builds each workload's graph once and replays it (engine.compile); a
    `forward_only` one has no autograd (nor relu(): `relu` is a function). `cross_entropy(logits,
    one_hot_targets)` is a batch's
    mean softmax cross-entropy and `gradient_graph(output, inputs)` the gradients as a graph
    that can be differentiated again (None: the engine has none); `set_data(value, x)` sets a
    parameter's number. `batched` is not a scalar engine but a whole-batch MLP class (from
    micrograd_c.batched), run on digits_epoch. `only_on` lists the workloads an engine is run on
    (None: all); `note` is what a reader of its results should know."""

    def __init__(self, name, Value, MLP=None, gc_off=False, sum_values=sum, nodes=None,
                 same_value_as=None, exp=None, log=None, replays=False, forward_only=False,
                 only_on=None, note=None, cross_entropy=None, gradient_graph=None,
                 set_data=set_data, relu=None, batched=None):
        self.name = name
        self.Value = Value
        self.MLP = MLP
        self.external = False           # given by --engine: its failures are its results
        self.gc_off = gc_off
        self.sum_values = sum_values
        self.count_nodes = nodes or count_value_nodes
        self.same_value_as = same_value_as      # only its nn differs from this engine's
        self.exp = exp or getattr(Value, "exp", None)
        self.log = log or getattr(Value, "log", None)
        self.replays = replays
        self.forward_only = forward_only
        self.only_on = only_on
        self.note = note
        self.cross_entropy = cross_entropy
        self.gradient_graph = gradient_graph
        self.set_data = set_data
        self.relu = relu                        # None: the Value's relu() method
        self.batched = batched                  # a micrograd_c.batched MLP class, or None

    def runs(self, workload):
        return self.only_on is None or workload in self.only_on

    def duplicate(self, uses_nn):
        """Why this engine is not run on a workload (it would time another engine again), or None:
        one whose only difference is its nn runs where a workload uses an nn."""
        if self.same_value_as and not uses_nn:
            return f"same as {self.same_value_as} (only its nn differs)"
        return None


# relu on floats for the loss's relus (moons.loss's relu=): max(0.0, x), called from C as a
# Value's relu() is. FloatNeuron calls max(0.0, act) itself. Through a Python function, a
# frame more per relu, the demo's floor took 4% longer (measured side by side).
float_relu = functools.partial(max, 0.0)


class DispatchedFloat(float):
    """A float that takes none of the interpreter's shortcuts for floats, for the floor of
    bench.phases. CPython (3.11+) specialises `*` and `+` of two exact floats in the
    interpreter loop, and the built-in sum() of floats adds them in C doubles without making
    a float per term (compensated, from 3.12 on); an engine's Values get neither: each op is a
    dispatch through the type's number slots, and each term of a sum a node. Weights and
    inputs of this type (a subclass, so no longer exact floats) make every `*` with one and
    every neuron's sum() from its bias go the generic way: one addition per term, in turn,
    which gives upstream's numbers to the bit."""
    __slots__ = ()


def sum_one_by_one(values):
    """sum(values) as sum() of Values runs: one addition, and one float made, per term (from a
    start that is not an exact float, sum() takes no shortcut)."""
    return sum(values, DispatchedFloat(0.0))


class FloatNeuron:
    """Upstream's Neuron (micrograd/nn.py) written out on plain floats: the same weights drawn
    in the same order, the same generator sum from the bias; relu as max(0.0, x). `number` is
    the weights' and bias's type: float, or DispatchedFloat."""

    def __init__(self, nin, nonlin=True, number=float):
        self.w = [number(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = number(0.0)
        self.nonlin = nonlin

    def __call__(self, x):
        act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return max(0.0, act) if self.nonlin else act

    def parameters(self):
        return self.w + [self.b]


class FloatLayer:
    def __init__(self, nin, nout, **kwargs):
        self.neurons = [FloatNeuron(nin, **kwargs) for _ in range(nout)]

    def __call__(self, x):
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]


class FloatMLP:
    def __init__(self, nin, nouts, number=float):
        sz = [nin] + nouts
        self.layers = [FloatLayer(sz[i], sz[i+1], nonlin=i != len(nouts)-1, number=number)
                       for i in range(len(nouts))]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]


def count_value_nodes(*roots):
    """Nodes of a graph of micrograd-style Values (anything with _prev)."""
    seen, todo = set(), list(roots)
    while todo:
        v = todo.pop()
        if id(v) not in seen:
            seen.add(id(v))
            todo.extend(v._prev)
    return len(seen)


def count_torch_nodes(*roots):
    """Autograd nodes (grad_fn objects and leaf accumulators) of a 0-d tensor graph."""
    seen, todo = set(), [root.grad_fn for root in roots]
    while todo:
        fn = todo.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            todo.extend(next_fn for next_fn, _ in fn.next_functions)
    return len(seen)


def torch_engine():
    import torch

    # One thread, as for every engine here: its idle pool threads otherwise spin on the other
    # core for a while after each op (measured: plain floats right after torch's turn ran at 60%
    # of their speed, so every ratio against them was off).
    torch.set_num_threads(1)

    class TorchEngine:                       # micrograd's engine module, as upstream's nn sees it
        @staticmethod
        def Value(x):
            return torch.tensor(float(x), dtype=torch.float64, requires_grad=True)

    MLP = None
    if upstream.installed():
        class TorchMLP(upstream.nn_on(TorchEngine).MLP):
            def zero_grad(self):             # a tensor's grad is a tensor or None, never 0
                for p in self.parameters():
                    p.grad = None
        MLP = TorchMLP

    def cross_entropy(logits, targets):
        # One node for the batch's loss, as micrograd_c's engine.cross_entropy is one per example:
        # the loss is 34 of a batch's ~157,000 nodes; the MLP stays 0-d tensors.
        return torch.nn.functional.cross_entropy(torch.stack([torch.stack(z) for z in logits]),
                                                 torch.tensor(targets, dtype=torch.float64))

    def gradient_graph(output, inputs):      # None for an input the output does not depend on
        return torch.autograd.grad(output, inputs, create_graph=True, allow_unused=True)

    def set_data(tensor, x):                 # tensor.data = x wants a tensor
        tensor.data.fill_(x)

    return Engine("torch", TorchEngine.Value, MLP, nodes=count_torch_nodes, exp=torch.Tensor.exp,
                  log=torch.Tensor.log, cross_entropy=cross_entropy,
                  gradient_graph=gradient_graph, set_data=set_data)


def module_engine(path):
    """An engine given by module path: a module with Value (or an .engine submodule with it),
    and MLP (or an .nn submodule with it); without one, upstream's nn.py is run on its Value."""
    module = importlib.import_module(path)
    value_module = module if hasattr(module, "Value") else importlib.import_module(path + ".engine")
    MLP = getattr(module, "MLP", None)
    if MLP is None:
        try:
            MLP = importlib.import_module(path + ".nn").MLP
        except (ImportError, AttributeError):
            MLP = upstream.nn_on(value_module).MLP if upstream.installed() else None
    engine = Engine(path, value_module.Value, MLP)
    engine.external = True
    return engine


def builtin_engines():
    """{name: function making the Engine, or the reason it can't run here}."""
    import micrograd_c.engine
    import micrograd_c.nn

    def gradient_graph(output, inputs):
        return micrograd_c.engine.grad(output, inputs, create_graph=True)

    # what micrograd_c's engines share, whichever nn builds the graph
    ours = dict(cross_entropy=micrograd_c.nn.cross_entropy, gradient_graph=gradient_graph)
    makers = {
        "micrograd_c": lambda: Engine("micrograd_c", micrograd_c.engine.Value, micrograd_c.nn.MLP,
                                      sum_values=micrograd_c.engine.sum, **ours),
        "micrograd_c-replay": lambda: Engine(
            "micrograd_c-replay", micrograd_c.engine.Value, micrograd_c.nn.MLP,
            sum_values=micrograd_c.engine.sum, replays=True, only_on=REPLAYED,
            note=f"micrograd_c, each graph built and compiled once, a run replays it "
                 f"(forward() and backward()); on {', '.join(REPLAYED)}; the MLPs' graphs "
                 f"compiled with inputs=the parameters (the only grads a step needs)", **ours),
        "floats": lambda: Engine(
            "floats", float, FloatMLP, exp=math.exp, log=math.log, forward_only=True,
            relu=float_relu, only_on=("train_step", "wide_mlp", "fastest_autograd"),
            nodes=lambda *roots: None,
            note="the same Python on plain floats, forward only, no autograd (upstream's nn.py "
                 "written out on floats, relu as max(0.0, x)): the floor of any engine whose "
                 "graph Python rebuilds, and below its reach in part (the interpreter's "
                 "shortcuts for floats: python -m micrograd_c.bench.phases times the floor "
                 "without them); on train_step, wide_mlp and fastest_autograd"),
    }
    if upstream.installed():
        import micrograd.engine
        import micrograd.nn
        makers["micrograd_c-unfused"] = lambda: Engine(
            "micrograd_c-unfused", micrograd_c.engine.Value,
            upstream.nn_on(micrograd_c.engine).MLP, same_value_as="micrograd_c", **ours)
        makers["micrograd"] = lambda: Engine("micrograd", micrograd.engine.Value, micrograd.nn.MLP)
        makers["micrograd-nogc"] = lambda: Engine("micrograd-nogc", micrograd.engine.Value,
                                                  micrograd.nn.MLP, gc_off=True)
    else:
        for name in ("micrograd_c-unfused", "micrograd", "micrograd-nogc"):
            makers[name] = upstream.missing()
    has_torch = importlib.util.find_spec("torch") is not None
    makers["torch"] = torch_engine if has_torch else "torch is not installed"
    import micrograd_c.batched
    makers["numpy"] = lambda: Engine(
        "numpy", None, batched=micrograd_c.batched.NumpyMLP, only_on=("digits_epoch",),
        note="the digits MLP written by hand in numpy: matrix products over the whole batch, "
             "float64, forward, backward and SGD (micrograd_c.batched); on digits_epoch")
    makers["torch-tensors"] = "torch is not installed"
    if has_torch:
        makers["torch-tensors"] = lambda: Engine(
            "torch-tensors", None, batched=micrograd_c.batched.TorchMLP,
            only_on=("digits_epoch",),
            note="the digits MLP as torch.nn.Linear layers over the whole batch, float64, one "
                 "thread, torch.optim.SGD (micrograd_c.batched); on digits_epoch")
    return makers


BUILTIN = ("micrograd_c", "micrograd_c-unfused", "micrograd_c-replay", "micrograd", "micrograd-nogc",
           "torch", "floats", "numpy", "torch-tensors")


def available_engines(names=None, modules=()):
    """Returns (engines, skipped): the engines that can run here, and {name: reason} for the
    rest. `names` picks built-in engines in the order given (None: all); `modules` adds engines
    by module path."""
    makers = builtin_engines()
    engines, skipped = [], {}
    given = list(BUILTIN if names is None else names) + list(modules)
    twice = sorted({name for name in given if given.count(name) > 1})
    if twice:                           # one row per name in the tables
        raise ValueError(f"engine {twice[0]!r} given twice (or by --engine with a built-in "
                         "engine's name)")
    for name in BUILTIN if names is None else names:
        if name not in makers:
            raise ValueError(f"unknown engine {name!r}; built in: {', '.join(BUILTIN)} "
                             "(name any other by module path with --engine)")
        if isinstance(makers[name], str):
            skipped[name] = makers[name]
        else:
            engines.append(makers[name]())
    for path in modules:
        try:
            engines.append(module_engine(path))
        except Exception as error:      # its own code, whatever it raises: the others still run
            skipped[path] = f"cannot use it: {type(error).__name__}: {error}"
    return engines, skipped

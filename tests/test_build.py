"""The built extension: what setup.py decides per compiler and C library, and the stubs that
describe it. Oracles: the C library this process has loaded (/proc/self/maps), Python's own
floats (which round every product before adding it) and float **, and the extension's own
introspection (docstrings, signatures) for the .pyi stub shipped beside it."""
import ast
import inspect
import os
import pathlib
import platform
import random
import struct
import sys

import pytest

from helpers import block_kernels
from micrograd_c import engine
from micrograd_c.engine import Value


# -- numbers to the bit whatever the platform ---------------------------------------------------

def loaded_c_library():
    """'glibc' or 'musl' if this process runs on one (Linux), else None: what is loaded, not
    what setup.py inferred when it built the engine."""
    if not sys.platform.startswith("linux"):
        return None
    with open("/proc/self/maps") as maps:
        mapped = maps.read()
    if "/ld-musl-" in mapped or "/libc.musl-" in mapped:
        return "musl"
    if "/libc.so.6" in mapped or "/libc-2." in mapped:
        return "glibc"
    return None


def test_the_pow_shortcut_is_built_only_where_pow_is_known_to_err_by_at_most_054_ulp():
    # power()'s exact shortcuts for x ** -1 and x ** -2 give pow's own bits only where pow
    # errs by at most 0.54 ulp: glibc's and musl's. Elsewhere (macOS, Windows' UCRT, another C
    # library) the build must call pow itself.
    assert engine._POW_SHORTCUT == (loaded_c_library() in ("glibc", "musl")), loaded_c_library()


def double(bits):
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def bits(x):
    return struct.pack("<d", x)


def test_power_gives_the_bits_of_float_pow_at_its_edges_and_in_every_binade():
    # tests/test_floats.py checks random doubles; these are where a shortcut can go wrong: the
    # edges of its ranges (1e-150, 1e150 for ** -1, 1e-75, 1e75 for ** -2 and ** 2) and of the
    # normal range, powers of two and their neighbours, and every binade's random mantissas.
    rng = random.Random(16)
    xs = []
    for edge in (1e-150, 1e150, 1e-75, 1e75, 2.0 ** -1022, 1.0, 2.0, 0.5, 3.0):
        (center,) = struct.unpack("<Q", struct.pack("<d", edge))
        xs += [double(center + k) for k in range(-2_000, 2_001)]
    xs += [double((rng.randrange(1, 2047) << 52) | rng.getrandbits(52)) for _ in range(450_000)]
    xs += [2.0 ** e for e in range(-1074, 1024)]
    checked = 0
    for x in xs:
        for x in (x, -x):
            for b in (-1.0, -2.0, 2.0, 1.0):
                try:
                    expected = x ** b                 # Python's float **: the C library's pow
                except (OverflowError, ZeroDivisionError):
                    continue
                assert bits(engine._power(x, b)) == bits(expected), (x, b)
                checked += 1
    assert checked > 1_000_000


# a * b rounds to 1.0 (the exact 1 - 2**-54 is a tie, to even), so a * b - 1 is 0.0 with two
# roundings and -2**-54 with one (a fused multiply-add)
A, B = 1.0 + 2.0 ** -27, 1.0 - 2.0 ** -27


def test_forward_products_are_rounded_before_they_are_added():
    assert A * B - 1.0 == 0.0                                    # Python: two roundings
    assert engine.dot([A], [B], -1.0).data == 0.0
    assert engine.dot([Value(A)], [Value(B)], Value(-1.0)).data == 0.0
    rng = random.Random(3)
    for _ in range(2_000):
        ws = [rng.uniform(-2, 2) for _ in range(5)]
        xs = [rng.uniform(-2, 2) for _ in range(5)]
        bias = rng.uniform(-2, 2)
        expected = bias
        for w, x in zip(ws, xs):
            expected = expected + w * x
        assert bits(engine.dot(ws, xs, bias).data) == bits(expected)


def test_backward_rounds_each_contribution_before_adding_it_to_a_grad():
    # x.grad starts at -1, and backward() adds A * B into it: 0.0 as floats add, on every path
    for path in ("backward", "replay", "dot"):
        x, w, v = Value(1.0), Value(A), Value(B)
        y = engine.dot([x], [w]) * v if path == "dot" else x * w * v
        x.grad = -1.0
        if path == "replay":
            step = engine.compile(y)
            step.forward()
            step.backward()
        else:
            y.backward()
        assert x.grad == -1.0 + A * B == 0.0, (path, x.grad)


@pytest.mark.parametrize("m", [2, 5])
def test_a_replayed_block_rounds_like_floats_in_every_variant_of_its_kernels(m):
    # Four examples through four neurons: one block (src/replay.pxi), whose kernels are vector
    # code or plain C (MICROGRAD_C_SCALAR=1, as CI builds the sdist), as this build says, and
    # AVX where the CPU has it (chosen then; each variant is tried). Each dot is -1.0 + A * B +
    # 0.0 * B..., 0.0 as floats add; each input's grad starts at -1.0 and gets 0.0 * B three
    # times, then A * B: 0.0 too. (m = 5: four terms side by side, then one.)
    scalar = os.environ.get("MICROGRAD_C_SCALAR", "") not in ("", "0")
    machine = platform.machine().lower()
    vector_target = machine in ("x86_64", "amd64", "aarch64", "arm64")
    assert engine._vector_kernels == (vector_target and not scalar)
    build = "plain C" if scalar or not vector_target else \
        "sse2" if machine in ("x86_64", "amd64") else "neon"
    assert set(engine._kernel_sets()) - {"avx"} == {build}
    for kernels in engine._kernel_sets():
        with block_kernels(kernels):
            weights = [[Value(A if n == 0 and i == 0 else 0.0) for i in range(m)]
                       for n in range(4)]
            inputs = [[Value(B) for _ in range(m)] for _ in range(4)]
            dots = [engine.dot(w, x, -1.0) for x in inputs for w in weights]
            step = engine.compile(engine.sum(dots) * B)
            assert step._blocks == [(4, 4, m)]
            step.forward()
            assert [dot.data for dot in dots] == [-1.0 + A * B, -1.0, -1.0, -1.0] * 4
            assert dots[0].data == 0.0
            for x in inputs:
                x[0].grad = -1.0
            step.backward()
            assert [x[0].grad for x in inputs] == [-1.0 + A * B] * 4 == [0.0] * 4, kernels


# -- the .pyi stub, the docstrings and the signatures agree -------------------------------------
# IDEs and type checkers read micrograd_c/engine.pyi; help() reads the extension itself. Stubs
# and runtime drift apart silently (across Python versions too: the signatures of compiled
# methods come from Cython and CPython), so they are compared here on the engine as built.

STUB = ast.parse(pathlib.Path(engine.__file__).with_name("engine.pyi").read_text())

# Public names of the extension that the stub leaves out on purpose.
NOT_IN_STUB = {
    "BackwardStep": "the type of v._backward, which the stub types as Callable[[], None]",
    "Contributions": "grad()'s bookkeeping while it builds a gradient graph; never returned",
    "OP_NAMES": "the op codes' upstream spellings, read through v._op",
}


def stub_all(body):
    for node in body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__all__"]:
            return ast.literal_eval(node.value)
    return None


def stub_members(body):
    """{name: node} of the functions, classes, properties and attributes a stub body declares."""
    members = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            members[node.name] = node
        elif isinstance(node, ast.AnnAssign):
            members[node.target.id] = node
    return members


def is_property(node):
    return isinstance(node, ast.FunctionDef) and any(
        isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)


def summary(doc):
    """A docstring's first paragraph, its lines joined: what the stub repeats."""
    return " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())


STUB_MODULE = stub_members(STUB.body)
STUB_CLASSES = {name: stub_members(node.body) for name, node in STUB_MODULE.items()
                if isinstance(node, ast.ClassDef)}


def test_the_stub_declares_what_the_extension_has():
    runtime = {name for name, obj in vars(engine).items() if not name.startswith("_")
               and not inspect.ismodule(obj)}
    assert set(STUB_MODULE) - runtime == set(), "declared in the stub, missing in the extension"
    assert runtime - set(STUB_MODULE) - set(NOT_IN_STUB) == set(), "missing in the stub"
    assert set(NOT_IN_STUB) <= runtime
    assert stub_all(STUB.body) == engine.__all__          # what `import *` gives
    for name, members in STUB_CLASSES.items():
        cls = getattr(engine, name)
        # what the class adds beyond object: public names and operators; pickling and
        # Cython's own slots are not for type checkers
        own = {n for n in vars(cls) if (not n.startswith("_") or not hasattr(object, n))
               and n not in ("__reduce__", "__setstate__", "__pyx_vtable__", "__new__")}
        assert set(members) - set(dir(cls)) == set(), (name, "declared, missing")
        assert own - set(members) == set(), (name, "missing in the stub")


def stub_parameters(function):
    """[(name, kind, default)] of a stub function, self dropped."""
    args = function.args
    plain = [(a, inspect.Parameter.POSITIONAL_ONLY) for a in args.posonlyargs]
    plain += [(a, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a in args.args]
    defaults = [inspect.Parameter.empty] * (len(plain) - len(args.defaults))
    defaults += [ast.literal_eval(d) for d in args.defaults]
    parameters = [(a.arg, kind, default) for (a, kind), default in zip(plain, defaults)]
    parameters += [(a.arg, inspect.Parameter.KEYWORD_ONLY,
                    inspect.Parameter.empty if d is None else ast.literal_eval(d))
                   for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    return parameters[1:] if parameters and parameters[0][0] == "self" else parameters


def runtime_parameters(obj):
    """[(name, kind, default)] as help() shows them, or None where the extension gives none
    (binary operators: CPython's slot wrappers carry no signature)."""
    try:
        signature = inspect.signature(obj)
    except ValueError:
        return None
    parameters = [(p.name, p.kind, p.default) for p in signature.parameters.values()]
    return parameters[1:] if parameters and parameters[0][0] == "self" else parameters


def same_parameters(stub, runtime):
    # a positional-only parameter's name is nobody's business, its place and default are
    if len(stub) != len(runtime):
        return False
    for (name, kind, default), (rname, rkind, rdefault) in zip(stub, runtime):
        if kind != rkind or default != rdefault:
            return False
        if kind != inspect.Parameter.POSITIONAL_ONLY and name != rname:
            return False
    return True


def callables():
    """(where, stub node, runtime object) for every function and method the stub declares."""
    for name, node in STUB_MODULE.items():
        if isinstance(node, ast.FunctionDef):
            yield name, node, getattr(engine, name)
    for cls_name, members in STUB_CLASSES.items():
        cls = getattr(engine, cls_name)
        for name, node in members.items():
            if isinstance(node, ast.FunctionDef) and not is_property(node):
                # __init__ is a slot wrapper; the class carries the signature help() shows
                yield f"{cls_name}.{name}", node, cls if name == "__init__" else vars(cls)[name]


def test_signatures_in_the_stub_are_those_help_shows():
    compared = []
    for where, node, obj in callables():
        runtime = runtime_parameters(obj)
        if runtime is None:
            continue
        assert same_parameters(stub_parameters(node), runtime), (where, stub_parameters(node),
                                                                 runtime)
        compared.append(where)
    # the module's functions, Value's constructor and methods, Replay's: not a vacuous pass
    assert {"dot", "grad", "Value.__init__", "Value.backward", "Value.__pow__",
            "Replay.forward"} <= set(compared), compared


def test_values_signature_is_the_constructors():
    # help(Value) shows the signature written in Value's docstring: it must be the one
    # __init__ takes, keywords included
    parameters = inspect.signature(Value).parameters
    assert list(parameters) == ["data", "_children", "_op", "label"]
    v = Value(**{name: 2.5 if p.default is p.empty else p.default
                 for name, p in parameters.items()})
    assert (v.data, v._children, v.label) == (2.5, (), "")
    with pytest.raises(TypeError):
        Value(2.5, lable="typo")


def test_the_stubs_docstrings_are_the_extensions_summaries():
    documented = []
    for name, node in STUB_MODULE.items():
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            documented.append((name, node, getattr(engine, name).__doc__))
    for cls_name, members in STUB_CLASSES.items():
        for name, node in members.items():
            runtime = vars(getattr(engine, cls_name)).get(name)
            if isinstance(node, ast.FunctionDef) and runtime is not None and (
                    is_property(node) or type(runtime).__name__ != "wrapper_descriptor"):
                documented.append((f"{cls_name}.{name}", node, runtime.__doc__))
    for where, node, doc in documented:
        if doc:            # the operators' slots have no docstring of their own
            assert summary(ast.get_docstring(node)) == summary(doc), where
    assert len([d for _, _, d in documented if d]) >= 20


def test_attributes_the_stub_lets_you_set_can_be_set_and_properties_cannot():
    x = Value(1.5)
    instances = {"Value": x, "Replay": engine.compile(x * 2.0)}
    for cls_name, members in STUB_CLASSES.items():
        instance = instances[cls_name]
        for name, node in members.items():
            if isinstance(node, ast.AnnAssign) and name != "__dict__":
                setattr(instance, name, getattr(instance, name))
            elif is_property(node):
                with pytest.raises(AttributeError):
                    setattr(instance, name, getattr(instance, name))

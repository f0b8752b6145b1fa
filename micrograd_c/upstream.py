"""Access to upstream micrograd (PyPI `micrograd`), the oracle for tests and the bench baseline."""
import importlib.util
import sys


def installed():
    """True if upstream micrograd can be imported."""
    return importlib.util.find_spec("micrograd") is not None


def nn_on(engine):
    """Upstream's micrograd/nn.py, its file unchanged, run with `engine` as micrograd.engine.

    `engine` is a module with a Value class, e.g. micrograd_c.engine. Returns a fresh module
    holding upstream's Module, Neuron, Layer and MLP built on engine.Value.
    """
    spec = importlib.util.find_spec("micrograd.nn")
    if spec is None:
        raise ModuleNotFoundError("upstream micrograd is not installed: pip install micrograd==0.1.0")
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("micrograd.engine")
    sys.modules["micrograd.engine"] = engine
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["micrograd.engine"]
        else:
            sys.modules["micrograd.engine"] = saved
    return module

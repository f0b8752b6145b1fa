"""Access to upstream micrograd (PyPI `micrograd`), the oracle for tests and the bench baseline."""
import importlib.util
import sys


NOT_INSTALLED = "upstream micrograd is not installed (pip install micrograd==0.1.0)"
ALIASED = ("`micrograd` is micrograd_c in this process (micrograd_c.run.install()): run "
           "without it to compare with upstream")


def missing():
    """Why upstream micrograd can't be used here (NOT_INSTALLED, ALIASED), or None if it can.
    Aliased by micrograd_c.run.install(), `micrograd` is micrograd_c: timed against itself."""
    module = sys.modules.get("micrograd")
    if module is not None and getattr(module, "__name__", "") == "micrograd_c":
        return ALIASED
    if importlib.util.find_spec("micrograd") is None:
        return NOT_INSTALLED
    return None


def installed():
    """True if upstream micrograd can be imported, as itself."""
    return missing() is None


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

"""micrograd_c: Karpathy's micrograd on a compiled engine. Same API, same numbers, faster.

    from micrograd_c.engine import Value     # instead of micrograd.engine
"""
__version__ = "0.1.0"

try:
    from micrograd_c.engine import Value
except ModuleNotFoundError as error:  # pragma: no cover - only in an unbuilt source tree
    if error.name != "micrograd_c.engine":
        raise
    raise ImportError(
        f"micrograd_c's compiled engine is not built in {__path__[0]}. "
        "Build it in place with `pip install -e .`, or run from outside the source tree "
        "to use an installed copy."
    ) from error

__all__ = ["Value", "__version__"]

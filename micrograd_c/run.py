"""Run unmodified micrograd code on micrograd_c.

    python -m micrograd_c.run script.py [args ...]
    python -m micrograd_c.run -m package.module [args ...]

`micrograd`, `micrograd.engine` and `micrograd.nn` then resolve to micrograd_c's modules. In a
notebook, do the same before the first `import micrograd`:

    import micrograd_c.run
    micrograd_c.run.install()
"""
import importlib.util
import os
import runpy
import sys
import warnings

ALIASES = ("micrograd", "micrograd.engine", "micrograd.nn")
_saved = {}


def install():
    """Make `import micrograd`, `micrograd.engine` and `micrograd.nn` give micrograd_c's modules."""
    import micrograd_c
    import micrograd_c.engine
    import micrograd_c.nn

    ours = {"micrograd": micrograd_c, "micrograd.engine": micrograd_c.engine,
            "micrograd.nn": micrograd_c.nn}
    if any(sys.modules.get(name) not in (None, ours[name]) for name in ALIASES):
        warnings.warn("upstream micrograd was imported before micrograd_c.run.install(): names "
                      "bound from it earlier still refer to upstream", stacklevel=2)
    for name in ALIASES:
        if name not in _saved:
            _saved[name] = sys.modules.get(name)
        sys.modules[name] = ours[name]


def uninstall():
    """Undo install(): `micrograd` imports upstream again (where it is installed)."""
    for name, module in _saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
    _saved.clear()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or (argv[0] == "-m" and len(argv) < 2):
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    install()
    if argv[0] == "-m":
        try:
            found = importlib.util.find_spec(argv[1]) is not None
        except ImportError:                             # a package above it is missing
            found = False
        if not found:
            print(f"python -m micrograd_c.run: no module named {argv[1]!r}", file=sys.stderr)
            return 1                                    # as python -m says it
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        script = argv[0]
        if not os.path.exists(script):
            print(f"python -m micrograd_c.run: can't open file {script!r}", file=sys.stderr)
            return 2
        sys.argv = argv
        sys.path[0] = os.path.dirname(os.path.abspath(script))    # as `python script.py` does
        runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())

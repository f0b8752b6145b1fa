"""python -m micrograd_c.run: unmodified micrograd scripts run on micrograd_c."""
import subprocess
import sys
import textwrap
import warnings

import micrograd_c.engine
import micrograd_c.nn
from micrograd_c import run

SCRIPT = textwrap.dedent("""
    import sys
    import micrograd
    from micrograd.engine import Value
    from micrograd.nn import MLP
    from helper import double          # a module beside the script, as `python script.py` finds
    x = Value(2.0)
    y = (x * x).relu()
    y.backward()
    print(Value.__module__, MLP.__module__, micrograd.__name__, sys.argv[1:], double(x.grad))
""")


def run_module(*args, cwd):
    return subprocess.run([sys.executable, "-m", "micrograd_c.run", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_script_runs_on_micrograd_c(tmp_path):
    (tmp_path / "train.py").write_text(SCRIPT)
    (tmp_path / "helper.py").write_text("def double(v):\n    return 2 * v\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_module(str(tmp_path / "train.py"), "a", "--b", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["micrograd_c.engine", "micrograd_c.nn", "micrograd_c",
                                     "['a',", "'--b']", "8.0"]


def test_module_mode(tmp_path):
    (tmp_path / "helper.py").write_text("def double(v):\n    return 2 * v\n")
    (tmp_path / "trainmod.py").write_text(SCRIPT)
    result = run_module("-m", "trainmod", "x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["micrograd_c.engine", "micrograd_c.nn"]


def test_missing_script_and_usage(tmp_path):
    assert run_module("nope.py", cwd=tmp_path).returncode == 2
    for name in ("nosuch_module_x", "nosuch_package_x.mod"):     # a message, as python -m's
        missing = run_module("-m", name, cwd=tmp_path)
        assert missing.returncode == 1 and "no module named" in missing.stderr
        assert "Traceback" not in missing.stderr
    assert run_module(cwd=tmp_path).returncode == 2
    assert "install()" in run_module("--help", cwd=tmp_path).stdout


def test_install_and_uninstall_in_process():
    before = sys.modules.get("micrograd.engine")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.install()
    # a warning exactly when upstream was imported first: names bound from it stay upstream's
    assert len(caught) == (before is not None)
    try:
        import micrograd.engine
        import micrograd.nn
        assert micrograd.engine is micrograd_c.engine and micrograd.nn is micrograd_c.nn
    finally:
        run.uninstall()
    assert sys.modules.get("micrograd.engine") is before


def test_while_installed_nothing_is_timed_as_upstream(capsys):
    # `micrograd` aliased to micrograd_c: a comparison "against upstream" timed micrograd_c
    # against itself (1x), silently
    from micrograd_c import demo, upstream
    from micrograd_c.bench import engines
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run.install()
    try:
        assert upstream.missing() == upstream.ALIASED and not upstream.installed()
        makers = engines.builtin_engines()
        assert makers["micrograd"] == makers["micrograd-nogc"] == upstream.ALIASED
        assert demo.main(["--steps", "2", "--no-plot"]) == 0
        assert "no speed comparison: `micrograd` is micrograd_c" in capsys.readouterr().out
    finally:
        run.uninstall()

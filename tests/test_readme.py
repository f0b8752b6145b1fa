"""README.md shows what the code does: every Python block that shows an output is run, and
prints exactly that. Two forms show output: doctest prompts (`>>> x` then its output), and a
script whose `print(...)` lines end in a comment with what they print."""
import contextlib
import doctest
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
PRINT_WITH_OUTPUT = re.compile(r"^\s*print\(.*\)\s*#\s?(?P<output>.*)$")


def python_blocks():
    """(line number, code) of each ```python block of the README."""
    text = README.read_text()
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)]


def shows_output(code):
    return ">>>" in code or any(PRINT_WITH_OUTPUT.match(line) for line in code.splitlines())


def test_the_readme_has_blocks_that_show_output():
    assert sum(shows_output(code) for _, code in python_blocks()) >= 1


@pytest.mark.parametrize("line,code", [b for b in python_blocks() if shows_output(b[1])],
                         ids=lambda b: f"line {b}" if isinstance(b, int) else "")
def test_readme_block_prints_what_it_shows(line, code):
    if ">>>" in code:
        test = doctest.DocTestParser().get_doctest(code, {}, f"README.md:{line}", str(README), line)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.failures == 0, f"README.md line {line}: see the doctest output above"
        return
    expected = [m.group("output") for m in map(PRINT_WITH_OUTPUT.match, code.splitlines()) if m]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"README.md:{line}", "exec"), {})
    assert printed.getvalue().splitlines() == expected

"""Dependencies run one way: tools (the demos, the bench) -> library (nn, optim, moons, digits,
batched, ...) -> engine, so that no import circle forms. Oracles: what importing the library
loads, in a fresh interpreter, and every import statement of its source, those inside functions
included (a function's import loads nothing until it is called)."""
import ast
import pathlib
import subprocess
import sys

import micrograd_c

PACKAGE = pathlib.Path(micrograd_c.__file__).parent
TOOLS = ("micrograd_c.demo", "micrograd_c.digits_demo", "micrograd_c.bench")
# every other module of the package is library: a new tool has to be named above
LIBRARY = {"micrograd_c." + path.stem: path for path in sorted(PACKAGE.glob("*.py"))
           if "micrograd_c." + path.stem not in TOOLS and path.stem != "__init__"}


def is_tool(module):
    return any(module == tool or module.startswith(tool + ".") for tool in TOOLS)


def imports(path, package):
    """The modules `path` names in an import statement, and what it imports from them."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:          # relative to `package`
                parent = package.rsplit(".", node.level - 1)[0]
                module = parent + "." + module if module else parent
            yield module
            yield from (module + "." + alias.name for alias in node.names)


def test_the_library_and_the_tools_are_where_they_are_said_to_be():
    assert {"micrograd_c.digits", "micrograd_c.nn", "micrograd_c.optim", "micrograd_c.moons",
            "micrograd_c.batched"} <= set(LIBRARY)
    assert (PACKAGE / "demo.py").exists() and (PACKAGE / "digits_demo.py").exists()
    assert (PACKAGE / "bench" / "__init__.py").exists()


def test_importing_the_library_loads_no_tool():
    code = "".join(f"import {module}\n" for module in LIBRARY)
    code += "import sys\nprint(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert set(LIBRARY) <= set(loaded)
    assert [module for module in loaded if is_tool(module)] == []


def test_no_library_module_imports_a_tool_even_inside_a_function():
    named = {module: [m for m in imports(path, "micrograd_c") if is_tool(m)]
             for module, path in LIBRARY.items()}
    assert {module: tools for module, tools in named.items() if tools} == {}


def test_the_bench_imports_no_demo():
    for path in (PACKAGE / "bench").glob("*.py"):
        named = [m for m in imports(path, "micrograd_c.bench")
                 if is_tool(m) and not m.startswith("micrograd_c.bench")]
        assert named == [], path.name

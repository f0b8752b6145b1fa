"""Builds the compiled engine. Metadata lives in pyproject.toml.

What depends on the compiler or the C library is decided here, once, and named for what it
guarantees: the compiler flags that keep float code bit-identical to Python's floats, and
whether the C library's pow is known to be accurate enough for the exact shortcuts in
src/floats.pxi. tests/test_build.py checks both guarantees on the built engine.

MICROGRAD_C_DEBUG=1 builds a debug variant: bounds and initialisation checks back on, line
tracing (for coverage and profilers), no optimisation, debug information, and an annotated
HTML of the C next to each .pyx (src/engine.html) showing where Python is called. Release
builds carry no debug information: it was 77% of the wheel users download (1,085 KB with
it, 245 KB without, manylinux x86-64).

MICROGRAD_C_SCALAR=1 builds the replay's block kernels (src/replay.pxi) in plain C where they
would use the target's two-double vector instructions: the same bits, slower. CI tests both.
"""
import os
import platform
import sys
import sysconfig
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

DEBUG = os.environ.get("MICROGRAD_C_DEBUG", "") not in ("", "0")
SCALAR = os.environ.get("MICROGRAD_C_SCALAR", "") not in ("", "0")

# Set once, here, for every module. cdivision stays off: x / 0 must raise as in Python.
directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "linetrace": DEBUG,
}

# Float code that computes what Python's floats compute, per compiler type (distutils' names):
# - No contraction of a * b + c into one fused multiply-add, which rounds once where Python's
#   floats round twice (dot() and every sum of products would give other numbers). GCC
#   contracts by default where the target has FMA (aarch64, x86 with -march=native) and
#   clang's default is -ffp-contract=on: -ffp-contract=off. MSVC's /fp:precise contracts
#   nothing from Visual Studio 2022 (17.0) on; older versions could, but only with FMA
#   instructions, which an x64 build without /arch:AVX2 doesn't have.
# - pow is the C library's, as for Python's float **: GCC folds pow(x, -1.0) into 1.0 / x,
#   which differs from glibc's pow in 0.08% of doubles (-fno-builtin-pow). /fp:precise makes
#   no transformation that could change a result.
# "unix" is GCC or clang (Linux, macOS), "mingw32" and "cygwin" are GCC.
GCC_LIKE = ["-ffp-contract=off", "-fno-builtin-pow"] + (["-O0", "-g3"] if DEBUG else ["-g0"])
COMPILE_FLAGS = {
    "unix": GCC_LIKE,
    "mingw32": GCC_LIKE,
    "cygwin": GCC_LIKE,
    "msvc": ["/fp:precise"] + (["/Od", "/Zi"] if DEBUG else []),
}
LINK_FLAGS = {"msvc": ["/DEBUG"] if DEBUG else []}

# Speed only, where the compiler takes them (GCC; clang would warn): a function called once is
# not inlined into its caller. GCC inlines the replay's layer and block routines (called once,
# each) into forward() and backward()'s loops over the tape, whose per-node code then ran 13-15%
# slower on a graph without layers (A. Rogozhnikov's, replayed; 5-13% on the MLPs' graphs:
# measured side by side in one process against a build with the flag).
OPTIONAL_FLAGS = {"unix": ["-fno-inline-functions-called-once"],
                  "mingw32": ["-fno-inline-functions-called-once"]}


class build_ext_per_compiler(build_ext):
    """Gives each extension the flags of the compiler that builds it, known once it is chosen."""

    def build_extensions(self):
        kind = self.compiler.compiler_type
        if kind not in COMPILE_FLAGS:
            raise RuntimeError(
                f"micrograd_c does not know how to keep the float arithmetic of a {kind!r} "
                f"compiler identical to Python's (it knows {', '.join(COMPILE_FLAGS)}); "
                "add its flags to COMPILE_FLAGS in setup.py")
        taken = [flag for flag in OPTIONAL_FLAGS.get(kind, []) if self.takes(flag)]
        for extension in self.extensions:
            extension.extra_compile_args += COMPILE_FLAGS[kind] + taken
            extension.extra_link_args += LINK_FLAGS.get(kind, [])
        super().build_extensions()

    def takes(self, flag):
        """Whether the compiler compiles a small C file with `flag` and without a warning. The
        compiler's complaint about a flag it lacks goes nowhere: a build log that said "error:
        optimization flag ... is not supported" would read as a failed build."""
        with tempfile.TemporaryDirectory() as folder:
            source = os.path.join(folder, "probe.c")
            with open(source, "w") as file:
                file.write("int probe(void) { return 0; }\n")
            saved = os.dup(2)
            try:
                with open(os.devnull, "w") as nowhere:
                    os.dup2(nowhere.fileno(), 2)
                self.compiler.compile([source], output_dir=folder,
                                      extra_postargs=[flag, "-Werror"])
            except CompileError:
                return False
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        return True


def pow_is_correctly_bounded():
    """Whether this platform's C library is known to give pow(x, y) within 0.54 ulp of x ** y,
    which the exact shortcuts for x ** -1 and x ** -2 in src/floats.pxi (power) rely on: glibc
    (IBM's correctly rounded pow before 2.28, ARM's pow, at most 0.54 ulp, since) and musl
    (ARM's pow). macOS's libm, Windows' UCRT and any other C library are unproven: there
    power() calls pow itself."""
    if not sys.platform.startswith("linux"):
        return False
    if platform.libc_ver()[0] == "glibc":
        return True
    return (sysconfig.get_config_var("HOST_GNU_TYPE") or "").endswith("-musl")


macros = [("MICROGRAD_C_POW_IS_CORRECTLY_BOUNDED", "1" if pow_is_correctly_bounded() else "0")]
if DEBUG:
    macros.append(("CYTHON_TRACE", "1"))
if SCALAR:
    macros.append(("MICROGRAD_C_SCALAR", "1"))

# Linked against libm by name, as CPython is: an extension that leaves exp, log and pow undefined
# and unversioned is bound to their oldest versions, which in glibc are the SVID compatibility
# wrappers, not the functions Python's floats and math module call.
extension = Extension(
    "micrograd_c.engine",
    ["src/engine.pyx"],
    libraries=[] if sys.platform == "win32" else ["m"],
    define_macros=macros,
)

# The engine's declarations live beside the package, in micrograd_c/engine.pxd, where Cython's
# own dependency check (which looks for a .pxd next to the .pyx) does not see them: a build after
# a change there alone reused the C of the last one.
stale = (os.path.exists("src/engine.c") and
         os.path.getmtime("micrograd_c/engine.pxd") > os.path.getmtime("src/engine.c"))

setup(
    ext_modules=cythonize([extension], compiler_directives=directives, annotate=DEBUG,
                          force=stale),
    cmdclass={"build_ext": build_ext_per_compiler},
)

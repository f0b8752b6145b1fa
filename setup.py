"""Builds the compiled engine. Metadata lives in pyproject.toml.

MICROGRAD_C_DEBUG=1 builds a debug variant: bounds and initialisation checks back on, line
tracing (for coverage and profilers), no optimisation, and an annotated HTML of the C next to
each .pyx (src/engine.html) showing where Python is called.
"""
import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("MICROGRAD_C_DEBUG", "") not in ("", "0")

# Set once, here, for every module. cdivision stays off: x / 0 must raise as in Python.
directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "linetrace": DEBUG,
}

# pow is always the C library's, as Python's float ** is: GCC would otherwise fold pow(x, -1.0)
# into 1.0 / x, which differs from glibc's pow in 0.08% of doubles (see src/ops.pxi, power).
# No contraction of a * b + c into one fused multiply-add either: GCC does it by default where
# the target has one (aarch64, or x86 with -march=native), and it rounds once where Python's
# floats round twice, so dot() and every sum of products would give other numbers.
# Linked against libm by name, as CPython is: an extension that leaves exp, log and pow undefined
# and unversioned is bound to their oldest versions, which in glibc are the SVID compatibility
# wrappers, not the functions Python's floats and math module call.
extension = Extension(
    "micrograd_c.engine",
    ["src/engine.pyx"],
    libraries=[] if sys.platform == "win32" else ["m"],
    define_macros=[("CYTHON_TRACE", "1")] if DEBUG else [],
    extra_compile_args=["-fno-builtin-pow", "-ffp-contract=off"] + (["-O0", "-g3"] if DEBUG else []),
)

setup(ext_modules=cythonize([extension], compiler_directives=directives, annotate=DEBUG))

import importlib.machinery
import os
import random
import sys
import zlib

import numpy as np
import pytest
from hypothesis import settings

import micrograd_c.engine

# Randomized tests are reproducible unless asked not to be. MICROGRAD_C_HYPOTHESIS picks:
# - "ci" (the default): hypothesis derandomized, each property test drawing the same examples
#   every run (a function of the test's source), no example database; Python's and numpy's
#   global random seeded per test from its name.
# - "random": new examples every run, for long local searches, from one seed per session that
#   the report prints, so that any failure can be replayed:
#       MICROGRAD_C_HYPOTHESIS=random MICROGRAD_C_EXAMPLES=20000 python -m pytest tests/test_fuzz.py
#   (--hypothesis-seed=N replays session N, and alone selects this profile).
# Either way a failing property test prints its example and a @reproduce_failure blob, and
# every failing test prints the command that reruns it.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("random", derandomize=False, print_blob=True)
PROFILES = ("ci", "random")
chosen = {}                            # the profile this session loaded


def profile(config):
    return config.getoption("hypothesis_profile") or chosen["profile"]


@pytest.hookimpl(tryfirst=True)       # before hypothesis' plugin, which reads the seed option
def pytest_configure(config):
    seeded = config.getoption("hypothesis_seed") is not None     # a seed asks for a random run
    name = os.environ.get("MICROGRAD_C_HYPOTHESIS", "random" if seeded else "ci")
    if name not in PROFILES:
        raise pytest.UsageError(
            f"MICROGRAD_C_HYPOTHESIS={name!r}: use one of {', '.join(PROFILES)}")
    settings.load_profile(name)       # --hypothesis-profile, if given, is loaded after this
    chosen["profile"] = name
    if name == "random" and not seeded:
        config.option.hypothesis_seed = str(random.SystemRandom().randrange(2**32))


def session_seed(config):
    """The seed of a random session (None for a derandomized one)."""
    if profile(config) != "random":
        return None
    return config.getoption("hypothesis_seed")


def pytest_report_header(config):
    seed = session_seed(config)
    if seed is None:
        how = "derandomized: the same examples every run"
    else:
        how = f"random examples, this session's from seed {seed} (--hypothesis-seed={seed})"
    return [f"micrograd_c.engine: {micrograd_c.engine.__file__}",
            f"randomized tests: profile {profile(config)!r}, {how}"]


@pytest.fixture(scope="session", autouse=True)
def compiled_engine():
    # The tests are about the compiled engine: make sure that is what they import.
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    assert micrograd_c.engine.__file__.endswith(suffixes), micrograd_c.engine.__file__


def seed_of(request):
    """The seed of Python's and numpy's global random for this test: a function of its file
    and name (and of the session's seed in a random session), not of what ran before it."""
    name = f"{request.node.path.name}::{request.node.name}:{session_seed(request.config)}"
    return zlib.crc32(name.encode())


@pytest.fixture(autouse=True)
def seeded_global_random(request):
    # Tests that draw from the global random without seeding it (nn's weights are drawn from
    # it, as upstream's) see the same numbers every run, whatever ran before them.
    seed = seed_of(request)
    random.seed(seed)
    np.random.seed(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        seed = session_seed(item.config)
        examples = os.environ.get("MICROGRAD_C_EXAMPLES")
        command = f"{sys.executable} -m pytest '{item.nodeid}'"
        if examples:
            command = f"MICROGRAD_C_EXAMPLES={examples} {command}"
        if seed is not None:
            command += f" --hypothesis-seed={seed}"
        report.sections.append(("reproduce", f"{command}\n(from the folder this run started in)"))

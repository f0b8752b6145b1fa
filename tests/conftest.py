import importlib.machinery

import pytest

import micrograd_c.engine


def pytest_report_header(config):
    return f"micrograd_c.engine: {micrograd_c.engine.__file__}"


@pytest.fixture(scope="session", autouse=True)
def compiled_engine():
    # The tests are about the compiled engine: make sure that is what they import.
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    assert micrograd_c.engine.__file__.endswith(suffixes), micrograd_c.engine.__file__

"""micrograd_c.viz.draw_dot: the trace_graph notebook's drawing, for any depth."""
import sys

import pytest

from micrograd_c.engine import Value
from micrograd_c.viz import draw_dot, trace

graphviz = pytest.importorskip("graphviz", reason="graphviz is in the test extra")


def test_draw_dot_shows_data_grad_and_ops():
    x = Value(2.0, label="x")
    y = Value(-3.0, label="y|{z}")
    out = (x * y + 1.0).relu()
    out.backward()
    dot = draw_dot(out)
    assert isinstance(dot, graphviz.Digraph)
    src = dot.source
    assert "x | data 2.0000 | grad 0.0000" in src
    assert r"y\|\{z\}" in src                     # record syntax escaped
    assert src.count("shape=record") == 5          # x, y, x*y, +1, relu
    assert "label=ReLU" in src and "label=\"*\"" in src


def test_deep_graphs_draw_without_recursion():
    x = Value(1.0)
    y = x
    for _ in range(5000):
        y = y * 1.0
    nodes, edges = trace(y)
    assert len(nodes) == 5001 and len(edges) == 5000
    assert draw_dot(y, rankdir="TB").source.count("shape=record") == 5001


def test_bad_rankdir_and_missing_graphviz(monkeypatch):
    with pytest.raises(ValueError):
        draw_dot(Value(1.0), rankdir="XY")
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(ImportError, match=r"micrograd_c\[viz\]"):
        draw_dot(Value(1.0))

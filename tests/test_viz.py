"""micrograd_c.viz.draw_dot: the trace_graph notebook's drawing, for any depth."""
import re
import shutil
import sys
import unicodedata
import warnings
import xml.etree.ElementTree as ET

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


def test_a_number_kept_in_an_op_is_drawn_with_it():
    # upstream draws x * 2.0 with a leaf Value(2.0); here the number is in the node: -x and
    # x * 2.0 were drawn alike
    x = Value(3.0, label="x")
    ops = {re.search(r'op" \[label=(.*?)\]', draw_dot(v).source).group(1)
           for v in (x * 2.0, -x, x + 1.5, 2.0 ** x, x ** 2, x * x)}
    assert ops == {'"* 2.0"', '"* -1.0"', '"+ 1.5"', '"2.0 **"', '"**2"', '"*"'}
    y = x * 2.0
    y._op = "double"                                # set by hand: drawn as set
    assert 'label=double' in draw_dot(y).source


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


# Labels and ops that DOT, graphviz records or the graphviz package would misread,
# each with the text the picture should show.
LABELS = {
    "nul\x00end": r"nul\x00end",
    "new\nline\ttab\x7f": r"new\nline\ttab\x7f",
    "trail\\": "trail\\",
    'q"uote\\"': 'q"uote\\"',
    "{rec|ord}<p>": "{rec|ord}<p>",
    "two  spaces \\N \\l Δé": "two  spaces \\N \\l Δé",
    "\ud800": r"\ud800",
}
OPS = {
    "my:op\\": "my:op\\",
    "a:b:c": "a:b:c",
    '"': '"',
    "{op}|": "{op}|",
    "\\": "\\",
    "<b>html</b>": "<b>html</b>",
    "two  sp": "two  sp",
    "\x00": r"\x00",
}


def weird_graph():
    """A chain through every op in OPS, each step also using one leaf labelled from LABELS."""
    leaves = [Value(float(i), label=label) for i, label in enumerate(LABELS)]
    v = leaves[0]
    for i, op in enumerate(OPS):
        v = Value(float(i), (v, leaves[(i + 1) % len(leaves)]), op)
    return v


def parse_dot(src):
    """{node id: label} and [(tail, head)] of draw_dot's DOT source."""
    nodes = dict(re.findall(r'^\t(.+?) \[label=("(?:[^"\\]|\\.)*"|\S+)[ \]]', src, re.M))
    return nodes, re.findall(r"^\t(.+) -> (.+)$", src, re.M)


def test_weird_labels_and_ops_keep_the_graph_and_its_text():
    root = weird_graph()
    values, _ = trace(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # e.g. graphviz's DotSyntaxWarning
        src = draw_dot(root).source
    assert not [c for c in src if unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n"]
    nodes, edges = parse_dot(src)
    assert len(nodes) == len(values) + len(OPS)
    assert len(edges) == len(set(edges)) == 3 * len(OPS)     # op -> value, 2 children -> op
    assert {end for edge in edges for end in edge} <= set(nodes)   # no stray or port ends
    for v in values:
        if v._op:
            (op_node,) = [tail for tail, head in edges if head == str(id(v))]
            children = {tail for tail, head in edges if head == op_node}
            assert children == {str(id(c)) for c in v._prev}
            # The text to show, quoted by graphviz's own rules (not as HTML, \ literal).
            assert nodes[op_node] == graphviz.quoting.quote(graphviz.escape(OPS[v._op]))
        else:
            assert not [edge for edge in edges if edge[1] == str(id(v))]
        # Record syntax left once escapes are dropped: label? | data | grad, in one { }.
        syntax = re.sub(r"\\.", "", nodes[str(id(v))][1:-1], flags=re.S)
        assert syntax.count("|") == 1 + bool(v.label)
        assert syntax.count("{") == syntax.count("}") == 1


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not on PATH")
def test_weird_labels_and_ops_render_as_written():
    root = weird_graph()
    svg = ET.fromstring(draw_dot(root).pipe(format="svg"))       # also: valid XML
    ns = {"svg": "http://www.w3.org/2000/svg"}
    groups = {cls: svg.findall(f".//svg:g[@class='{cls}']", ns) for cls in ("node", "edge")}
    values, _ = trace(root)
    assert len(groups["node"]) == len(values) + len(OPS)
    assert len(groups["edge"]) == 3 * len(OPS)                    # no edge to a stray node
    # Escaped spaces in records come out as no-break spaces.
    shown = sorted(t.text.replace("\xa0", " ").strip()
                   for g in groups["node"] for t in g.findall("svg:text", ns))
    assert [s for s in shown if not s.startswith(("data ", "grad "))] == sorted(
        [*LABELS.values(), *OPS.values()])

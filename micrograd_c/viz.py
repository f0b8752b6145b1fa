r"""Draw a Value's graph with graphviz, as micrograd's trace_graph notebook does.

    from micrograd_c.viz import draw_dot
    draw_dot(loss)              # a graphviz.Digraph; shows itself in Jupyter

Needs the graphviz Python package (pip install 'micrograd_c[viz]'), and Graphviz's `dot`
program to render the picture.

Labels and ops are drawn as their exact text, except that control characters (NUL, which
DOT cannot carry, newline, tab, ...) and lone surrogates show as Python escapes: \x00, \n.
"""
import re
import unicodedata

from micrograd_c.engine import Value, _constant


def trace(root):
    """The nodes and edges (child, parent) of the graph below root, found without recursion."""
    nodes, edges = set(), set()
    todo = [root]
    while todo:
        v = todo.pop()
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                edges.add((child, v))
                todo.append(child)
    return nodes, edges


def _text(s):
    """s for a DOT label: control characters and lone surrogates as visible escapes, like repr."""
    from graphviz import escape  # backslashes literal; never an <HTML> label
    return escape("".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cs") else c
                          for c in s))


def _record_text(s):
    # Braces, bars, angle brackets and spaces structure graphviz "record" labels.
    return re.sub(r"([{}|<> ])", r"\\\1", _text(s))


def op_text(node):
    """The node's _op, with the number it keeps instead of a leaf (upstream draws that leaf):
    x * 2.0 is '* 2.0', -x '* -1.0', x - 1 '+ -1.0', 2 ** x '2.0 **'."""
    op = node._op
    constant = _constant(node) if isinstance(node, Value) else None
    if constant is None or op not in ("+", "*", "**"):      # none, or an _op set by hand
        return op
    return f"{constant!r} {op}" if op == "**" else f"{op} {constant!r}"


def draw_dot(root, format="svg", rankdir="LR"):
    """A graphviz.Digraph of the graph below root: each node's label, data, grad and op.

    format: the output format when rendered (svg, png, ...); rankdir: 'LR' or 'TB'.
    """
    if rankdir not in ("LR", "TB"):
        raise ValueError(f"rankdir must be 'LR' or 'TB', not {rankdir!r}")
    try:
        from graphviz import Digraph
    except ImportError:
        raise ImportError("draw_dot needs the graphviz package: pip install 'micrograd_c[viz]' "
                          "(and Graphviz's `dot` program to render)") from None

    nodes, edges = trace(root)
    dot = Digraph(format=format, graph_attr={"rankdir": rankdir})
    for n in nodes:
        # Ids never contain user text: graphviz reads ':' in an edge end as a port.
        uid = str(id(n))
        fields = [_record_text(n.label)] if n.label else []
        fields += [f"data {n.data:.4f}", f"grad {n.grad:.4f}"]
        dot.node(name=uid, label="{ " + " | ".join(fields) + " }", shape="record")
        if n._op:
            dot.node(name=uid + "op", label=_text(op_text(n)))
            dot.edge(uid + "op", uid)
    for child, parent in edges:
        dot.edge(str(id(child)), str(id(parent)) + "op")
    return dot

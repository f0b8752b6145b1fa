"""Draw a Value's graph with graphviz, as micrograd's trace_graph notebook does.

    from micrograd_c.viz import draw_dot
    draw_dot(loss)              # a graphviz.Digraph; shows itself in Jupyter

Needs the graphviz Python package (pip install 'micrograd_c[viz]'), and Graphviz's `dot`
program to render the picture.
"""


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


def _record_text(text):
    # Characters that structure graphviz "record" labels.
    for ch in "\\{}|<>":
        text = text.replace(ch, "\\" + ch)
    return text


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
        uid = str(id(n))
        fields = [_record_text(n.label)] if n.label else []
        fields += [f"data {n.data:.4f}", f"grad {n.grad:.4f}"]
        dot.node(name=uid, label="{ " + " | ".join(fields) + " }", shape="record")
        if n._op:
            dot.node(name=uid + n._op, label=n._op)
            dot.edge(uid + n._op, uid)
    for child, parent in edges:
        dot.edge(str(id(child)), str(id(parent)) + parent._op)
    return dot

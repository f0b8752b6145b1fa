"""Reporting: the text table of results, one block per workload and size (or variant)."""
import textwrap

from micrograd_c.bench.measuring import SLOW_RUN_S, baselines, ratio_key
from micrograd_c.bench.workloads import PUBLISHED

TITLES = {
    "train_step": "train_step: MLP(2, [16, 16, 1]), 100 moons points, loss + backward + SGD",
    "chain": "chain: build and backward n multiplications",
    "expression": "expression: upstream's test_more_ops expression x 100",
    "wide_mlp": "wide_mlp: MLP(2, [64, 64, 1]), loss + backward + SGD",
    "fastest_autograd": "fastest_autograd: A. Rogozhnikov's scalar graph (\"Fastest Autograd in the "
                        "West\"), 10,000 ops, 17,600 values,\n  forward + backward, from inputs "
                        "i / 100 (not arange(100): written naively, softplus overflows exp there)",
    "memory": "memory: bytes per node of a chain",
    ("digits_epoch", "cross_entropy"): "digits_epoch: MLP(64, [32, 10]) on scikit-learn's digits, "
                                       "a step per batch of 32: softmax cross-entropy + backward + "
                                       "SGD",
    ("digits_epoch", "squared_error"): "digits_epoch, the loss upstream can express: squared error "
                                       "against one-hot (it has no exp() or log() for softmax)",
    ("grad_graph", "demo_loss"): "grad_graph: the demo's loss, MLP(2, [16, 16, 1]) on 100 moons "
                                 "points, built (forward),\n  then grad(loss, parameters, "
                                 "create_graph=True): the gradients as a graph",
    ("grad_graph", "fastest_autograd"): "grad_graph: Rogozhnikov's graph (fastest_autograd) built "
                                        "(forward), then grad(last value, the 100 inputs, "
                                        "create_graph=True)",
}
NOTES = {
    "fastest_autograd": f"published (M1 MacBook, 10k iterations): {PUBLISHED}",
    ("digits_epoch", "cross_entropy"):
        "an epoch is {batches_per_epoch} batches (1,437 training digits; the 29 left over join the "
        "next epoch's shuffle), a run {epochs} epochs (the demo's default): both are the median "
        "batch times batches, so each ratio holds for a batch, an epoch and a run alike. torch: "
        "the MLP on 0-d tensors (upstream's nn.py), its loss F.cross_entropy of the stacked "
        "logits, one node (micrograd_c: engine.cross_entropy, one node per example).",
    ("digits_epoch", "squared_error"):
        "squared error: the batch mean of sum((z - one_hot)**2), the same graph on every engine.",
    ("grad_graph", "demo_loss"):
        "grad/fwd: the gradient graph's time over the forward's, median of per-round ratios "
        "(reverse mode: a gradient costs a small constant, ~3, times its function's ops). "
        "torch: torch.autograd.grad(create_graph=True) on 0-d tensors, the MLP on upstream's "
        "nn.py: micrograd_c-unfused's graph, node for node. nodes: made by the forward; + grad: "
        "added by the gradient graph.",
    ("grad_graph", "fastest_autograd"):
        "the forward builds all 17,600 values; the gradient covers the 15,012 the last depends "
        "on (17 of the 100 inputs).",
}
RATIO_HEADERS = {"micrograd-nogc": "vs nogc"}


def spread_cell(record):
    """Half the interquartile range of its times; '-' for one time (no spread to tell)."""
    if len(record.get("times_s") or ()) < 2:
        return "-"
    return "±" + format(record["spread"], ".0%")


def format_time(seconds):
    if seconds >= 1000:
        return f"{seconds:,.0f} s"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def format_ratio(ratio):
    if ratio is None:
        return "-"
    return f"{ratio:.2g}x" if ratio < 0.1 else f"{ratio:,.1f}x" if ratio < 100 else f"{ratio:,.0f}x"


def columns(workload, variant=None, epochs=None):
    """(header, width, cell of a record) for the timed columns after the engine's name."""
    if workload == "grad_graph":             # a row is both phases: see by_engine()
        return [("forward", 11, lambda r: format_time(r["forward_s"])),
                ("grad graph", 12, lambda r: format_time(r["median_s"])),
                ("grad/fwd", 10, lambda r: format_ratio(r["times_forward"])),
                ("grad vs torch", 15, lambda r: format_ratio(r["ratio_vs_torch"])),
                ("spread", 9, spread_cell),
                ("nodes", 10, lambda r: f"{r['forward_nodes']:,}"),
                ("+ grad", 10, lambda r: f"{r['nodes']:,}")]
    if workload == "fastest_autograd":       # as published: seconds for 10k iterations
        times = [("per iteration", 15, lambda r: format_time(r["median_s"])),
                 ("10k iterations", 16, lambda r: format_time(r["median_s"] * 10_000))]
    elif workload == "digits_epoch":         # an epoch and a run: the median batch, times batches
        times = [("per batch", 11, lambda r: format_time(r["median_s"])),
                 ("epoch", 10, lambda r: format_time(r["median_s"] * r["batches_per_epoch"])),
                 (f"{epochs} epochs", 12,
                  lambda r: format_time(r["median_s"] * r["batches_per_epoch"] * r["epochs"]))]
    else:
        times = [("median", 11, lambda r: format_time(r["median_s"])),
                 ("ns/node", 10, lambda r: "-" if r["ns_per_node"] is None
                  else f"{r['ns_per_node']:,.0f}")]
    ratios = []
    for baseline in baselines(workload, variant):
        header = RATIO_HEADERS.get(baseline, f"vs {baseline}")
        ratios.append((header, max(10, len(header) + 2),
                       lambda r, key=ratio_key(baseline): format_ratio(r[key])))
    return times + ratios + [("spread", 9, spread_cell),
                             ("nodes", 12, lambda r: "-" if r["nodes"] is None
                              else f"{r['nodes']:,}")]


def by_engine(group):
    """grad_graph's records, one row per engine: the grad phase's, with the forward's time,
    nodes and spread beside."""
    rows = []
    for forward in (r for r in group if r["phase"] == "forward"):
        grad = next(r for r in group if r["engine"] == forward["engine"] and r["phase"] == "grad")
        row = dict(grad, forward_s=forward["median_s"], forward_nodes=forward["nodes"])
        if forward["status"] != "ok":
            row["status"] = forward["status"]
        elif grad["status"] == "ok":
            row["spread"] = max(forward["spread"], grad["spread"])
        rows.append(row)
    return rows


def timed_on_fewer(group):
    """A note naming the engines timed in fewer rounds than the others (slow ones), or None."""
    counts = {r["engine"]: len(r["times_s"]) for r in group if r["status"] == "ok"}
    fewer = [name for name, n in counts.items() if n < max(counts.values())]
    if not fewer:
        return None
    n = counts[fewer[0]]
    return (f"{', '.join(fewer)}: a batch takes over {SLOW_RUN_S:g} s, so timed on {n} "
            f"batch{'es' if n > 1 else ''} (the others on {max(counts.values())}); "
            "the epoch and run are extrapolated.")


def table_of(r):
    return r["workload"], r["size"], r.get("variant")


def report(records, skipped, notes=None, skipped_workloads=None):
    """The tables, then {engine: note}, {engine: why it was skipped} and {workload: why it was
    skipped}."""
    lines = []
    keys = []
    for r in records:
        if table_of(r) not in keys:
            keys.append(table_of(r))
    for workload, size, variant in keys:
        group = [r for r in records if table_of(r) == (workload, size, variant)]
        if workload == "wide_mlp":
            title = TITLES[workload] + f", {size} moons points"
        elif variant is not None:
            title = TITLES[workload, variant]
        else:
            title = TITLES[workload] + (f", n = {size:,}" if size and workload != "memory" else "")
        lines += ["", title]
        if workload == "memory":
            lines.append(f"  {'engine':<22}{'bytes/node':>12}  method (n = {size:,})")
            for r in group:
                if r["status"] == "ok":
                    lines.append(f"  {r['engine']:<22}{r['bytes_per_node']:>12,.0f}  {r['method']}")
                else:
                    lines.append(f"  {r['engine']:<22}  {r['status']}")
            continue
        table = columns(workload, variant, group[0].get("epochs"))
        lines.append(f"  {'engine':<22}" + "".join(f"{h:>{w}}" for h, w, _ in table))
        for r in by_engine(group) if workload == "grad_graph" else group:
            if r["status"] != "ok":
                lines.append(f"  {r['engine']:<22}  {r['status']}")
                continue
            lines.append(f"  {r['engine']:<22}" + "".join(f"{cell(r):>{w}}" for _, w, cell in table))
        note = NOTES.get((workload, variant), NOTES.get(workload))
        fewer = None
        if workload == "digits_epoch":      # its notes name the record's epoch sizes
            note, fewer = note.format(**group[0]), timed_on_fewer(group)
        for text in filter(None, [note, fewer]):
            lines.append(textwrap.fill(text, 100, initial_indent="  ", subsequent_indent="    "))
    if notes:
        lines += ["", "engines:"] + [textwrap.fill(f"{name}: {note}", 100, initial_indent="  ",
                                                   subsequent_indent="    ")
                                     for name, note in notes.items()]
    if skipped:
        lines += ["", "skipped engines:"] + [f"  {name}: {why}" for name, why in skipped.items()]
    if skipped_workloads:
        lines += ["", "skipped workloads:"] + [f"  {name}: {why}"
                                               for name, why in skipped_workloads.items()]
    return "\n".join(lines)

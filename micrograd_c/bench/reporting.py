"""Reporting: the text table of results, one block per workload and size."""
import textwrap

from micrograd_c.bench.measuring import baselines, ratio_key
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
}
NOTES = {"fastest_autograd": f"published (M1 MacBook, 10k iterations): {PUBLISHED}"}
RATIO_HEADERS = {"micrograd-nogc": "vs nogc"}


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


def columns(workload):
    """(header, width, cell of a record) for the timed columns after the engine's name."""
    if workload == "fastest_autograd":       # as published: seconds for 10k iterations
        times = [("per iteration", 15, lambda r: format_time(r["median_s"])),
                 ("10k iterations", 16, lambda r: format_time(r["median_s"] * 10_000))]
    else:
        times = [("median", 11, lambda r: format_time(r["median_s"])),
                 ("ns/node", 10, lambda r: f"{r['ns_per_node']:,.0f}")]
    ratios = []
    for baseline in baselines(workload):
        header = RATIO_HEADERS.get(baseline, f"vs {baseline}")
        ratios.append((header, max(10, len(header) + 2),
                       lambda r, key=ratio_key(baseline): format_ratio(r[key])))
    return times + ratios + [("spread", 9, lambda r: "±" + format(r["spread"], ".0%")),
                             ("nodes", 12, lambda r: f"{r['nodes']:,}")]


def report(records, skipped, notes=None):
    """The tables, then {engine: note} and {engine: why it was skipped}."""
    lines = []
    keys = []
    for r in records:
        if (r["workload"], r["size"]) not in keys:
            keys.append((r["workload"], r["size"]))
    for workload, size in keys:
        group = [r for r in records if (r["workload"], r["size"]) == (workload, size)]
        if workload == "wide_mlp":
            title = TITLES[workload] + f", {size} moons points"
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
        table = columns(workload)
        lines.append(f"  {'engine':<22}" + "".join(f"{h:>{w}}" for h, w, _ in table))
        for r in group:
            if r["status"] != "ok":
                lines.append(f"  {r['engine']:<22}  {r['status']}")
                continue
            lines.append(f"  {r['engine']:<22}" + "".join(f"{cell(r):>{w}}" for _, w, cell in table))
        if workload in NOTES:
            lines.append(textwrap.fill(NOTES[workload], 100, initial_indent="  ",
                                       subsequent_indent="    "))
    if notes:
        lines += ["", "engines:"] + [textwrap.fill(f"{name}: {note}", 100, initial_indent="  ",
                                                   subsequent_indent="    ")
                                     for name, note in notes.items()]
    if skipped:
        lines += ["", "skipped engines:"] + [f"  {name}: {why}" for name, why in skipped.items()]
    return "\n".join(lines)

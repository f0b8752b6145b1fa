"""Reporting: the text table of results, one block per workload and size."""
import textwrap


def format_time(seconds):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def format_ratio(ratio):
    return "-" if ratio is None else f"{ratio:,.1f}x" if ratio < 100 else f"{ratio:,.0f}x"


def report(records, skipped, notes=None):
    """The tables, then {engine: note} and {engine: why it was skipped}."""
    lines = []
    titles = {"train_step": "train_step: MLP(2, [16, 16, 1]), 100 moons points, loss + backward + SGD",
              "chain": "chain: build and backward n multiplications",
              "expression": "expression: upstream's test_more_ops expression x 100",
              "wide_mlp": "wide_mlp: MLP(2, [64, 64, 1]), loss + backward + SGD",
              "memory": "memory: bytes per node of a chain"}
    header = (f"  {'engine':<22}{'median':>11}{'ns/node':>10}{'vs micrograd':>14}"
              f"{'vs nogc':>10}{'spread':>9}{'nodes':>12}")
    keys = []
    for r in records:
        if (r["workload"], r["size"]) not in keys:
            keys.append((r["workload"], r["size"]))
    for workload, size in keys:
        group = [r for r in records if (r["workload"], r["size"]) == (workload, size)]
        if workload == "wide_mlp":
            title = titles[workload] + f", {size} moons points"
        else:
            title = titles[workload] + (f", n = {size:,}" if size and workload != "memory" else "")
        lines += ["", title]
        if workload == "memory":
            lines.append(f"  {'engine':<22}{'bytes/node':>12}  method (n = {size:,})")
            for r in group:
                if r["status"] == "ok":
                    lines.append(f"  {r['engine']:<22}{r['bytes_per_node']:>12,.0f}  {r['method']}")
                else:
                    lines.append(f"  {r['engine']:<22}  {r['status']}")
            continue
        lines.append(header)
        for r in group:
            if r["status"] != "ok":
                lines.append(f"  {r['engine']:<22}  {r['status']}")
                continue
            lines.append(f"  {r['engine']:<22}{format_time(r['median_s']):>11}"
                         f"{r['ns_per_node']:>10,.0f}{format_ratio(r['ratio_vs_micrograd']):>14}"
                         f"{format_ratio(r['ratio_vs_micrograd_nogc']):>10}"
                         f"{'±' + format(r['spread'], '.0%'):>9}{r['nodes']:>12,}")
    if notes:
        lines += ["", "engines:"] + [textwrap.fill(f"{name}: {note}", 100, initial_indent="  ",
                                                   subsequent_indent="    ")
                                     for name, note in notes.items()]
    if skipped:
        lines += ["", "skipped engines:"] + [f"  {name}: {why}" for name, why in skipped.items()]
    return "\n".join(lines)

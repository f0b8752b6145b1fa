"""Plotting: a PNG of the results (needs matplotlib)."""
import platform
import textwrap

import micrograd_c
from micrograd_c.bench.reporting import format_ratio, format_time
from micrograd_c.bench.workloads import PUBLISHED

# The bars against upstream: (workload, variant) and its label. digits_epoch's cross-entropy and
# grad_graph are left out: upstream can run neither.
BARS = {("train_step", None): "train_step", ("expression", None): "expression",
        ("wide_mlp", None): "wide_mlp",
        ("digits_epoch", "squared_error"): "digits_epoch\n(squared error)"}


def plot(records, path):
    """Log-log cost against chain length per engine, speed-up bars over upstream per workload,
    and, when it ran, fastest_autograd's time per 10k iterations (upstream can't run it: it gets
    its own panel rather than bars against upstream)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fastest = [r for r in records if r["workload"] == "fastest_autograd" and r["status"] == "ok"]
    fig, axes = plt.subplots(1, 3 if fastest else 2, figsize=(19 if fastest else 13, 5))
    left, right = axes[:2]
    engines = []
    for r in records:
        if r["engine"] not in engines:
            engines.append(r["engine"])
    colors = {name: f"C{i}" for i, name in enumerate(engines)}    # one colour per engine
    for name in engines:
        points = [(r["size"], r["median_s"]) for r in records
                  if r["workload"] == "chain" and r["engine"] == name and r["status"] == "ok"]
        if points:
            left.plot(*zip(*points), marker="o", label=name, color=colors[name])
        failed = [r for r in records if r["workload"] == "chain" and r["engine"] == name
                  and r["status"].startswith("fails")]
        if failed and points:
            left.annotate(failed[0]["status"].split(" (")[0], points[-1], fontsize=8,
                          xytext=(5, -12), textcoords="offset points")
    left.set(xscale="log", yscale="log", xlabel="chain length (ops)", ylabel="build + backward (s)",
             title="cost against graph size")
    left.grid(True, which="both", alpha=0.3)
    if left.lines:
        left.legend()
    else:
        left.text(0.5, 0.5, "no chain workload in this run", ha="center", transform=left.transAxes)

    def bar(r):
        return r["workload"], r.get("variant")

    timed_workloads = [w for w in BARS
                       if any(bar(r) == w and r.get("ratio_vs_micrograd") for r in records)]
    bar_engines = [e for e in engines if e != "micrograd" and any(
        r["engine"] == e and bar(r) in timed_workloads and r.get("ratio_vs_micrograd")
        for r in records)]
    width = 0.8 / max(1, len(bar_engines))
    for i, name in enumerate(bar_engines):
        ratios = [next((r["ratio_vs_micrograd"] or 0 for r in records
                        if bar(r) == w and r["engine"] == name), 0) for w in timed_workloads]
        bars = right.bar([j + i * width for j in range(len(timed_workloads))], ratios, width,
                         label=name, color=colors[name])
        right.bar_label(bars, labels=[format_ratio(v) if v else "" for v in ratios], fontsize=7)
    right.axhline(1, color="black", linewidth=0.8)
    right.set_xticks([j + width * (len(bar_engines) - 1) / 2 for j in range(len(timed_workloads))],
                     [BARS[w] for w in timed_workloads])
    right.set(yscale="log", ylabel="times faster than upstream micrograd",
              title="speed-up over upstream (median of alternated rounds)")
    if timed_workloads:
        # room above the tallest bar for the legend (the axis is logarithmic)
        right.set_ylim(top=right.get_ylim()[1] * 300)
        right.legend(fontsize=8, ncol=2, loc="upper left")
    if fastest:
        plot_fastest_autograd(axes[2], fastest, colors)
    fig.suptitle(f"micrograd_c {micrograd_c.__version__}, Python {platform.python_version()}, "
                 f"{platform.machine()}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_fastest_autograd(ax, records, colors):
    """Horizontal bars: seconds for 10k iterations per engine, this run; the published figures
    (another machine) are quoted in text, not drawn beside ours."""
    names = [r["engine"] + (" (forward only)" if r["engine"] == "floats" else "") for r in records]
    seconds = [r["median_s"] * 10_000 for r in records]
    bars = ax.barh(range(len(records)), seconds, color=[colors[r["engine"]] for r in records])
    ax.bar_label(bars, labels=[format_time(s) for s in seconds], fontsize=7, padding=2)
    ax.set_yticks(range(len(records)), names)
    ax.invert_yaxis()
    ax.set(xscale="log", xlabel="seconds for 10k iterations (this run)",
           title="fastest_autograd (Rogozhnikov's graph, inputs i / 100)")
    ax.set_xlim(min(seconds) / 3, max(seconds) * 30)
    ax.text(0.98, 0.02, textwrap.fill(f"published (M1 MacBook, 10k iterations): {PUBLISHED}", 36),
            transform=ax.transAxes, ha="right", va="bottom", fontsize=7)

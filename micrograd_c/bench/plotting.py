"""Plotting: a PNG of the results (needs matplotlib)."""
import platform

import micrograd_c
from micrograd_c.bench.reporting import format_ratio


def plot(records, path):
    """Log-log cost against chain length per engine, and speed-up bars per workload."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    engines = []
    for r in records:
        if r["engine"] not in engines:
            engines.append(r["engine"])
    for name in engines:
        points = [(r["size"], r["median_s"]) for r in records
                  if r["workload"] == "chain" and r["engine"] == name and r["status"] == "ok"]
        if points:
            left.plot(*zip(*points), marker="o", label=name)
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

    timed_workloads = [w for w in ("train_step", "expression", "wide_mlp")
                       if any(r["workload"] == w and r["ratio_vs_micrograd"] for r in records)]
    bar_engines = [e for e in engines if e != "micrograd"]
    width = 0.8 / max(1, len(bar_engines))
    for i, name in enumerate(bar_engines):
        ratios = [next((r["ratio_vs_micrograd"] or 0 for r in records
                        if r["workload"] == w and r["engine"] == name), 0) for w in timed_workloads]
        bars = right.bar([j + i * width for j in range(len(timed_workloads))], ratios, width,
                         label=name)
        right.bar_label(bars, labels=[format_ratio(v) if v else "" for v in ratios], fontsize=7)
    right.axhline(1, color="black", linewidth=0.8)
    right.set_xticks([j + width * (len(bar_engines) - 1) / 2 for j in range(len(timed_workloads))],
                     timed_workloads)
    right.set(yscale="log", ylabel="times faster than upstream micrograd",
              title="speed-up over upstream (median of alternated rounds)")
    if timed_workloads:
        right.legend()
    fig.suptitle(f"micrograd_c {micrograd_c.__version__}, Python {platform.python_version()}, "
                 f"{platform.machine()}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""The bench's method: what a timed run's collection may scan. Oracle: the GC's own counts. No
test here asserts a time."""
import gc

import pytest

from micrograd_c import bench


def test_what_lives_before_a_timed_run_is_frozen_until_measure_ends(monkeypatch):
    monkeypatch.setattr(bench.measuring, "WARM_UP_S", 0.0)     # a short run's warm-up: one run
    # and every run short, however long the host stalls one (a run timed over REPEAT_BELOW_S
    # gets no warm-up before the next: the count below changed when the suite ran beside a build)
    monkeypatch.setattr(bench.measuring, "REPEAT_BELOW_S", float("inf"))
    others = [[] for _ in range(1000)]      # live, GC-tracked objects: another engine's gradients
    frozen = []
    task = bench.Task("expression", lambda e: ((lambda: frozen.append(gc.get_freeze_count())), 1),
                      2)
    bench.measure(task, [bench.Engine("e", float)], tick=lambda: None)
    # every run, warm-up and untimed ones included, ran with those objects frozen
    assert len(frozen) == 1 + 2 * 2 and min(frozen) >= len(others)
    assert gc.get_freeze_count() == 0


def test_a_short_run_is_warmed_up_for_warm_up_s_before_each_timed_run(monkeypatch):
    import time
    monkeypatch.setattr(bench.measuring, "WARM_UP_S", 0.05)
    runs = []
    task = bench.Task("expression", lambda e: ((lambda: runs.append(time.perf_counter())), 1), 2)
    records = bench.measure(task, [bench.Engine("e", float)], tick=lambda: None)
    assert len(records[0]["times_s"]) == 2
    # the warm-up of the task, then per round: runs for 50 ms, then the timed one
    assert runs[-1] - runs[1] >= 2 * 0.05 and len(runs) > 1 + 2 * 2


def test_side_by_side_times_the_engines_that_run_here_and_says_why_not_the_others(monkeypatch):
    from micrograd_c import upstream
    monkeypatch.setattr(bench.measuring, "WARM_UP_S", 0.0)
    monkeypatch.setattr(upstream, "missing", lambda: upstream.NOT_INSTALLED)
    records, skipped = bench.side_by_side(bench.Task("expression", bench.expression, 2),
                                          ["micrograd_c", "micrograd"])
    assert list(records) == ["micrograd_c"] and len(records["micrograd_c"]["times_s"]) == 2
    assert records["micrograd_c"]["status"] == "ok" and records["micrograd_c"]["median_s"] > 0
    assert skipped == {"micrograd": upstream.NOT_INSTALLED}


def test_engines_run_fastest_first_once_timed_so_that_like_speeds_run_together(monkeypatch):
    order = []

    def timed(engine, run):     # engine "e0.6"'s run takes 0.6 s, by this clock
        run()
        return float(engine.name[1:])

    def setup(engine):
        return (lambda: order.append(engine.name)), 1

    monkeypatch.setattr(bench.measuring, "timed", timed)
    engines = [bench.Engine(f"e{s}", float) for s in (0.6, 0.2, 0.7, 0.1)]
    bench.measure(bench.Task("expression", setup, 3), engines, tick=lambda: None)
    assert order[:4] == ["e0.6", "e0.2", "e0.7", "e0.1"]         # the task's warm-up: as given
    # then fastest first, and the other way round every other round
    assert order[4:] == ["e0.1", "e0.2", "e0.6", "e0.7"] + ["e0.7", "e0.6", "e0.2", "e0.1"] + \
        ["e0.1", "e0.2", "e0.6", "e0.7"]


def test_phases_refuses_no_rounds():
    from micrograd_c.bench import phases
    with pytest.raises(SystemExit):             # was a StatisticsError after building models
        phases.main(["--rounds", "0"])


def test_phases_reports_each_phase_and_both_floors(capsys):
    from micrograd_c.bench import phases
    assert phases.main(["--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = ["micrograd_c (fused)", "micrograd_c-unfused", "floats (no graph)",
             "floats, no shortcuts"]
    assert [line[:22].strip() for line in lines[1:5]] == names
    assert lines[2].split()[1] == "65,614"                   # upstream's graph, node for node
    assert lines[5].startswith("the unfused step: ") and lines[5].endswith(" without their "
                                                                           "shortcuts")

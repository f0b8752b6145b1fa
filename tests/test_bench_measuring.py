"""The bench's method: what a timed run's collection may scan. Oracle: the GC's own counts. No
test here asserts a time."""
import gc

from micrograd_c import bench


def test_what_lives_before_a_timed_run_is_frozen_until_measure_ends():
    others = [[] for _ in range(1000)]      # live, GC-tracked objects: another engine's gradients
    frozen = []
    task = bench.Task("expression", lambda e: ((lambda: frozen.append(gc.get_freeze_count())), 1),
                      2)
    bench.measure(task, [bench.Engine("e", float)], tick=lambda: None)
    # every run, warm-up and untimed ones included, ran with those objects frozen
    assert len(frozen) == 1 + 2 * 2 and min(frozen) >= len(others)
    assert gc.get_freeze_count() == 0

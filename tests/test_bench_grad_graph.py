"""The bench's grad_graph workload. Oracles: torch.autograd.grad(create_graph=True) on the same
scalar graph, for the gradients and for a second derivative through them, and backward() for
micrograd_c's gradients without torch. No test here asserts a time."""
import pytest

from micrograd_c import bench, engine, upstream
from micrograd_c.bench.workloads import GRAD_GRAPHS, graph_to_differentiate

needs_upstream = pytest.mark.skipif(not upstream.installed(), reason="upstream micrograd missing")


def gradients(name, graph):
    """(forward values, inputs, gradients as graphs) of `graph` on the engine `name`."""
    (e,), _ = bench.available_engines([name])
    # Rogozhnikov's graph of 400 ops, not 10,000: along 10,000 the inputs' grads underflow to 0
    build, inputs = graph_to_differentiate(e, graph, n_operations=400)
    values = build()
    return values, inputs, e.gradient_graph(values[-1], inputs)


@pytest.mark.parametrize("graph", GRAD_GRAPHS)
def test_micrograd_c_gradients_are_backwards(graph):
    values, inputs, grads = gradients("micrograd_c", graph)
    values[-1].backward()
    assert len(grads) == len(inputs) and all(isinstance(g, engine.Value) for g in grads)
    assert [g.data for g in grads] == [x.grad for x in inputs]


@needs_upstream
@pytest.mark.parametrize("graph", GRAD_GRAPHS)
def test_gradients_and_second_derivatives_match_torch(graph):
    torch = pytest.importorskip("torch")
    ours, our_inputs, our_grads = gradients("micrograd_c", graph)
    theirs, their_inputs, their_grads = gradients("torch", graph)
    assert ours[-1].data == pytest.approx(theirs[-1].item(), rel=1e-12)
    zero = torch.tensor(0.0, dtype=torch.float64)
    their_grads = [zero if g is None else g for g in their_grads]     # an input not depended on
    assert [g.data for g in our_grads] == pytest.approx([g.item() for g in their_grads],
                                                        rel=1e-12, abs=1e-300)
    assert sum(g.data != 0 for g in our_grads) > (300 if graph == "demo_loss" else 10)
    # the gradients are graphs: differentiate sum(v * grad) again, a Hessian-vector product
    vector = [(-1) ** i * 0.5 for i in range(len(our_inputs))]
    ours_twice = engine.grad(our_grads, our_inputs, grad_outputs=vector)
    used = [i for i, g in enumerate(their_grads) if g.requires_grad]
    theirs_twice = torch.autograd.grad([their_grads[i] for i in used],
                                       [their_inputs[i] for i in used],
                                       grad_outputs=[torch.tensor(vector[i], dtype=torch.float64)
                                                     for i in used], allow_unused=True)
    theirs_twice = [0.0 if g is None else g.item() for g in theirs_twice]
    assert [ours_twice[i].data for i in used] == pytest.approx(theirs_twice, rel=1e-9,
                                                               abs=1e-300)
    assert sum(h != 0 for h in theirs_twice) > (100 if graph == "demo_loss" else 10)


def test_records_and_report(tmp_path):
    names = ["micrograd_c", "micrograd_c-unfused", "micrograd_c-replay", "micrograd", "torch"]
    engines, skipped = bench.available_engines(names)
    records = []
    for task in bench.plan(["grad_graph"], quick=True):
        task.rounds, task.warmup = 1, False
        records += bench.measure(task, engines, tick=lambda: None)
    assert {r["variant"] for r in records} == set(GRAD_GRAPHS)
    rows = {(r["variant"], r["engine"], r["phase"]): r for r in records}
    assert "micrograd_c-replay" not in {r["engine"] for r in records}   # it replays, not builds
    for graph in GRAD_GRAPHS:
        forward, grad = rows[graph, "micrograd_c", "forward"], rows[graph, "micrograd_c", "grad"]
        assert forward["status"] == grad["status"] == "ok"
        assert forward["nodes"] > 0 and grad["nodes"] > 0 and grad["times_forward"] > 0
        assert "ratio_vs_torch" in grad and "ratio_vs_micrograd" not in grad
    assert rows["fastest_autograd", "micrograd_c", "forward"]["nodes"] == 45_100  # as fastest_autograd
    if upstream.installed():
        assert rows["demo_loss", "micrograd", "grad"]["status"] == \
            "skipped: micrograd has no gradients as a graph (create_graph)"
        # upstream's nn.py on our Value is torch's graph on the MLP; there is no nn on the other
        assert rows["demo_loss", "micrograd_c-unfused", "grad"]["status"] == "ok"
        assert rows["fastest_autograd", "micrograd_c-unfused", "grad"]["status"].startswith(
            "same as micrograd_c")
    if "torch" not in skipped:
        assert rows["fastest_autograd", "torch", "grad"]["ratio_vs_torch"] == 1.0
    text = bench.report(records, skipped)
    assert "grad/fwd" in text and "grad vs torch" in text and "create_graph=True" in text
    assert text.count("\n  micrograd_c ") == 2              # one row per engine, both phases
    png = tmp_path / "bench.png"
    bench.plot(records, png)
    assert png.read_bytes()[:4] == b"\x89PNG"

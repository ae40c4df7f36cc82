"""Compiled blocks under Ulysses sequence parallelism (2 CPU processes, gloo): the block graph takes the all-to-all
exchanges in (dynamo turns ``dist.all_to_all_single`` into a traceable collective), so no graph breaks, and the
per-forward attention closure does not recompile: one graph over forwards at three timesteps.

Counted as in test_dit_compile.py (dynamo's counters, "eager" backend). Oracle for the outputs: the same ranks run
eagerly; with the "eager" backend the graph runs the same kernels and the same exchanges, so equal bit for bit; both
ranks hold the same output.
"""
import torch
import torch.distributed as dist

from spawn import free_port, rank_results, run_ranks

TIMEOUT = 300
TIMESTEPS = (900.0, 500.0, 100.0)


def _rank(rank: int, world: int, port: int, out: str) -> None:
    from pathlib import Path

    from torch._dynamo.utils import counters

    from test_cache_tools import tiny_dit
    from wan.dit.compile import CompileOptions, compiled_models
    from wan.distributed.ulysses import SequenceParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    model = tiny_dit()
    model.sequence_parallel = SequenceParallel(dist.group.WORLD)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 3, 4, 6, generator=g)  # 18 tokens: 9 per rank
    ctx = torch.randn(1, 8, model.config.text_dim, generator=g)
    with torch.no_grad():
        eager = [model(x, torch.tensor([t]), ctx) for t in TIMESTEPS]
        torch._dynamo.reset()
        counters.clear()
        compiled, graphs = [], []
        with compiled_models([model], CompileOptions(backend="eager"), "cpu") as runner:
            for t in TIMESTEPS:
                compiled.append(model(x, torch.tensor([t]), ctx))
                graphs.append(counters["stats"]["unique_graphs"])
    torch.save({"eager": eager, "compiled": compiled, "graphs": graphs, "breaks": dict(counters["graph_break"]),
                "failed": runner.failed}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_ulysses_blocks_compile_once_without_breaks(tmp_path):
    run_ranks(_rank, (2, free_port(), str(tmp_path)), 2, TIMEOUT)
    ranks = rank_results(tmp_path, 2)
    for r in ranks:
        assert r["failed"] is None
        assert r["breaks"] == {}, r["breaks"]
        assert r["graphs"][0] >= 1 and r["graphs"][-1] == r["graphs"][0], r["graphs"]  # no recompile after the first
        for e, c in zip(r["eager"], r["compiled"]):
            assert torch.equal(e, c)
    for a, b in zip(ranks[0]["compiled"], ranks[1]["compiled"]):
        assert torch.equal(a, b)

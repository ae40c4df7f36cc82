"""Launching a test's ranks: ``world`` spawned CPU processes that each join a gloo process group on loopback."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(fn, args: tuple, world: int, timeout: int) -> None:
    """Run ``fn(rank, *args)`` in ``world`` spawned processes; fail the test (killing them) after ``timeout`` s."""
    ctx = mp.start_processes(fn, args=args, nprocs=world, join=False, start_method="spawn")
    for _ in range(timeout):
        if ctx.join(timeout=1):
            return
    for p in ctx.processes:
        p.kill()
    pytest.fail(f"{world} processes did not finish within {timeout} s")


def torchrun_environment(rank: int, world: int, port: int) -> None:
    """The variables torchrun sets for ``rank``, so a CLI run in this process joins the group itself."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))


def run_parallel_cli(run, argv: list[str], rank: int, world: int, port: int, out) -> int:
    """``run(argv)`` with Ulysses, DiT FSDP and T5 FSDP over 2 ranks, saving ``out/video{rank}.mp4``: the CLI joins
    (and leaves) the process group itself, as under torchrun."""
    torchrun_environment(rank, world, port)
    return run(argv + ["--ulysses_size", "2", "--dit_fsdp", "--t5_fsdp", "--save_file", f"{out}/video{rank}.mp4"])


def launch_two(fn, path, out: Path, timeout: int) -> list[dict]:
    """``fn(rank, 2, (port, port), str(path), str(out))`` in 2 processes; what each saved (``rank_results``)."""
    run_ranks(fn, (2, (free_port(), free_port()), str(path), str(out)), world=2, timeout=timeout)
    return rank_results(out, 2)


def rank_results(out: Path, world: int) -> list[dict]:
    """What each rank saved as ``out/rank{r}.pt``."""
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


def assert_ranks_match(ranks: list[list], forward, model, cases, label: str = "") -> None:
    """Per case: both ranks give the same output, of the one-process ``forward(model, case)`` shape, within 1e-5 of
    its largest value."""
    for i, case in enumerate(cases):
        ref = forward(model, case)
        assert torch.equal(ranks[0][i], ranks[1][i]), f"{label} {case}: the ranks disagree"
        assert ranks[0][i].shape == ref.shape
        assert (ranks[0][i] - ref).abs().max() <= 1e-5 * ref.abs().max(), f"{label} {case}"

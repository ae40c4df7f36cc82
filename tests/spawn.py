"""Launching a test's ranks: ``world`` spawned CPU processes that each join a gloo process group on loopback."""
from __future__ import annotations

import socket

import pytest
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

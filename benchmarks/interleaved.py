"""Timing helper shared by the benchmark scripts: the machine may be shared, so runs of the peers are interleaved
and medians reported."""
from __future__ import annotations

import statistics
import time

import torch


@torch.no_grad()
def interleaved_forwards(models: dict, args: tuple, repeats: int) -> tuple[dict, dict]:
    """(each model's output from a warm-up call, the median seconds of ``repeats`` interleaved calls per model)."""
    outs = {name: model(*args) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(*args)
            times[name].append(time.perf_counter() - start)
    return outs, {name: statistics.median(v) for name, v in times.items()}

"""Ulysses sequence parallelism: the bytes ``all_to_all`` moves per sampling step against the analytic count, and,
with several GPUs, the step time per world size against one GPU.

    python benchmarks/distributed.py --tiny        # CPU (gloo): 2 and 4 processes, communication volume only
    python benchmarks/distributed.py --dim 5120 --heads 40 --layers 40 --latent 21x90x160   # GPUs: 14B at 720p

Each world size is a fresh set of processes (``torch.multiprocessing`` spawn; NCCL on GPUs, gloo on the CPU) that
runs ``wan.sampling.sample`` (CFG: a conditional and an unconditional forward per step) on a random DiT whose
tokens are split over all processes. The collectives are counted by wrapping ``torch.distributed``'s own
functions, independently of the code under test. Analytic count, per step and rank: every block exchanges q, k, v
and the attention output, 4 · B · L_padded · dim / p elements, of which (p − 1) / p leave the rank:
``layers · forwards · 4 · B · L_padded · dim · (p − 1) / p² · element size``. The gathered head output is
reported beside it. On GPUs, step time (median after one warm-up step) per world size, and the speed-up over one GPU.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan.conditioning import TextEmbeds  # noqa: E402
from wan.dit.config import WanDiTConfig  # noqa: E402
from wan.dit.model import WanDiT  # noqa: E402
from wan.distributed.ulysses import SequenceParallel  # noqa: E402
from wan.experts import ExpertSet  # noqa: E402
from wan.sampling import SamplerSettings, make_noise, sample  # noqa: E402
from wan.variants import VARIANTS  # noqa: E402

TEXT_DIM, TEXT_LEN = 4096, 512


class Counter:
    """Wraps a torch.distributed collective and adds up the bytes each call hands to it."""

    def __init__(self, name: str):
        self.name, self.original, self.bytes, self.calls = name, getattr(dist, name), 0, 0
        setattr(dist, name, self)

    def __call__(self, output, tensor, *args, **kwargs):
        self.bytes += tensor.numel() * tensor.element_size()
        self.calls += 1
        return self.original(output, tensor, *args, **kwargs)


def random_model(args, device, dtype) -> WanDiT:
    cfg = WanDiTConfig(dim=args.dim, ffn_dim=args.ffn or 4 * args.dim, num_heads=args.heads, num_layers=args.layers,
                       text_dim=TEXT_DIM, text_len=TEXT_LEN)
    with torch.device(device):
        model = WanDiT(cfg, VARIANTS["wan21_t2v_14b"]).to(dtype)
    model.compute_dtype = dtype
    return model.requires_grad_(False).eval()


def worker(rank: int, world: int, port: int, args, results) -> None:
    cuda = torch.cuda.is_available() and not args.cpu
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(args.threads)
    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
    model = random_model(args, device, torch.bfloat16 if cuda else torch.float32)
    if world > 1:
        model.sequence_parallel = SequenceParallel(dist.group.WORLD)
    f, h, w = args.grid
    shape = (1, 16, f, 2 * h, 2 * w)
    g = torch.Generator().manual_seed(0)
    text = TextEmbeds(torch.randn(1, TEXT_LEN, TEXT_DIM, generator=g), torch.randn(1, TEXT_LEN, TEXT_DIM, generator=g))
    counters = [Counter("all_to_all_single"), Counter(_gather_name())] if world > 1 else []
    stamps = []

    def tick(info):
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    stamps.append(time.perf_counter())
    sample(ExpertSet(model), torch.zeros(shape), text, SamplerSettings(steps=args.steps, shift=5.0, cfg_high=5.0),
           noise=make_noise(shape, 0), device=device, callback=tick)
    if rank == 0:
        step_times = [b - a for a, b in zip(stamps[1:], stamps[2:])] or [stamps[1] - stamps[0]]
        results[world] = {"step": statistics.median(step_times),
                          **{c.name: c.bytes / args.steps for c in counters}}
    if world > 1:
        dist.destroy_process_group()


def _gather_name() -> str:
    return "all_gather_single" if hasattr(dist, "all_gather_single") else "all_gather_into_tensor"


def analytic_bytes(args, world: int, element_size: int) -> float:
    """all_to_all bytes one rank sends per step (see the module docstring)."""
    f, h, w = args.grid
    padded = -(-(f * h * w) // world) * world
    return args.layers * 2 * 4 * padded * args.dim * (world - 1) / world ** 2 * element_size


def run_world(world: int, args) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.get_context("spawn").Manager().dict()
    mp.start_processes(worker, args=(world, port, args, results), nprocs=world, start_method="spawn")
    return dict(results[world])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="dim 512, 8 heads, 2 layers, 3x16x14 tokens, 2 steps, CPU "
                   "world sizes 2 and 4")
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--ffn", type=int, default=None, help="default 4 x dim")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--latent", default="21x60x104", help="latent frames x height x width (832x480, 81 frames)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--worlds", default=None, help="comma-separated world sizes (default: 1, 2, 4, ... up to the "
                   "GPU count; on the CPU 2 and 4)")
    p.add_argument("--cpu", action="store_true", help="use the CPU (gloo) even when GPUs are present")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    args = p.parse_args(argv)
    if args.tiny:
        args.dim, args.heads, args.layers, args.latent, args.steps = 512, 8, 2, "3x32x28", 2
    f, h, w = (int(v) for v in args.latent.split("x"))
    args.grid = (f, h // 2, w // 2)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() and not args.cpu else 0
    worlds = [int(v) for v in args.worlds.split(",")] if args.worlds else (
        [n for n in (1, 2, 4, 8, 16) if n <= gpus] if gpus > 1 else [2, 4])
    tokens = args.grid[0] * args.grid[1] * args.grid[2]
    element = 2 if gpus else 4
    print(f"DiT dim {args.dim}, {args.heads} heads, {args.layers} layers, {tokens} tokens, CFG (2 forwards per step), "
          f"{'GPU bf16' if gpus else 'CPU float32'}")
    print(f"{'world':>5} {'a2a MB/step/rank':>17} {'analytic':>9} {'ratio':>6} {'gather MB':>10} {'step s':>8} "
          f"{'speed-up':>9}")
    base = None
    for world in worlds:
        res = run_world(world, args)
        measured = res.get("all_to_all_single", 0.0) * (world - 1) / world  # the part that leaves the rank
        expected = analytic_bytes(args, world, element)
        ratio = measured / expected if expected else float("nan")
        base = res["step"] if world == 1 else base
        speed = f"{base / res['step']:>8.2f}x" if gpus and base else f"{'-':>9}"
        step = f"{res['step']:>8.3f}" if gpus else f"{'-':>8}"
        print(f"{world:>5} {measured / 1e6:>17.3f} {expected / 1e6:>9.3f} {ratio:>6.3f} "
              f"{res.get(_gather_name(), 0.0) / 1e6:>10.3f} {step} {speed}")
    if not gpus:
        print("(CPU: communication volume only; step times need GPUs)")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

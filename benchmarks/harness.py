"""Helpers shared by the benchmarks: interleaved timing, peak-RSS probes in fresh processes, an optional ComfyUI
checkout as an extra peer."""
from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device | None = None,
                        clock: str = "wall", warm: bool = True) -> dict[str, float]:
    """Median time of each function over ``repeats`` rounds after a warm-up. Each round runs every function once,
    in turn, so that a busy machine slows all of them alike. ``clock="cpu"``: this process's CPU time instead of
    wall time; with one thread (``--threads 1``) it leaves out the time other processes hold the cores, the
    steadier measure on a shared machine (CPU devices only)."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    now = CLOCKS[clock]
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values() if warm else ():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = now()
            fn()
            sync()
            times[name].append(now() - start)
    return {name: statistics.median(t) for name, t in times.items()}



@torch.no_grad()
def interleaved_forwards(models: dict, args: tuple, repeats: int, clock: str = "wall") -> tuple[dict, dict]:
    """(each model's output from its warm-up call, its median seconds over ``repeats`` interleaved calls)."""
    outs = {name: model(*args) for name, model in models.items()}
    fns = {name: (lambda m=model: m(*args)) for name, model in models.items()}
    return outs, interleaved_medians(fns, repeats, clock=clock, warm=False)

def add_timing_options(parser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or process CPU time (steadier on a shared machine with --threads 1)")


def apply_timing_options(args) -> str:
    """Set the thread count; returns a description of the timing settings for the report."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return f"{args.clock} clock, {torch.get_num_threads()} thread(s), median of {args.repeats} interleaved rounds"


def rss_kb(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak so far) of this process, in kB (Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_probe(script: Path, *args: str) -> dict:
    """Run ``script`` in a fresh Python process; it prints one JSON line last."""
    out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def _argv(argv: list[str]):
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def import_comfyui(path: str | None, device: torch.device):
    """Make a ComfyUI checkout importable (``comfy.*``) with its command line set for ``device``; None without one.

    ComfyUI's own dependencies (e.g. psutil) must be importable; its arguments are parsed once, at first import."""
    if not path:
        return None
    sys.path.insert(0, str(Path(path).resolve()))
    with _argv([sys.argv[0]] + (["--cpu"] if device.type == "cpu" else [])):
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.model_management  # noqa: F401  (parses the arguments)
        import comfy.ops
    return comfy


def ratio_line(name: str, ours: float, peer: float, target: float | None = None) -> str:
    goal = f"  (target <= {target:.2f})" if target is not None else ""
    return f"  ours / {name:<28} {ours / peer:5.3f}{goal}"

"""Context windows: time per sampling step with the video split into K windows (no overlap, so the model sees the same
total tokens) vs the whole video in one window, same model, same process, measured alternately. Self-attention
grows with the square of the tokens in a window, so its time should fall about K-fold; the rest (projections,
feed-forward, cross-attention) is per token and stays.

    python benchmarks/context_windows.py          # dim 256, 2 layers, 16 latent frames of 32x64 (8192 tokens)
    python benchmarks/context_windows.py --tiny   # quick smoke run

Reported per K: seconds per step (CFG: two forwards), the self-attention share of it (timed inside the DiT), and
both as ratios to K = 1. Expectation: attention ratio ~ 1/K; step ratio between 1/K and 1 by the attention share.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wan.conditioning import TextEmbeds  # noqa: E402
from wan.dit.config import WanDiTConfig  # noqa: E402
from wan.experts import ExpertSet  # noqa: E402
from wan.sampling import SamplerSettings, make_noise, sample  # noqa: E402
from wan.sampling.windows import ContextWindows  # noqa: E402
from sampler_overhead import random_model  # noqa: E402  (benchmarks/ is the script's folder)

SIZES = {  # name -> (config, latent shape [B, C, T, h, w], steps, repeats)
    "tiny": (WanDiTConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=1, text_dim=64), (1, 16, 8, 16, 16), 2, 2),
    "mid": (WanDiTConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=64), (1, 16, 16, 32, 64), 2, 2),
}
WINDOW_COUNTS = (1, 2, 4)


class TimedAttention:
    """Wraps the DiT's attention function and adds up the time of self-attention calls (query length = key length)."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, q, k, v, *args, **kwargs):
        if q.shape[1] != k.shape[1]:
            return self.fn(q, k, v, *args, **kwargs)
        start = time.perf_counter()
        out = self.fn(q, k, v, *args, **kwargs)
        self.seconds += time.perf_counter() - start
        return out


def measure(size: str) -> list[dict]:
    cfg, shape, steps, repeats = SIZES[size]
    model = random_model(cfg)
    timer = model._attn = TimedAttention(model._attn)
    experts = ExpertSet(model)
    g = torch.Generator().manual_seed(1)
    text = TextEmbeds(torch.randn(1, cfg.text_len, cfg.text_dim, generator=g),
                      torch.randn(1, cfg.text_len, cfg.text_dim, generator=g))
    noise, frames = make_noise(shape, 0), shape[2]

    def context(k: int):
        return None if k == 1 else ContextWindows(4 * (frames // k - 1) + 1, 0, "static", freenoise=False)

    runs = {k: SamplerSettings(steps=steps, shift=5.0, cfg_high=5.0, context=context(k)) for k in WINDOW_COUNTS}
    best = {k: (float("inf"), 0.0) for k in WINDOW_COUNTS}
    with torch.no_grad():
        for settings in runs.values():  # warm-up
            sample(experts, torch.zeros(shape), text, settings, noise=noise)
        for _ in range(repeats):
            for k, settings in runs.items():
                timer.seconds = 0.0
                start = time.perf_counter()
                sample(experts, torch.zeros(shape), text, settings, noise=noise)
                wall = time.perf_counter() - start
                best[k] = min(best[k], (wall / steps, timer.seconds / steps))
    tokens = shape[2] * shape[3] * shape[4] // 4
    return [{"windows": k, "tokens": tokens, "per_window": tokens // k, "step": best[k][0], "attention": best[k][1]}
            for k in WINDOW_COUNTS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small model and video: a quick smoke run")
    parser.add_argument("--threads", type=int, default=1, help=(
        "torch CPU threads (default 1: steadier timings on a shared machine)"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = measure("tiny" if args.tiny else "mid")
    base = rows[0]
    print(f"{rows[0]['tokens']} video tokens per step in total; CFG (two forwards per step); fastest of the repeats")
    print(f"{'windows':>7} {'tokens/window':>13} {'s/step':>8} {'ratio':>6} {'self-attn s/step':>16} {'ratio':>6} "
          f"{'1/K':>5}")
    for r in rows:
        print(f"{r['windows']:>7} {r['per_window']:>13} {r['step']:>8.3f} {r['step'] / base['step']:>6.2f} "
              f"{r['attention']:>16.3f} {r['attention'] / base['attention']:>6.2f} {1 / r['windows']:>5.2f}")
    print(f"self-attention share with one window: {100 * base['attention'] / base['step']:.0f} % of the step")


if __name__ == "__main__":
    main()

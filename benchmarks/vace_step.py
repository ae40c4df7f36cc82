"""The cost of VACE: one DiT forward with a VACE context over the same forward of the plain model (the same base
weights, no context), in the same process, interleaved.

    python benchmarks/vace_step.py [--dtype fp32|bf16|fp16] [--repeats N] [--threads N] [--clock wall|cpu]
                                   [--device cpu|cuda] [--layers N] [--every K]
    python benchmarks/vace_step.py --tiny      # a quick smoke run

A VACE block is a full DiT block (plus two dim x dim projections) on as many tokens as the video, so a step should
cost about 1 + vace_blocks / blocks of a plain step (Wan 2.1 VACE 1.3B: 15 of 30 -> 1.5; 14B: 8 of 40 -> 1.2),
plus the VACE patch embedding (negligible). Mid size: dim 1536 (12 heads), 4 blocks with a VACE block on every
2nd (the 1.3B spread), 1170 video tokens, 512 text tokens. Reports the measured ratio and the expected one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py
from harness import DTYPES, ROOT, add_timing_options, apply_timing_options, interleaved_medians  # noqa: E402

sys.path.insert(0, str(ROOT))

from wan.dit.config import WanDiTConfig  # noqa: E402
from wan.dit.model import WanDiT  # noqa: E402
from wan.dit.vace import VaceConfig, VaceInputs, WanVaceDiT  # noqa: E402


def build(cfg: WanDiTConfig, layers: tuple[int, ...], dtype: torch.dtype, device: torch.device):
    """(VACE model, plain model) sharing the base weights (random, std 0.02)."""
    g = torch.Generator().manual_seed(0)
    vace = WanVaceDiT(cfg, VaceConfig(layers))
    with torch.no_grad():
        for p in vace.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    plain = WanDiT(cfg)
    plain.load_state_dict({k: v for k, v in vace.state_dict().items() if not k.startswith("vace_")})
    models = []
    for m in (vace, plain):
        m = m.to(device=device, dtype=dtype).eval().requires_grad_(False)
        m.compute_dtype = dtype
        models.append(m)
    return models


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--every", type=int, default=2, help="a VACE block on every K-th block (1.3B: 2, 14B: 5)")
    p.add_argument("--tiny", action="store_true", help="a small model and latent: a smoke run")
    add_timing_options(p)
    args = p.parse_args(argv)
    timing = apply_timing_options(args)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if args.tiny:
        cfg, latent = WanDiTConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=4, text_dim=64), (16, 2, 8, 12)
        args.every = 2
    else:
        cfg, latent = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=args.layers), (16, 3, 30, 52)
    layers = tuple(range(0, cfg.num_layers, args.every))
    vace, plain = build(cfg, layers, dtype, device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, *latent, generator=g).to(device)
    ctx = torch.randn(1, 512, cfg.text_dim, generator=g).to(device)
    context = VaceInputs(torch.randn(1, 96, *latent[1:], generator=g).to(device))
    t = torch.tensor([500.0], device=device)
    with torch.no_grad():
        times = interleaved_medians({"vace": lambda: vace(x, t, ctx, vace=context),
                                     "plain": lambda: plain(x, t, ctx)}, args.repeats, device, args.clock)
    tokens = latent[1] * (latent[2] // 2) * (latent[3] // 2)
    expected = 1 + len(layers) / cfg.num_layers
    print(f"VACE step vs plain step: dim {cfg.dim}, {cfg.num_layers} blocks, {len(layers)} VACE blocks, {tokens} "
          f"video tokens, {args.dtype} on {device}; {timing}")
    print(f"  VACE step  {times['vace'] * 1000:9.1f} ms")
    print(f"  plain step {times['plain'] * 1000:9.1f} ms")
    print(f"  VACE step / plain step {times['vace'] / times['plain']:5.3f}  (expected about {expected:.3f} = 1 + "
          f"{len(layers)}/{cfg.num_layers})")


if __name__ == "__main__":
    main()

"""Memory budget accuracy: the estimates of ``wan/budget/estimates.py`` vs the peak of the live tensors the real modules
create, traced on the meta device (``tests/meta_trace.py``) at the released models' full sizes. Nothing is
computed or allocated, so the 14B at 720p runs on any machine.

    python benchmarks/memory_budget.py          # the released models at their official sizes
    python benchmarks/memory_budget.py --tiny   # quick smoke run (small widths and sizes)

Target: 1.00 <= estimate / traced <= 1.10 (DiT), <= 1.25 (VAE): never below what the modules allocate, and close
enough that a refused run could not have fitted. Allocator slack and kernel workspaces are not in either number.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from meta_trace import flat_attention, traced_peak  # noqa: E402
from wan.budget import estimates  # noqa: E402
from wan.dit.config import WanDiTConfig  # noqa: E402
from wan.dit.model import WanDiT  # noqa: E402
from wan.experts import ExpertSet  # noqa: E402
from wan.vae.config import WAN21_VAE, WAN22_VAE, WanVAEConfig  # noqa: E402
from wan.vae.model import WanVAEModel  # noqa: E402

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32
W14B = dict(dim=5120, ffn_dim=13824, num_heads=40)
DITS = {  # name -> (config, latent [C, T, h, w], dtype)
    "full": [
        ("T2V-1.3B 832x480 81f bf16", WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12), (16, 21, 60, 104), BF16),
        ("A14B 1280x720 81f bf16", WanDiTConfig(**W14B), (16, 21, 90, 160), BF16),
        ("A14B 1280x720 81f fp32", WanDiTConfig(**W14B), (16, 21, 90, 160), FP32),
        ("I2V-14B 1280x720 81f fp16", WanDiTConfig(**W14B, in_dim=36, clip_dim=1280), (16, 21, 90, 160), FP16),
        ("TI2V-5B 1280x704 121f bf16", WanDiTConfig(dim=3072, ffn_dim=14336, num_heads=24, in_dim=48, out_dim=48),
         (48, 31, 44, 80), BF16),
    ],
    "tiny": [("dim 256 64x64 5f fp32", WanDiTConfig(dim=256, ffn_dim=512, num_heads=2), (16, 2, 8, 8), FP32)],
}
VAES = {  # name -> (config, kind, shape, dtype)
    "full": [
        ("Wan 2.1 VAE decode 1280x720 bf16", WAN21_VAE, "decode", (1, 16, 3, 90, 160), BF16),
        ("Wan 2.1 VAE encode 1280x720 bf16", WAN21_VAE, "encode", (1, 3, 9, 720, 1280), BF16),
        ("Wan 2.2 VAE decode 1280x704 bf16", WAN22_VAE, "decode", (1, 48, 3, 44, 80), BF16),
        ("Wan 2.2 VAE encode 1280x704 fp32", WAN22_VAE, "encode", (1, 3, 9, 704, 1280), FP32),
    ],
    "tiny": [("tiny VAE decode 64x64 fp32", WanVAEConfig(dim=8, dec_dim=8), "decode", (1, 16, 2, 8, 8), FP32)],
}


def dit_row(cfg: WanDiTConfig, latent, dtype) -> tuple[float, float]:
    """(estimated, traced) bytes of the activations of one forward; two blocks show the per-block peak."""
    with torch.device("meta"):
        model = WanDiT(WanDiTConfig(**{**cfg.to_dict(), "num_layers": 2})).to(dtype)
    model.compute_dtype, model._attn = dtype, flat_attention
    c, t, h, w = latent
    meta = dict(device="meta")
    x, context = torch.empty(1, c, t, h, w, **meta), torch.empty(1, 512, cfg.text_dim, **meta)
    y = torch.empty(1, cfg.in_dim - c, t, h, w, **meta) if cfg.in_dim == 36 else None
    steps = torch.full((1, t * (h // 2) * (w // 2)) if cfg.per_token_time else (1,), 500.0, **meta)
    clip = torch.empty(1, 257, cfg.clip_dim, **meta) if cfg.has_clip else None
    traced = traced_peak(lambda: model(x, steps, context, clip_fea=clip, y=y))
    estimate = estimates.estimate_sampling(ExpertSet(model), (1, c, t, h, w), "meta").parts[0][1]
    return estimate, traced


def vae_row(cfg: WanVAEConfig, kind: str, shape, dtype) -> tuple[float, float]:
    with torch.device("meta"):
        model = WanVAEModel(cfg).to(dtype)
    x = torch.empty(shape, device="meta", dtype=dtype)
    traced = traced_peak(lambda: (model.decode_chunks if kind == "decode" else model.encode_chunks)(x))
    vae = type("MetaVAE", (), {"config": cfg, "device": torch.device("meta"), "dtype": dtype})()
    (estimate,) = estimates.vae_estimates(vae, kind, shape, False, 512, "meta")
    return estimate.total, traced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="quick smoke run")
    size = "tiny" if parser.parse_args().tiny else "full"
    start = time.perf_counter()
    print(f"{'case':40s} {'estimate GiB':>12s} {'traced GiB':>11s} {'ratio':>6s}")
    rows = [(name, *dit_row(*spec)) for name, *spec in DITS[size]]
    rows += [(name, *vae_row(*spec)) for name, *spec in VAES[size]]
    for name, estimate, traced in rows:
        print(f"{name:40s} {estimate / 2**30:12.2f} {traced / 2**30:11.2f} {estimate / traced:6.3f}")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()

"""Step caching: wall-time speed-up against the uncached run, fraction of calls reused, and output deviation.

    python benchmarks/step_cache.py --tiny          # mid-size random model, < 30 s on 2 CPU cores
    python benchmarks/step_cache.py --dim 512 --layers 8 --steps 50

Runs ``wan.sampling.sample`` (official UniPC schedule, CFG with cond and uncond calls) uncached, then with MagCache
and TeaCache at a few thresholds, on the same noise. Reports per run: reused fraction, the ideal speed-up
(model calls / computed calls), the measured one (best of ``--repeats`` wall times, uncached / cached) and their
ratio, and PSNR against the uncached output on the latents and, when the VAE is available, on decoded frames
(a small random Wan 2.1 VAE). The weights are random: the numbers measure the mechanism (how close the speed-up
gets to the ideal), not image quality. The time embedding keeps only its low-frequency inputs so that it changes
per step about as much as a trained model's does (the range the published TeaCache polynomials were fitted on).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan.cache import MagCache, TeaCache  # noqa: E402
from wan.conditioning import TextEmbeds  # noqa: E402
from wan.dit.config import WanDiTConfig  # noqa: E402
from wan.dit.model import WanDiT  # noqa: E402
from wan.experts import ExpertSet  # noqa: E402
from wan.sampling import SamplerSettings, make_noise, sample  # noqa: E402
from wan.variants import VARIANTS  # noqa: E402

TEXT_DIM, TEXT_LEN = 64, 64


@torch.no_grad()
def random_model(dim: int, layers: int, seed: int = 0) -> WanDiT:
    cfg = WanDiTConfig(dim=dim, ffn_dim=4 * dim, num_heads=max(1, dim // 128), num_layers=layers, text_dim=TEXT_DIM,
                       freq_dim=256, text_len=TEXT_LEN)
    model = WanDiT(cfg, VARIANTS["wan21_t2v_1.3b"])
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * (1.0 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.05))
    w = model.time_embedding[0].weight
    low = (torch.arange(w.shape[1] // 2) >= int(0.7 * w.shape[1] // 2)).float()
    w.mul_(torch.cat([low, low]))
    return model.requires_grad_(False).eval()


def timed_run(experts, shape, text, settings, cache, repeats):
    """(best wall time, best process CPU time, result): CPU time is robust to other load on the machine."""
    wall = cpu = math.inf
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = sample(experts, torch.zeros(shape), text, settings, noise=make_noise(shape, 0), step_cache=cache)
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu, result


def psnr(x: torch.Tensor, ref: torch.Tensor, peak: float | None = None) -> float:
    mse = (x - ref).pow(2).mean().item()
    peak = peak if peak is not None else (ref.max() - ref.min()).item()
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def make_decoder(first_frame_only: bool):
    """A small random Wan 2.1 VAE decoder (of the first latent frame only, if asked), or None without the VAE."""
    try:
        from wan.vae import WanVAE, WanVAEConfig, WanVAEModel
    except ImportError:
        return None
    torch.manual_seed(0)
    model = WanVAEModel(WanVAEConfig(dim=8, dec_dim=8))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.5 / math.sqrt(p[0].numel()) if p.dim() > 1 else 0.02))
    vae = WanVAE(model.eval(), torch.float32)
    if first_frame_only:
        return lambda latents: vae.decode(vae.denormalize(latents[:, :, :1]), tiled=False)
    return lambda latents: vae.decode(vae.denormalize(latents), tiled=False)


def policies(steps: int):
    yield "MagCache", 0.06, MagCache(0.06, K=2, retention_ratio=0.2)
    yield "MagCache", 0.12, MagCache(0.12, K=2, retention_ratio=0.2)
    yield "MagCache", 0.24, MagCache(0.24, K=4, retention_ratio=0.2)
    yield "TeaCache e", 0.2, TeaCache(0.2, mode="e")
    yield "TeaCache e0", 0.3, TeaCache(0.3, mode="e0")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="dim 256, 4 layers, 20 steps, 192 tokens, first frame "
                   "decoded: under 30 s")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--latent", default="3x24x24", help="latent frames x height x width")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.tiny:
        args.dim, args.layers, args.steps, args.latent = 256, 4, 20, "3x16x16"
    torch.set_num_threads(args.threads)
    f, h, w = (int(v) for v in args.latent.split("x"))
    shape = (1, 16, f, h, w)
    experts = ExpertSet(random_model(args.dim, args.layers))
    g = torch.Generator().manual_seed(1)
    text = TextEmbeds(torch.randn(1, 24, TEXT_DIM, generator=g), torch.randn(1, 24, TEXT_DIM, generator=g))
    settings = SamplerSettings(steps=args.steps, shift=5.0, cfg_high=5.0)
    decode = make_decoder(first_frame_only=args.tiny)

    base_wall, base_cpu, base = timed_run(experts, shape, text, settings, None, args.repeats)
    base_frames = decode(base.latents) if decode else None
    print(f"model dim {args.dim}, {args.layers} layers, {f * h * w // 4} tokens, {args.steps} steps, CFG; uncached "
          f"{base_wall:.2f} s wall, {base_cpu:.2f} s CPU ({2 * args.steps} model calls)")
    if decode:
        print(f"PSNR dec: frames decoded by a random Wan 2.1 VAE{' (first frame)' if args.tiny else ''}, peak 2")
    print(f"{'policy':<12} {'thresh':>6} {'reused':>7} {'ideal':>6} {'wall':>6} {'ratio':>6} {'CPU':>6} {'ratio':>6} "
          f"{'PSNR lat':>9} {'PSNR dec':>9}")
    for name, thresh, cache in policies(args.steps):
        wall, cpu, result = timed_run(experts, shape, text, settings, cache, args.repeats)
        report = result.cache_report
        ideal, by_wall, by_cpu = report.speedup, base_wall / wall, base_cpu / cpu
        dec = psnr(decode(result.latents), base_frames, peak=2.0) if decode else float("nan")
        print(f"{name:<12} {thresh:>6.2f} {100 * report.reused_fraction:>6.0f}% {ideal:>5.2f}x {by_wall:>5.2f}x "
              f"{by_wall / ideal:>6.2f} {by_cpu:>5.2f}x {by_cpu / ideal:>6.2f} "
              f"{psnr(result.latents, base.latents):>8.1f} {dec:>8.1f}")


if __name__ == "__main__":
    main()

"""Wan VAE decode: our engine vs diffusers on the same weights, and tiled vs whole-frame memory.

    python benchmarks/vae_decode.py [--tiny] [--device cpu|cuda] [--base-dim N]

Weights: a random Wan 2.1-layout VAE written once as a diffusers folder; ours loads that folder with ``load_vae``,
diffusers with ``AutoencoderKLWan.from_pretrained``. Time: best of ``--repeats`` alternating runs after a warm-up.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak of live tensor bytes allocated during the
call, from the PyTorch profiler's allocation events (model weights excluded, outputs included). Printed as ratios.
Targets: time ours/diffusers <= 1.0; tiled peak <= 0.35 x whole-frame peak on a frame 4x the tile area.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan.vae import load_vae  # noqa: E402


def peak_bytes(fn, device: torch.device) -> int:
    """Peak tensor memory allocated while ``fn()`` runs."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def best_times(fns, device: torch.device, repeats: int) -> list[float]:
    """Best wall time of each function; runs alternate so that a busy machine slows both alike."""
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()  # warm-up
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def make_weights(folder: Path, base_dim: int) -> None:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    model = AutoencoderKLWan(base_dim=base_dim, z_dim=16)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    model.save_pretrained(str(folder))


def compare_with_diffusers(folder: Path, args, device: torch.device) -> None:
    from diffusers import AutoencoderKLWan

    ours = load_vae(folder, dtype="fp32", device=device)
    theirs = AutoencoderKLWan.from_pretrained(str(folder)).to(device).eval()
    h, w = args.mid
    z = torch.randn(1, 16, args.latent_frames, h // 8, w // 8, device=device)

    def run_ours():
        return ours.decode(z, tiled="off")

    def run_theirs():
        with torch.no_grad():
            return theirs.decode(z).sample

    err = (run_ours() - run_theirs()).abs().max().item()
    t_ours, t_theirs = best_times([run_ours, run_theirs], device, args.repeats)
    m_ours, m_theirs = peak_bytes(run_ours, device), peak_bytes(run_theirs, device)
    frames = 1 + 4 * (args.latent_frames - 1)
    print(f"decode {frames} frames at {w}x{h} (base dim {args.base_dim}, {device.type}), max |ours - diffusers| = "
          f"{err:.2e}")
    print(f"  time  ours {t_ours:8.3f} s   diffusers {t_theirs:8.3f} s   ratio {t_ours / t_theirs:.2f}  "
          f"(target <= 1.0)")
    print(f"  peak  ours {m_ours / 2**20:8.1f} MB  diffusers {m_theirs / 2**20:8.1f} MB  ratio "
          f"{m_ours / m_theirs:.2f}")


def compare_tiled(folder: Path, args, device: torch.device) -> None:
    vae = load_vae(folder, dtype="fp32", device=device)
    h, w = args.large
    tile = min(h, w) // 2
    z = torch.randn(1, 16, args.latent_frames, h // 8, w // 8, device=device)
    full = peak_bytes(lambda: vae.decode(z, tiled="off"), device)
    tiled = peak_bytes(lambda: vae.decode(z, tiled="on", tile_size=tile, overlap=args.overlap), device)
    err = (vae.decode(z, tiled="off") - vae.decode(z, tiled="on", tile_size=tile, overlap=args.overlap)).abs()
    print(f"decode at {w}x{h}, tiles {tile}x{tile} px overlap {args.overlap} (frame = {h * w / tile ** 2:.0f}x tile "
          f"area)")
    print(f"  peak  whole {full / 2**20:8.1f} MB  tiled {tiled / 2**20:8.1f} MB  ratio {tiled / full:.2f}  "
          f"(target <= 0.35); tiled vs whole max err {err.max():.3f}, mean {err.mean():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small widths and sizes (smoke run, seconds)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--base-dim", type=int, default=None, help="VAE base width (release: 96)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    tiny = args.tiny
    if tiny and device.type == "cpu":
        torch.set_num_threads(1)  # tiny convolutions gain nothing from threads, and a busy CI machine stalls them
    args.base_dim = args.base_dim or (8 if tiny else (96 if device.type == "cuda" else 32))
    args.repeats = args.repeats or (1 if tiny else 3)
    args.latent_frames = 2
    args.mid = (32, 32) if tiny else ((480, 832) if device.type == "cuda" else (128, 128))
    args.large = (64, 64) if tiny else ((1024, 1024) if device.type == "cuda" else (256, 256))
    args.overlap = 8 if tiny else 32
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "vae"
        make_weights(folder, args.base_dim)
        with torch.no_grad():
            compare_with_diffusers(folder, args, device)
            compare_tiled(folder, args, device)


if __name__ == "__main__":
    main()

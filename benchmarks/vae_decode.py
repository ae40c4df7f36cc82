"""Wan VAE decode against peers on the same weights: time (same process) and peak memory growth (fresh processes);
tiled vs whole-frame memory.

    python benchmarks/vae_decode.py [--versions 2.1 2.2] [--frames 5 17] [--size HxW] [--repeats N]
                                    [--threads N] [--clock wall|cpu] [--comfyui PATH] [--device cpu|cuda] [--tiled]
    python benchmarks/vae_decode.py --tiny      # smoke run (small widths, seconds)

Weights: random, at the released widths unless ``--base-dim`` (2.1: base 96; 2.2: encoder 160, decoder 256), written
once per version as a diffusers ``AutoencoderKLWan`` folder. Ours loads it with ``load_vae``, diffusers with
``from_pretrained``; the official code (``wan22`` ``WanVAE_``) and ComfyUI (``--comfyui PATH``, its
comfy/ldm/wan/vae*.py) take the same tensors under the official names. Every decode is float32, whole frame.
Time: median of interleaved rounds (every peer decodes once per round; the machine may be shared, so single
timings are noise). Memory: each peer in a fresh process loads the weights (copied into private memory), resets
its peak RSS, decodes once; growth = peak RSS during the decode - RSS before it (on CUDA: peak allocated bytes);
the median of ``--memory-runs`` such processes per peer, run in turn. Targets: time ours /
diffusers <= 0.85; growth ours / the smallest peer's <= 1.0; with ``--tiled``: tiled peak <= 0.35 x whole-frame
peak (live tensor bytes) on a frame of 4x the tile area.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when imported as benchmarks.*
from harness import (ROOT, add_timing_options, apply_timing_options, import_comfyui,  # noqa: E402
                     interleaved_medians, ratio_line, rss_kb, run_probe)

sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from wan.weights.checkpoint import read_state_dict  # noqa: E402
from wan.vae import load_vae  # noqa: E402
from wan.vae.keys import normalize_keys  # noqa: E402

PEERS = ("ours", "diffusers", "official", "ComfyUI")


@dataclass(frozen=True)
class Release:
    z_dim: int
    stride: int  # pixels per latent pixel
    dec_ratio: float  # decoder base width / encoder base width
    official_module: str  # wan22 module with WanVAE_
    comfy_module: str
    diffusers_extra: dict


RELEASES = {
    "2.1": Release(16, 8, 1.0, "modules.vae2_1", "comfy.ldm.wan.vae", {}),
    "2.2": Release(48, 16, 1.6, "modules.vae2_2", "comfy.ldm.wan.vae2_2",
                   dict(is_residual=True, patch_size=2, in_channels=12, out_channels=12, scale_factor_spatial=16)),
}
RELEASED_BASE = {"2.1": 96, "2.2": 160}
SHAPE = dict(dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True])


def make_weights(folder: Path, version: str, base: int) -> None:
    from diffusers import AutoencoderKLWan

    r = RELEASES[version]
    torch.manual_seed(0)
    model = AutoencoderKLWan(base_dim=base, decoder_base_dim=round(base * r.dec_ratio), z_dim=r.z_dim,
                             **r.diffusers_extra)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    model.save_pretrained(str(folder))


def file_weights(folder: Path, official_names: bool) -> dict[str, torch.Tensor]:
    """The folder's tensors as views of the memory-mapped file, so that peers in one process share one copy."""
    sd = read_state_dict(folder)
    return normalize_keys(sd)[0] if official_names else sd


def _assigned(factory, sd: dict[str, torch.Tensor], device: torch.device):
    with torch.device("meta"):
        model = factory()
    model.load_state_dict(sd, strict=True, assign=True)
    return model.to(device).eval()


def build(peer: str, version: str, base: int, folder: Path, device: torch.device,
          comfyui: str | None) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.nn.Module]:
    """(a function decoding raw latents [1, z, T, h, w] -> video, the module holding the weights) for ``peer``."""
    r = RELEASES[version]
    if peer == "ours":
        vae = load_vae(folder, dtype="fp32", device=device)
        return (lambda z: vae.decode(z, tiled="off")), vae.model
    if peer == "diffusers":
        from diffusers import AutoencoderKLWan

        config = AutoencoderKLWan.load_config(str(folder))
        model = _assigned(lambda: AutoencoderKLWan.from_config(config), file_weights(folder, False), device)
        return (lambda z: model.decode(z).sample), model
    dims = dict(dim=base, z_dim=r.z_dim, **SHAPE)
    if version == "2.2":
        dims["dec_dim"] = round(base * r.dec_ratio)
    if peer == "official":
        from oracles import official

        model = _assigned(lambda: official.load(r.official_module).WanVAE_(**dims), file_weights(folder, True), device)
        scale = [torch.zeros(r.z_dim, device=device), torch.ones(r.z_dim, device=device)]  # raw latents in
        return (lambda z: model.decode(z, scale)), model
    import_comfyui(comfyui, device)
    import importlib

    model = _assigned(lambda: importlib.import_module(r.comfy_module).WanVAE(**dims), file_weights(folder, True),
                      device)
    return model.decode, model


def latents(version: str, frames: int, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    r = RELEASES[version]
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, r.z_dim, 1 + (frames - 1) // 4, size[0] // r.stride, size[1] // r.stride,
                       generator=g).to(device)


def probe(args) -> None:
    """(Fresh process) one peer: load and touch the weights, reset the peak, decode once; print the growth (JSON)."""
    device = torch.device(args.device)
    decode, module = build(args.probe, args.version, args.base, Path(args.folder), device, args.comfyui)
    z = latents(args.version, args.frames[0], args.size, device)
    with torch.no_grad():
        for param in module.parameters():  # weights in private memory: memory-mapped pages the system may drop
            param.data = param.data.clone()  # and fault in again would count as growth
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            decode(z)
            torch.cuda.synchronize()
            growth = torch.cuda.max_memory_allocated() - before
        else:
            open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS (Linux)
            before = rss_kb("VmRSS:")
            decode(z)
            growth = (rss_kb("VmHWM:") - before) * 1024
    print(json.dumps({"growth": growth}))


def memory_growth(peers, args, folder: Path, version: str, frames: int) -> dict[str, int]:
    common = ["--version", version, "--base-dim", str(args.base), "--folder", str(folder), "--frames", str(frames),
              "--size", f"{args.size[0]}x{args.size[1]}", "--device", args.device, "--threads",
              str(torch.get_num_threads())]
    if args.comfyui:
        common += ["--comfyui", args.comfyui]
    runs = {peer: [] for peer in peers}
    for _ in range(args.memory_runs):  # interleaved too: the machine's state drifts
        for peer in peers:
            runs[peer].append(run_probe(Path(__file__), "--probe", peer, *common)["growth"])
    return {peer: statistics.median(growths) for peer, growths in runs.items()}


def compare(peers, args, folder: Path, version: str, frames: int, device: torch.device) -> None:
    z = latents(version, frames, args.size, device)
    fns = {peer: build(peer, version, args.base, folder, device, args.comfyui)[0] for peer in peers}
    with torch.no_grad():
        outs = {peer: fn(z).clamp(-1, 1) for peer, fn in fns.items()}
        runs = {peer: (lambda fn=fn: fn(z)) for peer, fn in fns.items()}
        times = interleaved_medians(runs, args.repeats, device, args.clock)
    del fns
    growth = memory_growth(peers, args, folder, version, frames)
    h, w = args.size
    print(f"Wan {version} VAE (base {args.base}), decode {frames} frames at {w}x{h}, {device.type}, float32:")
    for peer in peers:
        err = "" if peer == "ours" else f"   max |ours - {peer}| = {(outs['ours'] - outs[peer]).abs().max():.1e}"
        print(f"  {peer:<10} time {times[peer]:8.3f} s   growth {growth[peer] / 2**20:8.1f} MB{err}")
    print(ratio_line("diffusers, time", times["ours"], times["diffusers"], 0.85))
    best = min((p for p in peers if p != "ours"), key=growth.get)
    print(ratio_line(f"{best}, growth (smallest)", growth["ours"], growth[best], 1.0))


def peak_bytes(fn, device: torch.device) -> int:
    """Peak tensor memory allocated while ``fn()`` runs (CPU: live bytes from the profiler's allocation events)."""
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


def compare_tiled(folder: Path, args, device: torch.device) -> None:
    vae = load_vae(folder, dtype="fp32", device=device)
    h, w = 2 * args.size[0], 2 * args.size[1]
    tile = min(h, w) // 2
    z = latents("2.1", 5, (h, w), device)
    with torch.no_grad():
        full = peak_bytes(lambda: vae.decode(z, tiled="off"), device)
        tiled = peak_bytes(lambda: vae.decode(z, tiled="on", tile_size=tile, overlap=args.overlap), device)
        err = (vae.decode(z, tiled="off") - vae.decode(z, tiled="on", tile_size=tile, overlap=args.overlap)).abs()
    print(f"Wan 2.1 decode at {w}x{h}, tiles {tile}x{tile} px overlap {args.overlap} (frame = 4x tile area)")
    print(f"  peak  whole {full / 2**20:8.1f} MB  tiled {tiled / 2**20:8.1f} MB  ratio {tiled / full:.2f}  "
          f"(target <= 0.35); tiled vs whole max err {err.max():.3f}, mean {err.mean():.4f}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small widths and sizes (smoke run)")
    parser.add_argument("--versions", nargs="+", default=["2.1", "2.2"], choices=sorted(RELEASES))
    parser.add_argument("--frames", nargs="+", type=int, default=None, help="video frames (default 5 17)")
    parser.add_argument("--size", default=None, help="HxW pixels (default 128x128; tiny 32x32)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--base-dim", type=int, default=None, help="encoder base width (default: the release's)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved timing rounds (default 3)")
    parser.add_argument("--comfyui", default=None, help="path of a ComfyUI checkout: adds its VAEs as peers")
    parser.add_argument("--memory-runs", type=int, default=None,
                        help="fresh processes per peer for the growth, median taken (default 3; tiny 1)")
    parser.add_argument("--no-official", action="store_true", help="leave the official code out (quicker)")
    parser.add_argument("--tiled", action="store_true", help="also compare tiled and whole-frame decode memory")
    add_timing_options(parser)
    parser.add_argument("--probe", choices=PEERS, help=argparse.SUPPRESS)
    parser.add_argument("--version", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.frames = args.frames or ([5] if args.tiny else [5, 17])
    args.size = tuple(int(s) for s in (args.size or ("32x32" if args.tiny else "128x128")).split("x"))
    args.repeats = args.repeats or (1 if args.tiny else 3)
    args.memory_runs = args.memory_runs or (1 if args.tiny else 3)
    args.overlap = 8 if args.tiny else 32
    args.base = args.base_dim
    return args


def main() -> None:
    args = parse_args()
    if args.tiny and not args.threads:
        args.threads = 1  # tiny convolutions gain nothing from threads, and a busy machine stalls them
    timing = apply_timing_options(args)
    if args.probe:
        return probe(args)
    print(f"timing: {timing}")
    device = torch.device(args.device)
    peers = ["ours", "diffusers"] + ([] if args.no_official else ["official"]) + (["ComfyUI"] if args.comfyui else [])
    for version in args.versions:
        args.base = args.base_dim or (8 if args.tiny else RELEASED_BASE[version])
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "vae"
            make_weights(folder, version, args.base)
            for frames in args.frames:
                compare(peers, args, folder, version, frames, device)
            if args.tiled and version == "2.1":
                compare_tiled(folder, args, device)


if __name__ == "__main__":
    main()

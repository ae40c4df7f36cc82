"""DiT forward time (ours vs diffusers, same weights, same process) and loading memory (peak RSS vs file size).

    python benchmarks/dit_forward.py          # mid size: dim 1536, 2 layers, ~2k tokens; a 1.1 GB file for memory
    python benchmarks/dit_forward.py --tiny   # a quick smoke run (small model, small file)

Targets: forward time ratio ours/diffusers <= 1.0; peak RSS growth while loading and touching every weight
<= 1.15 x the file size. The memory runs happen in fresh subprocesses; a naive load (read the whole file into
memory, then copy into the module) is measured the same way as the peer.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wan.dit.config import WanDiTConfig  # noqa: E402
from wan.dit.model import WanDiT  # noqa: E402


def random_official_weights(cfg: WanDiTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanDiT(cfg).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}


def time_forward(cfg: WanDiTConfig, grid: tuple[int, int, int], repeats: int) -> dict:
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    from safetensors.torch import save_file

    import wan

    weights = random_official_weights(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dit.safetensors"
        save_file(weights, str(path))
        ours = wan.load_dit(path, num_heads=cfg.num_heads)
        theirs = WanTransformer3DModel(
            num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim, in_channels=cfg.in_dim,
            out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim,
            num_layers=cfg.num_layers).eval()
        theirs.load_state_dict(convert_wan_transformer_to_diffusers(dict(weights)), strict=True)
        f, h, w = grid
        x = torch.randn(1, cfg.in_dim, f, 2 * h, 2 * w)
        t = torch.tensor([700.0])
        ctx = torch.randn(1, cfg.text_len, cfg.text_dim)
        runs = {"ours": lambda: ours(x, t, ctx), "diffusers": lambda: theirs(x, t, ctx, return_dict=False)[0]}
        times: dict[str, list[float]] = {k: [] for k in runs}
        with torch.no_grad():
            out_ours, out_theirs = runs["ours"](), runs["diffusers"]()  # warm-up, and an agreement check
            for _ in range(repeats):
                for name, fn in runs.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
    err = ((out_ours - out_theirs).abs().max() / out_theirs.abs().max()).item()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"tokens": f * h * w, "ours_s": med["ours"], "diffusers_s": med["diffusers"],
            "ratio": med["ours"] / med["diffusers"], "rel_err": err}


_MEMORY_PROBE = r"""
import sys, json, torch
sys.path.insert(0, sys.argv[1])
import wan
from wan.dit.model import WanDiT
from wan.dit.config import WanDiTConfig

def rss_kb(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1])

path, mode, heads = sys.argv[2], sys.argv[3], int(sys.argv[4])
base = rss_kb('VmRSS:')
if mode == 'ours':
    model = wan.load_dit(path, num_heads=heads)
else:  # the naive peer: read the file into memory, build a module, copy the weights in
    from safetensors.torch import load
    sd = load(open(path, 'rb').read())
    model = WanDiT(WanDiTConfig.from_state_dict(sd, heads))
    model.load_state_dict(sd)
total = sum(float(p.sum()) for p in model.parameters())  # touch every weight (no large temporaries)
print(json.dumps({'base_kb': base, 'peak_kb': rss_kb('VmHWM:')}))
"""


def measure_load_memory(cfg: WanDiTConfig) -> dict:
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.safetensors"
        save_file(random_official_weights(cfg), str(path))
        size = path.stat().st_size
        result = {"file_gb": size / 1e9}
        for mode in ("ours", "naive"):
            out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(ROOT), str(path), mode, str(cfg.num_heads)],
                                 capture_output=True, text=True, check=True)
            probe = json.loads(out.stdout.strip().splitlines()[-1])
            result[f"{mode}_ratio"] = (probe["peak_kb"] - probe["base_kb"]) * 1024 / size
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes for a quick smoke run")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.tiny:
        speed_cfg = WanDiTConfig(dim=256, ffn_dim=1024, num_heads=2, num_layers=1, text_dim=256)
        grid, repeats = (3, 8, 12), 2
        mem_cfg = WanDiTConfig(dim=512, ffn_dim=2048, num_heads=4, num_layers=4, text_dim=512)
    else:
        speed_cfg = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=2)
        grid, repeats = (5, 15, 26), 5  # 1950 tokens
        mem_cfg = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=6)  # ~1.1 GB float32
    speed = time_forward(speed_cfg, grid, repeats)
    print(f"forward, dim {speed_cfg.dim}, {speed_cfg.num_layers} layers, {speed['tokens']} tokens: "
          f"ours {speed['ours_s']:.3f} s, diffusers {speed['diffusers_s']:.3f} s, "
          f"ratio {speed['ratio']:.3f} (target <= 1.0); outputs agree to {speed['rel_err']:.1e} relative")
    mem = measure_load_memory(mem_cfg)
    print(f"loading a {mem['file_gb']:.2f} GB safetensors: peak RSS growth {mem['ours_ratio']:.3f} x file size "
          f"(target <= 1.15); naive read-and-copy load {mem['naive_ratio']:.3f} x")


if __name__ == "__main__":
    main()

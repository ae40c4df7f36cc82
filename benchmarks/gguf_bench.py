"""GGUF DiT: forward time of Q8_0 and Q4_K models against the same model unquantised (fp32 and bf16, same process),
and peak RSS while loading a GGUF file of over 1 GB (fresh subprocess).

    python benchmarks/gguf_bench.py          # dim 1536, 2 layers, 1560 tokens; a 1.5 GB Q8_0 file (Wan 2.1 1.3B shapes)
    python benchmarks/gguf_bench.py --tiny   # a quick smoke run (small model, small file)

Targets: a Q8_0 forward costs <= 1.3 x the unquantised one in the same compute dtype at dim >= 1536 (the per-layer
dequantisation is the overhead; it shrinks as the token count grows); peak RSS growth while loading the file and
touching every stored weight <= 1.1 x the file size (weights stay in the memory-mapped file, quantised). The CPU
may be shared: repeats are interleaved and medians reported.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import wan  # noqa: E402
from wan.dit.config import WanDiTConfig  # noqa: E402
from wan.dit.model import WanDiT  # noqa: E402
from wan.quant.gguf_write import write_gguf  # noqa: E402
from benchmarks.dit_forward import random_official_weights  # noqa: E402
from harness import interleaved_forwards  # noqa: E402


def shapes_of(cfg: WanDiTConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in WanDiT(cfg).state_dict().items()}


def time_forward(cfg: WanDiTConfig, grid: tuple[int, int, int], repeats: int) -> dict:
    weights = random_official_weights(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "dit.safetensors"
        save_file(weights, str(plain))
        q8 = Path(tmp) / "dit-Q8_0.gguf"
        write_gguf(q8, weights, T.Q8_0)  # quantised from the same values
        q4k = Path(tmp) / "dit-Q4_K.gguf"
        write_gguf(q4k, dict(shapes_of(cfg)), T.Q4_K)  # random blocks: gguf cannot quantise K-quants
        del weights
        results = {dtype: _time_models(cfg, grid, repeats, dtype, plain, q8, q4k) for dtype in ("fp32", "bf16")}
    return results


def _time_models(cfg, grid, repeats, dtype, plain, q8, q4k) -> dict:
    models = {name: wan.load_dit(p, dtype=dtype, num_heads=cfg.num_heads)
              for name, p in (("plain", plain), ("Q8_0", q8), ("Q4_K", q4k))}
    compute = models["plain"].compute_dtype
    f, h, w = grid
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, cfg.in_dim, f, 2 * h, 2 * w, generator=g).to(compute)
    ctx = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g).to(compute)
    t = torch.tensor([700.0])
    outs, med = interleaved_forwards(models, (x, t, ctx), repeats)  # the warm-up outputs check Q8_0 agreement
    outs = {k: v.float() for k, v in outs.items()}
    err = ((outs["Q8_0"] - outs["plain"]).abs().max() / outs["plain"].abs().max()).item()
    return {"tokens": f * h * w, **{f"{k}_s": v for k, v in med.items()},
            "Q8_0_ratio": med["Q8_0"] / med["plain"], "Q4_K_ratio": med["Q4_K"] / med["plain"], "q8_rel_err": err}


MEMORY_PROBE = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import wan, wan.dit.gguf, wan.dit.loader  # code, not data: imported before the baseline
status = lambda: dict(line.split(':', 1) for line in open('/proc/self/status'))
base = int(status()['VmRSS'].split()[0])
model = wan.load_dit(sys.argv[2], num_heads=int(sys.argv[3]))
for p in model.parameters():  # read every stored byte; max() needs no temporary (a uint8 sum widens to int64)
    p.max()
print(json.dumps({'base_kb': base, 'peak_kb': int(status()['VmHWM'].split()[0])}))
"""


def measure_load_memory(cfg: WanDiTConfig) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big-Q8_0.gguf"
        write_gguf(path, dict(shapes_of(cfg)), T.Q8_0)
        size = path.stat().st_size
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(ROOT), str(path), str(cfg.num_heads)],
                             capture_output=True, text=True, check=True)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    return {"file_gb": size / 1e9, "ratio": (probe["peak_kb"] - probe["base_kb"]) * 1024 / size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes for a quick smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="timed forwards per model (default 5; tiny 2)")
    parser.add_argument("--skip-memory", action="store_true", help="time the forwards only")
    parser.add_argument("--skip-speed", action="store_true", help="measure the loading memory only")
    args = parser.parse_args()
    if args.tiny:
        speed_cfg = WanDiTConfig(dim=256, ffn_dim=1024, num_heads=2, num_layers=1, text_dim=256)
        grid, repeats = (2, 8, 12), 2
        mem_cfg = WanDiTConfig(dim=512, ffn_dim=2048, num_heads=4, num_layers=4, text_dim=512)
    else:
        speed_cfg = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=2)
        grid, repeats = (1, 30, 52), 5  # 1560 tokens: one 480 x 832 frame
        mem_cfg = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)  # Wan 2.1 1.3B: ~1.5 GB Q8_0
    speed = {} if args.skip_speed else time_forward(speed_cfg, grid, args.repeats or repeats)
    for dtype, r in speed.items():
        print(f"forward {dtype}, dim {speed_cfg.dim}, {speed_cfg.num_layers} layers, {r['tokens']} tokens: "
              f"plain {r['plain_s']:.3f} s, Q8_0 {r['Q8_0_s']:.3f} s (ratio {r['Q8_0_ratio']:.3f}, target <= 1.3), "
              f"Q4_K {r['Q4_K_s']:.3f} s (ratio {r['Q4_K_ratio']:.3f}); Q8_0 output within "
              f"{r['q8_rel_err']:.1e} of the unquantised one")
    if args.skip_memory:
        return
    mem = measure_load_memory(mem_cfg)
    print(f"loading a {mem['file_gb']:.2f} GB Q8_0 GGUF and touching every weight: peak RSS growth "
          f"{mem['ratio']:.3f} x file size (target <= 1.1)")


if __name__ == "__main__":
    main()

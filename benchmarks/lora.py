"""LoRA cost: forward time of a model with an unmerged LoRA, and load time / peak memory of a merged one.

    python benchmarks/lora.py          # dim 1536, 2 layers, ~2k tokens; a 0.55 GB bf16 file for load and memory
    python benchmarks/lora.py --tiny   # a quick smoke run

Forward: a rank-32 LoRA on every Linear layer kept unmerged (``merge=False``: patched on the fly, as fp8 and
quantised weights always are) against the same model without LoRA, repeats interleaved, medians; target ratio
<= 1.05 at dim >= 1536. The merged LoRA is timed too (it should cost nothing per step).
Load: in fresh subprocesses, wall time and peak RSS growth of ``load_dit`` (every weight touched) with and without
``apply_lora`` (merged), for a bf16 file (merged layers are new tensors, and the file's pages of the layers they
replace are given back: about the LoRA's size extra) and a scaled fp8 file (on the fly: no extra memory beyond the
LoRA itself).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from dit_forward import random_official_weights  # noqa: E402
from harness import interleaved_forwards  # noqa: E402
from wan.dit.config import WanDiTConfig  # noqa: E402

RANK = 32


def write_lora(weights: dict, path: Path, rank: int = RANK) -> Path:
    """A rank-``rank`` LoRA (Comfy names, with alpha) on every 2-D Linear weight of ``weights``."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    tensors = {}
    for name, w in weights.items():
        if name.endswith(".weight") and w.dim() == 2 and ".norm" not in name:
            stem = "diffusion_model." + name[: -len(".weight")]
            tensors[f"{stem}.lora_down.weight"] = torch.randn(rank, w.shape[1], generator=g) * 0.01
            tensors[f"{stem}.lora_up.weight"] = torch.randn(w.shape[0], rank, generator=g) * 0.01
            tensors[f"{stem}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path))
    return path


def time_forward(cfg: WanDiTConfig, grid: tuple[int, int, int], repeats: int) -> dict:
    from safetensors.torch import save_file

    import wan

    weights = random_official_weights(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        save_file(weights, f"{tmp}/dit.safetensors")
        base = wan.load_dit(f"{tmp}/dit.safetensors", num_heads=cfg.num_heads)
        lora = write_lora(weights, Path(tmp) / "lora.safetensors")
        models = {"no LoRA": base, "unmerged": wan.apply_lora(base, lora, merge=False),
                  "merged": wan.apply_lora(base, lora)}
        f, h, w = grid
        x, t, ctx = torch.randn(1, cfg.in_dim, f, 2 * h, 2 * w), torch.tensor([700.0]), torch.randn(1, 512, cfg.text_dim)
        outs, med = interleaved_forwards(models, (x, t, ctx), repeats)
    agree = ((outs["unmerged"] - outs["merged"]).abs().max() / outs["merged"].abs().max()).item()
    return {"tokens": f * h * w, **med, "agree": agree}


_PROBE = r"""
import json, re, sys, time
sys.path.insert(0, sys.argv[1])
import torch, wan
status = lambda: dict(re.findall(r'(\w+):\s+(\d+) kB', open('/proc/self/status').read()))
path, lora, heads = sys.argv[2], sys.argv[3], int(sys.argv[4])
before = int(status()['VmRSS'])
start = time.perf_counter()
model = wan.load_dit(path, num_heads=heads)
if lora != '-':
    model = wan.apply_lora(model, lora)
total = sum(float(p.float().sum()) for p in model.parameters())  # touch every weight
print(json.dumps({'seconds': time.perf_counter() - start,
                  'grew_kb': max(int(status()['VmHWM']) - before, 1)}))
"""


def _probe(path: Path, lora: str, heads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(ROOT), str(path), lora, str(heads)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _scaled_fp8(weights: dict) -> dict:
    out = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for k, v in weights.items():
        if k.endswith(".weight") and v.dim() == 2 and ".norm" not in k:
            scale = v.abs().max().float() / 448.0
            out[k], out[k[: -len("weight")] + "scale_weight"] = (v / scale).to(torch.float8_e4m3fn), scale.reshape(1)
        else:
            out[k] = v
    return out


def measure_load(cfg: WanDiTConfig) -> dict:
    from safetensors.torch import save_file

    weights = {k: v.to(torch.bfloat16) for k, v in random_official_weights(cfg).items()}
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        lora = write_lora(weights, Path(tmp) / "lora.safetensors")
        for kind, sd in (("bf16", weights), ("scaled fp8", _scaled_fp8(weights))):
            path = Path(tmp) / "dit.safetensors"
            save_file(sd, str(path))
            base, patched = _probe(path, "-", cfg.num_heads), _probe(path, str(lora), cfg.num_heads)
            result[kind] = {"file_gb": path.stat().st_size / 1e9, "lora_gb": lora.stat().st_size / 1e9,
                            "time": patched["seconds"] / base["seconds"], "rss": patched["grew_kb"] / base["grew_kb"],
                            "base_s": base["seconds"], "base_gb": base["grew_kb"] * 1024 / 1e9}
    return result


# (forward model, latent grid, repeats, load / memory model) for a full run and for --tiny
SIZES = {
    "full": (WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=2), (5, 15, 26), 7,  # 1950 tokens
             WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=6)),  # a 0.55 GB bf16 file
    "tiny": (WanDiTConfig(dim=256, ffn_dim=1024, num_heads=2, num_layers=1, text_dim=256), (3, 8, 12), 2,
             WanDiTConfig(dim=512, ffn_dim=2048, num_heads=4, num_layers=2, text_dim=512)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes for a quick smoke run")
    parser.add_argument("--threads", type=int, default=1, help=(
        "torch threads for the forward timing (default 1: on a shared, busy machine, multi-threaded small kernels "
        "mostly measure waits for busy cores)"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    speed_cfg, grid, repeats, mem_cfg = SIZES["tiny" if args.tiny else "full"]
    s = time_forward(speed_cfg, grid, repeats)
    print(f"forward ({args.threads} threads), dim {speed_cfg.dim}, {speed_cfg.num_layers} layers, {s['tokens']} tokens, "
          f"rank-{RANK} LoRA on "
          f"every Linear: no LoRA {s['no LoRA']:.3f} s, unmerged {s['unmerged']:.3f} s (ratio "
          f"{s['unmerged'] / s['no LoRA']:.3f}, target <= 1.05), merged {s['merged']:.3f} s (ratio "
          f"{s['merged'] / s['no LoRA']:.3f}); unmerged and merged outputs agree to {s['agree']:.1e} relative")
    for kind, m in measure_load(mem_cfg).items():
        print(f"load a {m['file_gb']:.2f} GB {kind} DiT ({m['base_s']:.2f} s, peak RSS +{m['base_gb']:.2f} GB) with a "
              f"{m['lora_gb']:.3f} GB LoRA applied (merged where float): time x{m['time']:.2f}, peak RSS x{m['rss']:.2f}")


if __name__ == "__main__":
    main()

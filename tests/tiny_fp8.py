"""Tiny fp8 DiT files for the fp8-product and compile tests: the official tiny T2V weights with every block Linear
stored as Comfy-Org scaled fp8 (one scale per layer, or one per output row)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from tiny_dit import official_dit, state_dict_of

F8 = torch.float8_e4m3fn
E4M3_MAX = 448.0


def scaled_fp8(w: torch.Tensor, per_row: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 values, float32 scale: a scalar or [rows, 1]) of a float weight."""
    amax = w.float().abs().amax(dim=1, keepdim=True) if per_row else w.float().abs().max()
    scale = amax.clamp(min=1e-12) / E4M3_MAX
    return (w.float() / scale).to(F8), scale


def scaled_fp8_dit(path: Path, per_row: bool = False, seed: int = 0) -> Path:
    """Write the tiny T2V DiT with its block Linear weights in scaled fp8 (Comfy-Org layout, with the marker)."""
    out = {"scaled_fp8": torch.empty(0, dtype=F8)}
    for key, value in state_dict_of(official_dit("t2v", seed=seed)).items():
        if key.startswith("blocks.") and key.endswith(".weight") and value.dim() == 2:
            q, scale = scaled_fp8(value, per_row)
            out[key], out[key[: -len("weight")] + "scale_weight"] = q, scale.reshape(-1) if per_row else scale
        else:
            out[key] = value.contiguous()
    save_file({k if k == "scaled_fp8" else "model.diffusion_model." + k: v.contiguous() for k, v in out.items()},
              str(path))
    return path

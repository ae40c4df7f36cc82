"""Comfy-Org "scaled fp8": an fp8 weight and a per-layer float32 ``scale_weight``; real weight = fp8 × scale.

The product is formed in the compute dtype (as ComfyUI does), so a layer costs one cast and one multiply.
Plain fp8 files (no scale) need no format: the weight is simply cast.
"""
from __future__ import annotations

import torch

from ..errors import CheckpointError
from .base import WeightFormat


class ScaledFP8(WeightFormat):
    name = "scaled fp8"

    def dequantize(self, layer, dtype: torch.dtype, device) -> torch.Tensor:
        w = layer.weight.to(device=device, dtype=dtype)
        return w * layer.scale_weight.to(device=device, dtype=dtype)

    def dequantize_rows(self, layer, start: int, stop: int, dtype: torch.dtype, device) -> torch.Tensor:
        scale = layer.scale_weight  # one for the layer, or one per row ([rows, 1])
        scale = scale[start:stop] if scale.dim() else scale
        return layer.weight[start:stop].to(device=device, dtype=dtype) * scale.to(device=device, dtype=dtype)


SCALED_FP8 = ScaledFP8()
MARKER = "scaled_fp8"  # the marker tensor of a scaled-fp8 file, under any prefix (model.diffusion_model.scaled_fp8)


def is_marker(key: str) -> bool:
    return key == MARKER or key.endswith("." + MARKER)


def checked_scale(scale: torch.Tensor, rows: int, layer: str, source: str) -> torch.Tensor:
    """The float32 scale of an fp8 layer with ``rows`` output rows: one for the layer, or one per row (as
    ``[rows, 1]``); a scale of another shape or with NaN / inf is refused at load, naming the layer."""
    if scale.numel() == 1:
        out = scale.float().reshape(())
    elif scale.numel() == rows and (scale.dim() == 1 or tuple(scale.shape) == (rows, 1)):
        out = scale.float().reshape(rows, 1)
    else:
        raise CheckpointError(f"'{source}': the fp8 scale of layer '{layer}' has shape {tuple(scale.shape)}, which "
                              f"is neither one scale nor one per output row ({rows}). The file is damaged or was "
                              f"made for another model.")
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(f"'{source}': the fp8 scale of layer '{layer}' holds NaN or infinite values, so the "
                              f"layer's weights would be too. The quantised file is broken: download or make it "
                              f"again.")
    return out

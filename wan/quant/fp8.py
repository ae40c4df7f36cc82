"""Comfy-Org "scaled fp8": an fp8 weight and a per-layer float32 ``scale_weight``; real weight = fp8 × scale.

The product is formed in the compute dtype (as ComfyUI does), so a layer costs one cast and one multiply.
Plain fp8 files (no scale) need no format: the weight is simply cast.
"""
from __future__ import annotations

import torch

from .base import WeightFormat


class ScaledFP8(WeightFormat):
    name = "scaled fp8"

    def dequantize(self, layer, dtype: torch.dtype, device) -> torch.Tensor:
        w = layer.weight.to(device=device, dtype=dtype)
        return w * layer.scale_weight.to(device=device, dtype=dtype)


SCALED_FP8 = ScaledFP8()

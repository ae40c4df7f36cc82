"""Layers shared by the Wan models: weights may be stored in a lower precision than the compute dtype.

``Linear`` computes in the dtype of its input. Its weight may be stored in another dtype (fp8 checkpoints stay
fp8 in memory) and, for Comfy-Org "scaled fp8" files, carries a ``scale_weight`` so that the real weight is
``weight * scale_weight``; the weight is cast (and scaled) on the fly, one layer at a time.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


class Linear(nn.Linear):
    scale_weight: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.compute_weight(x.dtype, x.device), _cast(self.bias, x.dtype, x.device))

    def compute_weight(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        w = _cast(self.weight, dtype, device)
        if self.scale_weight is not None:
            w = w * self.scale_weight.to(device=device, dtype=dtype)
        return w


def _cast(t: torch.Tensor | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    if t is None or (t.dtype == dtype and t.device == device):
        return t
    return t.to(device=device, dtype=dtype)


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm computed in float32 (as the official code does), returned in float32."""
    w = None if weight is None else weight.float()
    b = None if bias is None else bias.float()
    return F.layer_norm(x.float(), (x.shape[-1],), w, b, eps)


class LayerNorm(nn.Module):
    """LayerNorm in float32; optional affine parameters (stored in any dtype). Returns float32."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension: normalised in float32, then cast back and scaled (official order)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype)
        return normed * _cast(self.weight, x.dtype, x.device)

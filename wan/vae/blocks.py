"""Building blocks shared by the Wan 2.1 and 2.2 VAEs (official parameter names).

Every block takes ``(x, stream)``: ``x`` is a video chunk [B, C, T, H, W] and ``stream`` the ``TimeStream`` that
carries what the block must remember from earlier chunks of the same pass.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .causal import CausalConv3d, TimeStream


class RMSNorm(nn.Module):
    """Normalise over channels (dim 1), times sqrt(C) and a per-channel ``gamma`` (official ``RMS_norm``)."""

    def __init__(self, dim: int, spatial_dims: int = 3):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim, *([1] * spatial_dims)))

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(x, dim=1, out=out).mul_(self.gamma * self.scale)

    def with_silu(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """SiLU(norm(x)), written into ``out`` when given (a causal conv's input buffer)."""
        return F.silu(self(x, out=out), inplace=True)


class ResidualBlock(nn.Module):
    """norm, SiLU, 3x3x3 causal conv, norm, SiLU, 3x3x3 causal conv; 1x1x1 conv shortcut when widths differ.

    ``residual`` keeps the official indices (0 norm, 2 conv, 3 norm, 6 conv); 1, 4, 5 are SiLU/SiLU/dropout.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim), nn.SiLU(), nn.Identity(), CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, stream: TimeStream) -> torch.Tensor:
        r = self.residual
        h = r[2](x, stream, r[0].with_silu)
        gathered = r[6].gather(h, stream, r[3].with_silu)
        del h  # the first conv's output is not needed once normalised into the second conv's input
        return r[6].convolve(gathered).add_(self.shortcut(x))


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, spatial_dims=2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, stream: TimeStream | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        qkv = self.to_qkv(self.norm(frames)).flatten(2).transpose(1, 2).unsqueeze(1)  # [(b t), 1, h*w, 3c]
        q, k, v = qkv.chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        return rearrange(self.proj(out), "(b t) c h w -> b c t h w", t=t).add_(x)


class Resample(nn.Module):
    """Spatial 2x up/down sampling per frame, with an optional causal temporal 2x up/down (the ``time_conv``).

    Temporal down: the first chunk passes through; later chunks are convolved (kernel 3, stride 2) together with
    the last frame of the previous chunk. Temporal up: the first chunk is not doubled; later chunks are doubled
    by a causal conv to 2C channels whose halves become two consecutive frames.
    """

    MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")

    def __init__(self, dim: int, mode: str, upsample_dim: int | None = None):
        super().__init__()
        assert mode in self.MODES, mode
        self.mode = mode
        if mode.startswith("up"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          nn.Conv2d(dim, upsample_dim or dim, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, stream: TimeStream) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._double_time(x, stream)
        x = self._per_frame(x)
        if self.mode == "downsample3d":
            x = self._halve_time(x, stream)
        return x

    def _per_frame(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[2]
        x = self.resample(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(x, "(b t) c h w -> b c t h w", t=t)

    def _double_time(self, x: torch.Tensor, stream: TimeStream) -> torch.Tensor:
        if not stream.seen(self):
            stream.put(self, None)
            return x
        return rearrange(self.time_conv(x, stream), "b (two c) t h w -> b c (t two) h w", two=2)

    def _halve_time(self, x: torch.Tensor, stream: TimeStream) -> torch.Tensor:
        past = stream.get(self)
        stream.put(self, x[:, :, -1:])
        if past is None:
            return x
        return self.time_conv(torch.cat([past, x], dim=2))

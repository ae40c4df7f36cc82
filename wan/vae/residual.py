"""Wan 2.2 VAE stages: residual blocks plus a resample, wrapped by a parameter-free shortcut that averages
(down) or duplicates (up) pixels and frames into channels and back."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .blocks import Resample, ResidualBlock
from .causal import TimeStream


class AvgDown3D(nn.Module):
    """Fold ``factor_t x factor_s x factor_s`` neighbours into channels, then average groups down to ``out_dim``.

    A chunk whose length is not a multiple of ``factor_t`` is zero-padded at the front (the first one-frame chunk).
    """

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int = 1):
        super().__init__()
        self.out_dim, self.factor_t, self.factor_s = out_dim, factor_t, factor_s
        self.group = in_dim * factor_t * factor_s * factor_s // out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_t = (-x.shape[2]) % self.factor_t
        if pad_t:
            x = F.pad(x, (0, 0, 0, 0, pad_t, 0))
        x = rearrange(x, "b c (t ft) (h fh) (w fw) -> b (c ft fh fw) t h w",
                      ft=self.factor_t, fh=self.factor_s, fw=self.factor_s)
        return x.unflatten(1, (self.out_dim, self.group)).mean(dim=2)


class DupUp3D(nn.Module):
    """Repeat channels, then unfold them into ``factor_t x factor_s x factor_s`` neighbours (inverse of AvgDown3D).

    On the first chunk of a pass only the last of the ``factor_t`` duplicated frames is kept.
    """

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int = 1):
        super().__init__()
        self.factor_t, self.factor_s = factor_t, factor_s
        self.repeats = out_dim * factor_t * factor_s * factor_s // in_dim

    def forward(self, x: torch.Tensor, first_chunk: bool) -> torch.Tensor:
        x = rearrange(x.repeat_interleave(self.repeats, dim=1), "b (c ft fh fw) t h w -> b c (t ft) (h fh) (w fw)",
                      ft=self.factor_t, fh=self.factor_s, fw=self.factor_s)
        return x[:, :, self.factor_t - 1:] if first_chunk else x


class DownBlock(nn.Module):
    """``num_blocks`` residual blocks and an optional (temporal) downsample, plus the averaging shortcut."""

    def __init__(self, in_dim: int, out_dim: int, num_blocks: int, temporal: bool, down: bool):
        super().__init__()
        self.avg_shortcut = AvgDown3D(in_dim, out_dim, factor_t=2 if temporal else 1, factor_s=2 if down else 1)
        layers = [ResidualBlock(in_dim if i == 0 else out_dim, out_dim) for i in range(num_blocks)]
        if down:
            layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, stream: TimeStream) -> torch.Tensor:
        h = x
        for layer in self.downsamples:
            h = layer(h, stream)
        return h.add_(self.avg_shortcut(x))


class UpBlock(nn.Module):
    """``num_blocks`` residual blocks and an optional (temporal) upsample, plus the duplicating shortcut."""

    def __init__(self, in_dim: int, out_dim: int, num_blocks: int, temporal: bool, up: bool):
        super().__init__()
        self.avg_shortcut = DupUp3D(in_dim, out_dim, factor_t=2 if temporal else 1, factor_s=2) if up else None
        layers = [ResidualBlock(in_dim if i == 0 else out_dim, out_dim) for i in range(num_blocks)]
        if up:
            layers.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, stream: TimeStream) -> torch.Tensor:
        first_chunk = not stream.seen(self)
        stream.put(self, None)
        h = x
        for layer in self.upsamples:
            h = layer(h, stream)
        return h if self.avg_shortcut is None else h.add_(self.avg_shortcut(x, first_chunk))

"""Spatial tiling: run a VAE pass on overlapping tiles and blend them back together.

Each tile goes through the whole time sequence on its own (its own ``TimeStream``), so the causal history stays
correct inside every tile. Tiles are laid out on the latent grid; overlaps are blended with linear ramps, which
leaves no visible seam. The result differs slightly from a full pass because convolutions near a tile edge and
the per-frame attention see only the tile.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class TileGrid:
    """Tile size and overlap in latent pixels (a latent pixel is ``stride`` image pixels)."""

    tile: int
    overlap: int

    @classmethod
    def from_pixels(cls, tile_size: int, overlap: int, stride: int) -> "TileGrid":
        tile = max(2, tile_size // stride)
        return cls(tile=tile, overlap=min(max(0, overlap // stride), tile // 2))

    def spans(self, length: int) -> list[tuple[int, int]]:
        """Start/end of each tile along one axis; the last tile is aligned with the end."""
        if length <= self.tile:
            return [(0, length)]
        step = max(1, self.tile - self.overlap)
        starts = list(range(0, length - self.tile, step)) + [length - self.tile]
        return [(s, s + self.tile) for s in starts]

    def count(self, height: int, width: int) -> int:
        return len(self.spans(height)) * len(self.spans(width))


def blend_ramp(start: int, end: int, length: int, ramp: int) -> torch.Tensor:
    """Weights along one axis of a tile: 1 inside, rising linearly over ``ramp`` where another tile overlaps."""
    w = torch.ones(end - start)
    ramp = min(ramp, (end - start) // 2)
    if ramp > 0:
        rise = torch.arange(1, ramp + 1, dtype=torch.float32) / (ramp + 1)
        if start > 0:
            w[:ramp] = rise
        if end < length:
            w[-ramp:] = rise.flip(0)
    return w


def run_tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grid: TileGrid,
              latent_hw: tuple[int, int], in_scale: int, out_scale: int,
              out_device: torch.device | None = None) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``x`` [B, C, T, H, W] and blend the float32 results on ``out_device``
    (default: where ``fn`` returns them).

    ``in_scale`` / ``out_scale``: pixels per latent pixel in the input / output (decode: 1 / s, encode: s / 1).
    """
    height, width = latent_hw
    out = weight = None
    for h0, h1 in grid.spans(height):
        for w0, w1 in grid.spans(width):
            y = fn(x[..., h0 * in_scale:h1 * in_scale, w0 * in_scale:w1 * in_scale]).to(out_device, torch.float32)
            if out is None:
                out = y.new_zeros(*y.shape[:3], height * out_scale, width * out_scale)
                weight = y.new_zeros(height * out_scale, width * out_scale)
            ramp = grid.overlap * out_scale
            w2d = (blend_ramp(h0 * out_scale, h1 * out_scale, height * out_scale, ramp)[:, None]
                   * blend_ramp(w0 * out_scale, w1 * out_scale, width * out_scale, ramp)[None, :]).to(y.device)
            rows, cols = slice(h0 * out_scale, h1 * out_scale), slice(w0 * out_scale, w1 * out_scale)
            out[..., rows, cols] += y * w2d
            weight[rows, cols] += w2d
            del y
    return out.div_(weight)

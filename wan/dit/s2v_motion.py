"""Frame-pack motion compression of the S2V DiT (official ``FramePackMotioner``, ``frame_packer.*`` weights).

The last 19 latent frames before the clip (zero-padded when fewer) become tokens at three resolutions: the latest
frame at the DiT's own patch (1, 2, 2), the 2 before it at (2, 4, 4), the 16 before those at (4, 8, 8). Their
rotary positions lie in the past (negative frame positions) on the clip's height/width scale.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .model import patchify
from .rope import position_freqs

BUCKETS = (1, 2, 16)  # latent frames per resolution, newest first
MOTION_LATENT_FRAMES = sum(BUCKETS)


class FramePacker(nn.Module):
    def __init__(self, dim: int, in_dim: int = 16):
        super().__init__()
        self.proj = nn.Conv3d(in_dim, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.proj_2x = nn.Conv3d(in_dim, dim, kernel_size=(2, 4, 4), stride=(2, 4, 4))
        self.proj_4x = nn.Conv3d(in_dim, dim, kernel_size=(4, 8, 8), stride=(4, 8, 8))

    def forward(self, motion: torch.Tensor, head_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """motion latents [B, C, T_m, h, w] -> (tokens float32 [B, L_m, dim], rotations [L_m, 1, head_dim / 2])."""
        b, c, t, h, w = motion.shape
        packed = motion.new_zeros(b, c, MOTION_LATENT_FRAMES, h, w)
        keep = min(t, MOTION_LATENT_FRAMES)
        if keep:
            packed[:, :, -keep:] = motion[:, :, -keep:]
        far, mid, near = packed.to(dtype).split(BUCKETS[::-1], dim=2)
        tokens = [patchify(near, self.proj)[0], patchify(mid, self.proj_2x)[0], patchify(far, self.proj_4x)[0]]
        freqs = torch.cat([_positions(start, frames, grid, h, w, head_dim, motion.device)
                           for start, frames, grid in _GRIDS], dim=0)
        return torch.cat(tokens, dim=1).float(), freqs


# (first latent frame back, token frames, latent pixels per token) of each resolution, newest first
_GRIDS = ((1, 1, 2), (3, 1, 4), (19, 4, 8))


def _positions(start: int, frames: int, step: int, h: int, w: int, head_dim: int, device) -> torch.Tensor:
    """Official positions: frames -start, ..., spread over the span of the bucket; height/width sampled over the
    clip's patch grid (h/2 x w/2) as ``np.linspace(...).astype(int)``."""
    span = {1: 1, 3: 2, 19: 16}[start]
    f = -np.linspace(start, start - span + 1, frames).astype(int)
    hs = np.linspace(0, h // 2 - 1, h // step).astype(int)
    ws = np.linspace(0, w // 2 - 1, w // step).astype(int)
    return position_freqs(f.tolist(), hs.tolist(), ws.tolist(), head_dim, device)

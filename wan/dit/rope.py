"""3D rotary position embedding of the Wan DiT (frame, height, width), theta 10000, positions in patch units."""
from __future__ import annotations

from functools import lru_cache

import torch

MAX_POSITIONS = 1024


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Real dims per axis (frame, height, width): 44/42/42 for head_dim 128."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def _axis_table(dim: int, theta: float = 10000.0) -> torch.Tensor:
    inv = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.outer(torch.arange(MAX_POSITIONS, dtype=torch.float64), inv)
    return torch.polar(torch.ones_like(angles), angles)  # complex128 [MAX_POSITIONS, dim // 2]


@lru_cache(maxsize=32)
def grid_freqs(f: int, h: int, w: int, head_dim: int, device: torch.device) -> torch.Tensor:
    """Complex64 rotations [f*h*w, 1, head_dim // 2] for a row-major (f, h, w) token grid."""
    if max(f, h, w) > MAX_POSITIONS:
        raise ValueError(f"token grid {f}x{h}x{w} exceeds {MAX_POSITIONS} positions per axis")
    tf, th, tw = (_axis_table(d) for d in axis_dims(head_dim))
    table = torch.cat([
        tf[:f].view(f, 1, 1, -1).expand(f, h, w, -1),
        th[:h].view(1, h, 1, -1).expand(f, h, w, -1),
        tw[:w].view(1, 1, w, -1).expand(f, h, w, -1),
    ], dim=-1)
    return table.reshape(f * h * w, 1, -1).to(device=device, dtype=torch.complex64)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x [B, L, H, D] (in float32) and return x's dtype. ``freqs``: the complex
    rotations, or in compiled code (``wan.dit.compile``) their real view [..., 2]."""
    if torch.compiler.is_compiling():  # inductor makes no code for complex numbers: the same product in reals
        a, b = x.float().reshape(*x.shape[:-1], -1, 2).unbind(-1)
        c, s = (torch.view_as_real(freqs) if freqs.is_complex() else freqs).unbind(-1)
        return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2).to(x.dtype)
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs).flatten(-2).to(x.dtype)


def position_freqs(frames, heights, widths, head_dim: int, device) -> torch.Tensor:
    """Complex64 rotations [f*h*w, 1, head_dim // 2] for the row-major grid of the given positions per axis (any
    integers, negative ones included: a rotation by -p is the conjugate of the one by p)."""
    inv = [1.0 / torch.pow(10000.0, torch.arange(0, d, 2, dtype=torch.float64) / d) for d in axis_dims(head_dim)]
    f, h, w = (torch.polar(torch.ones(len(p), len(i), dtype=torch.float64),
                           torch.outer(torch.as_tensor(p, dtype=torch.float64), i))
               for p, i in zip((frames, heights, widths), inv))
    nf, nh, nw = f.shape[0], h.shape[0], w.shape[0]
    table = torch.cat([f.view(nf, 1, 1, -1).expand(nf, nh, nw, -1), h.view(1, nh, 1, -1).expand(nf, nh, nw, -1),
                       w.view(1, 1, nw, -1).expand(nf, nh, nw, -1)], dim=-1)
    return table.reshape(nf * nh * nw, 1, -1).to(device=device, dtype=torch.complex64)

"""Colour matching of video frames in CIE Lab (D65), a space where distances follow perceived colour differences.

Frames are float [N, H, W, 3] sRGB in 0..1 (ComfyUI's ``IMAGE``). ``match_colors`` maps the colours of ``frames``
(taken as a whole, one transform for all of them, so motion and lighting changes inside them survive) onto those
of ``reference``: ``mean_std`` matches the per-channel mean and standard deviation, ``histogram`` the per-channel
distribution (quantile mapping). Work is done a few frames at a time to keep memory flat on long videos.
"""
from __future__ import annotations

import torch

from ..errors import InputError

COLOR_MATCH = ("off", "mean_std", "histogram")
CHUNK = 8  # frames converted at a time
SAMPLES = 1 << 20  # at most this many pixels per channel for the statistics
QUANTILES = 257

_RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                            [0.2126729, 0.7151522, 0.0721750],
                            [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)  # D65
_DELTA = 6.0 / 29.0


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB [..., 3] in 0..1 -> Lab [..., 3] (L 0..100)."""
    c = rgb.double()
    linear = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    t = (linear @ _RGB_TO_XYZ.T.to(c.device)) / _WHITE.to(c.device)
    f = torch.where(t > _DELTA ** 3, t.clamp_min(0) ** (1 / 3), t / (3 * _DELTA ** 2) + 4 / 29)
    lab = torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)
    return lab.to(rgb.dtype)


def lab_to_srgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab [..., 3] -> sRGB [..., 3], not clamped."""
    lab = lab.double()
    fy = (lab[..., 0] + 16) / 116
    f = torch.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    t = torch.where(f > _DELTA, f ** 3, 3 * _DELTA ** 2 * (f - 4 / 29)) * _WHITE.to(lab.device)
    linear = t @ torch.linalg.inv(_RGB_TO_XYZ).T.to(lab.device)
    c = torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp_min(0) ** (1 / 2.4) - 0.055)
    return c.float()


def lab_stats(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) in Lab over all pixels of ``frames`` [N, H, W, 3]."""
    values = _lab_sample(frames)
    return values.mean(0), values.std(0)


def stats_jump(before: torch.Tensor, after: torch.Tensor) -> float:
    """How much the colours change across a joint: mean over Lab channels of |d mean| + |d std|."""
    (m0, s0), (m1, s1) = lab_stats(before), lab_stats(after)
    return float(((m1 - m0).abs() + (s1 - s0).abs()).mean())


def match_colors(frames: torch.Tensor, reference: torch.Tensor, method: str = "mean_std") -> torch.Tensor:
    """``frames`` [N, H, W, 3] with the colour statistics of ``reference`` [M, H', W', 3] (both 0..1)."""
    if method not in COLOR_MATCH:
        raise InputError(f"color_match '{method}' is unknown; use one of {COLOR_MATCH}")
    if method == "off":
        return frames
    source, target = _lab_sample(frames), _lab_sample(reference)
    if method == "mean_std":
        scale = target.std(0) / source.std(0).clamp_min(1e-6)
        shift = target.mean(0) - source.mean(0) * scale
        transform = lambda lab: lab * scale + shift  # noqa: E731
    else:
        levels = torch.linspace(0, 1, QUANTILES, dtype=source.dtype)
        xs, ys = torch.quantile(source, levels, dim=0).T, torch.quantile(target, levels, dim=0).T  # [3, Q]
        transform = lambda lab: torch.stack([_interp(lab[..., c], xs[c], ys[c]) for c in range(3)], -1)  # noqa
    out = torch.empty_like(frames)
    for i in range(0, len(frames), CHUNK):
        lab = srgb_to_lab(frames[i:i + CHUNK, ..., :3].float())
        out[i:i + CHUNK] = lab_to_srgb(transform(lab)).clamp_(0, 1).to(frames.dtype)
    return out


def _lab_sample(frames: torch.Tensor) -> torch.Tensor:
    """Lab values [P, 3] of at most ``SAMPLES`` pixels, evenly strided over all frames."""
    if not torch.is_tensor(frames) or frames.dim() != 4 or frames.shape[-1] < 3 or frames.shape[0] < 1:
        raise InputError(f"colour matching needs frames [N, H, W, 3]; got "
                         f"{tuple(frames.shape) if torch.is_tensor(frames) else type(frames).__name__}")
    pixels = frames[..., :3].reshape(-1, 3)
    stride = max(1, pixels.shape[0] // SAMPLES)
    return srgb_to_lab(pixels[::stride].float())


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear map through (xp, fp), xp ascending (ties allowed); past the ends, shifted with slope 1."""
    xp = xp + torch.arange(len(xp), dtype=xp.dtype) * 1e-6  # strictly increasing
    inside = x.clamp(xp[0], xp[-1]).contiguous()
    i = torch.searchsorted(xp, inside).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    return y0 + (inside - x0) * (y1 - y0) / (x1 - x0) + (x - inside)

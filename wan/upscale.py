"""Resizing video frames in pixel space before a refine pass: sizes rounded to the multiple a Wan model needs, and
the PIL resampling filters (box = area, bicubic, lanczos) as separable weights, so that the result equals PIL's
``Image.resize`` of an 8-bit image (PIL's weights, its horizontal-then-vertical order, its clipping between the
passes), computed in float without handing frames to PIL or rounding them to 8 bits.

Frames are ``[N, H, W, C]`` floats in 0..1 (ComfyUI's IMAGE). The output is allocated once and filled one frame batch
at a time (a batch is what moves to the working device at once); inside a batch each frame is resized on its own, so
a long 1080p video never holds more than the input, the output and a few frames of work.
"""
from __future__ import annotations

import math

import torch

from .checks import finite_number, whole_number
from .errors import InputError

RESAMPLING = ("area", "bicubic", "lanczos")
MULTIPLES = (16, 32)  # Wan 2.1 VAE models (8 px per latent x patch 2); TI2V-5B / Wan 2.2 VAE (16 x 2)
MAX_SIDE = 8192
MAX_FACTOR = 8.0
DEFAULT_FRAME_BATCH = 8


def _box(x: torch.Tensor) -> torch.Tensor:
    return ((x > -0.5) & (x <= 0.5)).to(x.dtype)


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    """PIL's cubic kernel, a = -0.5."""
    a, x = -0.5, x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _lanczos(x: torch.Tensor) -> torch.Tensor:
    """sinc(x) sinc(x / 3) on [-3, 3)."""
    inside = (x >= -3) & (x < 3)
    return torch.where(inside, torch.sinc(x) * torch.sinc(x / 3), torch.zeros_like(x))


FILTERS = {"area": (_box, 0.5), "bicubic": (_bicubic, 2.0), "lanczos": (_lanczos, 3.0)}


def resample_weights(size_in: int, size_out: int, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices [out, taps], weights [out, taps]) of one axis, PIL's rule: centre (i + 0.5) * scale, support widened
    by the downscale factor, taps inside the image only, weights normalised to sum 1 (float64)."""
    kernel, support = FILTERS[method]
    scale = size_in / size_out
    filterscale = max(scale, 1.0)
    support *= filterscale
    taps = int(math.ceil(support)) * 2 + 1
    centre = (torch.arange(size_out, dtype=torch.float64) + 0.5) * scale
    first = (centre - support + 0.5).floor().clamp(min=0)  # PIL truncates the positive value: floor
    last = (centre + support + 0.5).floor().clamp(max=size_in)
    index = first[:, None] + torch.arange(taps, dtype=torch.float64)[None]
    weights = kernel((index - centre[:, None] + 0.5) / filterscale)
    weights = torch.where(index < last[:, None], weights, torch.zeros_like(weights))
    total = weights.sum(dim=1, keepdim=True)
    weights = torch.where(total != 0, weights / torch.where(total != 0, total, 1.0), weights)
    return index.clamp(max=size_in - 1).long(), weights


def target_size(width: int, height: int, *, factor: float | None = None, size: tuple[int, int] | None = None,
                multiple: int = 16) -> tuple[int, int]:
    """The output (width, height): ``factor`` x the input rounded to the nearest ``multiple`` (halves up; at least
    one multiple), or an explicit ``size``, which must already be a multiple (a silent change of an asked-for size
    would surprise)."""
    multiple = whole_number(multiple, "multiple")
    if multiple not in MULTIPLES:
        raise InputError(f"multiple {multiple} is not one Wan needs; use 16 (Wan 2.1 VAE models, A14B) or 32 "
                         f"(TI2V-5B, Wan 2.2 VAE)")
    if size is not None:
        w, h = (whole_number(v, n, 1, MAX_SIDE) for v, n in zip(size, ("width", "height")))
        for name, value in (("width", w), ("height", h)):
            if value % multiple:
                lower, upper = value // multiple * multiple, -(-value // multiple) * multiple
                raise InputError(f"upscale target {w}x{h}: {name} {value} is not a multiple of {multiple}, which the "
                                 f"model needs; use {lower or upper} or {upper}")
        return w, h
    factor = finite_number(factor, "factor", 0.0, MAX_FACTOR, low_open=True, hint="1.5 takes 480p to 720p")
    w, h = (max(multiple, math.floor(v * factor / multiple + 0.5) * multiple) for v in (width, height))
    if max(w, h) > MAX_SIDE:
        raise InputError(f"{width}x{height} x {factor:g} is {w}x{h}; the largest side allowed is {MAX_SIDE}: lower "
                         f"the factor")
    return w, h


def resize_frames(frames: torch.Tensor, width: int, height: int, method: str = "lanczos",
                  frame_batch: int = DEFAULT_FRAME_BATCH, device=None, callback=None) -> torch.Tensor:
    """``frames`` [N, H, W, C] (0..1) resized to ``height`` x ``width`` with a PIL filter, clamped to 0..1, float32,
    on the frames' device. ``device``: where the work runs (one batch at a time); ``callback(done, total)`` after
    each batch."""
    if method not in RESAMPLING:
        raise InputError(f"resampling '{method}' is unknown; use one of {RESAMPLING}")
    if not torch.is_tensor(frames) or frames.dim() != 4 or frames.shape[0] < 1:
        raise InputError(f"frames must be an IMAGE batch [N, H, W, C]; got "
                         f"{tuple(frames.shape) if torch.is_tensor(frames) else type(frames).__name__}")
    width, height = (whole_number(v, n, 1, MAX_SIDE) for v, n in ((width, "width"), (height, "height")))
    frame_batch = whole_number(frame_batch, "frame_batch", 1)
    n, h, w, c = frames.shape
    device = torch.device(device) if device is not None else frames.device
    rows, cols = (resample_matrix(a, b, method).to(device) for a, b in ((h, height), (w, width)))
    out = torch.empty(n, height, width, c, dtype=torch.float32, device=frames.device)
    for start in range(0, n, frame_batch):
        batch = frames[start:start + frame_batch].to(device)
        for i in range(batch.shape[0]):
            out[start + i] = _resize_one(batch[i], rows, cols).to(out.device)
        del batch
        if callback is not None:
            callback(min(n, start + frame_batch), n)
    return out


def resample_matrix(size_in: int, size_out: int, method: str) -> torch.Tensor:
    """The banded [out, in] float32 matrix of one axis (a matrix product is the fastest way through the taps)."""
    index, weights = resample_weights(size_in, size_out, method)
    return torch.zeros(size_out, size_in, dtype=torch.float64).scatter_add_(1, index, weights).float()


def _resize_one(frame: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """One [H, W, C] frame: horizontal pass then vertical pass, the overshoot between them clipped (PIL's order and
    its 8-bit images' clipping), float32, clamped to 0..1."""
    planes = frame.permute(2, 0, 1).float().contiguous()  # [C, H, W]
    wide = torch.matmul(planes, cols.T).clamp_(0.0, 1.0)
    return torch.matmul(rows, wide).clamp_(0.0, 1.0).permute(1, 2, 0)

"""A plain-Python/numpy model of the uint8 antialiased bicubic resize that torchvision's v2 ``resize`` runs on CPU
(it hands uint8 tensors to torch's fixed-point resampler, written after Pillow's): the reference for the
Qwen2.5-VL pixel values without torchvision.

Per axis (width first, then height; an axis of unchanged size is left alone), for output index i:
centre = s * (i + 0.5) with s = in / out; support = 2 * max(s, 1); the input window is
[int(centre - support + 0.5), int(centre + support + 0.5)) clipped to the image; each tap weight is the Keys
cubic (a = -0.5) at (j - centre + 0.5) / max(s, 1), normalised to sum 1 (in double). The weights of the whole axis
are then scaled by 2^p and rounded half away from zero to integers, p being the largest precision (at most 22)
for which the axis's largest weight times 2^p still fits 15 bits; each output is the integer dot product plus
2^(p-1), shifted right by p and clamped to 0..255.
"""
from __future__ import annotations

import math

import numpy as np


def keys_cubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return a * (((x - 5.0) * x + 8.0) * x - 4.0)
    return 0.0


def axis_taps(n_in: int, n_out: int) -> tuple[list[int], list[list[int]], int]:
    """(first input index, integer weights) per output index, and the shared precision p."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    support = 2.0 * stretch
    widest = int(math.ceil(support)) * 2 + 1
    starts, rows = [], []
    for i in range(n_out):
        centre = scale * (i + 0.5)
        first = max(int(centre - support + 0.5), 0)
        count = min(max(min(int(centre + support + 0.5), n_in) - first, 0), widest)
        weights = [keys_cubic((first + j - centre + 0.5) / stretch) for j in range(count)]
        total = sum(weights)
        starts.append(first)
        rows.append([w / total for w in weights] if total != 0.0 else [0.0] * count)
    largest = max((w for row in rows for w in row), default=0.0)
    precision = 0
    while precision < 22 and int(0.5 + largest * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = [[int(w * (1 << precision) + (0.5 if w >= 0 else -0.5)) for w in row] for row in rows]
    return starts, scaled, precision


def resample_axis(image: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    x = np.moveaxis(image, axis, -1).astype(np.int64)
    starts, weights, precision = axis_taps(x.shape[-1], n_out)
    out = np.empty(x.shape[:-1] + (n_out,), np.int64)
    for i, (first, row) in enumerate(zip(starts, weights)):
        total = (1 << (precision - 1)) + (x[..., first:first + len(row)] * np.asarray(row, np.int64)).sum(-1)
        out[..., i] = np.clip(total >> precision, 0, 255)
    return np.moveaxis(out.astype(np.uint8), -1, axis)


def resize_uint8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [..., H, W] -> uint8 [..., height, width]."""
    if image.shape[-1] != width:
        image = resample_axis(image, width, -1)
    if image.shape[-2] != height:
        image = resample_axis(image, height, -2)
    return image

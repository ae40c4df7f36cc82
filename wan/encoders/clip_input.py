"""Check and prepare images for the CLIP vision tower, as the official Wan code does.

Input: [B, C, H, W] in [-1, 1]. An alpha channel is dropped and a grey image repeated to RGB (both with a warning);
anything else that is not an RGB image in [-1, 1] is refused with an explanation. Preprocessing (official): bicubic
resize to the tower's size (no crop, aspect not kept), map to [0, 1], normalise with the CLIP mean and std.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..errors import InputError

log = logging.getLogger("wan_experts")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RANGE_TOLERANCE = 1e-3


def check_images(images, name: str = "images") -> torch.Tensor:
    """``images`` as a float [B, 3, H, W] tensor in [-1, 1], or an InputError that says what to change."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"CLIP vision: {name} must be a [B, 3, H, W] tensor in [-1, 1]; got {shape}.")
    channels = images.shape[1]
    if channels == 4:
        log.warning("CLIP vision: %s have an alpha channel; it is dropped (the colour channels are used as they are).",
                    name)
        images = images[:, :3]
    elif channels == 1:
        log.warning("CLIP vision: %s are single-channel; the grey channel is repeated to RGB.", name)
        images = images.expand(-1, 3, -1, -1)
    elif channels != 3:
        channels_last = images.shape[-1] in (1, 3, 4)
        hint = " It looks channels-last ([B, H, W, C]): permute it to [B, C, H, W]." if channels_last else ""
        raise InputError(f"CLIP vision: {name} have {channels} channels; expected 3 (RGB).{hint}")
    return _check_range(images.float(), name)


def _check_range(images: torch.Tensor, name: str) -> torch.Tensor:
    if images.numel() == 0:
        raise InputError(f"CLIP vision: {name} are empty (shape {tuple(images.shape)}).")
    if not torch.isfinite(images).all():
        raise InputError(f"CLIP vision: {name} contain NaN or infinite values.")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        hint = (" They look like 0..255 pixels: divide by 127.5 and subtract 1." if hi > 2 and lo >= 0 else
                " Map 0..1 images with x * 2 - 1.")
        raise InputError(f"CLIP vision: {name} must lie in [-1, 1]; found values from {lo:.3g} to {hi:.3g}.{hint}")
    return images


def preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """[-1, 1] images -> CLIP input [B, 3, size, size] (float32)."""
    x = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False)
    x = x * 0.5 + 0.5
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std

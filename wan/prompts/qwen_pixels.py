"""Qwen2.5-VL pixel values as the official extender gets them, computed with torch alone.

The official extender loads the Qwen2.5-VL processor with ``use_fast=True``: its image processor is the
torchvision one, which resizes each image (already snapped to the 28-pixel grid by ``qwen_vl_utils``) to the
processor's own pixel budget with ``torchvision.transforms.v2.functional.resize`` (bicubic, antialiased). On a
uint8 CPU tensor torchvision hands that straight to ``torch.nn.functional.interpolate(mode="bicubic",
antialias=True)`` on the uint8 tensor (torch's fixed-point resampler, Keys a = -0.5, width then height, each pass
rounded to uint8); then it rescales and normalises in one float32 step ((x - mean/f) / (std/f), f the rescale
factor) and cuts the image into patches. Without torchvision ``transformers`` falls back to its PIL image
processor, whose PIL bicubic resize rounds differently (pixel values up to about 0.03 apart after
normalisation). This module repeats the torchvision steps with the same torch call, so the pixel values are the
official ones whether torchvision is installed or not; the processor object only supplies its settings.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, the Qwen2-VL image processor's resample setting


def processor_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) the Qwen2-VL image processor resizes to: multiples of ``factor`` within the pixel budget."""
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def resize_uint8(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [C, H, W] -> uint8 [C, height, width], antialiased bicubic as torchvision's v2 resize does on CPU."""
    if tuple(image.shape[-2:]) == (height, width):
        return image
    out = torch.nn.functional.interpolate(image.cpu().contiguous()[None], size=[height, width], mode="bicubic",
                                          align_corners=False, antialias=True)
    return out[0]


def supported(processor) -> bool:
    """Whether ``processor``'s settings are the ones reproduced here (the released Qwen2.5-VL ones are)."""
    resample = getattr(processor, "resample", BICUBIC)
    return int(resample if resample is not None else BICUBIC) == BICUBIC and _pixel_budget(processor) is not None


def qwen_pixels(images: list[Image.Image], processor) -> dict:
    """``pixel_values`` [patches, C * T * p * p] (float32) and ``image_grid_thw`` [images, 3] (int64), in the
    layout of the Qwen2-VL image processor, for RGB images already on the 28-pixel grid."""
    patch, merge = int(processor.patch_size), int(processor.merge_size)
    temporal = int(processor.temporal_patch_size)
    min_pixels, max_pixels = _pixel_budget(processor)
    values, grids = [], []
    for image in images:
        x = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).contiguous()
        if getattr(processor, "do_resize", True):
            x = resize_uint8(x, *processor_size(x.shape[1], x.shape[2], patch * merge, min_pixels, max_pixels))
        x = _rescale_normalize(x, processor)
        patches, grid = _patchify(x, patch, merge, temporal)
        values.append(patches)
        grids.append(grid)
    return {"pixel_values": torch.cat(values), "image_grid_thw": torch.tensor(grids, dtype=torch.long)}


def _pixel_budget(processor) -> tuple[int, int] | None:
    size = getattr(processor, "size", None)
    pick = (lambda key: getattr(size, key, None) if not isinstance(size, dict) else size.get(key))
    low = pick("shortest_edge") or getattr(processor, "min_pixels", None)
    high = pick("longest_edge") or getattr(processor, "max_pixels", None)
    return (int(low), int(high)) if low and high else None


def _rescale_normalize(x: torch.Tensor, processor) -> torch.Tensor:
    """torchvision processors: rescale and normalise fused into one float32 (x - mean) / std."""
    rescale, factor = getattr(processor, "do_rescale", True), processor.rescale_factor
    if getattr(processor, "do_normalize", True):
        mean, std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
        if rescale:
            mean, std = mean * (1.0 / factor), std * (1.0 / factor)
        return (x.to(torch.float32) - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
    return x * factor if rescale else x.to(torch.float32)


def _patchify(x: torch.Tensor, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, list[int]]:
    """[C, H, W] -> rows ordered by merged 2x2 window, each row (C, T, p, p) with the frame repeated T times."""
    c, h, w = x.shape
    gh, gw = h // patch, w // patch
    x = x.reshape(c, gh // merge, merge, patch, gw // merge, merge, patch).permute(1, 4, 2, 5, 0, 3, 6)
    x = x.unsqueeze(5).expand(-1, -1, -1, -1, -1, temporal, -1, -1)
    return x.reshape(gh * gw, c * temporal * patch * patch), [1, gh, gw]

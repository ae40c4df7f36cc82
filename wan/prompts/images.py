"""Images for the prompt extender: from graph tensors to PIL, and the official resizing before each model sees them.

- Dashscope: the image is scaled to at most 512*512 pixels keeping its aspect ratio and sent as a PNG file
  (``DashScopePromptExpander.extend_with_img``).
- Local Qwen2.5-VL: the image is first snapped to multiples of 28 pixels within 4*28*28 .. 16384*28*28 pixels
  (``qwen_vl_utils.fetch_image``); the model's image processor then applies its own pixel budget.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch
from PIL import Image

DASHSCOPE_MAX_AREA = 512 * 512
QWEN_FACTOR = 28
QWEN_MIN_PIXELS = 4 * 28 * 28
QWEN_MAX_PIXELS = 16384 * 28 * 28
QWEN_MAX_RATIO = 200


def pil_from_tensor(image: torch.Tensor) -> Image.Image:
    """One ComfyUI image [H, W, C] with values in 0..1 -> RGB PIL image (grey and alpha handled)."""
    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    if pixels.shape[-1] == 1:
        pixels = pixels.repeat(3, axis=-1)
    return Image.fromarray(pixels[..., :3].copy(), "RGB")


def dashscope_size(width: int, height: int, max_area: int = DASHSCOPE_MAX_AREA) -> tuple[int, int]:
    """(width, height) with area min(w*h, max_area) and the same aspect ratio, rounded as the official code."""
    area, aspect = min(width * height, max_area), height / width
    return round(math.sqrt(area / aspect)), round(math.sqrt(area * aspect))


def write_dashscope_images(images: list[Image.Image], folder: str | os.PathLike) -> list[Path]:
    """Each image resized for the service and saved as a PNG in ``folder`` (the SDK uploads ``file://`` paths)."""
    paths = []
    for image in images:
        image = image.convert("RGB")
        fd, name = tempfile.mkstemp(suffix=".png", dir=folder)
        os.close(fd)
        image.resize(dashscope_size(image.width, image.height)).save(name)
        paths.append(Path(name))
    return paths


def smart_resize(height: int, width: int, factor: int = QWEN_FACTOR, min_pixels: int = QWEN_MIN_PIXELS,
                 max_pixels: int = QWEN_MAX_PIXELS) -> tuple[int, int]:
    """(height, width): multiples of ``factor`` near the input, the pixel count within [min_pixels, max_pixels]."""
    if max(height, width) / min(height, width) > QWEN_MAX_RATIO:
        raise ValueError(f"the image aspect ratio must be below {QWEN_MAX_RATIO}; got {width}x{height}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def qwen_vl_image(image: Image.Image) -> Image.Image:
    """RGB, resized to the ``smart_resize`` grid as the official Qwen-VL helper does before the processor."""
    image = image.convert("RGB")
    height, width = smart_resize(image.height, image.width)
    return image.resize((width, height))

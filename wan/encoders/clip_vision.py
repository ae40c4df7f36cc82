"""The Wan image encoder: CLIP ViT-H/14 vision tower with the official preprocessing, from any file layout.

``encode(images)`` -> [B, 257, 1280] float32 penultimate-block tokens (I2V); ``encode_pair(first, last)`` ->
[B, 514, 1280], each sample's first-frame tokens then its last-frame tokens (FLF2V). Results are on the CPU.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from ..weights.checkpoint import read_state_dict, wrong_kind_message
from ..errors import CheckpointError, InputError
from ..finite import check_output
from .clip import ClipVisionConfig, ClipVisionTower, hf_config_extras
from .clip_input import check_images, preprocess
from .clip_keys import drop_last_block, normalize_keys
from .placement import running_on
from ..weights.assign import build_with_weights, compute_dtype, official_file_in, split_fp8_scales

log = logging.getLogger("wan_experts")

OFFICIAL_FILE_GLOB = "models_clip_*.pth"


class ClipVision(nn.Module):
    """``WAN_CLIP_VISION``. ``run_device`` / ``keep_loaded`` as for the text encoder."""

    def __init__(self, tower: ClipVisionTower, dtype: torch.dtype, source: str = "", layout: str = ""):
        super().__init__()
        self.tower = tower
        self.compute_dtype, self.source, self.layout = dtype, source, layout
        self.run_device: torch.device | None = None
        self.keep_loaded = True

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        images = check_images(images)
        with running_on(self.tower, self.run_device, stay=self.keep_loaded) as device:
            pixels = preprocess(images.to(device), self.tower.config.image_size)
            features = self.tower(pixels.to(self.compute_dtype)).float().cpu()
        check_output(features, "the CLIP image encoder", [self.tower], self.compute_dtype)
        return features

    def encode_pair(self, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        first, last = check_images(first, "first images"), check_images(last, "last images")
        if first.shape[0] != last.shape[0]:
            raise InputError(f"CLIP vision: {first.shape[0]} first images but {last.shape[0]} last images; give one "
                             f"last image per first image.")
        if first.shape[2:] != last.shape[2:]:  # both are resized to 224 anyway: encode them separately
            return torch.cat([self.encode(first), self.encode(last)], dim=1)
        both = self.encode(torch.cat([first, last]))
        return torch.cat(both.chunk(2), dim=1)


def load_clip_vision(path, dtype=None, device="cpu", num_heads: int | None = None) -> ClipVision:
    """Load the CLIP vision tower: official ``.pth`` (or the official model folder holding it), Comfy-Org
    ``clip_vision_h.safetensors`` (optionally scaled fp8), or a transformers ``CLIPVisionModel`` folder.

    ``num_heads``: only for checkpoints of other sizes without a config.json (ViT-H/14 has 16).
    """
    path = official_file_in(Path(path), OFFICIAL_FILE_GLOB)
    sd, layout = normalize_keys(read_state_dict(path, what="CLIP vision file"))
    if layout is None:
        raise CheckpointError(wrong_kind_message(path, "a CLIP vision model", sd.keys()))
    scaled = "scaled_fp8" in sd
    sd, scales = split_fp8_scales(sd)
    extras = hf_config_extras(path if path.is_dir() else path.parent) if layout == "hf" else {}
    if num_heads:
        extras["num_heads"] = num_heads
    config = ClipVisionConfig.from_state_dict(sd, extras)
    sd = drop_last_block(sd)
    compute = compute_dtype(dtype, sd["transformer.0.attn.q.weight"].dtype)
    tower = build_with_weights(lambda: ClipVisionTower(config), sd, scales, compute, path, "CLIP vision tower")
    layout += " (scaled fp8)" if scaled or scales else ""
    model = ClipVision(tower, compute, str(path), layout).to(device)
    log.info("Loaded CLIP vision (dim %d, %d of %d blocks, %d px) from %s [%s], compute %s", config.dim,
             config.num_layers - 1, config.num_layers, config.image_size, path.name, layout,
             str(compute).replace("torch.", ""))
    return model


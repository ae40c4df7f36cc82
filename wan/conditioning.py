"""Small typed containers that travel between nodes (and between engine calls)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TextEmbeds:
    """``WAN_TEXT``: encoded prompts, each [B, 512, 4096] float32, rows past a prompt's tokens exactly zero."""

    positive: torch.Tensor
    negative: torch.Tensor
    positive_prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)


@dataclass
class ClipEmbeds:
    """``WAN_CLIP_EMBEDS``: CLIP ViT-H/14 penultimate tokens, [B, 257, 1280] (start) or [B, 514, 1280] (start+end)."""

    features: torch.Tensor


@dataclass
class ImageCond:
    """``WAN_IMAGE_COND``: image conditioning for I2V / FLF2V / TI2V, all latents in the DiT's normalised space.

    kind "i2v"/"flf2v": ``y`` = [B, 4 + 16, T, h, w] (mask then latent of start[/end] frame and grey frames),
    optional ``clip`` (2.1 models). kind "ti2v": ``first_latent`` = [B, 48, 1, h, w], imposed on latent frame 0.
    Extending a clip, ``first_latent`` holds the latents of its last frames ([B, C, n, h, w]), which the new segment
    starts with (imposed for TI2V-5B, held through the velocity for the 36-channel models; see sampling/inputs.py).
    """

    kind: str
    y: torch.Tensor | None = None
    clip: torch.Tensor | None = None
    first_latent: torch.Tensor | None = None

"""Per-run model inputs: text contexts, image conditioning and timesteps, batched and on the compute device.

Leading latent frames can be known in advance (the start image of TI2V-5B; the last frames of a clip being extended,
``ImageCond.first_latent`` with one or more frames). TI2V-5B takes them as clean tokens with timestep 0 and has them
imposed on the latents; the 36-channel models, which have one timestep for all tokens, get them through ``hold``:
their velocity there is replaced by the one whose clean estimate is the known latent, so the solver lands on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..conditioning import ImageCond, TextEmbeds
from ..experts import ExpertSet


@dataclass
class ModelInputs:
    positive: torch.Tensor
    negative: torch.Tensor | None
    clip: torch.Tensor | None = None
    y: torch.Tensor | None = None
    first_latent: torch.Tensor | None = None  # TI2V-5B: imposed on the first latent frame(s)
    token_mask: torch.Tensor | None = None  # TI2V-5B: per-token timestep factor [B, L] (0 on the start frame(s))
    known: torch.Tensor | None = None  # 36-channel models: latents of the leading frames, held by ``hold``
    batch: int = 1
    branch_kwargs: dict = field(default_factory=dict)  # per guidance branch ("cond" / "uncond"): extra model inputs
    vace: Any = None  # VACE models: the VaceInputs of the video (both branches), sliced per context window

    @classmethod
    def build(cls, experts: ExpertSet, text: TextEmbeds, cond: ImageCond | None, shape, device) -> "ModelInputs":
        b = shape[0]
        cfg = experts.config
        inputs = cls(_batched(text.positive, b, device), _batched(text.negative, b, device), batch=b)
        if cond is not None and cond.kind in ("i2v", "flf2v"):
            inputs.y = _batched(cond.y, b, device)
            inputs.clip = _batched(cond.clip, b, device) if cfg.has_clip else None
            inputs.known = _batched(cond.first_latent, b, device)
        if cfg.per_token_time:
            first = cond.first_latent if cond is not None and cond.kind == "ti2v" else None
            inputs.first_latent = _batched(first, b, device)
            inputs.token_mask = _token_mask(shape, cfg.patch_size, 0 if first is None else first.shape[2], device)
        return inputs

    def model_kwargs(self, branch: str) -> dict:
        """The model inputs besides x, t and the text of one guidance branch."""
        kwargs = {"clip_fea": self.clip, "y": self.y, **self.branch_kwargs.get(branch, {})}
        if self.vace is not None:
            kwargs["vace"] = self.vace
        return kwargs

    def timesteps(self, t: float) -> torch.Tensor:
        """[B] for the 2.1 / A14B models; [B, L] per token for TI2V-5B (0 on start-image tokens)."""
        if self.token_mask is not None:
            return self.token_mask * t
        return torch.full((self.batch,), t, dtype=torch.float32, device=self.positive.device)

    def impose(self, x: torch.Tensor) -> torch.Tensor:
        """TI2V-5B image mode: the first latent frame(s) are the known latents (before and after every step)."""
        if self.first_latent is None:
            return x
        return torch.cat([self.first_latent.to(x.dtype), x[:, :, self.first_latent.shape[2]:]], dim=2)

    def hold(self, v: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """36-channel models with known leading frames: there, v = (x - known) / sigma, so x0 = x - sigma v = known."""
        if self.known is None:
            return v
        n = self.known.shape[2]
        return torch.cat([(x[:, :, :n] - self.known.to(x.dtype)) / sigma, v[:, :, n:]], dim=2)


def _token_mask(shape, patch, known_frames: int, device) -> torch.Tensor:
    b, _, t, h, w = shape
    mask = torch.ones(t // patch[0], h // patch[1], w // patch[2], device=device)
    mask[:known_frames] = 0
    return mask.flatten().unsqueeze(0).expand(b, -1)


def _batched(t: torch.Tensor | None, batch: int, device) -> torch.Tensor | None:
    if t is None:
        return None
    t = t.to(device)
    return t.expand(batch, *t.shape[1:]) if t.shape[0] == 1 and batch > 1 else t

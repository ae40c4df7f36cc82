"""Sampling with context windows: at each step the model runs on every window (its slice of the latents and of the
conditioning) and the guided velocities are blended per frame with the normalised weights of ``windows.py``.

What a window gets:

- text: the sampler's prompts, or the window's prompt of ``ContextWindows.prompts`` (positive only);
- 36-channel I2V / FLF2V models: ``y`` sliced to the window's frames, so only the window holding frame 0 sees the
  start image (mask 1 and the image latent); the others see what the official I2V gives every later frame: mask 0
  and the latent of grey frames. An end image (FLF2V) reaches the window holding the last frame. With
  ``image_cond="all"`` every window that does not start at frame 0 gets the conditioned leading frame(s) copied
  to its own start (mask 1 and the image latent), as if it were a clip starting from the start image. CLIP
  features (Wan 2.1) describe the whole video and go to every window;
- TI2V-5B: per-token timesteps sliced to the window (0 on the start frame's tokens, in the window holding it); with
  ``image_cond="all"`` the start latent is put in front of every other window as an extra clean frame (timestep
  0) whose prediction is dropped, since TI2V-5B imposes known frames rather than predicting them;
- VACE models: the VACE context sliced to the window's frames, with the reference frames (in front of the video)
  given to every window in front of its own frames; the windows are laid over the video frames only;
- step cache: its own state (``window_cache.py``); windows must then stay in place (the static schedule).

The Wan 2.2 expert of a step is chosen by the loop and shared by all windows; known leading frames are imposed or
held on the blended result by the loop as without windows.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import InputError
from .inputs import ModelInputs
from .window_cache import WindowCaches
from .windows import ContextWindows, blend_weights, context_windows, freenoise, prompt_index

log = logging.getLogger("wan_experts")

Guide = Callable[[torch.Tensor, ModelInputs, object], torch.Tensor]  # (x, inputs, step cache) -> guided velocity


@dataclass
class Window:
    frames: list[int]  # latent frame indices
    index: torch.Tensor  # the same, as a long tensor on the compute device
    weights: torch.Tensor  # normalised blend weights [1, 1, L, 1, 1]
    prompt: int | None  # which of the context's prompts, None: the sampler's


class WindowedSampling:
    def __init__(self, context: ContextWindows, length: int, inputs: ModelInputs, device):
        self.context, self.length, self.inputs, self.device = context, length, inputs, torch.device(device)
        self.prompts = None if context.prompts is None else context.prompts.to(self.device, torch.float32)
        self.lead = _leading_frames(inputs)
        self.refs = inputs.vace.ref_frames if inputs.vace is not None else 0
        self._windows: dict[tuple, list[Window]] = {}

    def windows(self, step: int) -> list[Window]:
        """The windows of schedule step ``step`` with their weights (computed once per distinct layout). VACE
        reference frames (in front of the video) are not part of the layout: every window gets them in front of
        its frames, and their velocity is the mean over the windows."""
        c, refs = self.context, self.refs
        length = self.length - refs
        frames = context_windows(length, c.size, c.overlap, c.schedule, step)
        key = tuple(map(tuple, frames))
        if key not in self._windows:
            weights = blend_weights(frames, length, c.overlap, c.fuse)
            self._windows[key] = []
            for f, w in zip(frames, weights):
                full = list(range(refs)) + [refs + i for i in f]
                w = torch.cat([torch.full((refs,), 1.0 / len(frames)), w.float().cpu()])
                self._windows[key].append(Window(
                    full, torch.tensor(full, device=self.device), w.to(self.device).view(1, 1, -1, 1, 1),
                    None if self.prompts is None else prompt_index(f, length, len(self.prompts))))
        return self._windows[key]

    def prepare(self, noise: torch.Tensor | None, step_cache):
        """Before the first step: FreeNoise on the noise, and one cache state per window."""
        c = self.context
        if step_cache is not None and c.schedule != "static" and self.length > c.size:
            raise InputError(f"a step cache needs context windows that stay in place, but the '{c.schedule}' "
                             f"schedule moves them every step; use the 'static' schedule or disconnect the cache")
        if noise is not None and c.freenoise:  # over the video frames (VACE reference frames kept as they are)
            r = self.refs
            noise = torch.cat([noise[:, :, :r], freenoise(noise[:, :, r:], c.size, c.overlap)], dim=2)
        return noise, (WindowCaches(step_cache) if step_cache is not None else None)

    def velocity(self, guide: Guide, x: torch.Tensor, step: int, caches: WindowCaches | None) -> torch.Tensor:
        """sum_k w_k v_k over the windows of ``step`` (weights already normalised per frame)."""
        out = torch.zeros_like(x)
        for k, w in enumerate(self.windows(step)):
            x_w, inputs_w, extra = self.window_inputs(w, x)
            v = guide(x_w, inputs_w, caches.window(k) if caches is not None else None)
            out.index_add_(2, w.index, v[:, :, extra:] * w.weights)
        return out

    def window_inputs(self, w: Window, x: torch.Tensor) -> tuple[torch.Tensor, ModelInputs, int]:
        """The window's latents and inputs, and how many extra frames were put in front (TI2V-5B, image to all)."""
        inp, x_w, extra = self.inputs, x.index_select(2, w.index), 0
        to_all = self.context.image_cond == "all" and w.frames[0] != 0
        y = None if inp.y is None else inp.y.index_select(2, w.index)
        lead = min(self.lead, len(w.frames))
        if y is not None and to_all and lead:
            y = torch.cat([inp.y[:, :, :lead], y[:, :, lead:]], dim=2)
        mask = None if inp.token_mask is None else _frames_of(inp.token_mask, self.length, w.index)
        if mask is not None and to_all and inp.first_latent is not None:
            extra = inp.first_latent.shape[2]
            x_w = torch.cat([inp.first_latent.to(x.dtype), x_w], dim=2)
            mask = torch.cat([mask.new_zeros(mask.shape[0], extra * mask.shape[1] // len(w.frames)), mask], dim=1)
        positive = inp.positive if w.prompt is None else self.prompts[w.prompt:w.prompt + 1].expand(inp.batch, -1, -1)
        vace = None if inp.vace is None else inp.vace.frames(w.index)
        window_inputs = dataclasses.replace(inp, positive=positive, y=y, token_mask=mask, first_latent=None,
                                            known=None, vace=vace)
        return x_w, window_inputs, extra


def plan_windows(context: ContextWindows | None, experts, shape, inputs: ModelInputs, device):
    """The windowed sampling of a run, or None without context windows; checks the settings against the model."""
    if context is None:
        return None
    if not isinstance(context, ContextWindows):
        raise InputError(f"context must come from Wan Context Windows (WAN_CONTEXT); got {type(context).__name__}")
    cfg = experts.config
    if cfg.patch_size[0] != 1:
        raise InputError(f"context windows need a DiT with temporal patch 1; this one has {cfg.patch_size[0]}")
    if context.prompts is not None and (context.prompts.shape[-1] != cfg.text_dim
                                        or context.prompts.shape[1] > cfg.text_len):
        raise InputError(f"the window prompts {tuple(context.prompts.shape)} do not fit this model (text width "
                         f"{cfg.text_dim}, at most {cfg.text_len} tokens); encode them with the model's UMT5 encoder")
    run = WindowedSampling(context, shape[2], inputs, device)
    count = len(run.windows(0))
    log.info("Wan sampler: %s; %d latent frames -> %d windows at the first step", context.describe(), shape[2],
             count)
    return run


def _leading_frames(inputs: ModelInputs) -> int:
    """Latent frames at the start that the I2V mask marks as given (1 for a start image; more when extending)."""
    if inputs.y is None:
        return 0
    given = inputs.y[:, :4].flatten(3).amax(dim=(0, 1, 3)) > 0  # [T]
    lead = 0
    while lead < len(given) and given[lead]:
        lead += 1
    return lead


def _frames_of(token_mask: torch.Tensor, length: int, index: torch.Tensor) -> torch.Tensor:
    """Per-token factors [B, T * hw] of some latent frames (temporal patch 1: a frame's tokens are contiguous)."""
    b = token_mask.shape[0]
    return token_mask.reshape(b, length, -1).index_select(1, index).reshape(b, -1)

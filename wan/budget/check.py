"""Memory budget: a request is refused, with the largest size that would work, before anything large is allocated.

Two limits apply. Fixed ceilings bound every request whatever the machine: per video ``MAX_PIXELS`` pixels and
``MAX_LATENT_FRAMES`` latent frames, per model call (the whole video, or one context window) ``MAX_TOKENS`` DiT
tokens. Then the estimate of a sampling run or a VAE pass (``wan.budget.estimates``) must fit the memory free on its device
(on CUDA ``wan.memory.place.free_bytes``, on the CPU the available RAM, ``wan.memory.ram``), after the memory host (ComfyUI) was
asked to make room. Devices that report nothing (e.g. MPS) get the ceilings only. The estimates leave allocator
slack out, so a refused run would certainly not have fitted.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import InputError
from .estimates import (T_STRIDE, Estimate, call_frames, estimate_sampling, frames_of, gib, token_ranks,
                        vae_estimates)
from ..memory.place import free_bytes, memory_host
from ..memory.ram import host_available_bytes

MAX_TOKENS = 1 << 18  # DiT tokens per model call (batch x frames x h x w): e.g. 1280x720 x 285 frames at once
MAX_LATENT_FRAMES = 1024  # per video; the DiT's rotary position table covers 1024 positions per axis
MAX_PIXELS = 1 << 31  # pixels per run (batch x frames x height x width): 25.8 GB of float32 frames


class BudgetError(InputError):
    """The request exceeds the ceiling or the memory of its device."""


# -- the ceiling --------------------------------------------------------------------------------------------------
def check_video_size(batch: int, grid: tuple[int, int, int], pixels: tuple[int, int]) -> None:
    """The whole video: at most ``MAX_LATENT_FRAMES`` latent frames and ``MAX_PIXELS`` pixels, and one latent frame
    must fit a model call. ``grid``: DiT tokens (frames, height, width); ``pixels``: (width, height)."""
    f, h, w = grid
    (width, height), frames = pixels, frames_of(f)
    most = min(MAX_LATENT_FRAMES, (MAX_PIXELS // max(1, batch * width * height) - 1) // T_STRIDE + 1)
    if batch * h * w > MAX_TOKENS or max(h, w) > MAX_LATENT_FRAMES:
        raise BudgetError(f"{width}x{height} with batch {batch} is {batch * h * w} DiT tokens per frame; the ceiling "
                          f"is {MAX_TOKENS} tokens per model call (README, 'Security'): lower the size or the batch")
    if f > most:
        raise BudgetError(f"{width}x{height}, {frames} frames, batch {batch} is {batch * width * height * frames} "
                          f"pixels; the ceiling is {MAX_PIXELS} pixels and {MAX_LATENT_FRAMES} latent frames per run "
                          f"(README, 'Security'): at this size and batch "
                          f"{'at most ' + _frames_text(frames_of(most)) if most > 0 else 'not even one frame fits'}")


def check_call(batch: int, grid: tuple[int, int, int], pixels: tuple[int, int], windowed: bool,
               ranks: int = 1) -> None:
    """One model call (the whole video, or one context window) must stay within ``MAX_TOKENS`` per process
    (``ranks``: processes that split its tokens, sequence parallel)."""
    f, h, w = grid
    tokens = -(-batch * f * h * w // ranks)
    if tokens <= MAX_TOKENS and f <= MAX_LATENT_FRAMES:
        return
    width, height = pixels
    most = frames_of(min(MAX_LATENT_FRAMES, MAX_TOKENS * ranks // max(1, batch * h * w)))
    what = "each context window" if windowed else "the video"
    fix = "use shorter context windows" if windowed else "use context windows (Wan Context Windows) for long videos"
    raise BudgetError(f"{what} at {width}x{height} with batch {batch} is {tokens} DiT tokens per model call"
                      f"{f' and process (of {ranks})' if ranks > 1 else ''}; the ceiling is {MAX_TOKENS} (README, "
                      f"'Security'): at most {_frames_text(most)} per call; {fix}, or lower the size or batch")


def _frames_text(frames: int) -> str:
    return "1 frame fits" if frames == 1 else f"{frames} frames fit"


# -- checks ---------------------------------------------------------------------------------------------------
def check_sampling(experts, shape, device, step_cache: bool = False, keep_both: bool = False,
                   context=None) -> Estimate:
    """Refuse a sampling run that exceeds the ceiling or cannot fit its device; names the most frames that fit."""
    b, c, t, h, w = shape
    pt, ph, pw = experts.config.patch_size
    size = (w * (16 if c == 48 else 8), h * (16 if c == 48 else 8))
    check_call(b, (call_frames(t, context)[0] // pt, h // ph, w // pw), size, context is not None,
               token_ranks(experts))
    estimate = estimate_sampling(experts, shape, device, step_cache, keep_both, context)
    require(estimate, lambda frames: estimate_sampling(experts, (b, c, frames, h, w), device, step_cache,
                                                       keep_both, context), size, b)
    return estimate


def check_vae(vae, kind: str, shape, tiled: bool, tile_size: int, out_device) -> None:
    b, _, t, h, w = shape
    s = vae.config.stride[1] if kind == "decode" else 1
    for est in vae_estimates(vae, kind, shape, tiled, tile_size, out_device):
        def at(latent_frames, est=est):
            frames = latent_frames if kind == "decode" else frames_of(latent_frames)
            return next(e for e in vae_estimates(vae, kind, (b, 3, frames, h, w), tiled, tile_size, out_device)
                        if e.what == est.what)
        require(est, at, (w * s, h * s), b, advice="" if tiled else "or decode in tiles (tiled 'on'); ")


# -- the device ---------------------------------------------------------------------------------------------------
def available_bytes(device) -> int | None:
    """Memory free for new tensors on ``device``; None when the device does not say."""
    device = torch.device(device)
    return host_available_bytes() if device.type == "cpu" else free_bytes(device)


def require(estimate: Estimate, at_frames: Callable[[int], Estimate], pixels: tuple[int, int], batch: int,
            advice: str = "") -> None:
    """Raise when ``estimate`` exceeds the free memory, after asking the memory host (ComfyUI) to make room;
    ``at_frames(latent_frames)`` re-estimates at another length so the message can say how many frames fit."""
    free = available_bytes(estimate.device)
    if free is None or estimate.total <= free:
        return
    memory_host().make_room(estimate.total, estimate.device)
    free = available_bytes(estimate.device)
    if free is None or estimate.total <= free:
        return
    most = _most_frames(at_frames, free)
    width, height = pixels
    weights = dict(estimate.parts).get("weights", 0)
    fix = (f"at {width}x{height} with batch {batch} at most {_frames_text(frames_of(most))}" if most else
           f"the model's weights alone need {gib(weights)} GiB: use its fp8 files" if weights > free else
           f"not even one frame fits at {width}x{height} with batch {batch}")
    raise BudgetError(f"{estimate.what} needs {estimate.describe()}, but only {gib(free)} GiB is free there: {fix}; "
                      f"{advice}lower the size, frames or batch, or free memory (close other programs, unload "
                      f"models)")


def _most_frames(at_frames: Callable[[int], Estimate], free: int) -> int:
    """The largest latent frame count whose estimate fits ``free`` (0 when none), by bisection."""
    lo, hi = 0, MAX_LATENT_FRAMES
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if at_frames(mid).total <= free:
            lo = mid
        else:
            hi = mid - 1
    return lo



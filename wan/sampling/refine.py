"""Video to video: a clean video's latents re-noised part-way down the schedule and denoised from there by the
usual loop (``sample``), the rule of diffusers' ``WanVideoToVideoPipeline``.

``strength`` in [0, 1] picks the first step kept of the shifted schedule of ``steps`` steps:
``init = min(int(steps * strength), steps)``, ``start = max(steps - init, 0)``; the latents become
``x = (1 - sigma) * x0 + sigma * noise`` at that step's sigma and the steps before it are skipped. Strength 1 is
text-to-video from the same noise (the run starts from the noise alone); strength 0 keeps the input as it is.
With a Wan 2.2 A14B pair each kept step still takes the expert its timestep picks (a low strength runs only the
low-noise expert, the high-noise one is never placed); ``expert`` "low" / "high" runs every kept step on one expert.
With I2V / FLF2V conditioning the first frame is kept: the input's first latent frame is held through the loop (as
the frames a video extension starts from), so the refined video starts exactly where the input did; TI2V-5B imposes
its start frame itself. Step caches (their first-steps rules count from the first kept step), context windows and
LoRAs work as in ``sample``, which does all of it.
"""
from __future__ import annotations

import dataclasses
import logging

import torch

from ..checks import finite_number
from ..errors import InputError
from ..experts import as_expert_set
from .loop import SampleResult, SamplerSettings, expert_plan, sample
from .schedules import make_schedule
from .shapes import check_frames

log = logging.getLogger("wan_experts")

EXPERTS = ("auto", "low", "high")
MIN_FRAMES = 5  # one latent frame after the first: a single frame is an image, not a video to refine


def check_strength(strength) -> float:
    """A finite number in [0, 1] (NaN, negatives and values above 1 are refused)."""
    return finite_number(strength, "strength", 0.0, 1.0, hint="0 keeps the video, 1 re-draws it from noise; "
                                                              "0.2-0.4 refines an upscaled video")


def start_step(steps: int, strength: float) -> int:
    """The first schedule step kept (diffusers' ``get_timesteps``); ``steps`` when nothing runs (strength 0)."""
    init = min(int(steps * check_strength(strength)), steps)
    return max(steps - init, 0)


def check_video(frames: int, width: int, height: int, multiple: int, what: str = "the video") -> None:
    """A video to refine: 4n+1 frames, at least ``MIN_FRAMES``, width and height multiples of ``multiple``."""
    if frames < MIN_FRAMES:
        raise InputError(f"{what} has {frames} frame{'s' if frames != 1 else ''}; video-to-video needs at least "
                         f"{MIN_FRAMES} frames (4n+1: 5, 9, ..., 81): give a video, or use image-to-video for one "
                         f"image")
    check_frames(frames)
    for name, value in (("width", width), ("height", height)):
        if value % multiple:
            raise InputError(f"{what} is {width}x{height}: its {name} {value} is not a multiple of {multiple} pixels, "
                             f"which the model needs; resize it with Wan Upscale Video (or --size) to "
                             f"{max(multiple, round(value / multiple) * multiple)}")


def expert_switch(experts, expert: str, steps: int) -> int | None:
    """The ``switch_step`` that forces one expert of a pair (None: by the boundary)."""
    if expert not in EXPERTS:
        raise InputError(f"expert '{expert}' is unknown; use one of {EXPERTS}")
    if expert == "auto":
        return None
    if not experts.is_moe:
        raise InputError(f"expert '{expert}' picks one expert of a Wan 2.2 A14B pair; this model is a single DiT: "
                         f"use expert 'auto'")
    return 0 if expert == "low" else steps


def kept_experts(experts, settings: SamplerSettings, strength: float, expert: str = "auto") -> list[str]:
    """The expert of each step a refine run would take, without running it (empty for strength 0)."""
    experts = as_expert_set(experts)
    switch = expert_switch(experts, expert, settings.steps)
    schedule = make_schedule(settings.solver, settings.steps, settings.shift, settings.schedule)
    if experts.is_moe and settings.boundary is not None:
        experts = dataclasses.replace(experts, boundary=settings.boundary)
    start = start_step(settings.steps, strength)
    return expert_plan(experts, schedule, range(start, settings.steps), switch)


def refine(experts, latents: torch.Tensor, text, settings: SamplerSettings, strength: float, *, noise: torch.Tensor,
           expert: str = "auto", **kwargs) -> SampleResult:
    """Re-noise the clean normalised ``latents`` [B, C, T, h, w] to the first kept step of ``settings``' schedule
    (by ``strength``) and denoise the rest with ``sample`` (``kwargs``: its keyword arguments, e.g. image_cond,
    step_cache, context via settings, callback, device). ``settings.start_step``, ``denoise`` and ``add_noise`` are
    set by the strength; an ``end_step`` still stops early."""
    experts = as_expert_set(experts)
    if not isinstance(settings, SamplerSettings):
        raise InputError(f"settings must be a SamplerSettings; got {type(settings).__name__}")
    if not torch.is_tensor(latents) or latents.dim() != 5:
        raise InputError(f"latents must be video latents [B, C, T, h, w]; got "
                         f"{tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__}")
    first = start_step(settings.steps, strength)
    switch = expert_switch(experts, expert, settings.steps)
    if settings.denoise != 1.0 or settings.start_step:
        log.info("Wan video to video: strength %g sets the start step; denoise %g and start step %d are ignored",
                 strength, settings.denoise, settings.start_step)
    if first >= settings.steps:
        log.info("Wan video to video: strength %g keeps no step of %d; the latents are returned unchanged",
                 strength, settings.steps)
        schedule = make_schedule(settings.solver, settings.steps, settings.shift, settings.schedule)
        return SampleResult(latents, [], schedule)
    cond = kwargs.get("image_cond")
    if cond is not None and cond.kind in ("i2v", "flf2v") and cond.first_latent is None:
        kwargs["image_cond"] = dataclasses.replace(cond, first_latent=latents[:, :, :1])
    run = dataclasses.replace(settings, start_step=first, denoise=1.0, add_noise=True,
                              switch_step=settings.switch_step if switch is None else switch)
    return sample(experts, latents, text, run, noise=noise, **kwargs)

"""``python -m wan.generate --refine_from VIDEO --refine_strength S --size W*H[,W*H...]``: a video file upscaled in
pixel space to each size in turn and refined there by the model (video to video at ``strength``), the result of each
stage feeding the next: one size is one refine pass, several make a progressive high-resolution cascade.

Everything that can fail is checked before the first stage samples: the video (4n+1 frames, at least 5), every
size (the model's multiple), and every stage against the memory budget, which names the largest size that fits.
With an image-to-video task the stage's first frame is the start image (and, for FLF2V, its last frame the end).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from ..budget.sizes import check_size
from ..latents import denormalize, normalize
from ..sampling import SamplerSettings, make_noise
from ..sampling.refine import check_video, kept_experts, refine, start_step
from ..sampling.schedules import make_schedule
from ..upscale import resize_frames
from ..video import read_video
from .pipeline import (Settings, check_task, encode_text, guidance_text, image_conditioning, load_experts, load_vae,
                       make_step_cache, official_files, progress_bar, run_description)

log = logging.getLogger("wan_experts")


def size_multiple(s: Settings) -> int:
    """Pixels per DiT token side: 16 with the Wan 2.1 VAE, 32 with the Wan 2.2 VAE (TI2V-5B)."""
    return 32 if s.variant.vae == "2.2" else 16


def stage_sizes(s: Settings, video: torch.Tensor) -> list[tuple[int, int]]:
    """The sizes to refine at: --size's list, or the video's own size when none was given."""
    return list(s.refine_sizes) or [(video.shape[2], video.shape[1])]


def only_expert(s: Settings, settings: SamplerSettings) -> str | None:
    """The one Wan 2.2 expert every kept step uses ("high" / "low"; "low" when no step runs), or None when both
    are needed, the model is no pair, or a step cache runs (its data is made per pair)."""
    if not s.variant.moe or s.cache is not None:
        return None
    if s.refine_expert != "auto":
        return s.refine_expert
    schedule = make_schedule(settings.solver, settings.steps, settings.shift, settings.schedule)
    kept = schedule.timesteps[start_step(settings.steps, s.refine_strength):]
    high = [float(t) >= s.variant.boundary * 1000 for t in kept]
    return "high" if high and all(high) else "low" if not any(high) else None


def load_refiners(files, s: Settings, device, settings: SamplerSettings):
    """(experts, settings, expert choice) for the run. When every kept step of a Wan 2.2 pair falls to one expert,
    only that expert is loaded, as a single model with its guidance and LoRAs; the other is never read."""
    from ..dit.loader import load_dit
    from ..experts import ExpertSet
    from ..lora import apply_choices

    role = only_expert(s, settings)
    if role is None:
        return load_experts(files, s, device), settings, s.refine_expert
    log.info("%s: the kept steps use only the %s-noise expert; the other is not loaded", s.task, role)
    home = "cpu" if s.offload else device
    model = load_dit(s.ckpt_dir, dtype="bf16" if device.type == "cuda" else "fp32", device=home, role=role,
                     fp8_matmul=s.fp8_matmul)
    experts = ExpertSet(model, compile=s.compile)
    check_task(experts, s)
    experts = apply_choices(experts, [replace(c, expert="both") for c in s.loras if c.expert in ("both", role)])
    guidance = s.guidance[0] if role == "low" else s.guidance[1]
    return experts, replace(settings, cfg_high=guidance, cfg_low=guidance), "auto"


def run_refine(s: Settings) -> Path:
    """Read and check the video and every stage, load the models, check every stage against the budget, then
    upscale, refine and decode stage by stage and write the last one."""
    from ..video import write_video

    video = read_video(s.refine_from)
    sizes = stage_sizes(s, video)
    for width, height in sizes:
        check_video(video.shape[0], width, height, size_multiple(s), f"'{s.refine_from.name}' at {width}x{height}")
    s = replace(s, frames=video.shape[0])
    files = official_files(s.ckpt_dir, s.task, s.variant)
    device = torch.device(s.device)
    text = encode_text(files, s, device)
    vae = load_vae(files, device)
    low, high = s.guidance
    settings = SamplerSettings(steps=s.steps, shift=s.shift, solver=s.solver, cfg_high=high, cfg_low=low)
    experts, settings, expert = load_refiners(files, s, device, settings)
    plan = kept_experts(experts, settings, s.refine_strength, expert)
    for i, (width, height) in enumerate(sizes):  # every stage, before any of them samples
        check_size(experts, width, height, s.frames, device, size_multiple(s),
                   what=f"refine stage {i + 1} of {len(sizes)}", step_cache=s.cache is not None)
    log.info("%s: refining '%s' (%d frames, %dx%d) at %s; strength %g: %d of %d steps (%s), guidance %s, seed %d",
             s.task, s.refine_from, s.frames, video.shape[2], video.shape[1], ", ".join(f"{w}x{h}" for w, h in sizes),
             s.refine_strength, len(plan), s.steps, ", ".join(sorted(set(plan))) or "none", guidance_text(s), s.seed)
    for width, height in sizes:
        video = refine_stage(s, files, experts, vae, text, settings, expert, video, width, height, device)
    stages = ",".join(f"{w}*{h}" for w, h in sizes)
    description = (f"{run_description(s).replace(f'--size {s.width}*{s.height}', f'--size {stages}')} --refine_from "
                   f"{str(s.refine_from)!r} --refine_strength {s.refine_strength:g} --refine_expert {s.refine_expert}")
    return write_video(video, s.save_file, fps=s.variant.fps, metadata={"comment": description})


def refine_stage(s: Settings, files, experts, vae, text, settings: SamplerSettings, expert: str, video: torch.Tensor,
                 width: int, height: int, device) -> torch.Tensor:
    """One stage: frames [N, H, W, 3] (0..1) resized to width x height, encoded, refined, decoded (tiles when the
    whole frames do not fit)."""
    frames = resize_frames(video, width, height, s.refine_resampling)
    del video
    pixels = frames.permute(3, 0, 1, 2).unsqueeze(0) * 2.0 - 1.0
    vae.to(device)
    latents = normalize(vae.encode(pixels.to(device)))
    cond = None
    if s.variant.task != "t2v":
        images = [pixels[:, :, 0]] + ([pixels[:, :, -1]] if s.variant.task == "flf2v" else [])
        cond = image_conditioning(files, s, vae, images, width, height, device)
    del pixels, frames
    if s.offload:
        vae.to("cpu")
    home = "cpu" if s.offload else device
    with progress_bar(s.steps) as bar:
        result = refine(experts, latents, text, settings, s.refine_strength, noise=make_noise(latents.shape, s.seed),
                        expert=expert, image_cond=cond, step_cache=make_step_cache(s),
                        callback=lambda info: bar.update(1), device=device, offload_device=home)
    if result.cache_report is not None:
        log.info("%s", result.cache_report.summary())
    vae.to(device)
    decoded = vae.decode(denormalize(result.latents), tiled="auto", output_device="cpu")
    if s.offload:
        vae.to("cpu")
    return ((decoded[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)

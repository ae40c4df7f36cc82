"""``python -m wan.generate --extend_from VIDEO``: continue a video file with an official image-to-video model and
write the joined video (the original frames, then the new ones, the shared frames cross-faded)."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from ..sampling.extend import ExtendSettings, check_video_size, extend, tail_pixels
from ..video import read_video
from .pipeline import (Settings, guidance_text, load_vae, progress_bar, encode_text, extended_prompt, load_experts,
                       make_step_cache, official_files, run_description)

log = logging.getLogger("wan_experts")


def run_extension(s: Settings) -> Path:
    """Read and check the video first, then load the models, extend, and write the whole video."""
    from ..encoders import load_clip_vision
    from ..sampling import SamplerSettings
    from ..video import write_video

    video = read_video(s.extend_from)
    ext = ExtendSettings(s.frames, s.extend_overlap, s.color_match)
    z_dim, stride = (48, (4, 16, 16)) if s.variant.vae == "2.2" else (16, (4, 8, 8))
    check_video_size(video, ext, z_dim, stride)
    files = official_files(s.ckpt_dir, s.task, s.variant)
    if s.prompt_extend is not None:  # shown the segment's first frame
        s = replace(s, prompt=extended_prompt(s, [tail_pixels(video, ext.overlap)[:, :, 0]]))
    device = torch.device(s.device)
    log.info("%s: extending '%s' (%d frames, %dx%d) by %d frames from its last %d; %d steps, guidance %s, seed %d",
             s.task, s.extend_from, video.shape[0], video.shape[2], video.shape[1], s.frames - s.extend_overlap,
             s.extend_overlap, s.steps, guidance_text(s), s.seed)
    text = encode_text(files, s, device)
    vae = load_vae(files, device)
    clip_vision = load_clip_vision(files.clip, device=device) if files.clip is not None else None
    experts = load_experts(files, s, device)
    low, high = s.guidance
    settings = SamplerSettings(steps=s.steps, shift=s.shift, solver=s.solver, cfg_high=high, cfg_low=low)
    home = torch.device("cpu") if s.offload else device
    vae.to(home)

    def on_device(work):
        vae.to(device)
        try:
            return work()
        finally:
            vae.to(home)

    with progress_bar(s.steps) as bar:
        result = extend(experts, vae, video, text, settings, ext, s.seed, clip_vision=clip_vision,
                        step_cache=make_step_cache(s), device=device, offload_device=home,
                        callback=lambda info: bar.update(1), vae_call=on_device)
    if result.cache_report is not None:
        log.info("%s", result.cache_report.summary())
    description = f"{run_description(s)} --extend_from {str(s.extend_from)!r} --extend_overlap {s.extend_overlap}"
    return write_video(result.video, s.save_file, fps=s.variant.fps, metadata={"comment": description})

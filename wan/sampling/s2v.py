"""Speech-to-video (Wan 2.2 S2V-14B): the official clip loop (``wan/speech2video.py``) over the shared sampler.

A clip of ``frames_per_clip`` frames (official ``infer_frames``, 80) is denoised by ``wan.sampling.sample`` with its
audio features, the reference image latent, the latents of the last 73 frames made so far (zeros at first: grey)
and its pose latents. The first clip ignores the motion frames (official ``drop_first_motion``): it is decoded
after the reference latent and its first 3 frames are cut, so it has ``frames_per_clip - 3`` frames; later clips are
decoded after the motion latents. After each clip the last 73 frames are re-encoded as the next clip's motion.
``start_from_ref`` puts the reference image in the last 6 motion frames and keeps the first clip's motion (official
``init_first_frame``); ``previous`` frames (a video to continue) become the motion frames likewise.

Documented behaviour: audio shorter than the clips asked for gets zero features after its end (official); more
clips than the audio allows are cut to what it allows; a pose video is resized to cover the video size and centre
cropped, and padded with blank pose frames (-1) when shorter (official).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from ..checks import reference_image, whole_number
from ..conditioning import TextEmbeds
from ..dit.s2v import MOTION_FRAMES, S2VInputs, WanS2VDiT
from ..encoders.audio import AudioEmbeds
from ..encoders.audio_features import clips_for, frame_buckets
from ..errors import InputError
from ..experts import ExpertSet
from .loop import SamplerSettings, StepInfo, sample
from .noise import make_noise

log = logging.getLogger("wan_experts")

SIZE_MULTIPLE = 64  # the frame packer's coarsest patch is 8x8 latent pixels
FIRST_CLIP_CUT = 3  # frames cut from the start of the first clip (official)
REF_MOTION_FRAMES = 6  # start_from_ref: motion frames set to the reference image (official)
MOTION_LATENTS = (MOTION_FRAMES + 3) // 4
MAX_CLIPS = 1000


@dataclass
class S2VClip:
    """Progress: clip ``index`` of ``total`` (0-based), and the step info of the shared sampler."""

    index: int
    total: int
    step: StepInfo


def plan_clips(audio: AudioEmbeds, frames_per_clip: int, clips: int, fps: int = 16) -> int:
    """The number of clips: as many as the audio lasts (``clips`` 0), else ``clips`` cut to that (official)."""
    whole_number(frames_per_clip, "frames_per_clip", 4, 1024)
    if frames_per_clip % 4:
        raise InputError(f"frames_per_clip must be a multiple of 4 (official infer_frames, 80 by default); got "
                         f"{frames_per_clip}: use {frames_per_clip // 4 * 4 or 4}")
    whole_number(clips, "clips", 0, MAX_CLIPS)
    if not isinstance(audio, AudioEmbeds) or audio.frames == 0:
        raise InputError("audio_embeds must come from Wan Audio Encode (WAN_AUDIO_EMBEDS) of a track with sound")
    most = clips_for(audio.frames, frames_per_clip, fps)
    if clips > most:
        log.info("Wan S2V: the audio (%.1f s) allows %d clips of %d frames; making %d, not %d", audio.seconds, most,
                 frames_per_clip, most, clips)
    return min(clips, most) if clips else most


def s2v_frames(clips: int, frames_per_clip: int, drop_first_motion: bool = True) -> int:
    """Frames of the finished video."""
    return clips * frames_per_clip - (FIRST_CLIP_CUT if drop_first_motion else 0)


@torch.no_grad()
def generate_s2v(model: WanS2VDiT | ExpertSet, vae, text: TextEmbeds, ref_image: torch.Tensor, audio: AudioEmbeds,
                 settings: SamplerSettings, *, frames_per_clip: int = 80, clips: int = 0, seed: int = 0,
                 pose: torch.Tensor | None = None, previous: torch.Tensor | None = None,
                 start_from_ref: bool = False, fps: int = 16, device=None, offload_device=None,
                 callback: Callable[[S2VClip], None] | None = None,
                 interrupt: Callable[[], None] | None = None) -> torch.Tensor:
    """Reference image [3, H, W] in [-1, 1] + audio -> video [3, T, H, W] in [-1, 1] (float32, CPU).

    ``pose``: [N, 3, H', W'] in [-1, 1] (any size, resized); ``previous``: [N, 3, H, W] frames to continue from.
    ``settings``: the shared sampler's settings per clip (official: unipc, 40 steps, shift 3, guidance 4.5)."""
    experts = model if isinstance(model, ExpertSet) else None  # a WAN_MODEL keeps its compile options
    model = experts.high if experts is not None else model
    if not isinstance(model, WanS2VDiT):
        raise InputError(f"speech-to-video needs the Wan 2.2 S2V-14B model; got {getattr(model, 'variant', model)}")
    height, width = reference_image(ref_image, "speech-to-video", SIZE_MULTIPLE)
    n_clips = plan_clips(audio, frames_per_clip, clips, fps)
    whole_number(seed, "seed", -(1 << 63), (1 << 64) - 1)
    drop_first = not start_from_ref and previous is None
    pose_clips = _pose_clips(pose, n_clips, frames_per_clip, height, width)
    last = _motion_start(ref_image, previous, height, width, start_from_ref)
    features = frame_buckets(audio.states, frames_per_clip, fps, n_clips)[None]  # [1, L, C, clips * F]

    ref_latent = _encode(vae, ref_image[:, None])
    poses = [None if p is None else _encode(vae, torch.cat([p[:, :1], p], dim=1))[:, :, 1:] for p in pose_clips]
    run = replace(settings, keep_both_resident=True)  # the DiT stays placed, idle, between clips
    out = []
    for r in range(n_clips):
        shape = (1, 16, frames_per_clip // 4, height // 8, width // 8)
        drop = drop_first and r == 0  # the model ignores the motion latents then: not encoded
        motion = torch.zeros(1, 16, MOTION_LATENTS, *shape[3:]) if drop else _encode(vae, last)
        cond = S2VInputs(features[..., r * frames_per_clip:(r + 1) * frames_per_clip], ref_latent, motion,
                         poses[r], drop_motion=drop)
        step_cb = None if callback is None else (lambda info, r=r: callback(S2VClip(r, n_clips, info)))
        latents = sample(experts or model, torch.zeros(shape), text, run, noise=make_noise(shape, seed + r), device=device,
                         offload_device=offload_device, callback=step_cb, interrupt=interrupt, s2v=cond).latents
        first = ref_latent if cond.drop_motion else motion
        video = vae.decode(vae.denormalize(torch.cat([first.to(latents), latents], dim=2)),
                           output_device="cpu")[0, :, -frames_per_clip:]
        if cond.drop_motion:
            video = video[:, FIRST_CLIP_CUT:]
        keep = min(MOTION_FRAMES, video.shape[1])
        last = torch.cat([last[:, keep:], video[:, -keep:].to(last)], dim=1)
        out.append(video.float().cpu())
    return torch.cat(out, dim=1)


def _encode(vae, video: torch.Tensor) -> torch.Tensor:
    """[3, T, H, W] in [-1, 1] -> normalised latents [1, 16, T', h, w]."""
    return vae.normalize(vae.encode(video[None].float(), output_device="cpu"))


def fit_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[N, 3, h, w] -> [N, 3, height, width]: scaled to cover (bilinear, antialiased), then centre cropped."""
    h, w = frames.shape[-2:]
    if (h, w) == (height, width):
        return frames
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    frames = F.interpolate(frames.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return frames[..., top:top + height, left:left + width]


def _pose_clips(pose, clips: int, frames: int, height: int, width: int) -> list[torch.Tensor | None]:
    """Per clip [3, F, H, W] pose frames (official: padded with -1 after the pose video ends), or None each."""
    if pose is None:
        return [None] * clips
    if not torch.is_tensor(pose) or pose.dim() != 4 or pose.shape[1] != 3 or pose.shape[0] == 0:
        shape = tuple(pose.shape) if torch.is_tensor(pose) else type(pose).__name__
        raise InputError(f"the pose video must be RGB frames [N, 3, H, W] in [-1, 1]; got {shape}")
    need = clips * frames
    pose = fit_frames(pose[:need], height, width)
    if pose.shape[0] < need:
        pose = torch.cat([pose, -torch.ones(need - pose.shape[0], 3, height, width)])
    return list(pose.permute(1, 0, 2, 3).split(frames, dim=1))


def _motion_start(ref: torch.Tensor, previous, height: int, width: int, start_from_ref: bool) -> torch.Tensor:
    """The 73 frames before the first clip [3, 73, H, W]: zeros (grey), the end of ``previous``, and with
    ``start_from_ref`` the reference image in the last 6."""
    last = torch.zeros(3, MOTION_FRAMES, height, width)
    if previous is not None:
        if not torch.is_tensor(previous) or previous.dim() != 4 or tuple(previous.shape[1:]) != (3, height, width):
            shape = tuple(previous.shape) if torch.is_tensor(previous) else type(previous).__name__
            raise InputError(f"the previous frames must be [N, 3, {height}, {width}] (the video size); got {shape}")
        tail = previous[-MOTION_FRAMES:].permute(1, 0, 2, 3).float()
        last[:, MOTION_FRAMES - tail.shape[1]:] = tail
    if start_from_ref:
        last[:, -REF_MOTION_FRAMES:] = ref.float()[:, None]
    return last

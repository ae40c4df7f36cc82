"""Extending a finished clip from its last frames: the next segment starts with them, and the two are joined.

The last ``overlap`` pixel frames of the clip (4n+1: they fill whole latent frames) are encoded with the VAE and
condition a new segment of ``frames`` pixel frames that begins with them:

- 36-channel models (Wan 2.1 I2V, Wan 2.2 I2V-A14B): I2V-style ``y`` = [mask 1 on the ``overlap`` given pixel
  frames, latent of (those frames, grey frames)], as the official I2V with more than one given frame; the latents
  of the given frames are also held while sampling (``ImageCond.first_latent``, sampling/inputs.py), so the
  segment starts exactly with them whatever the model makes of the mask. Wan 2.1 I2V also takes the CLIP features
  of the first given frame.
- TI2V-5B: the latents of the given frames are imposed on the first latent frames with timestep 0 on their
  tokens, as TI2V-5B does with its start image.

The segment is decoded, optionally colour-matched to the clip's last frames (``wan/sampling/color.py``), and joined: the
``overlap`` frames the two share are cross-faded (the new segment's weight rising (j + 1) / (overlap + 1)).
Videos here are frames [N, H, W, 3] in 0..1 (ComfyUI's ``IMAGE``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .color import COLOR_MATCH, match_colors
from ..conditioning import ImageCond
from ..errors import InputError
from ..latents import denormalize, normalize
from .imagecond import mask_from_given
from .shapes import check_frames, latent_shape
from .validate import model_task


@dataclass
class ExtendSettings:
    frames: int = 81  # pixel frames of the new segment, the overlap included (4n+1)
    overlap: int = 5  # last frames of the clip the segment starts from (4n+1, fewer than ``frames``)
    color_match: str = "off"  # "off", "mean_std" or "histogram" (in Lab)


@dataclass
class Extension:
    video: torch.Tensor  # the joined clip [N, H, W, 3]
    segment: torch.Tensor  # the new segment alone (colour-matched), [frames, H, W, 3]
    latents: torch.Tensor  # its raw VAE latents [1, C, T, h, w]
    cache_report: object = None  # the step cache's report, if one was used


def check_extension(experts, vae, video: torch.Tensor, ext: ExtendSettings, clip_vision=None) -> tuple[int, int]:
    """Everything an extension needs, checked before any work; returns the output (width, height)."""
    task = model_task(experts)
    if task == "t2v" or experts.config.flf_pos_len:
        raise InputError("extending a video needs an image-to-video model (Wan 2.1 I2V, Wan 2.2 I2V-A14B or "
                         "TI2V-5B); text-to-video and first-last-frame models cannot start from given frames")
    if vae.z_dim != experts.config.out_dim:
        raise InputError(f"the VAE makes {vae.z_dim}-channel latents but the model works on "
                         f"{experts.config.out_dim}; use the Wan 2.2 VAE with TI2V-5B, the Wan 2.1 VAE otherwise")
    if experts.config.has_clip and clip_vision is None:
        raise InputError("this Wan 2.1 image-to-video model also needs CLIP vision features: connect Load Wan CLIP "
                         "Vision (clip_vision_h) so the first given frame can be encoded")
    return check_video_size(video, ext, vae.z_dim, tuple(vae.stride))


def check_video_size(video: torch.Tensor, ext: ExtendSettings, z_dim: int, stride: tuple) -> tuple[int, int]:
    """The video and the extension settings (no model needed); returns the output (width, height)."""
    if not torch.is_tensor(video) or video.dim() != 4 or video.shape[-1] < 3:
        raise InputError(f"the video to extend must be frames [N, H, W, 3]; got "
                         f"{tuple(video.shape) if torch.is_tensor(video) else type(video).__name__}")
    check_frames(ext.frames, 4)
    if ext.overlap < 1 or (ext.overlap - 1) % 4 or ext.overlap >= ext.frames:
        raise InputError(f"overlap {ext.overlap} must be 4n+1 (1, 5, 9, 13, 17, ...: whole latent frames) and less "
                         f"than the segment's {ext.frames} frames")
    if ext.overlap > video.shape[0]:
        raise InputError(f"overlap {ext.overlap} is longer than the video to extend ({video.shape[0]} frames)")
    if ext.color_match not in COLOR_MATCH:
        raise InputError(f"color_match '{ext.color_match}' is unknown; use one of {COLOR_MATCH}")
    height, width = video.shape[1:3]
    latent_shape(width, height, ext.frames, z_dim, 1, stride)  # size rules, named errors
    return width, height


def extension_condition(vae, tail: torch.Tensor, frames: int, clip: torch.Tensor | None = None) -> ImageCond:
    """Conditioning of a ``frames``-long segment that starts with ``tail`` [1, 3, k, H, W] in [-1, 1]."""
    k = tail.shape[2]
    known = (k - 1) // vae.stride[0] + 1
    if vae.z_dim == 48:
        return ImageCond("ti2v", first_latent=normalize(vae.encode(tail.float())))
    grey = tail.new_zeros(tail.shape[0], 3, frames - k, *tail.shape[-2:], dtype=torch.float32)
    z = normalize(vae.encode(torch.cat([tail.float(), grey], dim=2)))
    given = torch.zeros(frames)
    given[:k] = 1
    mask = mask_from_given(given, z.shape[-2], z.shape[-1], vae.stride[0]).to(z)
    y = torch.cat([mask.expand(z.shape[0], -1, -1, -1, -1), z], dim=1)
    return ImageCond("i2v", y=y, clip=clip, first_latent=z[:, :, :known].clone())


def finish_segment(video: torch.Tensor, segment: torch.Tensor, ext: ExtendSettings) -> tuple[torch.Tensor, ...]:
    """(joined clip, colour-matched segment): match the segment to the clip's last frames, then cross-fade."""
    tail = video[-ext.overlap:]
    segment = match_colors(segment, tail, ext.color_match)
    return join(video, segment, ext.overlap), segment


def join(video: torch.Tensor, segment: torch.Tensor, overlap: int) -> torch.Tensor:
    """``video`` then ``segment``, whose first ``overlap`` frames show the video's last ones, cross-faded."""
    if video.shape[1:] != segment.shape[1:]:
        raise InputError(f"the new segment {tuple(segment.shape[1:])} does not match the video's frame size "
                         f"{tuple(video.shape[1:])}")
    fade = (torch.arange(overlap, dtype=torch.float32) + 1) / (overlap + 1)
    fade = fade.view(-1, 1, 1, 1).to(video.device)
    shared = video[-overlap:].float() * (1 - fade) + segment[:overlap].float() * fade
    return torch.cat([video[:-overlap], shared.to(video.dtype), segment[overlap:].to(video.dtype)])


def tail_pixels(video: torch.Tensor, overlap: int) -> torch.Tensor:
    """The last ``overlap`` frames [N, H, W, 3] in 0..1 -> [1, 3, overlap, H, W] in [-1, 1] for the VAE."""
    return video[-overlap:, ..., :3].permute(3, 0, 1, 2).unsqueeze(0).float() * 2.0 - 1.0


def decode_frames(vae, latents: torch.Tensor, **kwargs) -> torch.Tensor:
    """Raw latents [1, C, T, h, w] -> frames [F, H, W, 3] in 0..1."""
    video = vae.decode(latents, **kwargs)
    return ((video[0].permute(1, 2, 3, 0) + 1.0) / 2.0).clamp(0, 1)


def extend(experts, vae, video: torch.Tensor, text, sampler, ext: ExtendSettings, seed: int, *, clip_vision=None,
           step_cache=None, device=None, offload_device=None, callback=None, vae_call=None) -> Extension:
    """Condition, sample, decode, colour-match and join. ``vae_call(work)`` runs VAE work where the VAE should work
    (default: where it is) and returns its result; ``sampler`` is a ``SamplerSettings`` (context windows too)."""
    from . import make_noise, sample

    on_vae = vae_call or (lambda work: work())
    width, height = check_extension(experts, vae, video, ext, clip_vision)
    tail = tail_pixels(video, ext.overlap)
    clip = None if clip_vision is None else clip_vision.encode(tail[:, :, 0])
    cond = on_vae(lambda: extension_condition(vae, tail.to(vae.device), ext.frames, clip))
    shape = latent_shape(width, height, ext.frames, vae.z_dim, 1, tuple(vae.stride))
    result = sample(experts, torch.zeros(shape), text, sampler, noise=make_noise(shape, seed), image_cond=cond,
                    step_cache=step_cache, callback=callback, device=device, offload_device=offload_device)
    latents = denormalize(result.latents).cpu()
    segment = on_vae(lambda: decode_frames(vae, latents, output_device="cpu"))
    joined, segment = finish_segment(video.cpu().float(), segment, ext)
    return Extension(joined, segment, latents, result.cache_report)

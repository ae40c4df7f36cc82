"""Character animation and replacement (Wan 2.2 Animate-14B): the official clip loop (``wan/animate.py``) over the
shared sampler.

The driving videos (pose skeleton frames, face crops, and for replacement the background and the character mask)
are padded to a valid length by bouncing back and forth over their frames (official ``inputs_padding``), then cut
into clips of ``clip_frames`` (77) frames that overlap by ``refert_num`` (1 or 5) frames. Each clip is denoised with
the reference image in front (its own latent frame, mask 1), the clip's pose latents and face crops; the latent
conditioning ``y`` of the clip frames is (official ``get_i2v_mask``):

- animation: the VAE latents of grey frames, mask 0; from the second clip on, the first ``refert_num`` frames are
  the last frames made so far (temporal guidance), mask 1 there;
- replacement: the VAE latents of the background video (again with the last frames made in front after the first
  clip), mask = 1 - character mask (at latent size, nearest), 1 on the guidance frames.

A clip after the first drops its ``refert_num`` leading (guidance) frames; the video is cut to the driving
video's length. ``previous`` frames (an earlier video to continue) make the first clip a later clip: their last
``refert_num`` frames guide it, and the driving videos then start at those frames.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from ..checks import reference_image, whole_number
from ..conditioning import ImageCond, TextEmbeds
from ..dit.animate import AnimateInputs, WanAnimateDiT
from ..errors import InputError
from .loop import SamplerSettings, StepInfo, sample

REFERENCE_FRAMES = (1, 5)  # official refert_num values
SIZE_MULTIPLE = 16  # VAE stride 8 x patch 2


@dataclass
class AnimateSource:
    """The driving inputs, float32 in [-1, 1]: ``reference`` [3, H, W] (already at the video size), ``pose``
    [N, 3, H, W], ``face`` [N, 3, S, S] (S: the model's face size), and for replacement ``background``
    [N, 3, H, W] and ``mask`` [N, H, W] in 0..1 (1 where the character is)."""

    reference: torch.Tensor
    pose: torch.Tensor
    face: torch.Tensor
    background: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def replace(self) -> bool:
        return self.background is not None


@dataclass
class AnimateClip:
    """Progress: clip ``index`` of ``total`` (0-based), and the step info of the shared sampler."""

    index: int
    total: int
    step: StepInfo


def valid_length(frames: int, clip_frames: int, overlap: int) -> int:
    """The padded length: clips of ``clip_frames`` overlapping by ``overlap`` cover it exactly (official)."""
    step = clip_frames - overlap
    rest = (frames - overlap) % step
    return frames + (step - rest if rest else 0)


def bounce(frames: torch.Tensor, length: int) -> torch.Tensor:
    """``frames`` [N, ...] extended to ``length`` by going back and forth over them (official ``inputs_padding``:
    0 1 .. N-1 N-2 .. 1 0 1 ..)."""
    n = frames.shape[0]
    if n == 1:
        return frames.expand(length, *frames.shape[1:])
    period = 2 * (n - 1)
    idx = torch.arange(length) % period
    return frames[torch.where(idx < n, idx, period - idx)]


def i2v_mask(latent_frames: int, h: int, w: int, known: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[4, T, h, w]: the pixel-frame mask (zeros, or ``mask`` [4 (T - 1) + 1, h, w]) with its first ``known``
    frames set to 1, the first frame repeated 4 times, folded 4 frames per latent frame (official ``get_i2v_mask``)."""
    m = torch.zeros(4 * (latent_frames - 1) + 1, h, w) if mask is None else mask.float().clone()
    m[:known] = 1
    m = torch.cat([m[:1].expand(4, -1, -1), m[1:]])
    return m.view(latent_frames, 4, h, w).transpose(0, 1)


def plan_clips(frames: int, clip_frames: int, refert_num: int, continuing: bool = False) -> list[int]:
    """Start frames of the clips over the padded driving video (official loop)."""
    whole_number(clip_frames, "clip_frames", 5, 1025)
    if (clip_frames - 1) % 4:
        raise InputError(f"clip_frames must be 4n+1 (official 77); got {clip_frames}: use {(clip_frames - 1) // 4 * 4 + 1}")
    if refert_num not in REFERENCE_FRAMES:
        raise InputError(f"reference_frames (official refert_num) must be 1 or 5, the frames carried from one clip "
                         f"to the next; got {refert_num}")
    if clip_frames < 2 * refert_num + 1:
        raise InputError(f"clip_frames {clip_frames} is too short for reference_frames {refert_num}: a clip must make "
                         f"at least {refert_num} new frames to guide the next; use {4 * ((2 * refert_num + 3) // 4) + 1} "
                         f"or more (official 77)")
    least = refert_num + 1 if continuing else 1
    if frames < least:
        raise InputError(f"the driving videos have {frames} frames; at least {least} are needed"
                         + (f" (continuing: the first {refert_num} overlap the end of the previous video)"
                            if continuing else ""))
    total, step = valid_length(frames, clip_frames, refert_num), clip_frames - refert_num
    return list(range(0, max(total - refert_num, 1), step))


@torch.no_grad()
def generate_animate(model: WanAnimateDiT, vae, text: TextEmbeds, clip_fea: torch.Tensor, source: AnimateSource,
                     settings: SamplerSettings, *, clip_frames: int = 77, refert_num: int = 1, seed: int = 0,
                     previous: torch.Tensor | None = None, device=None, offload_device=None,
                     callback: Callable[[AnimateClip], None] | None = None,
                     interrupt: Callable[[], None] | None = None) -> torch.Tensor:
    """The driving inputs + the reference's CLIP features [1, 257, 1280] -> video [3, N, H, W] in [-1, 1] (float32,
    CPU; N = the driving frames, less the ``refert_num`` overlapping ``previous`` [M, 3, H, W] when continuing).
    ``settings``: the shared sampler's settings per clip (official: unipc, 20 steps, shift 5, guidance 1)."""
    if not isinstance(model, WanAnimateDiT):
        raise InputError(f"character animation needs the Wan 2.2 Animate-14B model; got {getattr(model, 'variant', model)}")
    height, width = check_source(source, model.animate_config.face_size)
    n = source.pose.shape[0]
    starts = plan_clips(n, clip_frames, refert_num, previous is not None)
    whole_number(seed, "seed", -(1 << 63), (1 << 64) - 1)
    guide = None if previous is None else _previous_tail(previous, refert_num, height, width)
    total = valid_length(n, clip_frames, refert_num)
    pose, face = bounce(source.pose, total), bounce(source.face, total)
    background = None if not source.replace else bounce(source.background, total)
    mask = None if not source.replace else bounce(source.mask, total)
    y_ref = torch.cat([torch.ones(4, 1, height // 8, width // 8), _encode(vae, source.reference[:, None])[0]])
    generator = torch.Generator().manual_seed(seed % (1 << 64))  # one stream over the clips (official)
    run = replace(settings, keep_both_resident=True)  # the DiT stays placed, idle, between clips
    out = []
    for r, start in enumerate(starts):
        window = slice(start, start + clip_frames)
        known = 0 if guide is None else refert_num
        y = torch.cat([y_ref, _clip_y(vae, known, guide, background, mask, window, clip_frames, height, width)], dim=1)
        cond = AnimateInputs(_encode(vae, pose[window].transpose(0, 1)), face[window].transpose(0, 1)[None])
        shape = (1, 16, y.shape[1], height // 8, width // 8)
        noise = torch.randn(shape[1:], generator=generator, dtype=torch.float32)[None]
        step_cb = None if callback is None else (lambda info, r=r: callback(AnimateClip(r, len(starts), info)))
        latents = sample(model, torch.zeros(shape), text, run, noise=noise, device=device, offload_device=offload_device,
                         image_cond=ImageCond("i2v", y=y[None], clip=clip_fea), callback=step_cb, interrupt=interrupt,
                         animate=cond).latents
        video = vae.decode(vae.denormalize(latents[:, :, 1:]), output_device="cpu")[0].float()
        if known:
            video = video[:, known:]
        guide = video[:, -refert_num:]
        out.append(video)
    made = n - (0 if previous is None else refert_num)
    return torch.cat(out, dim=1)[:, :made]


def _clip_y(vae, known: int, guide, background, mask, window: slice, frames: int, height: int, width: int):
    """The clip's [20, T, h, w]: mask then latents of (guidance frames +) grey or background frames."""
    h, w, lat_t = height // 8, width // 8, (frames - 1) // 4 + 1
    filler = torch.zeros(3, frames, height, width) if background is None else background[window].transpose(0, 1)
    pixels = filler if not known else torch.cat([guide[:, :known].float(), filler[:, known:]], dim=1)
    latent_mask = None
    if mask is not None:
        latent_mask = F.interpolate((1 - mask[window].float())[:, None], size=(h, w), mode="nearest")[:, 0]
    return torch.cat([i2v_mask(lat_t, h, w, known, latent_mask), _encode(vae, pixels)[0]])


def _encode(vae, video: torch.Tensor) -> torch.Tensor:
    """[3, T, H, W] in [-1, 1] -> normalised latents [1, 16, T', h, w] on the CPU."""
    return vae.normalize(vae.encode(video[None].float(), output_device="cpu"))


def _previous_tail(previous, refert_num: int, height: int, width: int) -> torch.Tensor:
    if not torch.is_tensor(previous) or previous.dim() != 4 or tuple(previous.shape[1:]) != (3, height, width):
        raise InputError(f"continue_from must be frames [M, 3, {height}, {width}] (the video size); got "
                         f"{_shape(previous)}")
    if previous.shape[0] < refert_num:
        raise InputError(f"continue_from has {previous.shape[0]} frames; reference_frames {refert_num} needs at least "
                         f"that many")
    return previous[-refert_num:].transpose(0, 1).float()


def resize_faces(face: torch.Tensor, size: int) -> torch.Tensor:
    """Square face crops [N, 3, s, s] -> [N, 3, size, size] (bilinear, antialiased), the motion encoder's size."""
    if face.shape[-1] == size and face.shape[-2] == size:
        return face
    return F.interpolate(face.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def letterbox(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[3, h, w] in [-1, 1] -> [3, height, width]: scaled to fit (bilinear) and centred on black, as the official
    ``padding_resize`` fits the reference image to the pose video's size."""
    h, w = image.shape[1:]
    if (h, w) == (height, width):
        return image.float()
    if h / w > height / width:
        size = (height, int(height / h * w))
    else:
        size = (int(width / w * h), width)
    scaled = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    out = torch.full((3, height, width), -1.0)
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    out[:, top:top + size[0], left:left + size[1]] = scaled
    return out


def check_source(source: AnimateSource, face_size: int) -> tuple[int, int]:
    """Every driving input in shape and length, before any model runs; returns (H, W)."""
    if not isinstance(source, AnimateSource):
        raise InputError("source must be an AnimateSource (reference, pose, face[, background, mask])")
    height, width = reference_image(source.reference, "character animation", SIZE_MULTIPLE, "the video",
                                    "the pose video")
    _frames(source.pose, "pose video", (3, height, width))
    n = source.pose.shape[0]
    _frames(source.face, "face video", (3, face_size, face_size), n)
    if (source.background is None) != (source.mask is None):
        raise InputError("replacement mode needs both background_video and character_mask; connect both (or neither, "
                         "for animation mode)")
    if source.replace:
        _frames(source.background, "background video", (3, height, width), n)
        _frames(source.mask, "character mask", (height, width), n)
    return height, width


def _frames(v, name: str, per_frame: tuple[int, ...], n: int | None = None) -> None:
    if not torch.is_tensor(v) or v.dim() != len(per_frame) + 1 or v.shape[0] == 0 or tuple(v.shape[1:]) != per_frame:
        raise InputError(f"the {name} must be frames [N, {', '.join(map(str, per_frame))}]; got {_shape(v)}")
    if n is not None and v.shape[0] != n:
        raise InputError(f"the {name} has {v.shape[0]} frames but the pose video has {n}; they must be the same "
                         f"length (frame for frame from the same driving video)")


def _shape(v) -> str:
    return str(tuple(v.shape)) if torch.is_tensor(v) else type(v).__name__

"""``--task vace-1.3B`` / ``vace-14B``: video editing and control from the command line with the official flags
``--src_video``, ``--src_mask`` and ``--src_ref_images`` (comma-separated), run by the shared pipeline.

The source video and mask are read with PyAV, resized to cover ``--size`` (bicubic, antialiased) and centre
cropped, as the official ``VaceVideoProcessor.resize_crop``; like its ``keep_last`` mode the frames are spread over
the whole source video: ``--frame_num`` of them (81 by default), fewer (4n+1) when the video is shorter. The mask
video's first channel maps black to keep and white to generate. Reference images are fitted onto a white canvas of
the video size (official). Without ``--src_video`` the whole video is generated from the prompt and the references.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InputError

MAX_REFERENCES = 16


@dataclass
class VaceOptions:
    src_video: Path | None
    src_mask: Path | None
    src_ref_images: tuple[Path, ...]


def add_vace_flags(p) -> None:
    g = p.add_argument_group("video editing and control (--task vace-1.3B / vace-14B)")
    g.add_argument("--src_video", default=None, help="control video (pose, depth, edges, ...) or the video to edit")
    g.add_argument("--src_mask", default=None, help="mask video for --src_video: white = generate, black = keep")
    g.add_argument("--src_ref_images", default=None,
                   help="reference images of subjects or background, separated by ','")


def vace_options(args) -> VaceOptions:
    """Check the VACE flags before anything loads."""
    refs = tuple(Path(p.strip()) for p in (args.src_ref_images or "").split(",") if p.strip())
    if args.src_mask and not args.src_video:
        raise InputError("--src_mask marks what to regenerate in --src_video; pass --src_video too")
    if len(refs) > MAX_REFERENCES:
        raise InputError(f"--src_ref_images lists {len(refs)} images; at most {MAX_REFERENCES}")
    for flag, path in (("--src_video", args.src_video), ("--src_mask", args.src_mask),
                       *(("--src_ref_images", r) for r in refs)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{flag} '{path}' is not a file")
    return VaceOptions(None if args.src_video is None else Path(args.src_video),
                       None if args.src_mask is None else Path(args.src_mask), refs)


def refuse_vace_flags(args) -> None:
    if args.src_video or args.src_mask or args.src_ref_images:
        raise InputError(f"--src_video, --src_mask and --src_ref_images are for the VACE tasks (vace-1.3B, "
                         f"vace-14B), not {args.task}")


def frame_ids(count: int, frames: int) -> list[int]:
    """``frames`` (4n+1, at most what the source has) indices spread evenly from its first to its last frame."""
    usable = min(frames, (count - 1) // 4 * 4 + 1)
    if usable == 1:
        return [0]
    return [round(i * (count - 1) / (usable - 1)) for i in range(usable)]


def resize_crop(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[T, 3, h, w] in 0..1 -> [T, 3, height, width]: scaled to cover (bicubic, antialiased), centre cropped."""
    ih, iw = video.shape[-2:]
    if (ih, iw) == (height, width):
        return video
    scale = max(width / iw, height / ih)
    video = F.interpolate(video, size=(round(scale * ih), round(scale * iw)), mode="bicubic", antialias=True)
    top, left = (video.shape[2] - height) // 2, (video.shape[3] - width) // 2
    return video[:, :, top:top + height, left:left + width]


def vace_sources(o: VaceOptions, width: int, height: int, frames: int):
    """(control video [3, F, H, W] in [-1, 1] or None, masks [F, H, W] in 0..1 or None, references [N, 3, h, w] in
    [-1, 1] or None) from the files; F may be less than ``frames`` for a short source video."""
    from ..video import read_video
    from ..video import load_image

    video = masks = refs = None
    if o.src_video is not None:
        src = read_video(o.src_video)
        ids = frame_ids(src.shape[0], frames)
        video = resize_crop(src[ids].permute(0, 3, 1, 2), height, width).clamp(0, 1).permute(1, 0, 2, 3) * 2 - 1
        if o.src_mask is not None:
            m = read_video(o.src_mask)
            if m.shape[0] < src.shape[0]:
                raise InputError(f"--src_mask has {m.shape[0]} frames, fewer than --src_video's {src.shape[0]}")
            masks = resize_crop(m[ids].permute(0, 3, 1, 2), height, width)[:, 0].clamp(0, 1)
    if o.src_ref_images:
        from ..sampling.vace import fit_reference

        refs = torch.stack([fit_reference(load_image(p)[0], width, height) for p in o.src_ref_images])
    return video, masks, refs


def vace_conditioning(s, vae, width: int, height: int, device):
    """(the VACE context on ``device``, the video's frame count) for a run; --demo without files uses
    ``demo_sources``."""
    from ..sampling.vace import vace_context

    o: VaceOptions = s.vace
    if s.demo and o.src_video is None and not o.src_ref_images:
        video, masks, refs = demo_sources(width, height, s.frames)
    else:
        video, masks, refs = vace_sources(o, width, height, s.frames)
    frames = s.frames if video is None else video.shape[1]
    cond = vace_context(vae, width, height, frames, None if video is None else video.to(device),
                        None if masks is None else masks.to(device), None if refs is None else refs.to(device))
    return cond, frames


def demo_sources(width: int, height: int, frames: int):
    """--demo without files: a moving colour bar video, a mask over its right half and one reference picture."""
    t = torch.linspace(0, 1, frames).view(1, -1, 1, 1)
    x = torch.linspace(-1, 1, width).view(1, 1, 1, -1).expand(1, frames, height, width)
    video = torch.cat([torch.sin(3 * x + 6 * t), torch.cos(2 * x - 4 * t), x * 0.5], dim=0)
    masks = torch.zeros(frames, height, width)
    masks[..., width // 2:] = 1.0
    y = torch.linspace(-1, 1, height // 2).view(-1, 1).expand(height // 2, width // 2)
    ref = torch.stack([y, -y, y * 0.3])[None]
    return video, masks, ref

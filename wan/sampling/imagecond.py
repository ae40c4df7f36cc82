"""Image conditioning (I2V, FLF2V, TI2V-5B) built from start/end images with any VAE object that has
``encode(video [B, 3, F, H, W] in [-1, 1]) -> raw latents``, ``z_dim`` and ``stride``.

I2V / FLF2V: ``y`` = [mask (4 ch), normalised latent of (start, grey frames[, end])]; the mask is 1 on the
pixel frames given (first, and last for FLF2V), the first repeated 4x, folded to (4, T_lat). Any 4n+1 length
works (the official FLF2V code hard-codes 81). TI2V-5B: the normalised latent of the start image alone, imposed
on latent frame 0 while sampling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..conditioning import ClipEmbeds, ImageCond
from ..checks import check_image, whole_number
from ..errors import InputError
from ..latents import normalize
from .shapes import check_frames


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, height, width]: centre-crop to the target aspect, then bicubic resize (official I2V)."""
    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image
    if abs(w / h - width / height) * h > 1:  # aspect differs by more than a pixel: crop the longer side
        crop_w, crop_h = (round(h * width / height), h) if w / h > width / height else (w, round(w * height / width))
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        image = image[..., top:top + crop_h, left:left + crop_w]
    return F.interpolate(image.float(), size=(height, width), mode="bicubic")


def fit_image_ti2v(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> [B, 3, height, width] as the official TI2V-5B code: scale to cover the target with
    PIL's Lanczos filter on 8-bit pixels, then centre-crop. An image already at the target size is kept as it is."""
    if tuple(image.shape[-2:]) == (height, width):
        return image.float()
    from PIL import Image

    ih, iw = image.shape[-2:]
    scale = max(width / iw, height / ih)
    size = (round(iw * scale), round(ih * scale))
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    out = []
    for img in image:
        pixels = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).contiguous().cpu()
        pil = Image.frombytes("RGB", (iw, ih), pixels.numpy().tobytes())
        pil = pil.resize(size, Image.LANCZOS).crop((left, top, left + width, top + height))
        rgb = torch.frombuffer(bytearray(pil.tobytes()), dtype=torch.uint8).view(height, width, 3)
        out.append(rgb.permute(2, 0, 1).float() / 127.5 - 1.0)
    return torch.stack(out).to(image.device)


def frame_mask(frames: int, lat_h: int, lat_w: int, last: bool, t_stride: int = 4) -> torch.Tensor:
    """[1, t_stride, T_lat, h, w]: 1 where a pixel frame is given (frame 0, and the last one when ``last``)."""
    given = torch.zeros(frames)
    given[0] = 1
    if last:
        given[-1] = 1
    return mask_from_given(given, lat_h, lat_w, t_stride)


def mask_from_given(given: torch.Tensor, lat_h: int, lat_w: int, t_stride: int = 4) -> torch.Tensor:
    """[1, t_stride, T_lat, h, w] from a per-pixel-frame 0/1 vector (e.g. several leading frames when extending)."""
    per_frame = torch.cat([given[:1].repeat(t_stride), given[1:]])  # first frame counts t_stride times
    mask = per_frame.view(-1, t_stride).transpose(0, 1)  # [t_stride, T_lat]
    return mask[None, :, :, None, None].expand(1, t_stride, mask.shape[1], lat_h, lat_w).contiguous()


def concat_condition(vae, start: torch.Tensor, frames: int, end: torch.Tensor | None = None,
                     clip: ClipEmbeds | torch.Tensor | None = None, callback=None) -> ImageCond:
    """I2V (``end`` None) or FLF2V conditioning for the 36-channel models; images [B, 3, H, W] in [-1, 1]."""
    check_frames(frames, vae.stride[0])
    if frames < 2 and end is not None:
        raise InputError("first-last-frame video needs at least 5 frames")
    b, _, h, w = start.shape
    n_grey = frames - 1 - (end is not None)
    parts = [start[:, :, None].float(), start.new_zeros(b, 3, n_grey, h, w, dtype=torch.float32)]
    if end is not None:
        parts.append(_match(end, start, "end image")[:, :, None].float())
    z = normalize(_encode(vae, torch.cat(parts, dim=2), callback))
    mask = frame_mask(frames, z.shape[-2], z.shape[-1], end is not None, vae.stride[0]).to(z)
    y = torch.cat([mask.expand(b, -1, -1, -1, -1), z], dim=1)
    features = clip.features if isinstance(clip, ClipEmbeds) else clip
    return ImageCond(kind="flf2v" if end is not None else "i2v", y=y, clip=features)


def first_frame_condition(vae, start: torch.Tensor, callback=None) -> ImageCond:
    """TI2V-5B: the start image's latent [B, 48, 1, h, w] (normalised), imposed on latent frame 0."""
    return ImageCond(kind="ti2v", first_latent=normalize(_encode(vae, start[:, :, None].float(), callback)))


def image_condition(vae, start: torch.Tensor, width: int, height: int, frames: int, end: torch.Tensor | None = None,
                    clip: ClipEmbeds | None = None, callback=None) -> ImageCond:
    """The conditioning the VAE's model family uses: 48 channels -> TI2V-5B, 16 -> I2V (FLF2V with ``end``).
    ``callback(done, total)`` is passed to the VAE encode (per chunk: progress and a cancel point)."""
    check_image(start, "start image")
    if end is not None:
        check_image(end, "end image")
    width, height = whole_number(width, "width", 1), whole_number(height, "height", 1)
    if vae.z_dim == 48:
        if end is not None:
            raise InputError("TI2V-5B (Wan 2.2 VAE) takes a start image only; disconnect the end image, or use a "
                             "Wan 2.1 FLF2V model with the Wan 2.1 VAE for first-last-frame video")
        check_frames(frames, vae.stride[0])
        return first_frame_condition(vae, fit_image_ti2v(start, width, height), callback)
    start = fit_image(start, width, height)
    return concat_condition(vae, start, frames, None if end is None else fit_image(end, width, height), clip,
                            callback)


def _encode(vae, video: torch.Tensor, callback) -> torch.Tensor:
    return vae.encode(video) if callback is None else vae.encode(video, callback=callback)


def _match(end: torch.Tensor, start: torch.Tensor, name: str) -> torch.Tensor:
    if end.shape[1:] != start.shape[1:]:
        raise InputError(f"{name} {tuple(end.shape)} must have the start image's size {tuple(start.shape)}")
    return end.expand(start.shape[0], -1, -1, -1) if end.shape[0] == 1 else end

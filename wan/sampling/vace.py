"""The VACE context (Wan 2.1 VACE 1.3B / 14B, Wan 2.2 VACE-Fun A14B) from a control video, masks and reference
images, built as the official ``WanVace.vace_encode_frames`` / ``vace_encode_masks`` / ``vace_latent`` do:

- the mask (1 = generate) is binarised at 0.5 to split the control video into ``inactive`` = video · (1 − mask) (kept)
  and ``reactive`` = video · mask (to be redone); each is VAE-encoded and normalised: 16 + 16 channels;
- reference images (each fitted onto a white canvas of the video size, as the official ``prepare_source``) are
  encoded one latent frame each and put in front in time, with a zero reactive half;
- the mask itself (not binarised) is folded 8 x 8 pixels into 64 channels per latent pixel and resized to the latent
  frames with ``nearest-exact``; the reference frames get a zero mask: 64 channels. 32 + 64 = 96.

Without a control video the video is grey (zeros in [-1, 1]) and the mask all ones: the model generates everything
(reference-to-video, or text-to-video with references). The latent to sample has the reference frames in front; the
sampler drops them from the finished latent (``VaceInputs.ref_frames``).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..checks import check_image, finite_number, whole_number
from ..dit.vace import VaceInputs
from ..errors import InputError
from ..latents import normalize
from .shapes import latent_shape

log = logging.getLogger("wan_experts")

MASK_THRESHOLD = 0.5  # official: inactive / reactive split at mask > 0.5
MAX_STRENGTH = 10.0


def fit_reference(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[3, H, W] in [-1, 1] -> [3, height, width]: scaled to fit inside (bilinear) and centred on a white canvas
    (official ``prepare_source``); an image of the video size is kept as it is."""
    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image.float()
    scale = min(height / h, width / w)
    new_h, new_w = int(h * scale), int(w * scale)
    resized = F.interpolate(image[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
    canvas = image.new_ones(3, height, width, dtype=torch.float32)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[:, top:top + new_h, left:left + new_w] = resized
    return canvas


def fold_mask(mask: torch.Tensor, latent_frames: int, stride: tuple[int, int, int] = (4, 8, 8)) -> torch.Tensor:
    """[F, H, W] -> [64, T_lat, H/8, W/8]: each 8 x 8 block of pixels becomes 64 channels, then the frames are
    resized to the latent frames with ``nearest-exact`` (official ``vace_encode_masks``)."""
    frames, height, width = mask.shape
    sh, sw = stride[1], stride[2]
    h, w = height // sh, width // sw
    mask = mask.float().reshape(frames, h, sh, w, sw).permute(2, 4, 0, 1, 3).reshape(sh * sw, frames, h, w)
    return F.interpolate(mask[None], size=(latent_frames, h, w), mode="nearest-exact")[0]


def vace_context(vae, width: int, height: int, frames: int, control_video: torch.Tensor | None = None,
                 control_masks: torch.Tensor | None = None, reference_images: torch.Tensor | None = None,
                 strength: float = 1.0, callback=None) -> VaceInputs:
    """The VACE context of one video. ``control_video`` [3, F, H, W] in [-1, 1]; ``control_masks`` [F, H, W] or
    [1, H, W] (one mask for every frame) in 0..1, 1 = generate; ``reference_images`` [N, 3, h, w] in [-1, 1] (any
    size: fitted onto a white canvas). ``vae``: the Wan 2.1 VAE (``encode`` of [B, 3, F, H, W] -> raw latents).
    Returns ``VaceInputs`` with latents [1, 96, N + T_lat, H/8, W/8] on the VAE's device."""
    check_vace_inputs(vae, width, height, frames, control_video, control_masks, reference_images, strength)
    device = _device(vae)
    t_stride, sh, sw = vae.stride
    video = (torch.zeros(3, frames, height, width) if control_video is None else control_video).float().to(device)
    mask = torch.ones(1, height, width) if control_masks is None else control_masks
    mask = mask.float().to(device).expand(frames, -1, -1)
    keep = (mask > MASK_THRESHOLD).float()[None]
    pair = torch.stack([video * (1 - keep), video * keep])  # inactive, reactive
    z = normalize(_encode(vae, pair, callback))
    z = torch.cat([z[0], z[1]], dim=0)  # [32, T, h, w]
    m = fold_mask(mask, z.shape[1], (t_stride, sh, sw))
    refs = 0
    if reference_images is not None:
        fitted = torch.stack([fit_reference(img.to(device), width, height) for img in reference_images])
        r = normalize(_encode(vae, fitted[:, :, None], callback))[:, :, 0]  # [N, 16, h, w]
        r = r.permute(1, 0, 2, 3)
        refs = r.shape[1]
        z = torch.cat([torch.cat([r, torch.zeros_like(r)], dim=0), z], dim=1)
        m = torch.cat([m.new_zeros(m.shape[0], refs, *m.shape[2:]), m], dim=1)
    return VaceInputs(torch.cat([z, m], dim=0)[None], float(strength), refs)


def vace_latent_shape(vae, width: int, height: int, frames: int, batch: int, ref_frames: int) -> tuple:
    """The latent to sample: the video's latent frames plus one in front per reference image."""
    b, c, t, h, w = latent_shape(width, height, frames, vae.z_dim, batch, tuple(vae.stride))
    return b, c, t + ref_frames, h, w


def check_vace_inputs(vae, width, height, frames, control_video, control_masks, reference_images, strength) -> None:
    """Every input against the video size, before any encoding."""
    if getattr(vae, "z_dim", None) != 16:
        raise InputError("VACE models use the Wan 2.1 VAE (16 latent channels); load Wan2.1_VAE.pth / "
                         "wan_2.1_vae.safetensors for the VACE conditioning")
    latent_shape(width, height, frames, 16, 1, tuple(vae.stride))  # sizes and frame count
    finite_number(strength, "strength", 0.0, MAX_STRENGTH, hint="1 is the official context scale")
    if control_video is not None:
        _check_video(control_video, width, height, frames)
    if control_masks is not None:
        _check_masks(control_masks, width, height, frames)
    if reference_images is not None:
        check_image(reference_images, "reference_images")
        if reference_images.shape[1] != 3:
            raise InputError(f"reference_images have {reference_images.shape[1]} channels; VACE takes RGB pictures "
                             f"(3 channels). " + _CHANNEL_FIX)
        whole_number(reference_images.shape[0], "number of reference images", 1, MAX_REFERENCES)


MAX_REFERENCES = 16
_CHANNEL_FIX = ("Drop an alpha channel (core 'Split Image with Alpha', or composite the picture on white) and make a "
                "one-channel picture RGB (core 'Convert Mask to Image' for a mask)")


def _check_video(video: torch.Tensor, width: int, height: int, frames: int) -> None:
    if not torch.is_tensor(video) or video.dim() != 4 or video.shape[0] != 3:
        found = tuple(video.shape) if torch.is_tensor(video) else type(video).__name__
        raise InputError(f"control_video must be an RGB video [3, F, H, W]; got {found}. " + _CHANNEL_FIX)
    f, h, w = video.shape[1:]
    if (h, w) != (height, width):
        raise InputError(f"control_video is {w}x{h} but the video is {width}x{height}; resize it to the video size "
                         f"first (core 'Upscale Image' with crop 'center')")
    if f != frames:
        raise InputError(f"control_video has {f} frames but the video has {frames}; give exactly {frames} frames "
                         f"(core 'Image From Batch' / 'Repeat Image Batch' to cut or extend it), or set frames to "
                         f"{f if (f - 1) % 4 == 0 else (f - 1) // 4 * 4 + 1}")
    if not bool(torch.isfinite(video).all()):
        raise InputError("control_video contains NaN or infinite values; check the node that made it")


def _check_masks(masks: torch.Tensor, width: int, height: int, frames: int) -> None:
    if not torch.is_tensor(masks) or masks.dim() != 3:
        found = tuple(masks.shape) if torch.is_tensor(masks) else type(masks).__name__
        raise InputError(f"control_masks must be a MASK batch [F, H, W]; got {found}")
    f, h, w = masks.shape
    if (h, w) != (height, width):
        raise InputError(f"control_masks are {w}x{h} but the video is {width}x{height}; resize the mask to the "
                         f"video size (core 'Upscale Image' on 'Convert Mask to Image', then 'Convert Image to Mask')")
    if f not in (1, frames):
        raise InputError(f"control_masks has {f} frames but the video has {frames}; give one mask per frame, or a "
                         f"single mask for all of them")
    if not bool(torch.isfinite(masks).all()):
        raise InputError("control_masks contain NaN or infinite values; check the node that made them")


def _device(vae) -> torch.device:
    return torch.device(getattr(vae, "device", "cpu"))


def _encode(vae, video: torch.Tensor, callback) -> torch.Tensor:
    return vae.encode(video) if callback is None else vae.encode(video, callback=callback)


def check_vace_run(experts, vace: VaceInputs | None, latents: torch.Tensor) -> None:
    """Before sampling: a VACE context goes to VACE models only and fits the latent (reference frames included);
    a VACE model without one runs as text-to-video (logged)."""
    models = experts.models
    name = experts.variant.id if getattr(experts, "variant", None) else "Wan"
    vace_models = [m for m in models if getattr(m, "vace_config", None) is not None]
    if vace is None:
        if vace_models:
            log.info("Wan sampler: the VACE model got no VACE context and runs as text-to-video; connect Wan VACE "
                     "Conditioning for reference images, a control video or a mask")
        return
    if not isinstance(vace, VaceInputs):
        raise InputError(f"vace must come from Wan VACE Conditioning (WAN_VACE); got {type(vace).__name__}")
    if len(vace_models) != len(models):
        raise InputError(f"a VACE context was connected, but this {name} model has no VACE blocks. Load a VACE model "
                         f"(Wan 2.1 VACE 1.3B / 14B, or both Wan 2.2 VACE-Fun A14B experts), or disconnect the VACE "
                         f"context")
    in_dim = vace_models[0].vace_config.in_dim
    lat = vace.latents
    if not torch.is_tensor(lat) or lat.dim() != 5 or lat.shape[1] != in_dim:
        got = tuple(lat.shape) if torch.is_tensor(lat) else type(lat).__name__
        raise InputError(f"the VACE context {got} does not fit this model ({in_dim} channels); make it with Wan VACE "
                         f"Conditioning")
    b, _, t, h, w = latents.shape
    if lat.shape[0] not in (1, b) or tuple(lat.shape[2:]) != (t, h, w):
        hint = ""
        if tuple(lat.shape[3:]) == (h, w) and lat.shape[2] == t + vace.ref_frames:
            hint = (f" The latent lacks the {vace.ref_frames} reference frame(s): use the latent output of Wan VACE "
                    f"Conditioning, not an empty latent")
        raise InputError(f"the VACE context {tuple(lat.shape)} does not fit the latent {tuple(latents.shape)}: "
                         f"frames, height and width must match (the same width, height and frames in Wan VACE "
                         f"Conditioning).{hint}")
    if not bool(torch.isfinite(lat).all()):
        raise InputError("the VACE context contains NaN or infinite values; check the inputs of Wan VACE Conditioning")


def drop_reference_frames(latents: torch.Tensor, vace: VaceInputs | None) -> torch.Tensor:
    """The finished latent without the reference frames in front (official ``decode_latent``)."""
    if vace is None or not vace.ref_frames:
        return latents
    return latents[:, :, vace.ref_frames:]

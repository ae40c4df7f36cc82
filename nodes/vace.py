"""VACE (Wan 2.1 VACE 1.3B / 14B, Wan 2.2 VACE-Fun A14B): the conditioning node that turns a control video, masks
and reference images into the VACE context for Wan Sampler, and the latent to sample (reference frames included;
Wan Sampler drops them from the finished latent)."""
from __future__ import annotations

import logging

import torch

from ..wan.errors import InputError
from ..wan.sampling.vace import MAX_REFERENCES, MAX_STRENGTH, vace_context, vace_latent_shape
from .sampling import MAX_BATCH, MAX_FRAMES, MAX_SIZE
from .vae import ChunkProgress, on_compute_device
from .validation import number_problem, size_problem, verdict

log = logging.getLogger("wan_experts")

CATEGORY = "Wan Experts/conditioning"


class WanExpertsVace:
    DISPLAY_NAME = "Wan VACE Conditioning"
    DESCRIPTION = (
        "The VACE context for Wan 2.1 VACE 1.3B / 14B and Wan 2.2 VACE-Fun A14B, built as the official code: the "
        "control video split by the mask (white = generate) into the kept and the regenerated part, each encoded by "
        "the VAE, the mask folded to the latent grid, reference images encoded in front. Without a control video "
        "everything is generated (reference-to-video). Connect 'vace' and 'latent' to Wan Sampler; it removes the "
        "reference frames from its finished latent by itself (no Trim Video Latent needed).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_VACE", "LATENT")
    RETURN_NAMES = ("vace", "latent")
    OUTPUT_TOOLTIPS = (
        "The VACE context, for Wan Sampler's vace input.",
        "An empty raw latent with one extra frame in front per reference image, for Wan Sampler.")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("WAN_VAE", {"tooltip": "The Wan 2.1 VAE (VACE models use it, also the Wan 2.2 VACE-Fun pair)."}),
            "width": ("INT", {"default": 832, "min": 16, "max": MAX_SIZE, "step": 16, "tooltip": (
                "Video width in pixels, a multiple of 16; the control video and masks must have it.")}),
            "height": ("INT", {"default": 480, "min": 16, "max": MAX_SIZE, "step": 16, "tooltip": (
                "Video height in pixels, a multiple of 16; the control video and masks must have it.")}),
            "frames": ("INT", {"default": 81, "min": 1, "max": MAX_FRAMES, "step": 4, "tooltip": (
                "Number of video frames, 4n+1 (81 = 5 s at 16 fps); the control video must have exactly as many.")}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH, "tooltip": (
                "Videos made at once (all with the same VACE context).")}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": MAX_STRENGTH, "step": 0.05, "tooltip": (
                "How strongly the context steers the video (official context_scale, 1); 0 = plain text-to-video.")}),
        }, "optional": {
            "control_video": ("IMAGE", {"tooltip": (
                "Frames to follow or edit: a pose, depth, edge, flow or greyscale video (e.g. from the DWPose, "
                "Depth Anything or Canny preprocessor nodes), or the video to inpaint / outpaint. Same size and "
                "frame count as the video.")}),
            "control_masks": ("MASK", {"tooltip": (
                "White = generate, black = keep the control video there (inpainting / outpainting). One mask per "
                "frame, or one for all frames. Without it the whole control video is regenerated (control mode).")}),
            "reference_images": ("IMAGE", {"tooltip": (
                f"Up to {MAX_REFERENCES} pictures of a subject, object or background to put in the video, RGB "
                f"(no alpha); each is fitted onto a white canvas of the video size.")}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, frames=None, batch_size=None, strength=None):
        return verdict(number_problem(cls, width=width, height=height, frames=frames, batch_size=batch_size,
                                      strength=strength), size_problem(width, height, frames, batch_size))

    def make(self, vae, width, height, frames, batch_size=1, strength=1.0, control_video=None, control_masks=None,
             reference_images=None):
        video = None if control_video is None else _video(control_video, "control_video")
        refs = None if reference_images is None else _video(reference_images, "reference_images").transpose(0, 1)
        masks = None if control_masks is None else _masks(control_masks)
        cond = on_compute_device(vae, lambda: vace_context(vae, width, height, frames, video, masks, refs, strength,
                                                           callback=ChunkProgress()))
        cond.latents = cond.latents.cpu()
        shape = vace_latent_shape(vae, width, height, frames, batch_size, cond.ref_frames)
        log.info("Wan VACE conditioning: %dx%d, %d frames, %s%s%d reference image(s), strength %g", width, height,
                 frames, "control video, " if video is not None else "",
                 "masks, " if masks is not None else "", cond.ref_frames, strength)
        return (cond, {"samples": torch.zeros(shape)})


def _video(image: torch.Tensor, name: str) -> torch.Tensor:
    """ComfyUI IMAGE [N, H, W, C] in 0..1 -> [C, N, H, W] in [-1, 1] (the engine checks C == 3 and names the fix)."""
    if not torch.is_tensor(image) or image.dim() != 4:
        raise InputError(f"{name} must be an IMAGE batch [N, H, W, C]; got "
                         f"{tuple(image.shape) if torch.is_tensor(image) else type(image).__name__}")
    return image.permute(3, 0, 1, 2).float() * 2.0 - 1.0


def _masks(masks: torch.Tensor) -> torch.Tensor:
    """ComfyUI MASK [N, H, W] (or one [H, W]) in 0..1."""
    if torch.is_tensor(masks) and masks.dim() == 2:
        masks = masks[None]
    if not torch.is_tensor(masks):
        raise InputError(f"control_masks must be a MASK [N, H, W]; got {type(masks).__name__}")
    return masks.float()


NODES = {"WanExpertsVace": WanExpertsVace}

"""Node for character animation and replacement (Wan 2.2 Animate-14B): Wan Animate."""
from __future__ import annotations

import logging

import torch

from ..wan.errors import InputError
from ..wan.experts import as_expert_set
from ..wan.sampling import SOLVERS, SamplerSettings
from ..wan.sampling.animate import (REFERENCE_FRAMES, AnimateSource, generate_animate, letterbox, plan_clips,
                                    resize_faces)
from ..wan.sampling.defaults import resolve_auto
from . import host
from .choices import clip_sampling_widgets
from .s2v import signed_frames
from .validation import number_problem, verdict
from .vae import on_compute_device

log = logging.getLogger("wan_experts")
SAMPLING_CATEGORY = "Wan Experts/sampling"


class WanExpertsAnimate:
    DISPLAY_NAME = "Wan Animate"
    DESCRIPTION = ("Character animation and replacement with Wan 2.2 Animate-14B, as the official code: the "
                   "reference character follows the body pose and the face of a driving video (animation), or takes "
                   "the performer's place in it, relit to the scene (replacement: connect the background video and "
                   "the character mask). Clip by clip, each clip's last frames guiding the next; samples and decodes "
                   "(the VAE is needed here). The frames come out as IMAGE at 30 fps. 0 for steps, cfg or shift = "
                   "the official defaults (20 steps, guidance 1, shift 5).")
    CATEGORY = SAMPLING_CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The video frames (30 fps), as many as the pose video has (less reference_frames when "
                       "continuing).",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("WAN_MODEL", {"tooltip": "The Wan 2.2 Animate-14B DiT (wan2.2_animate_14B_bf16.safetensors)."}),
            "vae": ("WAN_VAE", {"tooltip": "The Wan 2.1 VAE."}),
            "text": ("WAN_TEXT", {"tooltip": "Prompt embeddings from Wan Text Encode (official prompt: "
                                             "视频中的人在做动作, 'the person in the video is moving')."}),
            "clip_vision": ("WAN_CLIP_VISION", {"tooltip": "From Load Wan CLIP Vision (clip_vision_h): encodes the "
                                                           "reference image."}),
            "reference_image": ("IMAGE", {"tooltip": "The character (first image of the batch); fitted into the "
                                                     "pose video's size on black, as the official code does."}),
            "pose_video": ("IMAGE", {"tooltip": "Rendered skeleton frames of the driving video (DWPose / OpenPose "
                                                "style, 30 fps); their size is the video size (multiples of 16)."}),
            "face_video": ("IMAGE", {"tooltip": "Square face crops of the performer, one per pose frame; resized to "
                                                "512x512 (the model's face size)."}),
            "clip_frames": ("INT", {"default": 77, "min": 5, "max": 1025, "step": 4, "tooltip": (
                "Frames per clip (official 77; 4n+1).")}),
            "reference_frames": ("INT", {"default": 1, "min": 1, "max": 5, "step": 4, "tooltip": (
                "Frames carried from one clip to the next as temporal guidance (official refert_num): 1 or 5.")}),
            **clip_sampling_widgets(
                SOLVERS, seed="Noise seed (one noise stream over the clips, official).",
                steps="Steps per clip; 0 = 20 (official).",
                cfg="Guidance scale; 0 = 1 (official: off). Above 1 the negative pass has black faces, for stronger "
                    "expressions.",
                shift="Noise schedule shift; 0 = 5 (official)."),
        }, "optional": {
            "background_video": ("IMAGE", {"tooltip": "Replacement mode: the driving video with the performer "
                                                      "(official src_bg), the pose video's size and length."}),
            "character_mask": ("MASK", {"tooltip": "Replacement mode: 1 where the performer is (official src_mask), "
                                                   "the pose video's size and length."}),
            "continue_from": ("IMAGE", {"tooltip": "Optional frames made before (the video size): their last "
                                                   "reference_frames frames guide the first clip; the driving videos "
                                                   "then start at those frames."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, clip_frames=None, reference_frames=None, cfg=None, shift=None):
        problem = number_problem(cls, clip_frames=clip_frames, reference_frames=reference_frames, cfg=cfg, shift=shift)
        if problem is None and isinstance(clip_frames, int) and (clip_frames - 1) % 4:
            problem = f"clip_frames must be 4n+1 (official 77); got {clip_frames}"
        if problem is None and isinstance(reference_frames, int) and reference_frames not in REFERENCE_FRAMES:
            problem = f"reference_frames must be 1 or 5 (official refert_num); got {reference_frames}"
        return verdict(problem)

    def run(self, model, vae, text, clip_vision, reference_image, pose_video, face_video, clip_frames=77,
            reference_frames=1, seed=0, steps=0, cfg=0.0, shift=0.0, solver="unipc", background_video=None,
            character_mask=None, continue_from=None):
        experts = as_expert_set(model)
        if experts.is_moe or not hasattr(experts.high, "animate_config"):
            raise InputError(f"Wan Animate takes the Wan 2.2 Animate-14B model; got {experts.high.variant}")
        face_size = experts.high.animate_config.face_size
        source = animate_source(reference_image, pose_video, face_video, background_video, character_mask, face_size)
        previous = None if continue_from is None else signed_frames(continue_from, "continue_from")
        clips = plan_clips(source.pose.shape[0], clip_frames, reference_frames, previous is not None)
        auto = resolve_auto(experts, steps, shift, cfg, cfg)
        settings = SamplerSettings(steps=auto.steps, shift=auto.shift, solver=solver, cfg_high=auto.cfg_high,
                                   cfg_low=auto.cfg_high)
        log.info("Wan Animate (%s): %d clips of %d frames, %s", "replacement" if source.replace else "animation",
                 len(clips), clip_frames, auto.describe())
        progress = host.Progress(len(clips) * settings.steps)
        host.check_interrupted()
        clip_fea = clip_vision.encode(source.reference[None])

        def run():
            return generate_animate(experts.high, vae, text, clip_fea, source, settings, clip_frames=clip_frames,
                                    refert_num=reference_frames, seed=seed, previous=previous,
                                    device=host.compute_device(), offload_device=host.offload_device(),
                                    callback=lambda clip: progress.update(1), interrupt=host.check_interrupted)

        video = on_compute_device(vae, run)
        host.free_memory()
        return (((video.permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1),)


def animate_source(reference_image, pose_video, face_video, background_video=None, character_mask=None,
                   face_size: int = 512) -> AnimateSource:
    """ComfyUI IMAGE / MASK inputs -> the engine's AnimateSource, with every mismatch named before any model runs:
    the reference fitted into the pose size on black, the face crops (square) resized to ``face_size``."""
    pose = signed_frames(pose_video, "pose_video")
    face = signed_frames(face_video, "face_video")
    n, (height, width) = pose.shape[0], pose.shape[2:]
    if face.shape[0] != n:
        raise InputError(f"face_video has {face.shape[0]} frames but pose_video has {n}; they must come frame for "
                         f"frame from the same driving video")
    if face.shape[2] != face.shape[3]:
        raise InputError(f"face_video must be square face crops; got {face.shape[3]}x{face.shape[2]}. Crop the faces "
                         f"square (the official preprocessing makes 512x512)")
    face = resize_faces(face, face_size)
    if (background_video is None) != (character_mask is None):
        missing = "character_mask" if character_mask is None else "background_video"
        raise InputError(f"replacement mode needs background_video and character_mask; connect {missing} too (or "
                         f"neither, for animation mode)")
    background = mask = None
    if background_video is not None:
        background = signed_frames(background_video, "background_video")
        mask = _mask(character_mask)
        for name, v in (("background_video", background), ("character_mask", mask)):
            if v.shape[0] != n or tuple(v.shape[-2:]) != (height, width):
                raise InputError(f"{name} is {v.shape[0]} frames of {v.shape[-1]}x{v.shape[-2]}; it must match "
                                 f"pose_video: {n} frames of {width}x{height}")
    reference = letterbox(signed_frames(reference_image, "reference_image")[0], height, width)
    return AnimateSource(reference, pose, face, background, mask)


def _mask(mask) -> torch.Tensor:
    if not torch.is_tensor(mask) or mask.dim() not in (2, 3):
        raise InputError(f"character_mask must be a MASK [N, H, W]; got "
                         f"{tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__}")
    return (mask[None] if mask.dim() == 2 else mask).float().clamp(0, 1)


NODES = {"WanExpertsAnimate": WanExpertsAnimate}

"""Nodes for long videos: context windows for Wan Sampler (``WAN_CONTEXT``) and extending a finished clip from its
last frames (segments chain: each Wan Extend Video takes the previous one's video)."""
from __future__ import annotations

import logging

from ..wan.sampling.color import COLOR_MATCH
from ..wan.errors import InputError
from ..wan.sampling.extend import ExtendSettings, extend
from ..wan.sampling import SamplerSettings
from ..wan.sampling.defaults import resolve_auto
from ..wan.sampling.windows import FUSES, IMAGE_MODES, SCHEDULES, ContextWindows
from . import host
from .sampling import MAX_FRAMES, WanExpertsSampler, StepProgress
from .vae import on_compute_device

log = logging.getLogger("wan_experts")

CATEGORY = "Wan Experts/sampling"


class WanExpertsContextWindows:
    DISPLAY_NAME = "Wan Context Windows"
    DESCRIPTION = ("Sample long videos in overlapping windows: at every step the model runs on each window of "
                   "context_frames and the predictions are blended over the overlaps (weight exactly 1 where one "
                   "window covers a frame). Works with both A14B experts, I2V / TI2V, step caches (static schedule) "
                   "and LoRAs. Optional prompts, one per line, are spread over the video in order.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_CONTEXT",)
    RETURN_NAMES = ("context",)
    OUTPUT_TOOLTIPS = ("The context-window settings, for the context input of Wan Sampler or Wan Extend Video.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "context_frames": ("INT", {"default": 81, "min": 5, "max": MAX_FRAMES, "step": 4, "tooltip": (
                "Frames per window (4n+1): what the model was trained on is best, 81 (TI2V-5B: 121).")}),
            "context_overlap": ("INT", {"default": 16, "min": 0, "max": MAX_FRAMES, "step": 4, "tooltip": (
                "Frames shared by neighbouring windows, blended; 16-32 is usual. More overlap = smoother seams and "
                "more windows (slower).")}),
            "schedule": (list(SCHEDULES), {"default": "static", "tooltip": (
                "static: the same evenly spread windows every step (works with step caches); uniform_standard: "
                "windows shift every step so seams move around; uniform_looped: windows wrap past the end to the "
                "start, for a video that loops.")}),
            "fuse": (list(FUSES), {"default": "linear", "tooltip": (
                "How overlapping predictions blend: linear ramps over the overlap (only where windows meet), or "
                "pyramid weights peaking at each window's centre.")}),
            "freenoise": ("BOOLEAN", {"default": True, "tooltip": (
                "FreeNoise: later windows start from shuffled copies of earlier windows' noise, so they agree "
                "over the overlaps (fewer seams, less drift).")}),
            "image_cond": (list(IMAGE_MODES), {"default": "first", "tooltip": (
                "I2V / TI2V start image: 'first' gives it only to the window that holds frame 0 (natural motion); "
                "'all' gives it to every window as its start (keeps the subject, but motion tends to reset).")}),
        }, "optional": {
            "text_encoder": ("WAN_TEXT_ENCODER", {"tooltip": (
                "Needed only for window prompts: the UMT5 encoder from Load Wan Text Encoder.")}),
            "window_prompts": ("STRING", {"multiline": True, "default": "", "tooltip": (
                "Optional positive prompts, one per line, spread over the video in order (3 lines: the first, "
                "middle and last third each follow one). Empty: every window uses the sampler's prompt. The "
                "negative prompt stays the sampler's.")}),
        }}

    def make(self, context_frames=81, context_overlap=16, schedule="static", fuse="linear", freenoise=True,
             image_cond="first", text_encoder=None, window_prompts=""):
        lines = [line.strip() for line in (window_prompts or "").splitlines() if line.strip()]
        prompts = None
        if lines:
            if text_encoder is None:
                raise InputError("window_prompts need a text encoder to encode them: connect Load Wan Text "
                                 "Encoder to text_encoder, or clear window_prompts")
            host.check_interrupted()
            prompts = text_encoder.encode(lines).float().cpu()
        context = ContextWindows(context_frames, context_overlap, schedule, fuse, freenoise, image_cond, prompts,
                                 lines)
        log.info("Wan %s", context.describe())
        return (context,)


def _sampler_inputs() -> dict:
    required = WanExpertsSampler.INPUT_TYPES()["required"]
    return {name: required[name] for name in ("seed", "steps", "cfg_high", "cfg_low", "shift", "solver")}


class WanExpertsExtendVideo:
    DISPLAY_NAME = "Wan Extend Video"
    DESCRIPTION = ("Continues a video from its last frames: they are encoded with the VAE and the new segment "
                   "starts with them (I2V mask and held latents, or TI2V-5B start latents), then the segment is "
                   "decoded, optionally colour-matched to the video's end, and joined with the shared frames "
                   "cross-faded. Chain several to make a long video. Needs an image-to-video model (Wan 2.1 I2V, "
                   "Wan 2.2 I2V-A14B or TI2V-5B).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "IMAGE", "LATENT")
    RETURN_NAMES = ("video", "segment", "segment_latent")
    OUTPUT_TOOLTIPS = ("The whole video so far: the input video, then the new frames (the shared frames blended). "
                       "Connect it to the next Wan Extend Video or to Save Wan Video.",
                       "The new segment alone (its first frames repeat the input's last frames).",
                       "The new segment's raw latents.")
    FUNCTION = "extend"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("WAN_MODEL", {"tooltip": "An image-to-video Wan model (I2V, Wan 2.2 I2V-A14B pair, TI2V-5B)."}),
            "text": ("WAN_TEXT", {"tooltip": "Prompt embeddings for the new segment (Wan Text Encode)."}),
            "vae": ("WAN_VAE", {"tooltip": "The model's VAE (Wan 2.1 VAE; Wan 2.2 VAE for TI2V-5B)."}),
            "video": ("IMAGE", {"tooltip": "The video to continue (all its frames; the new segment follows its "
                                           "last ones). Its size is the output size."}),
            **_sampler_inputs(),
            "frames": ("INT", {"default": 81, "min": 5, "max": MAX_FRAMES, "step": 4, "tooltip": (
                "Frames of the new segment, 4n+1, the overlap included (81 = 5 s at 16 fps).")}),
            "overlap_frames": ("INT", {"default": 5, "min": 1, "max": MAX_FRAMES, "step": 4, "tooltip": (
                "How many of the video's last frames the segment starts from, 4n+1 (1 = the last frame only; 5 or "
                "9 carry the motion on). They are cross-faded in the joined video.")}),
            "color_match": (list(COLOR_MATCH), {"default": "mean_std", "tooltip": (
                "Match the segment's colours to the video's last frames in Lab space against colour drift: "
                "mean_std (mean and spread), histogram (whole distribution), or off.")}),
        }, "optional": {
            "clip_vision": ("WAN_CLIP_VISION", {"tooltip": (
                "Wan 2.1 I2V only: Load Wan CLIP Vision, to encode the first of the given frames.")}),
            "step_cache": ("WAN_STEP_CACHE", {"tooltip": "Optional step cache (Wan TeaCache / Wan MagCache)."}),
            "context": WanExpertsSampler.INPUT_TYPES()["optional"]["context"],
        }}

    def extend(self, model, text, vae, video, seed, steps=0, cfg_high=0.0, cfg_low=0.0, shift=0.0, solver="unipc",
               frames=81, overlap_frames=5, color_match="mean_std", clip_vision=None, step_cache=None, context=None):
        auto = resolve_auto(model, steps, shift, cfg_high, cfg_low)
        log.info("Wan Extend Video %s; %d new frames from the last %d", auto.describe(), frames - overlap_frames,
                 overlap_frames)
        settings = SamplerSettings(steps=auto.steps, shift=auto.shift, solver=solver, cfg_high=auto.cfg_high,
                                   cfg_low=auto.cfg_low, context=context)
        host.check_interrupted()
        result = extend(model, vae, video, text, settings, ExtendSettings(frames, overlap_frames, color_match), seed,
                        clip_vision=clip_vision, step_cache=step_cache, device=host.compute_device(),
                        offload_device=host.offload_device(), callback=StepProgress(),
                        vae_call=lambda work: on_compute_device(vae, work))
        host.free_memory()
        if result.cache_report is not None and hasattr(result.cache_report, "summary"):
            log.info("%s", result.cache_report.summary())
        return (result.video, result.segment, {"samples": result.latents})


NODES = {"WanExpertsContextWindows": WanExpertsContextWindows, "WanExpertsExtendVideo": WanExpertsExtendVideo}

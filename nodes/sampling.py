"""Sampling nodes: an empty video latent, image conditioning (I2V / FLF2V / TI2V-5B) and the Wan samplers with
automatic high/low expert switching: Wan Sampler (the usual settings) and Wan Sampler (Advanced) (every setting;
the only place that calls the engine). LATENT values are raw VAE latents; the sampler normalises them for the DiT."""
from __future__ import annotations

import logging

import torch

from ..wan.errors import InputError
from ..wan.latents import denormalize, normalize
from ..wan.sampling import SOLVERS, SamplerSettings, image_condition, latent_shape, make_noise, sample
from ..wan.sampling.defaults import resolve_auto
from ..wan.sampling.schedules import SCHEDULES
from ..wan.sampling.vace import drop_reference_frames
from . import host
from .choices import cfg_widget, seed_widget, shift_widget, steps_widget
from .validation import number_problem, size_problem, verdict
from .vae import ChunkProgress, on_compute_device

log = logging.getLogger("wan_experts")

CATEGORY = "Wan Experts/sampling"
STATE_KEY = "wan_solver_state"  # solver history carried in a LATENT between chained samplers
# Each limit can run on its own (with the other sizes small); together they are bounded by the engine's token
# ceiling and memory check (wan/budget/check.py), which refuse with the largest size that fits.
MAX_SIZE, MAX_FRAMES, MAX_BATCH = 4096, 4093, 16


def _size_inputs(width=832, height=480, frames=81):
    return {
        "width": ("INT", {"default": width, "min": 16, "max": MAX_SIZE, "step": 16, "tooltip": (
            "Video width in pixels: a multiple of 16 (Wan 2.1 VAE models) or 32 (TI2V-5B, Wan 2.2 VAE).")}),
        "height": ("INT", {"default": height, "min": 16, "max": MAX_SIZE, "step": 16, "tooltip": (
            "Video height in pixels: a multiple of 16 (Wan 2.1 VAE models) or 32 (TI2V-5B, Wan 2.2 VAE).")}),
        "frames": ("INT", {"default": frames, "min": 1, "max": MAX_FRAMES, "step": 4, "tooltip": (
            "Number of video frames, of the form 4n+1 (81 = 5 s at 16 fps; TI2V-5B: 121 = 5 s at 24 fps).")}),
        "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH, "tooltip": "Videos made at once."}),
    }


class WanExpertsEmptyLatent:
    DISPLAY_NAME = "Wan Empty Latent Video"
    DESCRIPTION = ("An empty (zero) raw latent video of the given size for text-to-video. The channel count comes "
                   "from the connected VAE or model: 48 for TI2V-5B (Wan 2.2 VAE), 16 for every other Wan model.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Zero raw latents [batch, 16 or 48, 1 + (frames-1)/4, height/8 or /16, width/8 or /16].",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _size_inputs(), "optional": {
            "vae": ("WAN_VAE", {"tooltip": "Optional: the VAE, to pick the latent channels (16 or 48)."}),
            "model": ("WAN_MODEL", {"tooltip": "Optional: the model, to pick the latent channels (16 or 48)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, frames=None, batch_size=None):
        return validate_size(cls, width, height, frames, batch_size)

    def make(self, width, height, frames, batch_size=1, vae=None, model=None):
        channels = latent_channels(vae, model)
        stride = tuple(vae.stride) if vae is not None else None
        shape = latent_shape(width, height, frames, channels, batch_size, stride)
        return ({"samples": torch.zeros(shape)},)


def validate_size(cls, width, height, frames, batch_size):
    """VALIDATE_INPUTS of the size inputs: declared ranges, then the token ceiling (nodes/validation.py)."""
    return verdict(number_problem(cls, width=width, height=height, frames=frames, batch_size=batch_size),
                   size_problem(width, height, frames, batch_size))


def latent_channels(vae=None, model=None) -> int:
    from_vae = vae.z_dim if vae is not None else None
    from_model = model.config.out_dim if model is not None else None
    if from_vae and from_model and from_vae != from_model:
        raise InputError(f"the VAE makes {from_vae}-channel latents but the model works on {from_model}-channel "
                         f"latents; use the Wan 2.2 VAE with TI2V-5B only and the Wan 2.1 VAE with every other model")
    return from_vae or from_model or 16


class WanExpertsImageToVideo:
    DISPLAY_NAME = "Wan Image To Video"
    DESCRIPTION = ("Image conditioning from a start image (and, for Wan 2.1 FLF2V, an end image): with the Wan 2.1 VAE "
                   "a mask plus the latent of the start image followed by grey frames (I2V, FLF2V, Wan 2.2 I2V-A14B); "
                   "with the Wan 2.2 VAE the start frame that TI2V-5B keeps fixed. Images are centre-cropped to the "
                   "aspect of width x height and resized (bicubic).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_IMAGE_COND", "LATENT")
    RETURN_NAMES = ("image_cond", "latent")
    OUTPUT_TOOLTIPS = ("The image conditioning, for Wan Sampler's image_cond input.",
                       "An empty raw latent of the matching size, for Wan Sampler.")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("WAN_VAE", {"tooltip": (
                "The VAE of the model: Wan 2.1 VAE (I2V, FLF2V, A14B) or Wan 2.2 VAE (TI2V-5B).")}),
            "start_image": ("IMAGE", {"tooltip": "The first frame of the video (the first image of a batch is used)."}),
            **_size_inputs(),
        }, "optional": {
            "end_image": ("IMAGE", {"tooltip": "Optional last frame (Wan 2.1 FLF2V models)."}),
            "clip_embeds": ("WAN_CLIP_EMBEDS", {"tooltip": (
                "CLIP vision features of the image(s), needed by Wan 2.1 I2V / FLF2V (not by Wan 2.2 models): from "
                "Wan CLIP Vision Encode, or core CLIP Vision Encode through Wan CLIP Vision From Core.")}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, frames=None, batch_size=None):
        return validate_size(cls, width, height, frames, batch_size)

    def make(self, vae, start_image, width, height, frames, batch_size=1, end_image=None, clip_embeds=None):
        shape = latent_shape(width, height, frames, vae.z_dim, batch_size, tuple(vae.stride))
        start = _pixels(start_image, "start_image")
        end = None if end_image is None else _pixels(end_image, "end_image")
        cond = on_compute_device(vae, lambda: image_condition(vae, start.to(vae.device), width, height, frames,
                                                               None if end is None else end.to(vae.device),
                                                               clip_embeds, callback=ChunkProgress()))
        for name in ("y", "clip", "first_latent"):
            if getattr(cond, name) is not None:
                setattr(cond, name, getattr(cond, name).cpu())
        log.info("Wan image conditioning: %s, %dx%d, %d frames", cond.kind, width, height, frames)
        return (cond, {"samples": torch.zeros(shape)})


def _pixels(image: torch.Tensor, name: str) -> torch.Tensor:
    """First image of a ComfyUI IMAGE batch [N, H, W, C] in 0..1 -> [1, 3, H, W] in [-1, 1]."""
    if not torch.is_tensor(image) or image.dim() != 4 or image.shape[-1] < 3:
        raise InputError(f"{name} must be an IMAGE [N, H, W, 3]; got "
                         f"{tuple(image.shape) if torch.is_tensor(image) else type(image).__name__}")
    return image[:1, ..., :3].permute(0, 3, 1, 2).float() * 2.0 - 1.0


def _sampler_inputs() -> dict:
    """The inputs both samplers start with, in widget order."""
    return {
        "model": ("WAN_MODEL", {"tooltip": "One Wan DiT, or a Wan 2.2 high/low expert pair."}),
        "text": ("WAN_TEXT", {"tooltip": (
            "Positive and negative prompt embeddings from Wan Text Encode (or Wan Text From Core Conditioning).")}),
        "latent": ("LATENT", {"tooltip": "Raw latents: an empty latent, Wan Image To Video's latent, or a previous "
                                         "sampler's output."}),
        "seed": seed_widget("Noise seed (the same seed as the official script gives the same noise). In a batch, "
                            "video k uses seed + k, so each can be made again alone."),
        "steps": steps_widget("Sampling steps; 0 = official default (50 for Wan 2.1 T2V and TI2V-5B, 40 for I2V and "
                              "Wan 2.2 A14B)."),
    }


def _schedule_inputs() -> dict:
    return {
        "shift": shift_widget("Noise schedule shift; 0 = official default (5.0; A14B T2V 12.0; FLF2V 16.0)."),
        "solver": (list(SOLVERS), {"default": "unipc", "tooltip": (
            "unipc: the official default (UniPC order 2); dpm++: the official DPM++ 2M; euler: plain flow "
            "Euler.")}),
    }


def _conditioning_inputs() -> dict:
    return {
        "image_cond": ("WAN_IMAGE_COND", {"tooltip": "Image conditioning from Wan Image To Video (I2V, FLF2V, TI2V)."}),
        "step_cache": ("WAN_STEP_CACHE", {"tooltip": "Optional step cache (Wan TeaCache / Wan MagCache)."}),
    }


def _context_input() -> dict:
    return {"context": ("WAN_CONTEXT", {"tooltip": (
        "Optional context windows from Wan Context Windows: sample a video longer than the model's 81 (TI2V-5B: 121) "
        "frames in overlapping windows.")}),
        "vace": ("WAN_VACE", {"tooltip": (
            "VACE context from Wan VACE Conditioning (VACE models only); use its latent too. The reference frames "
            "are removed from the finished latent.")})}


class WanExpertsSamplerBasic:
    DISPLAY_NAME = "Wan Sampler"
    DESCRIPTION = ("Denoises a Wan latent video like the official scripts: flow UniPC / DPM++ / Euler with classifier-"
                   "free guidance. With a Wan 2.2 A14B pair it switches from the high-noise to the low-noise expert by "
                   "itself at the official boundary. 0 for steps, cfg or shift = the official default of the detected "
                   "model. Wan Sampler (Advanced) has per-expert guidance, chaining and the rest.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The denoised raw latents, for Wan VAE Decode.",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **_sampler_inputs(),
            "cfg": cfg_widget("Guidance scale (of both experts of a Wan 2.2 pair); 1 skips the negative pass; 0 = "
                              "official default (5.0; A14B T2V 4.0 high / 3.0 low, I2V 3.5)."),
            **_schedule_inputs(),
        }, "optional": {**_conditioning_inputs(), **_context_input()}}

    @classmethod
    def VALIDATE_INPUTS(cls, cfg=None, shift=None):
        """NaN / out-of-range numbers refused while ComfyUI validates the graph (see nodes/validation.py)."""
        return verdict(number_problem(cls, cfg=cfg, shift=shift))

    def run(self, model, text, latent, seed, steps=0, cfg=0.0, shift=0.0, solver="unipc", image_cond=None,
            step_cache=None, context=None, vace=None):
        return WanExpertsSampler().run(model, text, latent, seed, steps=steps, cfg_high=cfg, cfg_low=cfg, shift=shift,
                                       solver=solver, image_cond=image_cond, step_cache=step_cache, context=context,
                                       vace=vace)


class WanExpertsSampler:
    """Wan Sampler (Advanced). Its id and inputs are those of the single sampler of earlier versions, so saved
    workflows (whose widget values are positional) keep loading; new inputs go at the end."""

    DISPLAY_NAME = "Wan Sampler (Advanced)"
    DESCRIPTION = ("Wan Sampler with every setting: per-expert guidance of a Wan 2.2 A14B pair, the expert switch "
                   "(boundary or step), start/end step and leftover noise to chain samplers, denoise below 1 for "
                   "video-to-video, the sigma schedule, and whether both experts stay on the GPU. 0 for steps, cfg or "
                   "shift = the official default of the detected model.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The denoised raw latents (with leftover noise when asked), for Wan VAE Decode or a next "
                       "sampler.",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **_sampler_inputs(),
            "cfg_high": cfg_widget("Guidance scale of a single model, or of the high-noise expert; 1 skips the "
                                   "negative pass; 0 = official default (5.0; A14B T2V 4.0, I2V 3.5)."),
            "cfg_low": cfg_widget("Guidance scale of the low-noise expert (Wan 2.2 pairs only); 0 = official default "
                                  "(T2V 3.0, I2V 3.5)."),
            **_schedule_inputs(),
        }, "optional": {
            **_conditioning_inputs(),
            "boundary": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.999, "step": 0.005, "tooltip": (
                "Expert switch: the low-noise expert runs while t < boundary x 1000; 0 = the model's (0.875 T2V, "
                "0.9 I2V).")}),
            "switch_step": ("INT", {"default": -1, "min": -1, "max": 1000, "tooltip": (
                "Manual expert switch: steps before it use the high-noise expert; -1 = by boundary.")}),
            "start_step": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": (
                "First step to run (chained samplers).")}),
            "end_step": ("INT", {"default": -1, "min": -1, "max": 1000, "tooltip": (
                "Step to stop before; -1 = the end.")}),
            "add_noise": ("BOOLEAN", {"default": True, "tooltip": (
                "Add the seed's noise first. Off for a sampler that continues another one's leftover noise.")}),
            "return_with_leftover_noise": ("BOOLEAN", {"default": False, "tooltip": (
                "When stopping before the last step: on = hand the noisy latent on to a next sampler; off = finish "
                "with the clean estimate.")}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": (
                "Below 1: video-to-video, keeping that much of the input latent's structure.")}),
            "schedule": (list(SCHEDULES), {"default": "official", "tooltip": (
                "official: the Wan scripts' sigmas; diffusers: the grid of diffusers' flow UniPC / DPM++ scheduler "
                "(to match its pipelines).")}),
            "keep_both_experts_on_device": ("BOOLEAN", {"default": False, "tooltip": (
                "Keep both A14B experts on the GPU (faster switch, twice the memory). Off: the idle expert waits "
                "on the offload device.")}),
            **_context_input(),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, cfg_high=None, cfg_low=None, shift=None, boundary=None, denoise=None):
        """NaN / out-of-range numbers refused while ComfyUI validates the graph (see nodes/validation.py)."""
        return verdict(number_problem(cls, cfg_high=cfg_high, cfg_low=cfg_low, shift=shift, boundary=boundary,
                                      denoise=denoise))

    def run(self, model, text, latent, seed, steps=0, cfg_high=0.0, cfg_low=0.0, shift=0.0, solver="unipc",
            image_cond=None, step_cache=None, boundary=0.0, switch_step=-1, start_step=0, end_step=-1,
            add_noise=True, return_with_leftover_noise=False, denoise=1.0, schedule="official",
            keep_both_experts_on_device=False, context=None, vace=None):
        samples = _latent_samples(latent)
        auto = resolve_auto(model, steps, shift, cfg_high, cfg_low)
        log.info("Wan Sampler %s", auto.describe())
        settings = SamplerSettings(
            steps=auto.steps, shift=auto.shift, solver=solver, cfg_high=auto.cfg_high, cfg_low=auto.cfg_low,
            boundary=boundary or None, switch_step=None if switch_step < 0 else switch_step, start_step=start_step,
            end_step=None if end_step < 0 else end_step, add_noise=add_noise,
            return_with_leftover_noise=return_with_leftover_noise, denoise=denoise, schedule=schedule,
            keep_both_resident=keep_both_experts_on_device, context=context)
        host.check_interrupted()
        device = host.compute_device()
        progress = StepProgress()
        result = sample(model, normalize(samples), text, settings,
                        noise=make_noise(samples.shape, seed) if add_noise else None, image_cond=image_cond,
                        step_cache=step_cache, callback=progress, device=device, offload_device=host.offload_device(),
                        solver_state=latent.get(STATE_KEY), interrupt=host.check_interrupted, vace=vace)
        host.free_memory()
        if result.cache_report is not None:
            log.info("%s", result.cache_report.summary() if hasattr(result.cache_report, "summary")
                     else result.cache_report)
        latents = result.latents if result.solver_state is not None else drop_reference_frames(result.latents, vace)
        out = {"samples": denormalize(latents).cpu()}
        if result.solver_state is not None:
            out[STATE_KEY] = result.solver_state.to("cpu")
        return (out,)


class StepProgress:
    """Per-step callback: one host progress tick per step (each tick is also a cancel point), with the x0 estimate
    for ComfyUI's live preview."""

    def __init__(self):
        self.bar: host.Progress | None = None
        self.experts: list[str] = []

    def __call__(self, info) -> None:
        if self.bar is None:
            self.bar = host.Progress(info.total, preview_channels=info.x0.shape[1])
        self.experts.append(info.expert)
        self.bar.update(1, preview_latents=info.x0)


def _latent_samples(latent) -> torch.Tensor:
    if not isinstance(latent, dict) or not torch.is_tensor(latent.get("samples")):
        raise InputError("latent must be a LATENT ({'samples': tensor}); connect an empty latent, Wan Image To "
                         "Video's latent or a sampler's output")
    samples = latent["samples"]
    if samples.dim() != 5:
        raise InputError(f"latent {tuple(samples.shape)} is not a video latent [B, C, T, h, w]; image latents "
                         f"(4-D) cannot be used with Wan models; use Wan Empty Latent Video")
    return samples


NODES = {"WanExpertsEmptyLatent": WanExpertsEmptyLatent, "WanExpertsImageToVideo": WanExpertsImageToVideo,
         "WanExpertsSamplerBasic": WanExpertsSamplerBasic, "WanExpertsSampler": WanExpertsSampler}

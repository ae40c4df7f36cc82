"""Refine and upscale nodes: Wan Video To Video re-noises a finished video part-way and lets a Wan model denoise it
again (diffusers' strength rule; the A14B low-noise expert as a refiner), Wan Upscale Video resizes frames in pixel
space to a size the models take. Chained (draft -> upscale -> refine -> upscale -> refine) they make a progressive
high-resolution cascade; Wan Upscale Video takes and gives IMAGE, so a model upscaler (ESRGAN-type) can replace it."""
from __future__ import annotations

import logging

import torch

from ..wan.budget.sizes import check_size
from ..wan.errors import InputError
from ..wan.latents import denormalize, normalize
from ..wan.sampling import SamplerSettings, make_noise
from ..wan.sampling.defaults import resolve_auto
from ..wan.sampling.refine import EXPERTS, check_video, kept_experts, refine
from ..wan.upscale import DEFAULT_FRAME_BATCH, MAX_FACTOR, MAX_SIDE, MULTIPLES, RESAMPLING, resize_frames, target_size
from . import host
from .sampling import StepProgress, WanExpertsSampler, latent_channels
from .validation import number_problem, verdict
from .vae import ChunkProgress, on_compute_device

log = logging.getLogger("wan_experts")

TARGETS = ("factor", "size")


class WanExpertsVideoToVideo:
    DISPLAY_NAME = "Wan Video To Video"
    DESCRIPTION = ("Re-paints a video: its latents are re-noised to the step that strength picks (as diffusers' "
                   "WanVideoToVideoPipeline: strength x steps steps are run, the first ones skipped) and denoised "
                   "from there. Low strength (0.2-0.4) keeps the video and refines detail, e.g. after Wan Upscale "
                   "Video; 1 re-draws it from noise. With a Wan 2.2 A14B pair each step takes the expert its timestep "
                   "picks, so a low strength runs only the low-noise expert (the high-noise one stays off the GPU); "
                   "expert low / high forces one. Give frames (IMAGE, encoded with the VAE) or a LATENT.")
    CATEGORY = "Wan Experts/sampling"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The refined raw latents, for Wan VAE Decode.",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        sampler = WanExpertsSampler.INPUT_TYPES()
        required, optional = sampler["required"], sampler["optional"]
        return {"required": {
            "model": required["model"], "text": required["text"], "seed": required["seed"],
            "steps": required["steps"],
            "strength": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                "How much is re-drawn: int(steps x strength) steps run. 0 keeps the video, 1 starts from noise; "
                "0.2-0.4 refines an upscaled video.")}),
            "expert": (list(EXPERTS), {"default": "auto", "tooltip": (
                "Wan 2.2 A14B pairs: auto = by the boundary (low strength: the low-noise expert only); low / high = "
                "every step on that expert. Single models: auto.")}),
            "cfg_high": required["cfg_high"], "cfg_low": required["cfg_low"], "shift": required["shift"],
            "solver": required["solver"],
        }, "optional": {
            "video": ("IMAGE", {"tooltip": (
                "The frames to refine (4n+1, at least 5; width and height multiples of 16, TI2V-5B 32), e.g. from "
                "Wan Upscale Video. Needs the vae input.")}),
            "vae": ("WAN_VAE", {"tooltip": "The VAE of the model, to encode the video input."}),
            "latent": ("LATENT", {"tooltip": "Raw latents to refine instead of frames (e.g. from Wan VAE Encode)."}),
            "image_cond": optional["image_cond"], "step_cache": optional["step_cache"],
            "context": optional["context"], "schedule": optional["schedule"],
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, strength=None, cfg_high=None, cfg_low=None, shift=None):
        return verdict(number_problem(cls, strength=strength, cfg_high=cfg_high, cfg_low=cfg_low, shift=shift))

    def run(self, model, text, seed, steps=0, strength=0.3, expert="auto", cfg_high=0.0, cfg_low=0.0, shift=0.0,
            solver="unipc", video=None, vae=None, latent=None, image_cond=None, step_cache=None, context=None,
            schedule="official"):
        auto = resolve_auto(model, steps, shift, cfg_high, cfg_low)
        settings = SamplerSettings(steps=auto.steps, shift=auto.shift, solver=solver, cfg_high=auto.cfg_high,
                                   cfg_low=auto.cfg_low, schedule=schedule, context=context)
        plan = kept_experts(model, settings, strength, expert)  # strength and expert checked before encoding
        log.info("Wan Video To Video %s; strength %g: %d of %d steps (%s)", auto.describe(), strength, len(plan),
                 auto.steps, ", ".join(sorted(set(plan))) or "none")
        budget = dict(device=host.compute_device(), step_cache=step_cache is not None, context=context)
        samples = normalize(_input_latents(video, vae, latent, model, budget))
        host.check_interrupted()
        result = refine(model, samples, text, settings, strength, noise=make_noise(samples.shape, seed),
                        expert=expert, image_cond=image_cond, step_cache=step_cache, callback=StepProgress(),
                        device=host.compute_device(), offload_device=host.offload_device(),
                        interrupt=host.check_interrupted)
        host.free_memory()
        if result.cache_report is not None:
            log.info("%s", result.cache_report.summary())
        return ({"samples": denormalize(result.latents).cpu()},)


def _input_latents(video, vae, latent, model, budget: dict) -> torch.Tensor:
    """Raw latents of the video (encoded on the compute device) or of the LATENT; exactly one of them. A video too
    large for the device is refused before it is encoded, with the largest size that fits (``budget``: the
    device, whether a step cache and context windows are used)."""
    if (video is None) == (latent is None):
        raise InputError("Wan Video To Video needs either a video (IMAGE, with the vae) or a latent, not "
                         + ("both" if video is not None else "neither"))
    if latent is not None:
        samples = latent.get("samples") if isinstance(latent, dict) else None
        if not torch.is_tensor(samples) or samples.dim() != 5:
            raise InputError("latent must be a video LATENT ({'samples': [B, C, T, h, w]}), e.g. from Wan VAE Encode")
        check_video(1 + 4 * (samples.shape[2] - 1), samples.shape[4], samples.shape[3], 1, "the latent")
        return samples
    if vae is None:
        raise InputError("the video input needs the vae input (the model's VAE) to encode it")
    if not torch.is_tensor(video) or video.dim() != 4 or video.shape[-1] < 3:
        raise InputError(f"video must be an IMAGE [frames, H, W, 3]; got "
                         f"{tuple(video.shape) if torch.is_tensor(video) else type(video).__name__}")
    n, h, w, _ = video.shape
    check_video(n, w, h, vae.stride[1] * 2)
    latent_channels(vae, model)  # the VAE fits the model
    check_size(model, w, h, n, budget["device"], vae.stride[1] * 2, "Wan Video To Video", budget["step_cache"],
               context=budget["context"])
    pixels = video[..., :3].permute(3, 0, 1, 2).unsqueeze(0).float() * 2.0 - 1.0
    return on_compute_device(vae, lambda: vae.encode(pixels, callback=ChunkProgress(), output_device="cpu"))


class WanExpertsUpscaleVideo:
    DISPLAY_NAME = "Wan Upscale Video"
    DESCRIPTION = ("Resizes video frames in pixel space to a size a Wan model takes: by a factor (rounded to the "
                   "nearest multiple of 16, or 32 for TI2V-5B) or to an exact width x height. Area, bicubic and "
                   "lanczos are Pillow's filters. Frames are resized in batches into one output, so long 1080p videos "
                   "never hold several copies. IMAGE in and out: a model upscaler (ESRGAN-type, core Upscale Image "
                   "(using Model)) can take its place before Wan Video To Video.")
    CATEGORY = "Wan Experts/image"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The resized frames, for Wan Video To Video (or Save Wan Video).",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The frames to resize (a decoded video)."}),
            "target": (list(TARGETS), {"default": "factor", "tooltip": (
                "factor: the input size times factor, rounded to the multiple; size: exactly width x height.")}),
            "factor": ("FLOAT", {"default": 1.5, "min": 0.1, "max": MAX_FACTOR, "step": 0.05, "tooltip": (
                "Scale for target 'factor' (1.5: 480p -> 720p -> 1080p).")}),
            "width": ("INT", {"default": 1280, "min": 16, "max": MAX_SIDE, "step": 16, "tooltip": (
                "Width for target 'size': a multiple of the multiple below.")}),
            "height": ("INT", {"default": 720, "min": 16, "max": MAX_SIDE, "step": 16, "tooltip": (
                "Height for target 'size': a multiple of the multiple below.")}),
            "multiple": ("INT", {"default": 16, "min": MULTIPLES[0], "max": MULTIPLES[-1], "step": 16, "tooltip": (
                "The model's size multiple: 16 for Wan 2.1 VAE models (2.1, A14B), 32 for TI2V-5B (Wan 2.2 VAE).")}),
            "resampling": (list(RESAMPLING), {"default": "lanczos", "tooltip": (
                "area: averages (best for shrinking); bicubic: smooth; lanczos: sharpest (Pillow's filters).")}),
            "frame_batch": ("INT", {"default": DEFAULT_FRAME_BATCH, "min": 1, "max": 256, "tooltip": (
                "Frames moved to the compute device at once: more is faster, less holds less memory.")}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, target=None, factor=None, width=None, height=None, multiple=None, frame_batch=None):
        return verdict(number_problem(cls, factor=factor, width=width, height=height, multiple=multiple,
                                      frame_batch=frame_batch), _size_problem(target, width, height, multiple))

    def upscale(self, images, target="factor", factor=1.5, width=1280, height=720, multiple=16,
                resampling="lanczos", frame_batch=DEFAULT_FRAME_BATCH):
        if target not in TARGETS:
            raise InputError(f"target '{target}' is unknown; use one of {TARGETS}")
        if not torch.is_tensor(images) or images.dim() != 4:
            raise InputError("images must be an IMAGE [frames, H, W, C]")
        h, w = images.shape[1:3]
        size = (width, height) if target == "size" else None
        out_w, out_h = target_size(w, h, factor=factor, size=size, multiple=multiple)
        log.info("Wan Upscale Video: %d frames %dx%d -> %dx%d (%s)", images.shape[0], w, h, out_w, out_h, resampling)
        bar = ChunkProgress()
        out = resize_frames(images, out_w, out_h, resampling, frame_batch, device=host.compute_device(),
                            callback=bar)
        return (out,)


def _size_problem(target, width, height, multiple) -> str | None:
    if target != "size" or None in (width, height, multiple):
        return None
    try:
        target_size(0, 0, size=(int(width), int(height)), multiple=int(multiple))
    except (InputError, TypeError, ValueError) as exc:
        return str(exc)
    return None


NODES = {"WanExpertsVideoToVideo": WanExpertsVideoToVideo, "WanExpertsUpscaleVideo": WanExpertsUpscaleVideo}

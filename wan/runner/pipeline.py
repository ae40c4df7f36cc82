"""Text (and start/end images) to a video file from an official Wan-AI model folder, stage by stage: text
encoder, image encoders, DiT sampling (with an optional step cache), VAE decode, mp4. Each model is on the compute
device only while it works (``offload``). ``wan.generate`` turns the official command-line flags into ``Settings``.

Under a torch.distributed process group (``torchrun``) every rank runs the stages together, with the
multi-process options of ``Settings`` (see ``wan.distributed``); rank 0 decodes and writes the video.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..variants import Variant

if TYPE_CHECKING:
    from ..prompts.cli import PromptExtendFlags

log = logging.getLogger("wan_experts")


@dataclass
class Settings:
    """A validated run: everything the pipeline needs, nothing left to guess."""

    task: str
    variant: Variant
    width: int
    height: int
    frames: int
    steps: int
    shift: float
    guidance: tuple[float, float]  # (low-noise or single model, high-noise expert)
    solver: str
    seed: int
    prompt: str
    negative: str
    image: Path | None
    last_image: Path | None
    ckpt_dir: Path | None
    save_file: Path
    offload: bool
    t5_cpu: bool
    cache: tuple[str, float] | None  # ("teacache" | "magcache", threshold)
    device: str
    demo: bool = False
    prompt_extend: PromptExtendFlags | None = None  # --use_prompt_extend: rewrite the prompt before encoding
    loras: tuple = ()  # wan.lora.LoraChoice: file, strength, expert
    extend_from: Path | None = None  # continue this video (wan/runner/extend.py) instead of starting from nothing
    extend_overlap: int = 5
    color_match: str = "off"
    refine_from: Path | None = None  # upscale and refine this video (wan/runner/refine.py) at each of refine_sizes
    refine_sizes: tuple = ()  # (width, height) per stage; empty: the video's own size
    refine_strength: float = 0.3
    refine_expert: str = "auto"
    refine_resampling: str = "lanczos"
    ulysses_size: int = 1  # processes that split the tokens of every DiT forward (sequence parallel)
    cfg_parallel: bool = False  # conditional and unconditional forwards on two groups of processes
    dit_fsdp: bool = False  # DiT weights sharded over the processes (FSDP)
    t5_fsdp: bool = False  # text-encoder weights sharded over the processes (FSDP)
    s2v: object = None  # wan.runner.s2v.S2VOptions for --task s2v-14B
    compile: object = None  # wan.dit.compile.CompileOptions (--compile): compiled transformer blocks
    fp8_matmul: bool = False  # --fp8_matmul: fp8 products on fp8 DiT weights
    vace: object = None  # wan.runner.vace.VaceOptions for --task vace-1.3B / vace-14B
    animate: object = None  # wan.runner.animate.AnimateOptions for --task animate-14B

    @property
    def parallel(self):
        from ..distributed import ParallelOptions

        return ParallelOptions(self.ulysses_size, self.cfg_parallel, self.dit_fsdp, self.t5_fsdp)


# -- the official folder ------------------------------------------------------------------------------------------
OFFICIAL_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
OFFICIAL_TOKENIZER = "google/umt5-xxl"
OFFICIAL_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
OFFICIAL_VAE = {"2.1": "Wan2.1_VAE.pth", "2.2": "Wan2.2_VAE.pth"}
EXPERT_FOLDERS = ("high_noise_model", "low_noise_model")
MODEL_IN_DIM = {"t2v": 16, "i2v": 36, "flf2v": 36, "ti2v": 48, "s2v": 16, "vace": 16, "animate": 36}


@dataclass(frozen=True)
class ModelFiles:
    dits: tuple[Path, ...]  # the folder itself, or (high_noise_model, low_noise_model)
    text_encoder: Path
    vae: Path
    clip: Path | None


def official_files(ckpt_dir: Path, task: str, variant: Variant) -> ModelFiles:
    """The files of an official Wan-AI folder for ``task``; a missing one is named before anything loads."""
    def need(relative: str, what: str) -> Path:
        path = ckpt_dir / relative
        if not path.exists():
            raise InputError(f"--ckpt_dir '{ckpt_dir}' lacks {what} '{relative}', which {task} needs. Download the "
                             f"complete official Wan-AI folder for {task} (huggingface.co/Wan-AI).")
        return path

    dits = tuple(need(d, "the expert folder") for d in EXPERT_FOLDERS) if variant.moe else (ckpt_dir,)
    if not variant.moe and not any(ckpt_dir.glob("diffusion_pytorch_model*.safetensors*")):
        raise InputError(f"--ckpt_dir '{ckpt_dir}' holds no diffusion_pytorch_model*.safetensors: it is not the "
                         f"official {task} folder" + (" (a Wan 2.2 A14B folder? use --task t2v-A14B / i2v-A14B)"
                                                      if (ckpt_dir / EXPERT_FOLDERS[0]).is_dir() else ""))
    need(OFFICIAL_TOKENIZER, "the tokenizer folder")
    return ModelFiles(dits, need(OFFICIAL_T5, "the text encoder"), need(OFFICIAL_VAE[variant.vae], "the VAE"),
                      need(OFFICIAL_CLIP, "the CLIP image encoder") if variant.uses_clip else None)


# -- the run ------------------------------------------------------------------------------------------------------
@dataclass
class Sampled:
    """The denoised latents of a run, and the VAE (and device) to decode them with."""

    result: object  # wan.sampling.SampleResult
    vae: object
    device: object
    settings: Settings  # as run (with the extended prompt)
    vace: object = None  # the VACE context (its reference frames are cut before decoding)


def generate_video(s: Settings) -> Path | None:
    """Text (and images) -> video file, stage by stage, each model on the device only while it works.

    With several processes every rank must call this; rank 0 returns the file, the others None."""
    from ..distributed.ranks import is_main
    from ..latents import denormalize
    from ..video import write_video

    from ..sampling.vace import drop_reference_frames

    sampled = sample_latents(s)
    if not is_main():
        return None
    vae = sampled.vae.to(sampled.device)
    video = vae.decode(denormalize(drop_reference_frames(sampled.result.latents, sampled.vace)))
    frames = ((video[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
    if s.save_file.suffix.lower() == ".png":  # t2i-14B: one frame, an image
        return write_png(frames[0], s.save_file)
    return write_video(frames, s.save_file, fps=s.variant.fps,
                       metadata={"comment": run_description(sampled.settings)})


def sample_latents(s: Settings) -> Sampled:
    """Every stage up to the denoised latents (with several processes, on every rank)."""
    import torch

    from ..budget.check import check_call
    from ..distributed.ranks import is_main, share_from_main
    from ..sampling import latent_shape, make_noise
    from ..video import load_image

    images = [load_image(p) for p in (s.image, s.last_image) if p is not None] or _demo_images(s)
    width, height = output_size(s, images[0] if images else None)
    z_dim, stride = (48, (4, 16, 16)) if s.variant.vae == "2.2" else (16, (4, 8, 8))
    shape = latent_shape(width, height, s.frames, z_dim, stride=stride)
    check_call(1, (shape[2], shape[3] // 2, shape[4] // 2), (width, height), False, s.ulysses_size)  # before loading
    files = official_files(s.ckpt_dir, s.task, s.variant)
    par = parallel_setup(s, files)
    if s.prompt_extend is not None:  # rank 0 extends the prompt, every rank encodes the same one (official)
        s = replace(s, prompt=share_from_main(extended_prompt(s, images) if is_main() else None))
    device = par.device if par else torch.device(s.device)
    seed = share_from_main(s.seed)  # one noise for all ranks
    log.info("%s: %dx%d, %d frames, %d steps (%s, shift %g, guidance %s), seed %d", s.task, width, height,
             s.frames, s.steps, s.solver, s.shift, guidance_text(s), seed)
    text = encode_text(files, s, device, par)
    vae = load_vae(files, device)
    cond = image_conditioning(files, s, vae, images, width, height, device) if images else None
    vace = None
    if s.vace is not None:  # VACE: the context of the source video, masks and references
        from ..sampling.vace import vace_latent_shape
        from .vace import vace_conditioning

        vace, frames = vace_conditioning(s, vae, width, height, device)
        s = replace(s, frames=frames)
        shape = vace_latent_shape(vae, width, height, frames, 1, vace.ref_frames)
    if s.offload:
        vae.to("cpu")
    experts = load_experts(files, s, device, par)
    result = denoise(experts, s, shape, text, cond, make_noise(shape, seed), device, par, vace)
    return Sampled(result, vae, device, s, vace)


def extended_prompt(s: Settings, images) -> str:
    """The official prompt extension (the original prompt when it fails), shown the start (and end) image."""
    from ..prompts.cli import extend_for_run
    from ..prompts.system_prompts import style_of

    paths = [p for p in (s.image, s.last_image) if p is not None]
    style = style_of(s.variant.version, s.variant.task)
    return extend_for_run(s.prompt_extend, s.prompt, s.seed, style, s.device, paths, images).prompt


def parallel_setup(s: Settings, files: ModelFiles):
    """The process groups of a multi-process run (None for one process), after checking the options against
    the process count and the DiT's head count (from its config.json), before any model loads."""
    from ..dit.loader import heads_from_folder
    from ..distributed import check_options
    from ..distributed.plan import Parallel
    from ..distributed.ranks import rank_device, world_size

    check_options(s.parallel, world_size(), heads_from_folder(files.dits[0]), s.task, s.t5_cpu)
    return Parallel.build(s.parallel, rank_device(s.device)) if world_size() > 1 else None


def encode_text(files: ModelFiles, s: Settings, device, par=None):
    from ..conditioning import TextEmbeds
    from ..encoders import load_text_encoder

    sharding = par.t5_sharding() if par else None
    encoder = load_text_encoder(files.text_encoder, device="cpu" if s.t5_cpu else device, sharding=sharding)
    both = encoder.encode([s.prompt, s.negative])
    del encoder  # the text encoder is not needed again
    return TextEmbeds(both[:1], both[1:], [s.prompt], [s.negative])


def image_conditioning(files: ModelFiles, s: Settings, vae, images, width: int, height: int, device):
    from ..conditioning import ClipEmbeds
    from ..encoders import load_clip_vision
    from ..sampling import image_condition

    start, end = images[0], (images[1] if len(images) > 1 else None)
    clip = None
    if files.clip is not None:
        encoder = load_clip_vision(files.clip, device=device)
        clip = ClipEmbeds(encoder.encode_pair(start, end) if end is not None else encoder.encode(start))
        del encoder
    return image_condition(vae, start.to(device), width, height, s.frames,
                           None if end is None else end.to(device), clip)


def load_experts(files: ModelFiles, s: Settings, device, par=None):
    """The DiT (or the Wan 2.2 expert pair), checked against the task before sampling; with several processes
    sharded (FSDP) and splitting its tokens (sequence parallel) as the options say."""
    from ..dit.loader import load_dit
    from ..experts import ExpertSet, load_moe

    dtype = "bf16" if device.type == "cuda" else "fp32"
    home = "cpu" if offloads_dit(s) else device
    if s.offload and s.dit_fsdp:
        log.info("--dit_fsdp: the sharded DiT stays on the GPUs (--offload_model applies to the other models)")
    sharding = par.dit_sharding(home) if par else None
    if s.variant.moe:
        experts = load_moe(s.ckpt_dir, s.ckpt_dir, dtype=dtype, device=home, boundary=s.variant.boundary,
                           sharding=sharding, fp8_matmul=s.fp8_matmul)
    else:
        experts = ExpertSet(load_dit(files.dits[0], dtype=dtype, device=home, sharding=sharding,
                                     fp8_matmul=s.fp8_matmul))
    check_task(experts, s)
    if s.loras:
        from ..lora import apply_choices

        experts = apply_choices(experts, s.loras)
    if par:
        par.attach(experts.models)
    return replace(experts, compile=s.compile)


def check_task(experts, s: Settings) -> None:
    """The loaded model takes the inputs of ``s.task`` (channels, CLIP features)."""
    cfg = experts.config
    if cfg.in_dim != MODEL_IN_DIM[s.variant.task] or cfg.has_clip != s.variant.uses_clip:
        raise InputError(f"the model in '{s.ckpt_dir}' does not fit --task {s.task}: it takes {cfg.in_dim} input "
                         f"channels{' and CLIP features' if cfg.has_clip else ''}. Pick the task of that folder.")
    if s.variant.task == "vace" and getattr(experts.high, "vace_config", None) is None:
        raise InputError(f"the model in '{s.ckpt_dir}' has no VACE blocks, which --task {s.task} needs: use the "
                         f"official Wan2.1-VACE folder (or a text-to-video task for this one)")


def denoise(experts, s: Settings, shape, text, cond, noise, device, par=None, vace=None):
    import torch

    from ..distributed.ranks import is_main
    from ..sampling import SamplerSettings, sample

    low, high = s.guidance
    settings = SamplerSettings(steps=s.steps, shift=s.shift, solver=s.solver, cfg_high=high, cfg_low=low)
    with progress_bar(s.steps, disable=not is_main()) as bar:
        result = sample(experts, torch.zeros(shape), text, settings, noise=noise, image_cond=cond,
                        step_cache=make_step_cache(s), callback=lambda info: bar.update(1), device=device,
                        offload_device="cpu" if offloads_dit(s) else device, cfg_parallel=par.cfg if par else None,
                        vace=vace)
    if result.cache_report is not None:
        log.info("%s%s", result.cache_report.summary(),
                 "\n  (this process's guidance branch; the other ran in parallel)" if par and par.cfg else "")
    return result


def offloads_dit(s: Settings) -> bool:
    """Whether the idle DiT waits in CPU memory. FSDP-sharded experts stay on their GPUs (each process holds its
    share of both): moving them would hand FSDP copies it does not gather from."""
    return s.offload and not s.dit_fsdp


def make_step_cache(s: Settings):
    """TeaCache / MagCache from the flags; the demo's tiny models have no calibration data of their own."""
    if s.cache is None:
        return None
    from ..cache.magcache import MagCache
    from ..cache.teacache import TeaCache

    kind, threshold = s.cache
    if kind == "teacache":
        return TeaCache(threshold, allow_fallback=s.demo)
    return MagCache(threshold, allow_fallback=s.demo)


def output_size(s: Settings, image) -> tuple[int, int]:
    """(width, height): --size for text-to-video; with an image, the official area rule keeping its aspect."""
    if image is None or s.variant.task == "t2v":
        return s.width, s.height
    area, ih, iw = s.width * s.height, image.shape[-2], image.shape[-1]
    if s.variant.task == "ti2v":
        return best_output_size(iw, ih, 32, area)
    lat_h = round((area * ih / iw) ** 0.5 // 8 // 2 * 2)
    lat_w = round((area * iw / ih) ** 0.5 // 8 // 2 * 2)
    return lat_w * 8, lat_h * 8


def best_output_size(iw: int, ih: int, multiple: int, area: int) -> tuple[int, int]:
    """TI2V-5B (official): the multiple-of-32 size within ``area`` whose aspect is closest to the image's,
    trying width first and height first."""
    ratio = iw / ih
    ow, oh = (area * ratio) ** 0.5, (area / ratio) ** 0.5
    w1 = int(ow // multiple * multiple)
    h1 = int(area / w1 // multiple * multiple)
    h2 = int(oh // multiple * multiple)
    w2 = int(area / h2 // multiple * multiple)
    off = lambda w, h: max(ratio / (w / h), (w / h) / ratio)  # noqa: E731
    return (w1, h1) if off(w1, h1) < off(w2, h2) else (w2, h2)


def write_png(frame, path: Path) -> Path:
    """One frame [H, W, 3] in 0..1 -> a PNG file (t2i-14B), written whole or not at all."""
    import os

    import torch
    from PIL import Image

    pixels = (frame.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(pixels, "RGB").save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def run_description(s: Settings) -> str:
    return (f"wan.generate --task {s.task} --size {s.width}*{s.height} --frame_num {s.frames} --sample_solver "
            f"{s.solver} --sample_steps {s.steps} --sample_shift {s.shift:g} --sample_guide_scale "
            f"{guidance_text(s)} --base_seed {s.seed} --prompt {s.prompt!r}" + _lora_text(s))


def _lora_text(s: Settings) -> str:
    from ..lora.flags import FLAGS

    return "".join(f" {FLAGS[c.expert]} {c.path.name}:{c.strength:g}" for c in s.loras)


def guidance_text(s: Settings) -> str:
    low, high = s.guidance
    return f"{low:g}" if low == high else f"{low:g},{high:g}"


def _demo_images(s: Settings) -> list:
    """--demo of an image task without --image: a colour gradient (and its mirror as the end image)."""
    if not s.demo or not s.variant.needs_image:
        return []
    import torch

    y = torch.linspace(-1, 1, s.height).view(1, 1, -1, 1).expand(1, 1, s.height, s.width)
    x = torch.linspace(-1, 1, s.width).view(1, 1, 1, -1).expand(1, 1, s.height, s.width)
    start = torch.cat([x, y, -x], dim=1)
    return [start, start.flip(-1)] if s.variant.task == "flf2v" else [start]


def load_vae(files: ModelFiles, device):
    from ..vae.loader import load_vae as load

    return load(files.vae, dtype="fp32", device=device)


class progress_bar:
    def __init__(self, total: int, disable: bool = False):
        self.total, self.disable = total, disable

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc="sampling", unit="step", file=sys.stderr, disable=self.disable)
        return self.bar

    def __exit__(self, *exc):
        self.bar.close()


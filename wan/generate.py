"""Headless generation with the flags of the official Wan ``generate.py``, from the official Wan-AI folders.

    python -m wan.generate --task t2v-1.3B --size 832*480 --ckpt_dir ./Wan2.1-T2V-1.3B --prompt "..."
    python -m wan.generate --demo            # tiny random models, a few seconds, output is noise

Every setting is checked before a model file is opened: an unsupported ``--task``/``--size`` pair, a frame count
that is not 4n+1, a missing ``--image`` or a missing file stops the run with a message saying what to change.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, WanError
from .variants import VARIANTS, Variant

log = logging.getLogger("wan_experts")

TASKS = {
    "t2v-1.3B": "wan21_t2v_1.3b", "t2v-14B": "wan21_t2v_14b", "i2v-14B": "wan21_i2v_14b",
    "flf2v-14B": "wan21_flf2v_14b", "t2v-A14B": "wan22_t2v_a14b", "i2v-A14B": "wan22_i2v_a14b",
    "ti2v-5B": "wan22_ti2v_5b",
}
SOLVERS = ("unipc", "dpm++")
EXAMPLE_PROMPT = ("Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a "
                  "spotlighted stage.")
DEMO_SIZE, DEMO_FRAMES, DEMO_STEPS = "96*64", 9, 4


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wan.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="t2v-1.3B", choices=list(TASKS), help="model and mode (official names)")
    p.add_argument("--size", default=None, help="width*height, e.g. 832*480 (default: the task's first size; "
                   "for image-to-video the area, the aspect ratio comes from the image)")
    p.add_argument("--frame_num", type=int, default=None, help="frames, 4n+1 (default 81; ti2v-5B 121)")
    p.add_argument("--ckpt_dir", default=None, help="the official Wan-AI model folder")
    p.add_argument("--prompt", default=None, help="what to generate")
    p.add_argument("--neg_prompt", default="", help="negative prompt (default: the official one)")
    p.add_argument("--image", default=None, help="start image (i2v, flf2v; optional for ti2v-5B)")
    p.add_argument("--last_image", default=None, help="end image (flf2v)")
    p.add_argument("--sample_solver", default="unipc", choices=SOLVERS)
    p.add_argument("--sample_steps", type=int, default=None, help="default: the task's official steps")
    p.add_argument("--sample_shift", type=float, default=None, help="default: the task's official shift")
    p.add_argument("--sample_guide_scale", default=None,
                   help="guidance; for Wan 2.2 A14B one value or 'low,high' (low-noise, high-noise expert)")
    p.add_argument("--base_seed", type=int, default=-1, help="seed; -1 picks one at random")
    p.add_argument("--offload_model", type=_str2bool, nargs="?", const=True, default=None,
                   help="move models to the CPU between stages to save GPU memory (default: on)")
    p.add_argument("--t5_cpu", action="store_true", help="run the text encoder on the CPU")
    p.add_argument("--save_file", default=None, help="output .mp4 (default: a name from task, size and prompt)")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--teacache", type=float, default=None, metavar="THRESH",
                       help="TeaCache step skipping with this threshold (e.g. 0.08 for 1.3B, 0.2 for 14B)")
    cache.add_argument("--magcache", type=float, default=None, metavar="THRESH",
                       help="MagCache step skipping with this threshold (e.g. 0.12 for Wan 2.1, 0.05 for 2.2)")
    p.add_argument("--device", default="auto", help="cuda, cuda:1, cpu, or auto")
    p.add_argument("--demo", action="store_true",
                   help="build tiny random-weight models for --task and run the whole pipeline in seconds; "
                        "the video is noise, the run proves the installation works")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Check every flag against the task (before any model is loaded) and fill in the official defaults."""
    variant = VARIANTS[TASKS[args.task]]
    size = args.size or (DEMO_SIZE if args.demo else variant.sizes[0])
    width, height = parse_size(size, args.task, variant, args.demo)
    frames = args.frame_num if args.frame_num is not None else (DEMO_FRAMES if args.demo else variant.frames)
    if frames < 1 or (frames - 1) % 4:
        raise InputError(f"--frame_num {frames} must be 4n+1 (e.g. 81, 121): the VAE packs 4 frames per latent frame")
    steps = args.sample_steps if args.sample_steps is not None else (DEMO_STEPS if args.demo else variant.steps)
    if steps < 1:
        raise InputError(f"--sample_steps {steps} must be at least 1")
    image, last_image = _images(args, variant)
    ckpt_dir = None if args.demo else _ckpt_dir(args.ckpt_dir, args.task)
    prompt = args.prompt or EXAMPLE_PROMPT
    cache = ("teacache", args.teacache) if args.teacache is not None else (
        ("magcache", args.magcache) if args.magcache is not None else None)
    if cache is not None and cache[1] <= 0:
        raise InputError(f"--{cache[0]} {cache[1]}: the threshold must be above 0")
    return Settings(
        task=args.task, variant=variant, width=width, height=height, frames=frames, steps=steps,
        shift=_shift(args.sample_shift, variant, size), guidance=parse_guidance(args.sample_guide_scale, variant),
        solver=args.sample_solver, seed=_seed(args.base_seed), prompt=prompt,
        negative=args.neg_prompt or variant.default_negative_prompt, image=image, last_image=last_image,
        ckpt_dir=ckpt_dir, save_file=_save_file(args.save_file, args.task, size, prompt),
        offload=True if args.offload_model is None else args.offload_model, t5_cpu=args.t5_cpu, cache=cache,
        device=_device(args.device), demo=args.demo)


def parse_size(size: str, task: str, variant: Variant, demo: bool = False) -> tuple[int, int]:
    """'832*480' -> (832, 480); only the task's official sizes, except for the tiny demo models."""
    m = re.fullmatch(r"\s*(\d+)\s*[*xX]\s*(\d+)\s*", size or "")
    if not m:
        raise InputError(f"--size '{size}' must be width*height, e.g. {variant.sizes[0]}")
    width, height = int(m.group(1)), int(m.group(2))
    if demo:
        multiple = 32 if variant.vae == "2.2" else 16
        if width % multiple or height % multiple:
            raise InputError(f"--size {size}: with --demo, width and height must be multiples of {multiple}")
        return width, height
    if f"{width}*{height}" not in variant.sizes:
        raise InputError(f"--size {size} is not supported by {task}; supported sizes (width*height): "
                         f"{', '.join(variant.sizes)}")
    return width, height


def parse_guidance(value: str | None, variant: Variant) -> tuple[float, float]:
    """'5' -> (5, 5); '3,4' -> (3, 4) = (low-noise, high-noise expert), Wan 2.2 A14B only."""
    if value is None:
        return variant.guidance
    try:
        parts = [float(v) for v in str(value).split(",")]
    except ValueError:
        raise InputError(f"--sample_guide_scale '{value}' must be a number or 'low,high'") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2 and variant.moe:
        return parts[0], parts[1]
    raise InputError(f"--sample_guide_scale '{value}': two values (low,high) are only for the Wan 2.2 A14B "
                     f"two-expert models; give one number for {variant.id}")


def _shift(value: float | None, variant: Variant, size: str) -> float:
    if value is not None:
        return value
    if variant.id == "wan21_i2v_14b" and size in ("832*480", "480*832"):
        return 3.0  # official: 2.1 image-to-video at 480p
    return variant.shift


def _images(args, variant: Variant) -> tuple[Path | None, Path | None]:
    image = Path(args.image) if args.image else None
    last = Path(args.last_image) if args.last_image else None
    if variant.needs_image and image is None and not args.demo:
        raise InputError(f"--task {args.task} needs a start image: pass --image path/to/image.png")
    if variant.task == "flf2v" and last is None and not args.demo:
        raise InputError(f"--task {args.task} needs an end image too: pass --last_image path/to/image.png")
    if variant.task == "t2v" and image is not None:
        raise InputError(f"--task {args.task} is text-to-video and takes no --image; use an i2v task")
    if last is not None and variant.task != "flf2v":
        raise InputError(f"--last_image is only for flf2v-14B (first-last-frame), not {args.task}")
    for flag, path in (("--image", image), ("--last_image", last)):
        if path is not None and not path.is_file():
            raise InputError(f"{flag} '{path}' does not exist or is not a file")
    return image, last


def _ckpt_dir(value: str | None, task: str) -> Path:
    if not value:
        raise InputError(f"--ckpt_dir is required: the official model folder for {task} (e.g. ./Wan2.1-T2V-1.3B "
                         f"from huggingface.co/Wan-AI), or use --demo to try the pipeline with tiny models")
    path = Path(value)
    if not path.is_dir():
        raise InputError(f"--ckpt_dir '{path}' is not a folder; download the official Wan-AI folder for {task}")
    return path


def _seed(value: int) -> int:
    if value >= 0:
        return value
    import random

    return random.randint(0, sys.maxsize)


def _save_file(value: str | None, task: str, size: str, prompt: str) -> Path:
    if value:
        path = Path(value)
        return path if path.suffix else path.with_suffix(".mp4")
    words = re.sub(r"[^\w]+", "_", prompt)[:50].strip("_")
    return Path(f"{task}_{size.replace('*', 'x')}_{words}_{time.strftime('%Y%m%d_%H%M%S')}.mp4")


def _device(value: str) -> str:
    import torch

    if value in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {value}: CUDA is not available here; use --device cpu")
    return value


def _str2bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("yes", "true", "t", "y", "1"):
        return True
    if str(value).lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"'{value}' is not a boolean (use True or False)")


# -- the official folder ------------------------------------------------------------------------------------------
OFFICIAL_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
OFFICIAL_TOKENIZER = "google/umt5-xxl"
OFFICIAL_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
OFFICIAL_VAE = {"2.1": "Wan2.1_VAE.pth", "2.2": "Wan2.2_VAE.pth"}
EXPERT_FOLDERS = ("high_noise_model", "low_noise_model")
MODEL_IN_DIM = {"t2v": 16, "i2v": 36, "flf2v": 36, "ti2v": 48}


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
def run(s: Settings) -> Path:
    """Text (and images) -> video file, stage by stage, each model on the device only while it works."""
    import torch

    from .latents import denormalize
    from .sampling import latent_shape, make_noise
    from .video import write_video

    images = [load_image(p) for p in (s.image, s.last_image) if p is not None] or _demo_images(s)
    width, height = output_size(s, images[0] if images else None)
    z_dim, stride = (48, (4, 16, 16)) if s.variant.vae == "2.2" else (16, (4, 8, 8))
    shape = latent_shape(width, height, s.frames, z_dim, stride=stride)
    files = official_files(s.ckpt_dir, s.task, s.variant)
    device = torch.device(s.device)
    log.info("%s: %dx%d, %d frames, %d steps (%s, shift %g, guidance %s), seed %d", s.task, width, height,
             s.frames, s.steps, s.solver, s.shift, _guidance_text(s), s.seed)
    text = encode_text(files, s, device)
    vae = _load_vae(files, device)
    cond = image_conditioning(files, s, vae, images, width, height, device) if images else None
    if s.offload:
        vae.to("cpu")
    experts = load_experts(files, s, device)
    result = denoise(experts, s, shape, text, cond, make_noise(shape, s.seed), device)
    del experts
    vae.to(device)
    video = vae.decode(denormalize(result.latents))
    frames = ((video[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
    return write_video(frames, s.save_file, fps=s.variant.fps, metadata={"comment": run_description(s)})


def encode_text(files: ModelFiles, s: Settings, device):
    from .conditioning import TextEmbeds
    from .encoders import load_text_encoder

    encoder = load_text_encoder(files.text_encoder, device="cpu" if s.t5_cpu else device)
    both = encoder.encode([s.prompt, s.negative])
    del encoder  # the text encoder is not needed again
    return TextEmbeds(both[:1], both[1:], [s.prompt], [s.negative])


def image_conditioning(files: ModelFiles, s: Settings, vae, images, width: int, height: int, device):
    from .conditioning import ClipEmbeds
    from .encoders import load_clip_vision
    from .sampling import image_condition

    start, end = images[0], (images[1] if len(images) > 1 else None)
    clip = None
    if files.clip is not None:
        encoder = load_clip_vision(files.clip, device=device)
        clip = ClipEmbeds(encoder.encode_pair(start, end) if end is not None else encoder.encode(start))
        del encoder
    return image_condition(vae, start.to(device), width, height, s.frames,
                           None if end is None else end.to(device), clip)


def load_experts(files: ModelFiles, s: Settings, device):
    """The DiT (or the Wan 2.2 expert pair), checked against the task before sampling."""
    from .dit.loader import load_dit
    from .experts import ExpertSet, load_moe

    dtype = "bf16" if device.type == "cuda" else "fp32"
    home = "cpu" if s.offload else device
    if s.variant.moe:
        experts = load_moe(s.ckpt_dir, s.ckpt_dir, dtype=dtype, device=home, boundary=s.variant.boundary)
    else:
        experts = ExpertSet(load_dit(files.dits[0], dtype=dtype, device=home))
    cfg = experts.config
    if cfg.in_dim != MODEL_IN_DIM[s.variant.task] or cfg.has_clip != s.variant.uses_clip:
        raise InputError(f"the model in '{s.ckpt_dir}' does not fit --task {s.task}: it takes {cfg.in_dim} input "
                         f"channels{' and CLIP features' if cfg.has_clip else ''}. Pick the task of that folder.")
    return experts


def denoise(experts, s: Settings, shape, text, cond, noise, device):
    import torch

    from .sampling import SamplerSettings, sample

    low, high = s.guidance
    settings = SamplerSettings(steps=s.steps, shift=s.shift, solver=s.solver, cfg_high=high, cfg_low=low)
    with _progress_bar(s.steps) as bar:
        result = sample(experts, torch.zeros(shape), text, settings, noise=noise, image_cond=cond,
                        step_cache=make_step_cache(s), callback=lambda info: bar.update(1), device=device,
                        offload_device="cpu" if s.offload else device)
    if result.cache_report is not None:
        log.info("%s", result.cache_report.summary())
    return result


def make_step_cache(s: Settings):
    """TeaCache / MagCache from the flags; the demo's tiny models have no calibration data of their own."""
    if s.cache is None:
        return None
    from .cache.magcache import MagCache
    from .cache.teacache import TeaCache

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


def load_image(path: Path):
    """An image file -> [1, 3, H, W] in [-1, 1] (decoded by PyAV, so no extra image library is needed)."""
    import av
    import torch

    try:
        with av.open(str(path)) as container:
            rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")
    except (av.error.FFmpegError, StopIteration) as exc:
        raise InputError(f"'{path}' could not be read as an image ({exc}); use a .png or .jpg file") from exc
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1.0


def run_description(s: Settings) -> str:
    return (f"wan.generate --task {s.task} --size {s.width}*{s.height} --frame_num {s.frames} --sample_solver "
            f"{s.solver} --sample_steps {s.steps} --sample_shift {s.shift:g} --sample_guide_scale "
            f"{_guidance_text(s)} --base_seed {s.seed} --prompt {s.prompt!r}")


def _guidance_text(s: Settings) -> str:
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


def _load_vae(files: ModelFiles, device):
    from .vae.loader import load_vae

    return load_vae(files.vae, dtype="fp32", device=device)


class _progress_bar:
    def __init__(self, total: int):
        self.total = total

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc="sampling", unit="step", file=sys.stderr)
        return self.bar

    def __exit__(self, *exc):
        self.bar.close()


DEMO_NOTICE = ("--demo: tiny RANDOM-WEIGHT models, built just now. The video is noise; the run shows that "
               "every stage (text encoder, image encoder, DiT sampling, VAE decode, mp4 writing) works here.")


def run_demo(s: Settings) -> Path:
    """Write the tiny models of --task as an official folder in a temporary directory, then run normally."""
    import tempfile

    from .demo import write_official_folder

    print(DEMO_NOTICE, file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="wan_demo_") as folder:
        write_official_folder(folder, s.variant)
        s.ckpt_dir = Path(folder)
        return run(s)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    started = time.time()
    try:
        settings = settings_from_args(args)
        path = run_demo(settings) if settings.demo else run(settings)
    except WanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Saved {path} in {time.time() - started:.1f} s" + (" (demo: random weights, the video is noise)"
                                                            if settings.demo else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

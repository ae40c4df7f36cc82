"""Headless generation with the flags of the official Wan ``generate.py``, from the official Wan-AI folders.

    python -m wan.generate --task t2v-1.3B --size 832*480 --ckpt_dir ./Wan2.1-T2V-1.3B --prompt "..."
    python -m wan.generate --demo            # tiny random models, a few seconds, output is noise
    torchrun --nproc_per_node=8 -m wan.generate --task t2v-A14B --ckpt_dir ... --dit_fsdp --t5_fsdp --ulysses_size 8

Every setting is checked before a model file is opened: an unsupported ``--task``/``--size`` pair, a frame count
that is not 4n+1, a missing ``--image`` or a missing file stops the run with a message saying what to change.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

from .checks import finite_number
from .sampling.color import COLOR_MATCH
from .distributed.options import ParallelOptions, check_options
from .dit.compile import add_compile_flags, compile_settings
from .errors import InputError, WanError
from .runner.pipeline import Settings
from .runner.animate import add_animate_flags, animate_options
from .runner.s2v import add_s2v_flags, s2v_options
from .runner.vace import add_vace_flags, refuse_vace_flags, vace_options
from .runner.tasks import run
from .prompts.cli import add_prompt_extend_flags, prompt_extend_from_args
from .runner.refine_flags import add_refine_flags, refine_options
from .variants import ANIMATE_PROMPT, VARIANTS, Variant

TASKS = {
    "t2v-1.3B": "wan21_t2v_1.3b", "t2v-14B": "wan21_t2v_14b", "i2v-14B": "wan21_i2v_14b",
    "flf2v-14B": "wan21_flf2v_14b", "t2v-A14B": "wan22_t2v_a14b", "i2v-A14B": "wan22_i2v_a14b",
    "ti2v-5B": "wan22_ti2v_5b", "s2v-14B": "wan22_s2v_14b", "t2i-14B": "wan21_t2i_14b",
    "vace-1.3B": "wan21_vace_1.3b", "vace-14B": "wan21_vace_14b", "animate-14B": "wan22_animate_14b",
}
SOLVERS = ("unipc", "dpm++")
EXAMPLE_PROMPT = ("Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a "
                  "spotlighted stage.")
DEMO_SIZE, DEMO_FRAMES, DEMO_STEPS = "96*64", 9, 4
EXTEND_TASKS = ("i2v-14B", "i2v-A14B", "ti2v-5B")


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
                   help="move models to the CPU between stages to save GPU memory (default: on for one process, "
                        "off for several)")
    p.add_argument("--t5_cpu", action="store_true", help="run the text encoder on the CPU")
    p.add_argument("--save_file", default=None, help="output .mp4 (default: a name from task, size and prompt)")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--teacache", type=float, default=None, metavar="THRESH",
                       help="TeaCache step skipping with this threshold (e.g. 0.08 for 1.3B, 0.2 for 14B)")
    cache.add_argument("--magcache", type=float, default=None, metavar="THRESH",
                       help="MagCache step skipping with this threshold (e.g. 0.12 for Wan 2.1, 0.05 for 2.2)")
    p.add_argument("--extend_from", default=None, metavar="VIDEO",
                   help="continue this video from its last frames (i2v-14B, i2v-A14B, ti2v-5B; its size is kept): "
                        "--frame_num is the new segment's length, overlap included; the output is the joined video")
    p.add_argument("--extend_overlap", type=int, default=5, metavar="N",
                   help="with --extend_from: the video's last N frames (4n+1) that the new segment starts from")
    p.add_argument("--color_match", default="mean_std", choices=COLOR_MATCH,
                   help="with --extend_from: match the new segment's colours to the video's end (in Lab)")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                   help="apply a LoRA (any key scheme) to the DiT, both experts of A14B; repeatable; strength 1 "
                        "by default; with --demo, 'demo' is a random LoRA for the tiny models")
    p.add_argument("--lora_high", action="append", default=[], metavar="FILE[:STRENGTH]",
                   help="a LoRA for the high-noise expert only (Wan 2.2 A14B, e.g. the HIGH file of a pair)")
    p.add_argument("--lora_low", action="append", default=[], metavar="FILE[:STRENGTH]",
                   help="a LoRA for the low-noise expert only (Wan 2.2 A14B, e.g. the LOW file of a pair)")
    p.add_argument("--device", default="auto", help="cuda, cuda:1, cpu, or auto")
    add_compile_flags(p)
    add_prompt_extend_flags(p)
    add_refine_flags(p)
    add_s2v_flags(p)
    add_vace_flags(p)
    add_animate_flags(p)
    multi = p.add_argument_group("several processes (start with torchrun --nproc_per_node=N -m wan.generate ...)")
    multi.add_argument("--ulysses_size", type=int, default=1,
                       help="processes that split the video tokens of every DiT forward (Ulysses sequence "
                            "parallel); must divide the attention heads and the process count")
    multi.add_argument("--cfg_parallel", action="store_true",
                       help="run the conditional and the unconditional forward at the same time on two halves of "
                            "the processes")
    multi.add_argument("--dit_fsdp", action="store_true", help="shard the DiT weights over the processes (FSDP)")
    multi.add_argument("--t5_fsdp", action="store_true",
                       help="shard the text-encoder weights over the processes (FSDP)")
    p.add_argument("--demo", action="store_true",
                   help="build tiny random-weight models for --task and run the whole pipeline in seconds; "
                        "the video is noise, the run proves the installation works")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Check every flag against the task (before any model is loaded) and fill in the official defaults."""
    from .distributed.ranks import world_size
    from .lora.flags import lora_choices

    variant = VARIANTS[TASKS[args.task]]
    check_options(ParallelOptions(args.ulysses_size, args.cfg_parallel, args.dit_fsdp, args.t5_fsdp), world_size(),
                  None, args.task, args.t5_cpu)
    refine = refine_options(args, 32 if variant.vae == "2.2" else 16)
    size = args.size or (DEMO_SIZE if args.demo else variant.sizes[0])
    width, height = refine["refine_sizes"][-1] if refine else parse_size(size, args.task, variant, args.demo)
    s2v = s2v_options(args, width, height) if variant.task == "s2v" else None
    if s2v is not None:
        args.frame_num = 4 * (s2v.infer_frames // 4) + 1  # the per-clip frames pass the generic check below
    vace = vace_options(args) if variant.task == "vace" else refuse_vace_flags(args)
    animate = animate_options(args) if variant.task == "animate" else None
    frames = args.frame_num if args.frame_num is not None else (
        DEMO_FRAMES if args.demo and variant.frames > 1 else variant.frames)
    if variant.frames == 1 and frames != 1:
        raise InputError(f"--task {args.task} makes one image: --frame_num must be 1 (or left out)")
    if frames < 1 or (frames - 1) % 4:
        raise InputError(f"--frame_num {frames} must be 4n+1 (e.g. 81, 121): the VAE packs 4 frames per latent frame")
    steps = args.sample_steps if args.sample_steps is not None else (DEMO_STEPS if args.demo else variant.steps)
    if steps < 1:
        raise InputError(f"--sample_steps {steps} must be at least 1")
    image, last_image = _images(args, variant)
    ckpt_dir = None if args.demo else _ckpt_dir(args.ckpt_dir, args.task)
    prompt = _prompt(args, variant, image)
    cache = ("teacache", args.teacache) if args.teacache is not None else (
        ("magcache", args.magcache) if args.magcache is not None else None)
    if cache is not None:
        finite_number(cache[1], f"--{cache[0]}", 0.0, 1.0, low_open=True, hint="the threshold must be above 0")
    if args.dit_fsdp and (args.lora or args.lora_high or args.lora_low):
        raise InputError("--lora cannot be combined with --dit_fsdp (a LoRA patches whole weights, FSDP shards them): "
                         "drop --dit_fsdp and keep --ulysses_size to split the work over the GPUs")
    shift = finite_number(_shift(args.sample_shift, variant, size), "--sample_shift", 0.0, low_open=True)
    guidance = tuple(finite_number(g, "--sample_guide_scale", 0.0) for g in parse_guidance(args.sample_guide_scale,
                                                                                           variant))
    return Settings(
        task=args.task, variant=variant, width=width, height=height, frames=frames, steps=steps,
        shift=shift, guidance=guidance,
        solver=args.sample_solver, seed=_seed(args.base_seed), prompt=prompt,
        negative=args.neg_prompt or variant.default_negative_prompt, image=image, last_image=last_image,
        ckpt_dir=ckpt_dir, save_file=_save_file(args.save_file, args.task, size, prompt, variant.frames == 1),
        offload=world_size() == 1 if args.offload_model is None else args.offload_model, t5_cpu=args.t5_cpu,
        cache=cache, device=_device(args.device), demo=args.demo, prompt_extend=prompt_extend_from_args(args),
        extend_from=_extend_from(args, frames), extend_overlap=args.extend_overlap, color_match=args.color_match,
        ulysses_size=args.ulysses_size, cfg_parallel=args.cfg_parallel, dit_fsdp=args.dit_fsdp, t5_fsdp=args.t5_fsdp,
        loras=lora_choices({"both": args.lora, "high": args.lora_high, "low": args.lora_low}, variant.moe, args.demo),
        s2v=s2v, vace=vace, animate=animate, **compile_settings(args), **refine)


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


def _prompt(args, variant: Variant, image: Path | None) -> str:
    """--prompt, else the example; an explicitly empty prompt stays empty when prompt extension will describe the
    image (official: i2v with --prompt '' --use_prompt_extend)."""
    if args.prompt == "" and args.use_prompt_extend and (image is not None or variant.needs_image):
        return ""
    return args.prompt or (ANIMATE_PROMPT if variant.task == "animate" else EXAMPLE_PROMPT)


def _shift(value: float | None, variant: Variant, size: str) -> float:
    if value is not None:
        return value
    if variant.id == "wan21_i2v_14b" and size in ("832*480", "480*832"):
        return 3.0  # official: 2.1 image-to-video at 480p
    return variant.shift


def _images(args, variant: Variant) -> tuple[Path | None, Path | None]:
    image = Path(args.image) if args.image else None
    last = Path(args.last_image) if args.last_image else None
    if variant.needs_image and image is None and not args.demo and not (args.extend_from or args.refine_from):
        raise InputError(f"--task {args.task} needs a start image: pass --image path/to/image.png")
    if variant.task == "flf2v" and last is None and not args.demo and not args.refine_from:
        raise InputError(f"--task {args.task} needs an end image too: pass --last_image path/to/image.png")
    if variant.task in ("t2v", "vace") and image is not None:
        raise InputError(f"--task {args.task} takes no --image; use an i2v task" + (
            ", or --src_ref_images for VACE reference pictures" if variant.task == "vace" else ""))
    if last is not None and variant.task != "flf2v":
        raise InputError(f"--last_image is only for flf2v-14B (first-last-frame), not {args.task}")
    for flag, path in (("--image", image), ("--last_image", last)):
        if path is not None and not path.is_file():
            raise InputError(f"{flag} '{path}' does not exist or is not a file")
    return image, last


def _extend_from(args, frames: int) -> Path | None:
    """--extend_from: an existing video, an image-to-video task, no start image, a 4n+1 overlap within the segment."""
    if not args.extend_from:
        return None
    path = Path(args.extend_from)
    if args.task not in EXTEND_TASKS:
        raise InputError(f"--extend_from needs an image-to-video task ({', '.join(EXTEND_TASKS)}); {args.task} "
                         f"cannot start from given frames")
    if args.image or args.last_image or args.size:
        raise InputError("--extend_from continues the video's own last frames at its own size; drop --image, "
                         "--last_image and --size")
    n = args.extend_overlap
    if n < 1 or (n - 1) % 4 or n >= frames:
        raise InputError(f"--extend_overlap {n} must be 4n+1 (1, 5, 9, ...) and less than --frame_num {frames}")
    if not path.is_file():
        raise InputError(f"--extend_from '{path}' does not exist or is not a file")
    return path


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


def _save_file(value: str | None, task: str, size: str, prompt: str, image: bool = False) -> Path:
    """--save_file (an image task writes .png; a video task .mp4 or .webm), or a name from the run."""
    suffix = ".png" if image else ".mp4"
    if value:
        path = Path(value)
        if image and path.suffix and path.suffix.lower() != ".png":
            raise InputError(f"--save_file '{value}': --task {task} makes one image, written as .png")
        return path if path.suffix else path.with_suffix(suffix)
    words = re.sub(r"[^\w]+", "_", prompt)[:50].strip("_")
    return Path(f"{task}_{size.replace('*', 'x')}_{words}_{time.strftime('%Y%m%d_%H%M%S')}{suffix}")


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


DEMO_NOTICE = ("--demo: tiny RANDOM-WEIGHT models, built just now. The video is noise; the run shows that "
               "every stage (text encoder, image encoder, DiT sampling, VAE decode, mp4 writing) works here.")


def run_demo(s: Settings) -> Path | None:
    """Write the tiny models of --task as an official folder in a temporary directory, then run normally.

    With several processes each writes its own copy (the models are seeded, so the copies are identical)."""
    import tempfile

    from .runner.demo import write_official_folder
    from .distributed.ranks import is_main
    from .lora.demo import resolve_demo_loras

    if is_main():
        print(DEMO_NOTICE, file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="wan_demo_") as folder:
        models = write_official_folder(folder, s.variant)
        s.ckpt_dir = Path(folder)
        s.loras = resolve_demo_loras(s.loras, Path(folder), models.dits[0])
        return run(s)


def main(argv: list[str] | None = None) -> int:
    """The CLI. Under torchrun every process runs it; it joins the process group torchrun describes (unless one
    is already running), and only rank 0 logs progress, writes the video and reports."""
    from .distributed.ranks import init_from_env, is_main, leave_process_group, quiet_other_ranks

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    started, joined = time.time(), False
    try:
        joined = init_from_env(_device(args.device))
        quiet_other_ranks()
        settings = settings_from_args(args)
        path = run_demo(settings) if settings.demo else run(settings)
    except WanError as exc:
        if is_main():
            print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if joined:
            leave_process_group()
    if path is not None:  # rank 0 (or the only process)
        print(f"Saved {path} in {time.time() - started:.1f} s" + (" (demo: random weights, the video is noise)"
                                                                if settings.demo else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

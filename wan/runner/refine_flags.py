"""The command-line flags of a refine run (``--refine_from``), checked before any model or video is opened; the run
itself is ``wan.runner.refine``."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..checks import finite_number
from ..errors import InputError
from ..sampling.refine import EXPERTS
from ..upscale import RESAMPLING


def add_refine_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("video to video (refine and upscale)")
    group.add_argument("--refine_from", default=None, metavar="VIDEO",
                       help="upscale this video to --size and re-paint it there (video to video); a list of sizes "
                            "('1248*720,1872*1088') runs them in turn, each stage refining the last (a cascade)")
    group.add_argument("--refine_strength", type=float, default=0.3, metavar="S",
                       help="with --refine_from: how much is re-drawn, 0..1 (int(steps x S) steps run; 0.2-0.4 "
                            "refines detail, 1 starts from noise)")
    group.add_argument("--refine_expert", default="auto", choices=EXPERTS,
                       help="with --refine_from and a Wan 2.2 A14B task: the expert per step by the boundary (auto; a "
                            "low strength runs only the low-noise expert), or every step on one")
    group.add_argument("--refine_resampling", default="lanczos", choices=RESAMPLING,
                       help="with --refine_from: the pixel-space filter of the upscale before each stage")


def refine_options(args, multiple: int) -> dict:
    """The ``Settings`` fields of a refine run ({} without --refine_from): the video, the stage sizes (each a
    multiple of ``multiple``), strength, expert, resampling; conflicting flags are refused."""
    if not args.refine_from:
        return {}
    path = Path(args.refine_from)
    if args.extend_from:
        raise InputError("--refine_from and --extend_from are two different runs; give one of them")
    if args.image or args.last_image or args.frame_num is not None:
        raise InputError("--refine_from takes its frames (and, for image-to-video tasks, its start image) from the "
                         "video; drop --image, --last_image and --frame_num")
    if not args.size:
        raise InputError("--refine_from needs --size: the size to refine at (W*H), or several ('1248*720,1872*1088') "
                         "for a cascade; the video's own size refines without upscaling")
    if not path.is_file():
        raise InputError(f"--refine_from '{path}' does not exist or is not a file")
    strength = finite_number(args.refine_strength, "--refine_strength", 0.0, 1.0,
                             hint="0 keeps the video, 1 re-draws it from noise; 0.2-0.4 refines")
    return {"refine_from": path, "refine_sizes": parse_sizes(args.size, multiple), "refine_strength": strength,
            "refine_expert": args.refine_expert, "refine_resampling": args.refine_resampling}


def parse_sizes(value: str, multiple: int) -> tuple[tuple[int, int], ...]:
    """'1248*720,1872*1088' -> ((1248, 720), (1872, 1088)); any size that is a multiple of ``multiple``."""
    sizes = []
    for part in str(value).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*[*xX]\s*(\d+)\s*", part)
        if not m:
            raise InputError(f"--size '{value}': each size must be width*height, e.g. 1280*720,1920*1088")
        width, height = int(m.group(1)), int(m.group(2))
        for name, v in (("width", width), ("height", height)):
            if v < multiple or v % multiple:
                raise InputError(f"--size {width}*{height}: {name} {v} is not a multiple of {multiple}, which this "
                                 f"model needs; use {max(multiple, int(v / multiple + 0.5) * multiple)}")
        sizes.append((width, height))
    return tuple(sizes)

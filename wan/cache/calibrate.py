"""``python -m wan.cache.calibrate``: record normal sampling runs of a model and write step-cache data for it.

Prompt embeddings (and, for image-to-video models, the image conditioning) come from a safetensors file with
``positive`` and ``negative`` [1, L, 4096] and optionally ``y`` (I2V/FLF2V), ``clip`` (2.1 I2V/FLF2V) or
``first_latent`` (TI2V-5B with a start image), all as the sampler takes them. ``--random-text`` uses random
embeddings instead (fine for a smoke run; real prompts give coefficients that transfer to real prompts).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from ..errors import InputError

log = logging.getLogger("wan_experts")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m wan.cache.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--dit", required=True, help="DiT file or folder (the high-noise expert for Wan 2.2 A14B)")
    p.add_argument("--dit-low", help="the low-noise expert (Wan 2.2 A14B)")
    p.add_argument("--boundary", type=float, default=None, help="expert switch (fraction of 1000); default official")
    p.add_argument("--embeds", help="safetensors with positive / negative (and y, clip, first_latent)")
    p.add_argument("--random-text", action="store_true", help="random prompt embeddings instead of --embeds")
    p.add_argument("--size", default=None, help="width*height, e.g. 832*480 (default: the variant's first size)")
    p.add_argument("--frames", type=int, default=None, help="frames, 4n+1 (default: the variant's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the variant's)")
    p.add_argument("--shift", type=float, default=None, help="schedule shift (default: the variant's)")
    p.add_argument("--guidance", type=float, nargs="+", default=None, help="cfg (low/single [high])")
    p.add_argument("--solver", default="unipc")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    p.add_argument("--name", default=None, help="key in the file (default: the variant id)")
    p.add_argument("--dtype", default="default")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", required=True, help="JSON file to write")
    return p.parse_args(argv)


def load_experts(args):
    from ..dit.loader import load_dit
    from ..experts import ExpertSet, load_moe

    if args.dit_low:
        return load_moe(args.dit, args.dit_low, dtype=args.dtype, device=args.device,
                        boundary=args.boundary if args.boundary is not None else "auto")
    return ExpertSet(load_dit(args.dit, dtype=args.dtype, device=args.device))


def load_conditioning(args, experts, batch_shape):
    from ..weights.checkpoint import read_state_dict
    from ..conditioning import ImageCond, TextEmbeds

    if args.embeds:
        sd = read_state_dict(args.embeds, what="embeddings file")
        missing = {"positive", "negative"} - set(sd)
        if missing:
            raise InputError(f"'{args.embeds}' lacks {sorted(missing)}; it needs 'positive' and 'negative' prompt "
                             f"embeddings [1, L, {experts.config.text_dim}]")
        text = TextEmbeds(sd["positive"].float(), sd["negative"].float())
        cond = None
        if "y" in sd:
            cond = ImageCond("flf2v" if experts.config.flf_pos_len else "i2v", y=sd["y"].float(),
                             clip=sd["clip"].float() if "clip" in sd else None)
        elif "first_latent" in sd:
            cond = ImageCond("ti2v", first_latent=sd["first_latent"].float())
        return text, cond
    if not args.random_text:
        raise InputError("pass --embeds FILE with real prompt embeddings, or --random-text for a smoke run")
    g = torch.Generator().manual_seed(1234)
    dim = experts.config.text_dim
    return TextEmbeds(torch.randn(1, 32, dim, generator=g), torch.randn(1, 32, dim, generator=g)), None


@torch.no_grad()
def main(argv=None) -> Path:
    from ..sampling import SamplerSettings, latent_shape, make_noise, sample
    from .calibration import calibrate, write_calibration

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    experts = load_experts(args)
    v = experts.variant
    width, height = (int(s) for s in (args.size or (v.sizes[0] if v else "832*480")).split("*"))
    frames = args.frames or (v.frames if v else 81)
    steps, shift = args.steps or (v.steps if v else 50), args.shift or (v.shift if v else 5.0)
    guidance = args.guidance or list(v.guidance if v else (5.0, 5.0))
    shape = latent_shape(width, height, frames, experts.config.out_dim)
    text, cond = load_conditioning(args, experts, shape)
    settings = SamplerSettings(steps=steps, shift=shift, solver=args.solver, cfg_low=guidance[0],
                               cfg_high=guidance[-1])
    seeds = iter(args.seeds)

    def one_run(recorder):
        seed = next(seeds)
        log.info("calibration run, seed %d: %d steps at %dx%d, %d frames", seed, steps, width, height, frames)
        sample(experts, torch.zeros(shape), text, settings, noise=make_noise(shape, seed), image_cond=cond,
               step_cache=recorder, device=args.device)

    result = calibrate(experts, one_run, runs=len(args.seeds), name=args.name)
    return write_calibration(result, args.out)


if __name__ == "__main__":
    main()

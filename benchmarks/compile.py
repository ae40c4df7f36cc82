"""Compiled transformer blocks (``wan.dit.compile``) against the same model run eagerly, on this machine.

    python benchmarks/compile.py                  # dim 1536, ffn 8960, 12 heads, 1950 video tokens; fp32 and bf16
    python benchmarks/compile.py --small          # dim 256, 390 tokens: a quick run of the script
    python benchmarks/compile.py --dtype bf16 --threads 2 --repeats 5 --steps 20

Per compute dtype it prints:
- block forward: one transformer block, eager vs compiled (median of interleaved rounds), and the ratio;
- whole step: a sampler step (conditional + unconditional forward of a 2-block model, embeddings and head eager),
  eager vs compiled;
- first-step overhead: the first compiled step (tracing, code generation, C++ compilation) minus an eager step,
  and the process's peak RSS growth during it;
then, once, the recompile count over a 20-step Wan 2.2 A14B run (both experts, tiny width) with TeaCache and a LoRA
of a different strength on each expert: graphs compiled in the first step and after it (target 0 after it).

Times are medians of rounds (wall clock, or with ``--clock cpu --threads 1`` this process's CPU time); eager and
compiled calls alternate within each round, so a drifting load slows both alike.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py
from harness import DTYPES, ROOT, add_timing_options, apply_timing_options, interleaved_medians, rss_kb  # noqa: E402

sys.path.insert(0, str(ROOT))

from wan.dit.compile import ATTR, CompileOptions, compiled_models  # noqa: E402
from wan.dit.config import WanDiTConfig  # noqa: E402
from wan.dit.model import WanDiT  # noqa: E402


def build(cfg: WanDiTConfig, dtype: torch.dtype, seed: int = 0) -> WanDiT:
    torch.manual_seed(seed)
    model = WanDiT(cfg)
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    model.compute_dtype = dtype
    return model.requires_grad_(False).eval()


def inputs(cfg: WanDiTConfig, grid: tuple[int, int, int], dtype: torch.dtype):
    g = torch.Generator().manual_seed(1)
    f, h, w = grid
    x = torch.randn(1, cfg.in_dim, f, 2 * h, 2 * w, generator=g)
    ctx = [torch.randn(1, cfg.text_len, cfg.text_dim, generator=g) for _ in range(2)]
    return x, torch.tensor([700.0]), ctx


@torch.no_grad()
def measure_dtype(cfg: WanDiTConfig, grid, dtype: torch.dtype, repeats: int, options: CompileOptions,
                  clock: str = "wall") -> dict:
    model = build(cfg, dtype)
    x, t, ctx = inputs(cfg, grid, dtype)
    state = model.prepare(x, t, ctx[0])
    block = model.blocks[0]
    block_args = (state.e0, state.context, state.n_img, state.freqs, model._attn, None)

    def eager_block():
        return block(state.x, *block_args)

    def step():
        return model(x, t, ctx[0]), model(x, t, ctx[1])

    def eager_step():  # the model without its runner for this call
        runner = model.__dict__.pop(ATTR, None)
        try:
            return step()
        finally:
            if runner is not None:
                model.__dict__[ATTR] = runner

    with compiled_models([model], options, x.device) as runner:
        rss_before = rss_kb("VmHWM")
        start = time.perf_counter()
        step()  # compiles
        first = time.perf_counter() - start
        rss_growth = (rss_kb("VmHWM") - rss_before) / 2 ** 20
        eager_step()  # (the eager path's warm-up)
        times = interleaved_medians({"eager block": eager_block, "block": lambda: runner.call(
            block, state.x, *block_args), "eager step": eager_step, "step": step}, repeats, clock=clock, warm=False)
        failed = runner.failed if runner is not None else "compile unavailable"
    eager = {"block": times["eager block"], "step": times["eager step"]}
    compiled = {"block": times["block"], "step": times["step"]}
    return {"eager": eager, "compiled": compiled, "first": first, "rss": rss_growth, "failed": failed}


def recompile_count(steps: int, options: CompileOptions) -> tuple[int, int]:
    """(graphs compiled in the first step, graphs compiled after it) over a tiny A14B run with TeaCache + LoRA."""
    from torch._dynamo.utils import counters

    from wan.cache import TeaCache
    from wan.conditioning import TextEmbeds
    from wan.experts import ExpertSet
    from wan.sampling import SamplerSettings, make_noise, sample
    from wan.variants import VARIANTS
    from wan.weights.patches import LowRank
    from wan.weights.patching import PatchSet, patched

    cfg = WanDiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, freq_dim=32, text_len=16)
    variant = VARIANTS["wan22_t2v_a14b"]

    def expert(role: str, seed: int, strength: float) -> WanDiT:
        model = build(cfg, torch.float32, seed)
        model.variant_info, model.role = variant, role
        g = torch.Generator().manual_seed(seed)
        patches = {f"{n}.weight": (LowRank(torch.randn(m.out_features, 4, generator=g) * 0.1,
                                           torch.randn(4, m.in_features, generator=g) * 0.1, strength / 4),)
                   for n, m in model.blocks.named_modules() if hasattr(m, "weight_patches")}
        patches = {f"blocks.{k}": v for k, v in patches.items()}
        return patched(model, PatchSet("lora", patches), merge=False)

    experts = ExpertSet(expert("high", 0, 1.0), expert("low", 1, 0.6), variant.boundary, options)
    g = torch.Generator().manual_seed(5)
    text = TextEmbeds(torch.randn(1, 9, 32, generator=g), torch.randn(1, 9, 32, generator=g))
    shape = (1, 16, 3, 4, 4)
    torch._dynamo.reset()
    counters.clear()
    seen = []
    sample(experts, torch.zeros(shape), text, SamplerSettings(steps, 5.0, cfg_high=4.0, cfg_low=3.0),
           noise=make_noise(shape, 3), step_cache=TeaCache(0.2, allow_fallback=True),
           callback=lambda info: seen.append(counters["stats"]["unique_graphs"]))
    return seen[0], seen[-1] - seen[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="dim 256, 390 tokens: a quick run")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="steps of the recompile-count run")
    parser.add_argument("--mode", default="default", help="torch.compile mode")
    add_timing_options(parser)
    args = parser.parse_args(argv)
    timing = apply_timing_options(args)
    if args.small:
        cfg, grid = WanDiTConfig(dim=256, ffn_dim=1024, num_heads=2, num_layers=2, text_dim=256, freq_dim=64), (
            2, 15, 13)
    else:
        cfg, grid = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=2), (5, 15, 26)
    options = CompileOptions(mode=args.mode)
    tokens = grid[0] * grid[1] * grid[2]
    print(f"Compiled vs eager: dim {cfg.dim}, ffn {cfg.ffn_dim}, {cfg.num_heads} heads, {tokens} video tokens, "
          f"{cfg.text_len} text tokens; {timing}; torch {torch.__version__}, {options}")
    dtypes = ["fp32", "bf16"] if args.dtype == "both" else [args.dtype]
    for name in dtypes:
        r = measure_dtype(cfg, grid, DTYPES[name], args.repeats, options, args.clock)
        if r["failed"]:
            print(f"  {name}: compile did not run ({r['failed']}); eager only")
        e, c = r["eager"], r["compiled"]
        print(f"  {name} block forward: eager {e['block'] * 1e3:8.1f} ms, compiled {c['block'] * 1e3:8.1f} ms, "
              f"speed-up {e['block'] / c['block']:.2f}x")
        print(f"  {name} whole step (cond + uncond, {cfg.num_layers} blocks): eager {e['step']:.3f} s, compiled "
              f"{c['step']:.3f} s, speed-up {e['step'] / c['step']:.2f}x  (target >= 1.15x for bf16)")
        print(f"  {name} first compiled step: {r['first']:.1f} s ({r['first'] - e['step']:.1f} s over an eager "
              f"step), peak RSS +{r['rss']:.2f} GiB")
    first, after = recompile_count(args.steps, options)
    print(f"  recompiles over a {args.steps}-step A14B run (TeaCache, a LoRA per expert at different strengths): "
          f"{first} graph(s) in the first step, {after} after it (target 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

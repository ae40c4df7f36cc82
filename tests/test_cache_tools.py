"""Tools of the step-cache tests: tiny random Wan DiTs (single and two-expert) and a deliberately plain
denoise loop (Euler flow steps over the official shifted sigma schedule, CFG with cond and uncond calls).

The loop calls the model through a ``call(model, x, t, ctx, step, branch, expert)`` function so that the same loop
drives the uncached model, our caches, and the tests' plain re-implementations of the published algorithms.
"""
from __future__ import annotations

import torch

from oracles.randomize import randomize_
from wan.dit.config import WanDiTConfig
from wan.dit.model import WanDiT
from wan.experts import ExpertSet
from wan.variants import VARIANTS

TEXT_DIM = 32
LATENT = (16, 2, 4, 4)  # C, F, H, W


def tiny_dit(variant: str = "wan21_t2v_1.3b", seed: int = 0, role: str = "single", dim: int = 64,
             layers: int = 2, in_dim: int = 16) -> WanDiT:
    cfg = WanDiTConfig(dim=dim, ffn_dim=2 * dim, num_heads=dim // 32, num_layers=layers, in_dim=in_dim,
                       out_dim=16 if in_dim != 48 else 48, text_dim=TEXT_DIM, freq_dim=32, text_len=16)
    model = WanDiT(cfg, VARIANTS[variant], role)
    return randomize_(model, std=0.15, seed=seed).requires_grad_(False).eval()


def tiny_experts(variant: str = "wan21_t2v_1.3b", **kw) -> ExpertSet:
    if VARIANTS[variant].moe:
        return ExpertSet(tiny_dit(variant, 0, "high", **kw), tiny_dit(variant, 1, "low", **kw))
    return ExpertSet(tiny_dit(variant, 0, **kw))


def sigma_schedule(steps: int, shift: float) -> torch.Tensor:
    """Official UniPC-style sigmas: linspace(0.999, 0, N+1)[:-1], shifted; then a final 0."""
    s = torch.linspace(0.999, 0.0, steps + 1, dtype=torch.float64)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    return torch.cat([s, s.new_zeros(1)])


def plain_model_call(model, x, t, ctx, step, branch, expert):
    return model(x, t, ctx)


def run_loop(experts: ExpertSet, steps: int = 12, shift: float = 5.0, guidance=(5.0, 5.0), batched=False,
             call=plain_model_call, seed: int = 0, latent=LATENT):
    """Euler flow sampling with CFG; returns the final latents [1, C, F, H, W]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((1, *latent), generator=g)
    cond, uncond = torch.randn(1, 7, TEXT_DIM, generator=g), torch.randn(1, 5, TEXT_DIM, generator=g)
    uncond = torch.cat([uncond, uncond.new_zeros(1, 2, TEXT_DIM)], dim=1)  # same length, so they can batch
    sigmas = sigma_schedule(steps, shift)
    for i in range(steps):
        t = sigmas[i] * 1000
        expert, model = experts.expert_for(float(t))
        g_scale = guidance[1] if expert == "high" else guidance[0]
        tt = t.float().reshape(1)
        if batched:
            both = call(model, torch.cat([x, x]), tt.expand(2), torch.cat([cond, uncond]), i, "cond+uncond", expert)
            v_c, v_u = both.chunk(2)
        else:
            v_c = call(model, x, tt, cond, i, "cond", expert)
            v_u = call(model, x, tt, uncond, i, "uncond", expert)
        v = v_u + g_scale * (v_c - v_u)
        x = x + (sigmas[i + 1] - sigmas[i]).float() * v
    return x


def timesteps_of(steps: int, shift: float) -> list[float]:
    return [float(t) for t in sigma_schedule(steps, shift)[:-1] * 1000]


def run_cached(cache, experts, steps=12, shift=5.0, batched=False, **kw):
    """The loop through a step cache: begin, forward for every call, end. Returns (latents, report)."""
    cache.begin(timesteps=timesteps_of(steps, shift), experts=experts)

    def call(model, x, t, ctx, step, branch, expert):
        return cache.forward(model, x, t, ctx, step=step, branch=branch, expert=expert)

    out = run_loop(experts, steps, shift, batched=batched, call=call, **kw)
    return out, cache.end()


def decisions_of(report) -> dict[str, list[int]]:
    """Steps that reused a residual, per branch."""
    return {b: sorted(report.reused.get(b, [])) for b in ("cond", "uncond")}


def test_plain_loop_runs_both_kinds_of_model():
    for variant in ("wan21_t2v_1.3b", "wan22_t2v_a14b"):
        out = run_loop(tiny_experts(variant), steps=3)
        assert out.shape == (1, *LATENT) and torch.isfinite(out).all()

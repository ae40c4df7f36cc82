"""Tools of the step-cache tests: tiny random Wan DiTs (single and two-expert) and a deliberately plain
denoise loop (Euler flow steps over the official shifted sigma schedule, CFG with cond and uncond calls).

The loop calls the model through a ``call(model, x, t, ctx, step, branch, expert)`` function so that the same loop
drives the uncached model, our caches, and the tests' plain re-implementations of the published algorithms.
"""
from __future__ import annotations

import pytest
import torch

from oracles.randomize import randomize_
from wan.dit.config import WanDiTConfig
from wan.dit.model import WanDiT
from wan.experts import ExpertSet
from wan.variants import VARIANTS

TEXT_DIM = 32
LATENT = (16, 2, 4, 4)  # C, F, H, W


@pytest.fixture(autouse=True)
def one_thread():
    """These models are so small that a second thread only adds synchronisation (10x slower on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_dit(variant: str = "wan21_t2v_1.3b", seed: int = 0, role: str = "single", dim: int = 64,
             layers: int = 2, in_dim: int = 16) -> WanDiT:
    cfg = WanDiTConfig(dim=dim, ffn_dim=2 * dim, num_heads=dim // 32, num_layers=layers, in_dim=in_dim,
                       out_dim=16 if in_dim != 48 else 48, text_dim=TEXT_DIM, freq_dim=32, text_len=16)
    model = WanDiT(cfg, VARIANTS[variant], role)
    randomize_(model, std=0.15, seed=seed)
    return smooth_time_response_(model).requires_grad_(False).eval()


@torch.no_grad()
def smooth_time_response_(model: WanDiT, keep_from: float = 0.7) -> WanDiT:
    """Keep only the low-frequency sinusoid inputs of the time embedding, so that the embedding changes from step
    to step about as much as a trained model's does (relative L1 0.005-0.1, the range the published TeaCache
    polynomials were fitted on); with all frequencies, random weights change it by 50-100% per step."""
    w = model.time_embedding[0].weight
    half = w.shape[1] // 2
    low = (torch.arange(half) >= int(half * keep_from)).to(w.dtype)
    w.mul_(torch.cat([low, low]))
    return model


def tiny_experts(variant: str = "wan21_t2v_1.3b", **kw) -> ExpertSet:
    v = VARIANTS[variant]
    if v.moe:
        return ExpertSet(tiny_dit(variant, 0, "high", **kw), tiny_dit(variant, 1, "low", **kw), v.boundary)
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

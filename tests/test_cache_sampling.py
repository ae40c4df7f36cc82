"""The step caches driven by the project's denoise loop (``wan.sampling.sample``, official UniPC schedule).

Oracle: the plain re-implementations of the published forwards (``PaperTeaCache``, ``PaperMagCache`` in the other
step-cache tests), plugged into the same loop through a minimal adapter. Tolerance: identical decisions and
bit-equal latents; threshold 0 bit-equal to the uncached loop.
"""
from __future__ import annotations

import torch

from test_cache_magcache import PaperMagCache, _published_list
from test_cache_teacache import PaperTeaCache
from test_cache_tools import one_thread  # noqa: F401  (autouse fixture)
from test_cache_tools import TEXT_DIM, decisions_of, tiny_experts
from wan.cache import MagCache, TeaCache
from wan.cache.tables import published_coefficients
from wan.conditioning import TextEmbeds
from wan.sampling import SamplerSettings, make_noise, sample

SHAPE = (1, 16, 2, 4, 4)


class PaperAdapter:
    """Lets the loop call a published-style forward as if it were a step cache."""

    def __init__(self, paper):
        self.paper = paper

    def begin(self, timesteps, experts):
        self.timesteps = timesteps

    def forward(self, model, x, t, context, clip_fea=None, y=None, step=0, branch="cond", expert="single"):
        return self.paper(model, x, t, context, step, branch, expert)

    def end(self):
        return None


def _text():
    g = torch.Generator().manual_seed(5)
    return TextEmbeds(torch.randn(1, 9, TEXT_DIM, generator=g), torch.randn(1, 9, TEXT_DIM, generator=g))


def _sample(experts, settings, cache=None):
    result = sample(experts, torch.zeros(SHAPE), _text(), settings, noise=make_noise(SHAPE, 7), step_cache=cache)
    return result.latents, result.cache_report


def _high_steps(experts, settings) -> int:
    probe = PaperAdapter(None)
    probe.paper = lambda model, x, t, ctx, *a: model(x, t, ctx)
    sample(experts, torch.zeros(SHAPE), _text(), settings, noise=make_noise(SHAPE, 7), step_cache=probe)
    return sum(1 for t in probe.timesteps if t >= experts.boundary * 1000)


def test_magcache_through_the_sampling_loop_matches_published_algorithm():
    for variant, settings, thresh in (
            ("wan21_t2v_1.3b", SamplerSettings(steps=50, shift=5.0, cfg_high=5.0), 0.12),
            ("wan22_t2v_a14b", SamplerSettings(steps=40, shift=12.0, cfg_high=4.0, cfg_low=3.0), 0.06)):
        experts = tiny_experts(variant)
        split = _high_steps(experts, settings) if experts.is_moe else None
        paper = PaperMagCache(_published_list(variant), settings.steps, thresh, 2, 0.2, split)
        expected, _ = _sample(experts, settings, PaperAdapter(paper))
        out, report = _sample(experts, settings, MagCache(thresh, 2, 0.2))
        assert paper.reused["cond"] and decisions_of(report) == paper.reused
        assert torch.equal(out, expected)


def test_teacache_through_the_sampling_loop_matches_published_algorithm():
    experts = tiny_experts()
    settings = SamplerSettings(steps=20, shift=5.0, cfg_high=5.0, solver="dpm++")
    coeffs = published_coefficients()["wan21_t2v_1.3b"].coefficients["e"]
    paper = PaperTeaCache(coeffs, 0.3, False, settings.steps)
    expected, _ = _sample(experts, settings, PaperAdapter(paper))
    out, report = _sample(experts, settings, TeaCache(0.3, mode="e"))
    assert paper.reused["cond"] and decisions_of(report) == paper.reused
    assert torch.equal(out, expected)


def test_threshold_zero_through_the_sampling_loop_is_the_uncached_run():
    experts = tiny_experts("wan22_t2v_a14b")
    settings = SamplerSettings(steps=8, shift=12.0, cfg_high=4.0, cfg_low=3.0)
    expected, _ = _sample(experts, settings)
    for cache in (MagCache(0.0), TeaCache(0.0, allow_fallback=True)):
        out, report = _sample(experts, settings, cache)
        assert torch.equal(out, expected) and report.reused == {} and report.speedup == 1.0


def test_manual_switch_step_moves_the_curve_split():
    experts = tiny_experts("wan22_t2v_a14b")
    settings = SamplerSettings(steps=20, shift=12.0, cfg_high=4.0, cfg_low=3.0, switch_step=8)
    cache = MagCache(0.06, 2, 0.2)
    _, report = _sample(experts, settings, cache)
    assert cache._split == 8 and {8, 9} <= set(report.computed["cond"])

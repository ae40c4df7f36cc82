"""TeaCache against a plain re-implementation of the published TeaCache4Wan2.1 forward (ali-vilab/TeaCache).

Oracle: ``PaperTeaCache`` below, written the way the authors' ``teacache_forward`` is: one call counter over the
interleaved cond/uncond calls (even = cond, odd = uncond), ``ret_steps`` = 1·2 or 5·2 calls, ``cutoff_steps`` =
2·steps − 2 or 2·steps, rescaled relative L1 of ``e``/``e0`` accumulated per branch. Its one addition is this
project's Wan 2.2 rule: at the expert switch the next cond and uncond calls compute and restart.
Tolerance: identical compute/reuse decisions; unbatched outputs bit-equal (torch.equal); batched CFG outputs
within 1e-4·max|ref| + 1e-5 (batching changes the float rounding of the blocks, not the decisions).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_cache_tools import one_thread  # noqa: F401  (autouse fixture)
from test_cache_tools import decisions_of, run_cached, run_loop, timesteps_of, tiny_experts
from wan.cache import TeaCache
from wan.cache.tables import published_coefficients


class PaperTeaCache:
    def __init__(self, coefficients, thresh, use_ret_steps, steps, switch_call=None):
        self.coefficients, self.thresh, self.use_ret_steps = coefficients, thresh, use_ret_steps
        self.cnt, self.num_steps = 0, steps * 2
        self.ret_steps = 5 * 2 if use_ret_steps else 1 * 2
        self.cutoff_steps = steps * 2 if use_ret_steps else steps * 2 - 2
        self.accumulated_even = self.accumulated_odd = 0
        self.previous_even = self.previous_odd = None
        self.residual_even = self.residual_odd = None
        self.switch_call = switch_call
        self.reused = {"cond": [], "uncond": []}

    def __call__(self, model, x, t, ctx, step, branch, expert):
        s = model.prepare(x, t, ctx)
        modulated_inp = s.e0 if self.use_ret_steps else s.e
        rescale = np.poly1d(self.coefficients)
        fresh = self.switch_call is not None and self.cnt in (self.switch_call, self.switch_call + 1)
        if self.cnt % 2 == 0:
            assert branch == "cond"
            if self.cnt < self.ret_steps or self.cnt >= self.cutoff_steps or fresh:
                should_calc = True
                self.accumulated_even = 0
            else:
                prev = self.previous_even
                self.accumulated_even += rescale(((modulated_inp - prev).abs().mean() / prev.abs().mean()).item())
                should_calc = not self.accumulated_even < self.thresh
                if should_calc:
                    self.accumulated_even = 0
            self.previous_even = modulated_inp.clone()
        else:
            assert branch == "uncond"
            if self.cnt < self.ret_steps or self.cnt >= self.cutoff_steps or fresh:
                should_calc = True
                self.accumulated_odd = 0
            else:
                prev = self.previous_odd
                self.accumulated_odd += rescale(((modulated_inp - prev).abs().mean() / prev.abs().mean()).item())
                should_calc = not self.accumulated_odd < self.thresh
                if should_calc:
                    self.accumulated_odd = 0
            self.previous_odd = modulated_inp.clone()
        x = s.x
        if should_calc:
            ori_x = x.clone()
            x = model.run_blocks(s)
            if self.cnt % 2 == 0:
                self.residual_even = x - ori_x
            else:
                self.residual_odd = x - ori_x
        else:
            self.reused[branch].append(step)
            x = x + (self.residual_even if self.cnt % 2 == 0 else self.residual_odd)
        self.cnt += 1
        if self.cnt >= self.num_steps:
            self.cnt = 0
        return model.finish(x, s)


def _close(a, b):
    return (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-5


def _check_against_paper(variant, mode, thresh, coeff_key, steps, shift, **cache_kw):
    experts = tiny_experts(variant)
    switch = None
    if experts.is_moe:
        switch = 2 * sum(1 for t in timesteps_of(steps, shift) if t >= experts.boundary * 1000)
    paper = PaperTeaCache(published_coefficients()[coeff_key].coefficients[mode], thresh, mode == "e0", steps, switch)
    expected = run_loop(experts, steps, shift, call=paper)
    assert paper.reused["cond"] and len(paper.reused["cond"]) < steps - 2, "threshold gives no mixed decisions"
    out, report = run_cached(TeaCache(thresh, mode=mode, **cache_kw), experts, steps, shift)
    assert decisions_of(report) == paper.reused
    assert torch.equal(out, expected)
    out_b, report_b = run_cached(TeaCache(thresh, mode=mode, **cache_kw), experts, steps, shift, batched=True)
    assert decisions_of(report_b) == paper.reused
    assert _close(out_b, expected)
    return report


@pytest.mark.parametrize("mode,thresh", [("e", 0.12), ("e", 0.3), ("e0", 0.15)])
def test_teacache_single_model_matches_published_algorithm(mode, thresh):
    report = _check_against_paper("wan21_t2v_1.3b", mode, thresh, "wan21_t2v_1.3b", steps=20, shift=5.0)
    assert report.speedup > 1.0 and 0 in report.computed["cond"]


@pytest.mark.parametrize("mode,thresh", [("e", 0.1), ("e0", 0.3)])
def test_teacache_two_experts_matches_published_algorithm_with_switch_reset(mode, thresh):
    """Wan 2.2 T2V-A14B has no published set: the 14B set is used only because allow_fallback is on."""
    report = _check_against_paper("wan22_t2v_a14b", mode, thresh, "wan21_t2v_14b", steps=16, shift=12.0,
                                  allow_fallback=True)
    high_steps = sum(1 for t in timesteps_of(16, 12.0) if t >= 875)
    assert high_steps in report.computed["cond"] and high_steps in report.computed["uncond"]


def test_teacache_threshold_zero_is_the_uncached_run_bit_for_bit():
    for variant, kw in (("wan21_t2v_1.3b", {}), ("wan22_t2v_a14b", {"allow_fallback": True})):
        experts = tiny_experts(variant)
        expected = run_loop(experts, steps=10)
        for mode in ("e", "e0"):
            out, report = run_cached(TeaCache(0.0, mode=mode, **kw), experts, steps=10)
            assert report.reused == {} and report.speedup == 1.0
            assert torch.equal(out, expected)


def test_teacache_start_and_end_steps_bound_the_skipping():
    experts = tiny_experts()
    _, report = run_cached(TeaCache(0.5, mode="e", start_step=6, end_step=12), experts, steps=16)
    reused = decisions_of(report)["cond"]
    assert reused and min(reused) >= 6 and max(reused) < 12
    assert decisions_of(report)["uncond"] == reused


def test_one_cache_object_serves_many_runs():
    experts = tiny_experts()
    cache = TeaCache(0.3, mode="e")
    first = run_cached(cache, experts, steps=12)
    second = run_cached(cache, experts, steps=12)
    assert torch.equal(first[0], second[0]) and first[1].reused == second[1].reused

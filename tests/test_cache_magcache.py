"""MagCache against a plain re-implementation of the published MagCache4Wan2.1 / MagCache4Wan2.2 forward.

Oracle: ``PaperMagCache`` below, written the way the authors' ``magcache_forward`` is: the curve padded with
[1.0, 1.0] and, for other step counts, resampled by nearest index (cond and uncond separately); one call counter over
the interleaved cond/uncond calls; the retention rules of the 2.1 code (one model) and of the 2.2 code (T2V and I2V
A14B around ``split_step``); accumulated ratio, skip count and error per branch. Its one addition is this project's
Wan 2.2 rule: at the expert switch the accumulators of each branch restart (the published code keeps them).
The curves are the published lists as printed in the authors' scripts, not read from our data file.
Tolerance: identical decisions; unbatched outputs bit-equal; batched CFG within 1e-4·max|ref| + 1e-5.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_cache_tools import one_thread  # noqa: F401  (autouse fixture)
from test_cache_tools import decisions_of, run_cached, run_loop, timesteps_of, tiny_experts
from wan.cache import MagCache
from wan.cache.magcache import calibration_switch_step, run_ratios
from wan.cache.tables import published_curves

# First and last entries of the published lists (MagCache4Wan2.1/2.2 magcache_generate.py), to pin our data file.
PUBLISHED_ENDS = {
    "wan21_t2v_1.3b": ([1.0124, 1.02213], [0.81838, 0.81939]),
    "wan22_t2v_a14b": ([1.00124, 1.00155], [0.80263, 0.80181]),
    "wan22_i2v_a14b": ([0.99191, 0.99144], [0.79823, 0.79902]),
}


def nearest_interp(src_array, target_length):
    src_length = len(src_array)
    if target_length == 1:
        return np.array([src_array[-1]])
    scale = (src_length - 1) / (target_length - 1)
    mapped_indices = np.round(np.arange(target_length) * scale).astype(int)
    return src_array[mapped_indices]


class PaperMagCache:
    def __init__(self, mag_ratios, sample_steps, thresh, K, retention_ratio, split_steps=None, mode="t2v"):
        self.cnt, self.num_steps = 0, sample_steps * 2
        self.split_step = None if split_steps is None else split_steps * 2
        self.mode, self.thresh, self.K, self.retention_ratio = mode, thresh, K, retention_ratio
        self.accumulated_err, self.accumulated_steps, self.accumulated_ratio = [0.0, 0.0], [0, 0], [1.0, 1.0]
        self.residual_cache = [None, None]
        self.mag_ratios = np.array([1.0] * 2 + list(mag_ratios))
        if len(self.mag_ratios) != sample_steps * 2:
            con = nearest_interp(self.mag_ratios[0::2], sample_steps)
            ucon = nearest_interp(self.mag_ratios[1::2], sample_steps)
            self.mag_ratios = np.concatenate([con.reshape(-1, 1), ucon.reshape(-1, 1)], axis=1).reshape(-1)
        self.reused = {"cond": [], "uncond": []}

    def __call__(self, model, x, t, ctx, step, branch, expert):
        assert branch == ("cond", "uncond")[self.cnt % 2]
        s = model.prepare(x, t, ctx)
        use_magcache, skip_forward = True, False
        if self.split_step is not None:
            if self.cnt in (self.split_step, self.split_step + 1):  # this project's rule: restart at the switch
                self.accumulated_err[self.cnt % 2] = 0
                self.accumulated_steps[self.cnt % 2] = 0
                self.accumulated_ratio[self.cnt % 2] = 1.0
            if self.mode == "i2v":
                if self.cnt < int(self.split_step + (self.num_steps - self.split_step) * self.retention_ratio):
                    use_magcache = False
            else:
                if self.cnt < int(self.split_step * self.retention_ratio) or (
                        self.cnt <= ((self.num_steps - self.split_step) * self.retention_ratio + self.split_step)
                        and self.cnt >= self.split_step):
                    use_magcache = False
        elif self.cnt < int(self.num_steps * self.retention_ratio):
            use_magcache = False
        if use_magcache:
            b = self.cnt % 2
            self.accumulated_ratio[b] = self.accumulated_ratio[b] * self.mag_ratios[self.cnt]
            self.accumulated_steps[b] += 1
            self.accumulated_err[b] += np.abs(1 - self.accumulated_ratio[b])
            if self.accumulated_err[b] < self.thresh and self.accumulated_steps[b] <= self.K:
                skip_forward = True
                residual_x = self.residual_cache[b]
            else:
                self.accumulated_err[b], self.accumulated_steps[b], self.accumulated_ratio[b] = 0, 0, 1.0
        ori_x = s.x
        if skip_forward:
            self.reused[branch].append(step)
            x = ori_x + residual_x
        else:
            x = model.run_blocks(s)
            residual_x = x - ori_x
        self.residual_cache[self.cnt % 2] = residual_x
        self.cnt += 1
        if self.cnt >= self.num_steps:
            self.cnt = 0
            self.accumulated_ratio, self.accumulated_err, self.accumulated_steps = [1.0, 1.0], [0.0, 0.0], [0, 0]
        return model.finish(x, s)


def _published_list(key):
    """The list as the authors' scripts print it: interleaved, without the [1.0, 1.0] padding."""
    curve = published_curves()[key]
    return [r for pair in zip(curve.cond[1:], curve.uncond[1:]) for r in pair]


def _close(a, b):
    return (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-5


def _check_against_paper(variant, steps, shift, thresh, K, R, mode="t2v"):
    experts = tiny_experts(variant)
    split = None
    if experts.is_moe:
        split = sum(1 for t in timesteps_of(steps, shift) if t >= experts.boundary * 1000)
    paper = PaperMagCache(_published_list(variant), steps, thresh, K, R, split, mode)
    expected = run_loop(experts, steps, shift, call=paper)
    assert paper.reused["cond"], "these settings reuse nothing: the comparison would be empty"
    out, report = run_cached(MagCache(thresh, K, R), experts, steps, shift)
    assert decisions_of(report) == paper.reused
    assert torch.equal(out, expected)
    out_b, report_b = run_cached(MagCache(thresh, K, R), experts, steps, shift, batched=True)
    assert decisions_of(report_b) == paper.reused
    assert _close(out_b, expected)
    return report, split


def test_published_curves_are_the_authors_lists():
    for key, (head, tail) in PUBLISHED_ENDS.items():
        ratios = _published_list(key)
        assert ratios[:2] == head and ratios[-2:] == tail and len(ratios) == 2 * (published_curves()[key].steps - 1)


@pytest.mark.parametrize("steps,thresh,K,R", [(50, 0.12, 2, 0.2), (50, 0.24, 4, 0.1), (30, 0.12, 2, 0.25)])
def test_magcache_single_model_matches_published_algorithm(steps, thresh, K, R):
    """30 steps resamples the 50-step curve; R 0.25 makes the retained calls end between a cond and an uncond."""
    report, _ = _check_against_paper("wan21_t2v_1.3b", steps, 5.0, thresh, K, R)
    assert report.speedup > 1.3


def test_magcache_t2v_a14b_matches_published_algorithm():
    report, split = _check_against_paper("wan22_t2v_a14b", 40, 12.0, 0.06, 2, 0.2)
    assert split == 26  # the official 40-step shift-12 run: 26 high-noise steps
    assert {split, split + 1, split + 2} <= set(report.computed["cond"]) & set(report.computed["uncond"])


def test_magcache_i2v_a14b_computes_every_high_noise_step_like_the_published_code():
    report, split = _check_against_paper("wan22_i2v_a14b", 40, 5.0, 0.06, 2, 0.1, mode="i2v")
    assert split == 15
    assert all(s >= split for s in report.reused["cond"] + report.reused["uncond"])


def test_magcache_threshold_zero_is_the_uncached_run_bit_for_bit():
    for variant in ("wan21_t2v_1.3b", "wan22_t2v_a14b"):
        experts = tiny_experts(variant)
        expected = run_loop(experts, steps=12)
        out, report = run_cached(MagCache(0.0, 2, 0.2), experts, steps=12)
        assert report.reused == {} and torch.equal(out, expected)


def _dip(values) -> int:
    """The step whose ratio falls furthest below the mean of its two neighbours (the switch, in 2.2 curves)."""
    v = np.asarray(values)
    return int(np.argmin(v[1:-1] - (v[:-2] + v[2:]) / 2)) + 1


def test_two_expert_curves_are_resampled_per_expert():
    """At other step counts each expert's part of the curve maps onto that expert's steps: the large ratio change
    the authors measured at the switch stays on the first low-noise step."""
    for key, shift, steps in (("wan22_t2v_a14b", 12.0, 20), ("wan22_i2v_a14b", 5.0, 24), ("wan22_t2v_a14b", 8.0, 40)):
        curve = published_curves()[key]
        cal = calibration_switch_step(curve)
        assert _dip(curve.cond) == _dip(curve.uncond) == cal  # the authors' switch spike sits where our rule says
        split = sum(1 for t in timesteps_of(steps, shift) if t >= 1000 * {"wan22_t2v_a14b": 0.875}.get(key, 0.9))
        cond, uncond = run_ratios(curve, steps, split)
        assert len(cond) == steps and _dip(cond) == split and _dip(uncond) == split


def test_report_counts_and_speedup():
    experts = tiny_experts()
    _, report = run_cached(MagCache(0.12, 2, 0.2), experts, steps=20)
    assert report.model_calls == 40
    assert report.computed_calls + sum(map(len, report.reused.values())) == 40
    assert report.speedup == pytest.approx(40 / report.computed_calls)
    assert "MagCache" in report.summary() and "wan21_t2v_1.3b" in report.policy

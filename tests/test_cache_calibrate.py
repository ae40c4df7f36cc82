"""Calibration: the recorder's statistics and fits against a plain recording of the same run, the written file
loads into TeaCache and MagCache (incl. a Wan 2.2 A14B pair, which has no published TeaCache set), and the CLI.

Oracle: ``plain_recording`` below — its own pass over the loop that runs the model's pieces, keeps the previous
signal and residual per branch and computes the relative L1 changes and magnitude ratios directly, then
``numpy.polyfit(x, y, 4)`` as the TeaCache authors do. Tolerance: statistics to 1e-6 relative, polynomial
coefficients to 1e-6 relative (the same float64 fit on the same numbers).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from test_cache_tools import one_thread  # noqa: F401  (autouse fixture)
from test_cache_tools import run_cached, run_loop, tiny_dit, tiny_experts
from wan.cache import MagCache, TeaCache
from wan.cache.calibrate import main
from wan.cache.calibration import CalibrationRecorder, calibrate, write_calibration

STEPS = 12


def plain_recording(experts, steps):
    """[(step, branch, e_change, e0_change, residual_change, magnitude_ratio)] computed directly."""
    last, rows = {}, []

    def call(model, x, t, ctx, step, branch, expert):
        s = model.prepare(x, t, ctx)
        out = model.run_blocks(s)
        res = out - s.x
        rel = lambda a, b: ((a - b).abs().mean() / b.abs().mean()).item()  # noqa: E731
        if branch in last:
            p_expert, p_e, p_e0, p_res = last[branch]
            same = p_expert == expert
            rows.append((step, branch, rel(s.e, p_e) if same else None, rel(s.e0, p_e0) if same else None,
                         rel(res, p_res) if same else None, (res.norm(dim=-1) / p_res.norm(dim=-1)).mean().item()))
        last[branch] = (expert, s.e, s.e0, res)
        return model.finish(out, s)

    run_loop(experts, steps, call=call)
    return rows


@pytest.mark.parametrize("variant", ["wan21_t2v_1.3b", "wan22_t2v_a14b"])
def test_recorder_and_fit_match_a_plain_recording(variant):
    experts = tiny_experts(variant)
    expected = plain_recording(experts, STEPS)
    result = calibrate(experts, lambda cache: run_cached(cache, experts, STEPS))
    got = [(c.step, c.branch, c.e_change, c.e0_change, c.residual_change, c.magnitude_ratio)
           for c in result.changes if c.magnitude_ratio is not None]
    assert [g[:2] for g in got] == [r[:2] for r in expected]
    for g, r in zip(got, expected):
        for a, b in zip(g[2:], r[2:]):
            assert (a is None and b is None) or a == pytest.approx(b, rel=1e-6)
    pairs = [r for r in expected if r[4] is not None]
    for mode, col in (("e", 2), ("e0", 3)):
        fit = np.polyfit([r[col] for r in pairs], [r[4] for r in pairs], 4)
        assert np.allclose(result.teacache_coefficients()[mode], fit, rtol=1e-6)
    cond_ratio_step1 = [r[5] for r in expected if r[:2] == (1, "cond")][0]
    assert result.magcache_ratios()[0] == round(cond_ratio_step1, 5)
    if experts.is_moe:
        assert result.switch_step is not None and 0 < result.switch_step < STEPS


def test_calibration_file_loads_into_both_caches(tmp_path):
    experts = tiny_experts("wan22_t2v_a14b")
    path = write_calibration(calibrate(experts, lambda c: run_cached(c, experts, STEPS)), tmp_path / "a14b.json")
    data = json.loads(path.read_text())
    assert set(data["coefficients"]["wan22_t2v_a14b"]) == {"e", "e0"}
    assert len(data["curves"]["wan22_t2v_a14b"]["ratios"]) == 2 * (STEPS - 1)
    _, report = run_cached(TeaCache(0.2, coefficients=str(path)), experts, STEPS)  # no fallback needed
    assert str(path) in report.policy or "wan22_t2v_a14b" in report.policy
    _, report = run_cached(MagCache(0.2, curve=str(path)), experts, STEPS)
    assert report.model_calls == 2 * STEPS
    other = tiny_experts("wan21_t2v_1.3b")
    with pytest.raises(ValueError, match=r"made for wan22_t2v_a14b, but the model is wan21_t2v_1.3b"):
        TeaCache(0.2, coefficients=str(path)).begin([900.0], other)


def test_recorder_needs_runs():
    with pytest.raises(ValueError, match=r"recorded no model calls"):
        CalibrationRecorder().result()


def test_cli_writes_a_file_from_a_model_file(tmp_path):
    model = tiny_dit("wan21_t2v_1.3b", layers=1)
    dit_file = tmp_path / "tiny_dit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dit_file))
    out = main(["--dit", str(dit_file), "--random-text", "--size", "32*32", "--frames", "5", "--steps", "8",
                "--shift", "5", "--seeds", "0", "1", "--name", "my_model", "--out", str(tmp_path / "c.json")])
    data = json.loads(out.read_text())
    assert list(data["coefficients"]) == ["my_model"] and len(data["curves"]["my_model"]["ratios"]) == 14
    assert "2 run(s) of 8 steps" in data["_about"]

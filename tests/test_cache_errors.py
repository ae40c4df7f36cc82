"""Step caches refuse bad settings with clear messages: models without published data (unless a fallback is asked
for, then a warning), data of another variant, thresholds and options out of range, protocol misuse; the nodes."""
from __future__ import annotations

import importlib
import logging
import math

import pytest
import torch

from test_cache_tools import one_thread  # noqa: F401  (autouse fixture)
from test_cache_tools import run_cached, tiny_experts
from wan.cache import MagCache, TeaCache
from wan.cache.tables import pick_key, published_coefficients, published_curves
from wan.errors import InputError


@pytest.mark.parametrize("variant", ["wan22_t2v_a14b", "wan22_i2v_a14b", "wan22_ti2v_5b", "wan21_flf2v_14b"])
def test_teacache_without_published_coefficients_is_an_error(variant):
    with pytest.raises(InputError, match=rf"no published TeaCache coefficients for {variant}.*calibrate.*"
                                         r"allow_fallback"):
        TeaCache(0.2).begin([900.0, 500.0], tiny_experts(variant, layers=1))


def test_teacache_fallback_only_when_asked_and_with_a_warning(caplog):
    experts = tiny_experts("wan22_t2v_a14b", layers=1)
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        _, report = run_cached(TeaCache(0.2, allow_fallback=True), experts, steps=4)
    assert "nearest published set is 'wan21_t2v_14b'" in caplog.text and "allow_fallback is on" in caplog.text
    assert "wan21_t2v_14b" in report.policy


def test_teacache_named_set_of_another_variant():
    experts = tiny_experts(layers=1)
    with pytest.raises(InputError, match=r"'wan21_t2v_14b' were made for wan21_t2v_14b, but the model is "
                                         r"wan21_t2v_1.3b"):
        TeaCache(0.2, coefficients="wan21_t2v_14b").begin([900.0], experts)
    with pytest.raises(InputError, match=r"'nope' do not exist; choose 'auto' or one of"):
        TeaCache(0.2, coefficients="nope").begin([900.0], experts)


def test_magcache_curve_of_another_variant_is_an_error_in_begin():
    experts = tiny_experts("wan22_t2v_a14b", layers=1)
    cache = MagCache(0.06, curve="wan21_t2v_1.3b")  # accepted here: the model is known only in begin
    with pytest.raises(InputError, match=r"MagCache curves 'wan21_t2v_1.3b' were made for wan21_t2v_1.3b, but "
                                         r"the model is wan22_t2v_a14b"):
        cache.begin([900.0, 500.0], experts)
    MagCache(0.06, curve="wan22_t2v_a14b").begin([900.0, 500.0], experts)


def test_magcache_flf2v_has_no_curve_unless_fallback():
    experts = tiny_experts("wan21_flf2v_14b", layers=1)
    with pytest.raises(InputError, match=r"no published MagCache curves for wan21_flf2v_14b"):
        MagCache(0.12).begin([900.0], experts)
    MagCache(0.12, allow_fallback=True).begin([900.0], experts)


@pytest.mark.parametrize("make,match", [
    (lambda: TeaCache(-0.1), r"TeaCache threshold -0.1 is out of range"),
    (lambda: TeaCache(1.5), r"TeaCache threshold 1.5 is out of range"),
    (lambda: TeaCache(math.nan), r"TeaCache threshold nan is out of range"),
    (lambda: TeaCache("fast"), r"TeaCache threshold must be a number"),
    (lambda: TeaCache(0.2, mode="x"), r"TeaCache mode 'x' is unknown"),
    (lambda: TeaCache(0.2, start_step=-2), r"start_step -2 must be a whole number"),
    (lambda: MagCache(-0.01), r"MagCache threshold -0.01 is out of range"),
    (lambda: MagCache(0.1, K=-1), r"MagCache K -1 must be a whole number from 0 to 20"),
    (lambda: MagCache(0.1, K=2.5), r"MagCache K 2.5"),
    (lambda: MagCache(0.1, retention_ratio=1.0),
     r"retention_ratio 1.0 is out of range: it must be at least 0 and below 1"),
])
def test_settings_out_of_range(make, match):
    with pytest.raises(InputError, match=match):
        make()


def test_teacache_window_must_leave_steps():
    with pytest.raises(InputError, match=r"end_step 3 must be after start_step 5"):
        TeaCache(0.2, mode="e0", end_step=3).begin([900.0] * 10, tiny_experts(layers=1))


def test_protocol_misuse():
    experts = tiny_experts(layers=1)
    model, x, ctx = experts.high, torch.randn(1, 16, 1, 2, 2), torch.randn(1, 3, 32)
    cache = MagCache(0.1)
    with pytest.raises(InputError, match=r"call begin\(timesteps, experts\) before the first forward"):
        cache.forward(model, x, torch.tensor([900.0]), ctx)
    cache.begin([900.0, 800.0], experts)
    with pytest.raises(InputError, match=r"branch 'both' is unknown; use 'cond', 'uncond' or 'cond\+uncond'"):
        cache.forward(model, x, torch.tensor([900.0]), ctx, branch="both")
    with pytest.raises(InputError, match=r"needs an even batch"):
        cache.forward(model, x, torch.tensor([900.0]), ctx, branch="cond+uncond")
    with pytest.raises(InputError, match=r"step 2 is outside this run of 2 steps"):
        cache.forward(model, x, torch.tensor([900.0]), ctx, step=2)
    with pytest.raises(InputError, match=r"no timesteps"):
        cache.begin([], experts)


def test_sub_sets_are_chosen_by_output_area_and_start_image():
    table = published_coefficients()
    assert pick_key(table, "wan21_i2v_14b", area=832 * 480) == "wan21_i2v_14b_480p"
    assert pick_key(table, "wan21_i2v_14b", area=1280 * 720) == "wan21_i2v_14b_720p"
    curves = published_curves()
    assert pick_key(curves, "wan22_ti2v_5b", with_image=True) == "wan22_ti2v_5b_i2v"
    assert pick_key(curves, "wan22_ti2v_5b", with_image=False) == "wan22_ti2v_5b_t2v"


def _nodes(pack):
    return importlib.import_module(pack.__name__ + ".nodes.cache")


def test_nodes_make_policies_and_refuse_bad_values(pack):
    nodes = _nodes(pack)
    for node_id, cls in nodes.NODES.items():
        assert node_id.startswith("WanExperts") and cls.RETURN_TYPES == ("WAN_STEP_CACHE",)
        for section in cls.INPUT_TYPES().values():
            assert all(spec[1].get("tooltip") for spec in section.values())
    (tea,) = nodes.WanExpertsTeaCache().make(0.1, "e0", -1, 20, "auto", False)
    assert tea.mode == "e0" and tea.start_step is None and tea.end_step == 20
    (mag,) = nodes.WanExpertsMagCache().make(0.06, 2, 0.4, "wan22_t2v_a14b", False)
    assert mag.K == 2 and mag.retention_ratio == 0.4
    with pytest.raises(ValueError, match=r"MagCache threshold 3.0 is out of range"):
        nodes.WanExpertsMagCache().make(3.0)
    with pytest.raises(ValueError, match=r"'missing.json' is not available: pick a file from the list"):
        nodes.WanExpertsTeaCache().make(0.1, coefficients_file="missing.json")


def test_auto_picks_the_sub_set_from_the_first_call():
    """TI2V-5B: a per-token timestep of 0 on the start frame means image-to-video; 2.1 I2V: 480p by output area."""
    experts = tiny_experts("wan22_ti2v_5b", layers=1, in_dim=48)
    x, ctx = torch.randn(1, 48, 2, 4, 4), torch.randn(1, 3, 32)
    for t, expected in ((torch.full((1, 8), 900.0), "wan22_ti2v_5b_t2v"),
                        (torch.cat([torch.zeros(1, 4), torch.full((1, 4), 900.0)], 1), "wan22_ti2v_5b_i2v")):
        cache = MagCache(0.06)
        cache.begin([900.0, 800.0], experts)
        assert cache.forward(experts.high, x, t, ctx).shape == x.shape
        assert cache.data.name == expected
    experts = tiny_experts("wan21_i2v_14b", layers=1)
    cache = TeaCache(0.26)
    cache.begin([900.0], experts)
    cache.forward(experts.high, torch.randn(1, 16, 1, 2, 2), torch.tensor([900.0]), ctx)
    assert cache.set.name == "wan21_i2v_14b_480p" and cache.end().computed == {"cond": [0]}

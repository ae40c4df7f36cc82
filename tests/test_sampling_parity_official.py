"""End-to-end sampling parity with the official Wan 2.2 generation loops (PyPI ``wan22``: text2video,
image2video, textimage2video ``generate``), reproduced step by step in ``test_sampling_models.official_loop``
with the official schedulers, official WanModel and official VAEs at tiny random size, float32 on CPU. Our side
loads the same weights through ``wan.dit.loader.load_dit`` and runs ``wan.sampling.sample``.
Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
import pytest
import torch

from test_sampling_models import (RawVAE, assert_close, official_dit, official_i2v_y, official_loop, official_stats,
                                  official_vae21, official_vae22, ours_from_official, prompts)
from wan.experts import ExpertSet
from wan.sampling import SamplerSettings, concat_condition, first_frame_condition, make_noise, sample

SEED = 42


def official_noise(c, t, h, w):
    g = torch.Generator(device="cpu").manual_seed(SEED)
    return torch.randn(c, t, h, w, dtype=torch.float32, generator=g)


def run_ours(experts, shape, text, settings, image_cond=None):
    noise = make_noise(shape, SEED)
    assert torch.equal(noise[0], official_noise(*shape[1:]))  # the official script's noise
    roles = []
    result = sample(experts, torch.zeros(shape), text, settings, noise=noise, image_cond=image_cond,
                    callback=lambda info: roles.append(info.expert))
    assert roles == result.experts
    return result


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
def test_single_t2v(tmp_path, solver):
    """Oracle: text2video loop, one model, FlowUniPCMultistepScheduler / FlowDPMSolverMultistepScheduler."""
    ref_model = official_dit("t2v", 1)
    experts = ExpertSet(ours_from_official(ref_model, tmp_path / "t2v.safetensors"))
    pos, neg, text = prompts()
    shape = (1, 16, 2, 4, 4)
    ref = official_loop({"single": ref_model}, official_noise(*shape[1:]), pos, neg, 4, 5.0, solver, (5.0, 5.0))
    ours = run_ours(experts, shape, text, SamplerSettings(steps=4, shift=5.0, solver=solver, cfg_high=5.0))
    assert_close(ours.latents[0], ref)


def test_a14b_t2v_two_experts(tmp_path):
    """Oracle: text2video loop with high/low experts, boundary 0.875, guidance (low 3.0, high 4.0), shift 12."""
    ref_high, ref_low = official_dit("t2v", 1), official_dit("t2v", 2)
    experts = ExpertSet(ours_from_official(ref_high, tmp_path / "high.safetensors", "high"),
                        ours_from_official(ref_low, tmp_path / "low.safetensors", "low"), boundary=0.875)
    pos, neg, text = prompts()
    shape = (1, 16, 2, 4, 4)
    ref = official_loop({"high": ref_high, "low": ref_low}, official_noise(*shape[1:]), pos, neg, 4, 12.0,
                        guide=(3.0, 4.0), boundary=0.875)
    ours = run_ours(experts, shape, text, SamplerSettings(steps=4, shift=12.0, cfg_high=4.0, cfg_low=3.0))
    assert ours.experts == ["high"] * 3 + ["low"] * 1
    assert_close(ours.latents[0], ref)


def test_a14b_i2v_two_experts(tmp_path):
    """Oracle: image2video loop (mask + official VAE latent as y), boundary 0.9, guidance (3.5, 3.5), shift 5."""
    ref_high, ref_low = official_dit("i2v", 3), official_dit("i2v", 4)
    experts = ExpertSet(ours_from_official(ref_high, tmp_path / "high.safetensors", "high"),
                        ours_from_official(ref_low, tmp_path / "low.safetensors", "low"))
    vae = official_vae21()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(9)) * 2 - 1
    frames = 5
    y_ref = official_i2v_y(vae, image, frames)
    cond = concat_condition(RawVAE(vae, 16, (4, 8, 8)), image[None], frames)
    assert_close(cond.y[0], y_ref)
    pos, neg, text = prompts()
    shape = (1, 16, 2, 4, 4)
    ref = official_loop({"high": ref_high, "low": ref_low}, official_noise(*shape[1:]), pos, neg, 4, 5.0,
                        guide=(3.5, 3.5), boundary=0.9, y=y_ref)
    ours = run_ours(experts, shape, text, SamplerSettings(steps=4, shift=5.0, cfg_high=3.5, cfg_low=3.5), cond)
    assert ours.experts == ["high"] * 2 + ["low"] * 2
    assert_close(ours.latents[0], ref)


@pytest.mark.parametrize("mode", ["t2v", "i2v"])
def test_ti2v_5b(tmp_path, mode):
    """Oracle: textimage2video t2v / i2v loops: per-token timesteps (0 on the start frame in i2v), the start
    latent re-imposed after every step; official Wan 2.2 VAE for z."""
    ref_model = official_dit("ti2v", 5)
    experts = ExpertSet(ours_from_official(ref_model, tmp_path / "ti2v.safetensors"))
    pos, neg, text = prompts()
    shape = (1, 48, 2, 4, 4)
    cond, z = None, None
    if mode == "i2v":
        vae = official_vae22()
        image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(8)) * 2 - 1
        mean, std = (torch.tensor(v) for v in official_stats(48))
        with torch.no_grad():
            z = vae.encode(image[None, :, None], scale=[mean, 1.0 / std])[0]
        cond = first_frame_condition(RawVAE(vae, 48, (4, 16, 16)), image[None])
    ref = official_loop({"single": ref_model}, official_noise(*shape[1:]), pos, neg, 4, 5.0, first_latent=z,
                        per_token=True)
    ours = run_ours(experts, shape, text, SamplerSettings(steps=4, shift=5.0, cfg_high=5.0), cond)
    assert_close(ours.latents[0], ref)

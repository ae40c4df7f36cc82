"""Wan Video To Video and Wan Upscale Video called as ComfyUI calls them. The node's result is the engine's
``refine`` (pinned to diffusers by test_refine_engine.py) on the VAE's latents of the frames; bad inputs are refused
by VALIDATE_INPUTS or before any sampling."""
import math

import pytest
import torch

from test_sampling_nodes import pack_text, write_dit, write_vae


@pytest.fixture(autouse=True)
def _submodules(pack):
    import importlib

    for name in ("nodes.refine", "nodes.dit", "nodes.vae", "wan.sampling.refine", "wan.latents"):
        importlib.import_module(f"{pack.__name__}.{name}")


@pytest.fixture
def parts(pack, models_dir):
    model = pack.nodes.dit.WanExpertsLoadDiT().load(write_dit(models_dir, "wan2.1_t2v_1.3B_tiny.safetensors"))[0]
    vae = pack.nodes.vae.WanExpertsLoadVAE().load(write_vae(models_dir), "fp32")[0]
    return model, vae


def frames(n=5, h=32, w=48):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(1))


def test_video_to_video_node_is_the_engine_refine_of_the_encoded_frames(pack, parts):
    model, vae = parts
    node = pack.nodes.refine.WanExpertsVideoToVideo()
    args = dict(seed=3, steps=4, strength=0.5, cfg_high=5.0, cfg_low=5.0, shift=5.0)
    out = node.run(model, pack_text(pack), video=frames(), vae=vae, **args)[0]["samples"]
    raw = vae.encode(frames().permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1)
    w = pack.wan
    settings = w.sampling.SamplerSettings(steps=4, shift=5.0, cfg_high=5.0, cfg_low=5.0)
    latents = w.latents.normalize(raw)
    ref = w.sampling.refine.refine(model, latents, pack_text(pack), settings, 0.5,
                                   noise=w.sampling.make_noise(latents.shape, 3))
    assert torch.allclose(out, w.latents.denormalize(ref.latents), atol=1e-5)
    again = node.run(model, pack_text(pack), latent={"samples": raw}, **args)[0]["samples"]  # LATENT input
    assert torch.allclose(again, out, atol=1e-5)
    kept = node.run(model, pack_text(pack), latent={"samples": raw}, **(args | {"strength": 0.0}))[0]["samples"]
    assert torch.allclose(kept, raw, atol=1e-5)


def test_video_to_video_bad_inputs_fail_before_sampling(pack, parts):
    model, vae = parts
    cls = pack.nodes.refine.WanExpertsVideoToVideo
    for bad in (math.nan, -0.1, 1.5):
        assert "strength" in cls.VALIDATE_INPUTS(strength=bad)
    assert cls.VALIDATE_INPUTS(strength=0.3) is True
    text, errors = pack_text(pack), pack.wan.errors.InputError
    args = dict(seed=3, steps=4, cfg_high=5.0, cfg_low=5.0, shift=5.0)
    with pytest.raises(errors, match=r"has 1 frame; video-to-video needs at least 5 frames"):
        cls().run(model, text, video=frames(1), vae=vae, strength=0.5, **args)
    with pytest.raises(errors, match=r"frames 6 is not of the form 4n\+1"):
        cls().run(model, text, video=frames(6), vae=vae, strength=0.5, **args)
    with pytest.raises(errors, match=r"width 40 is not a multiple of 16.*Wan Upscale Video"):
        cls().run(model, text, video=frames(5, 32, 40), vae=vae, strength=0.5, **args)
    with pytest.raises(errors, match="either a video .* or a latent, not neither"):
        cls().run(model, text, strength=0.5, **args)
    with pytest.raises(errors, match="strength nan"):
        cls().run(model, text, video=frames(), vae=vae, strength=math.nan, **args)
    with pytest.raises(errors, match="expert 'low' picks one expert of a Wan 2.2 A14B pair"):
        cls().run(model, text, video=frames(), vae=vae, strength=0.5, expert="low", **args)


def test_upscale_node_sizes_and_refusals(pack):
    cls = pack.nodes.refine.WanExpertsUpscaleVideo
    out = cls().upscale(frames(3, 32, 48), "factor", factor=1.5, resampling="bicubic")[0]
    assert out.shape == (3, 48, 80, 3)  # 72 -> 80: the nearest multiple of 16
    out = cls().upscale(frames(3, 32, 48), "factor", factor=1.5, multiple=32)[0]
    assert out.shape == (3, 64, 64, 3)
    out = cls().upscale(frames(2), "size", width=96, height=64, resampling="area")[0]
    assert out.shape == (2, 64, 96, 3) and 0.0 <= out.min() and out.max() <= 1.0
    assert "not a multiple of 16" in cls.VALIDATE_INPUTS(target="size", width=1920, height=1080, multiple=16)
    assert "not a multiple of 32" in cls.VALIDATE_INPUTS(target="size", width=1280, height=720, multiple=32)
    assert cls.VALIDATE_INPUTS(target="factor", width=1920, height=1080, multiple=16, factor=1.5) is True
    assert "factor" in cls.VALIDATE_INPUTS(factor=math.nan)
    with pytest.raises(pack.wan.errors.InputError, match="height 1080 is not a multiple of 16"):
        cls().upscale(frames(2), "size", width=1920, height=1080)


def test_video_too_large_for_the_device_is_refused_before_encoding(pack, parts, monkeypatch):
    model, vae = parts
    monkeypatch.setattr(pack.wan.budget.check, "available_bytes", lambda device: 1 << 16)
    monkeypatch.setattr(type(vae), "encode", lambda *a, **k: pytest.fail("encoded"))
    with pytest.raises(pack.wan.budget.check.BudgetError, match=r"Wan Video To Video at 48x32, 5 frames needs about"):
        pack.nodes.refine.WanExpertsVideoToVideo().run(model, pack_text(pack), seed=1, steps=4, strength=0.5,
                                                       video=frames(), vae=vae)

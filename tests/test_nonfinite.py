"""NaN and infinity: refused as settings, named as inputs, caught after the first sampling step with the likely
cause (damaged weights named by tensor, float16 overflow), caught at load in small tensors, and never saved."""
import copy
import math

import pytest
import torch
from safetensors.torch import save_file

import wan
from test_sampling_models import official_dit, ours_from_official, prompts
from wan.conditioning import ImageCond
from wan.errors import CheckpointError, InputError
from wan.finite import NonFiniteError
from wan.sampling import SamplerSettings, make_noise, make_schedule, sample

SHAPE = (1, 16, 2, 4, 4)
NAN, INF = math.nan, math.inf


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Shared by the tests that leave it as it is."""
    return ours_from_official(official_dit("t2v", 1), tmp_path_factory.mktemp("m") / "t2v.safetensors")


@pytest.fixture
def fresh_model(model):
    """A copy to damage."""
    return copy.deepcopy(model)


def run(model, settings, latents=None, **kw):
    latents = torch.zeros(SHAPE) if latents is None else latents
    return sample(model, latents, kw.pop("text", prompts()[2]), settings, noise=make_noise(SHAPE, 0), **kw)


@pytest.mark.parametrize("field,value,match", [
    ("shift", NAN, "shift nan is out of range: it must be a finite number"),
    ("shift", -INF, "shift -inf is out of range"),
    ("cfg_high", NAN, "cfg_high nan"), ("cfg_low", INF, "cfg_low inf"),
    ("denoise", NAN, "denoise nan"), ("boundary", NAN, "boundary nan"), ("boundary", 1.0, "boundary 1.0"),
    ("steps", 2.5, "steps 2.5 must be a whole number"), ("steps", NAN, "steps nan must be a whole number"),
    ("start_step", NAN, "start_step nan must be a whole number"),
])
def test_non_finite_settings_are_refused_before_any_step(model, field, value, match):
    calls = []
    with pytest.raises(InputError, match=match):
        run(model, SamplerSettings(**{"steps": 2, "shift": 5.0, field: value}), callback=calls.append)
    assert calls == []


@pytest.mark.parametrize("make,match", [
    (lambda: wan.TeaCache(NAN), "TeaCache threshold nan"), (lambda: wan.MagCache(0.1, K=NAN), "MagCache K nan"),
    (lambda: wan.MagCache(0.1, retention_ratio=INF), "retention_ratio inf"),
    (lambda: make_schedule("unipc", 4, NAN), "shift nan"),
])
def test_other_engine_numbers(make, match):
    with pytest.raises(InputError, match=match):
        make()


def test_non_finite_inputs_are_named(model):
    text = prompts()[2]
    bad = torch.zeros(SHAPE)
    bad[0, 0, 0, 0, 0] = NAN
    with pytest.raises(NonFiniteError, match="NaN or infinite values in the latent;"):
        run(model, SamplerSettings(2, 5.0), latents=bad)
    text.negative[0, 0, 0] = INF
    with pytest.raises(NonFiniteError, match="NaN or infinite values in the negative text embedding"):
        run(model, SamplerSettings(2, 5.0), text=text)


def test_damaged_weights_are_named_after_the_first_step(fresh_model):
    """A NaN in a large matrix (not checked at load) stops the run after step 1, naming that tensor."""
    model = fresh_model
    with torch.no_grad():
        model.blocks[0].ffn[0].weight[3, 5] = NAN
    steps = []
    with pytest.raises(NonFiniteError, match=r"the first sampling step produced NaN.*weights are damaged: tensor "
                                             r"'blocks.0.ffn.0.weight'"):
        run(model, SamplerSettings(4, 5.0), callback=steps.append)
    assert len(steps) == 1


def test_float16_overflow_is_named(fresh_model):
    """Finite weights, large enough that float16 activations overflow (65504): the message says fp16 -> bf16."""
    model = fresh_model
    with torch.no_grad():
        for block in model.blocks:
            block.ffn[0].weight.mul_(3e3)
            block.ffn[2].weight.mul_(3e3)
    model.compute_dtype = torch.float16
    with pytest.raises(NonFiniteError, match="float16 most likely overflowed; choose dtype bf16"):
        run(model, SamplerSettings(2, 5.0))


def test_small_non_finite_weights_are_refused_at_load(tmp_path):
    sd = {k: v.detach().clone() for k, v in official_dit("t2v", 1).state_dict().items()}
    sd["blocks.0.norm3.weight"][7] = INF
    save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"'bad.safetensors' is unusable: its tensor 'blocks.0.norm3.weight' "
                                              r"holds NaN or infinite values"):
        wan.load_dit(tmp_path / "bad.safetensors")


def test_vae_refuses_non_finite_latents_and_frames_are_never_saved(tmp_path):
    from test_vae_tiny import official_vae, save_pth

    vae = wan.load_vae(save_pth(official_vae("2.1"), tmp_path / "vae.pth"))
    latents = torch.zeros(1, 16, 1, 2, 2)
    latents[..., 0, 0] = NAN
    with pytest.raises(NonFiniteError, match="NaN or infinite values in the latents to decode"):
        vae.decode(latents)
    frames = torch.full((2, 16, 16, 3), 0.5)
    frames[1, 3, 3, 0] = NAN
    with pytest.raises(NonFiniteError, match="NaN or infinite values in the images to save"):
        wan.save_video(frames, tmp_path / "out", "clip")
    assert not (tmp_path / "out").exists()


def test_vae_decode_overflow_is_caught(tmp_path):
    from test_vae_tiny import official_vae, save_pth

    vae = wan.load_vae(save_pth(official_vae("2.1"), tmp_path / "vae.pth"))
    with torch.no_grad():
        vae.model.decoder.head[2].weight.fill_(INF)
    with pytest.raises(NonFiniteError, match=r"VAE decode produced NaN.*tensor 'decoder.head.2.weight'"):
        vae.decode(torch.zeros(1, 16, 1, 2, 2))


def test_zero_pixel_and_nan_images(tmp_path):
    from test_vae_tiny import official_vae, save_pth

    vae = wan.load_vae(save_pth(official_vae("2.1"), tmp_path / "vae.pth"))
    for image, match in ((torch.zeros(1, 3, 0, 0), "start image has no pixels"),
                         (torch.zeros(0, 3, 16, 16), "start image has no pixels"),
                         (torch.full((1, 3, 16, 16), NAN), "start image contains NaN")):
        with pytest.raises(InputError, match=match):
            wan.image_condition(vae, image, 16, 16, 5)


def test_image_cond_with_nan_is_named(tmp_path):
    model = ours_from_official(official_dit("i2v", 1), tmp_path / "i2v.safetensors")
    y = torch.zeros(1, 20, 2, 4, 4)
    y[0, 5] = NAN
    with pytest.raises(NonFiniteError, match=r"NaN or infinite values in the image conditioning \(y\)"):
        run(model, SamplerSettings(2, 5.0), image_cond=ImageCond("i2v", y=y))


def test_zero_pixel_images_through_nodes(pack, tmp_path):
    import importlib

    from test_vae_tiny import official_vae, save_pth

    errors = importlib.import_module(pack.__name__ + ".wan.errors")
    vae = importlib.import_module(pack.__name__ + ".wan.vae.loader").load_vae(
        save_pth(official_vae("2.1"), tmp_path / "vae.pth"))
    sampling = importlib.import_module(pack.__name__ + ".nodes.sampling")
    encoders = importlib.import_module(pack.__name__ + ".nodes.encoders")
    for empty in (torch.zeros(1, 0, 0, 3), torch.zeros(0, 16, 16, 3)):
        with pytest.raises(errors.InputError, match="start image has no pixels"):
            sampling.WanExpertsImageToVideo().make(vae, empty, 16, 16, 5)
        with pytest.raises(errors.InputError, match="start_image has no pixels"):
            encoders.WanExpertsCLIPVisionEncode().encode(None, empty)


@pytest.mark.parametrize("attention,blamed", [("auto", False), ("sdpa", False), ("split", False), ("sage", True),
                                              ("flash", True)])
def test_only_inexact_or_external_attention_kernels_are_blamed(attention, blamed):
    """The exact built-in backends are never named as the cause of an overflow; external kernels are."""
    from wan.finite import explain

    message = explain([], torch.bfloat16, attention)
    assert (f"the '{attention}' attention kernel most likely failed" in message) is blamed
    assert "attention 'auto'" in message

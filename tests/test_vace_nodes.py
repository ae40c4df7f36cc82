"""Wan VACE Conditioning and the samplers' vace input, called as ComfyUI calls them (files under
$WAN_EXPERTS_MODELS). The node's context equals the engine's (pinned to the official conditioning in
test_vace_conditioning.py); the sampler's finished latent equals the engine run (pinned to the official loop in
test_vace_loop.py) without the reference frames."""
import importlib

import pytest
import torch
from safetensors.torch import save_file

from test_sampling_models import prompts
from test_sampling_nodes import write_vae
from tiny_vace import official_vace

W, H, FRAMES = 48, 32, 5


@pytest.fixture(autouse=True)
def _submodules(pack):
    for name in ("nodes.vace", "nodes.sampling", "nodes.dit", "nodes.vae", "wan.sampling.vace", "wan.conditioning"):
        importlib.import_module(f"{pack.__name__}.{name}")


@pytest.fixture
def loaded(pack, models_dir):
    save_file({k: v.detach().contiguous().clone() for k, v in official_vace(seed=1, std=0.05).state_dict().items()},
              str(models_dir / "diffusion_models" / "wan2.1_vace_tiny.safetensors"))
    model = pack.nodes.dit.WanExpertsLoadDiT().load("wan2.1_vace_tiny.safetensors")[0]
    vae = pack.nodes.vae.WanExpertsLoadVAE().load(write_vae(models_dir))[0]
    return model, vae


def _images(n, h, w, c=3, seed=0):
    return torch.rand(n, h, w, c, generator=torch.Generator().manual_seed(seed))


def test_node_context_and_sampler_trim(pack, loaded):
    model, vae = loaded
    video, refs = _images(FRAMES, H, W), _images(2, 20, 30, seed=1)
    masks = (torch.rand(FRAMES, H, W, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    node = pack.nodes.vace.WanExpertsVace()
    cond, latent = node.make(vae, W, H, FRAMES, 1, 0.8, video, masks, refs)
    engine = pack.wan.sampling.vace.vace_context(vae, W, H, FRAMES, video.permute(3, 0, 1, 2) * 2 - 1, masks,
                                                 refs.permute(0, 3, 1, 2) * 2 - 1, 0.8)
    assert torch.equal(cond.latents, engine.latents) and cond.ref_frames == 2 and cond.strength == 0.8
    assert latent["samples"].shape == (1, 16, 2 + 2, H // 8, W // 8)
    _, _, text = prompts()
    text = pack.wan.conditioning.TextEmbeds(text.positive, text.negative)
    out = pack.nodes.sampling.WanExpertsSamplerBasic().run(model, text, latent, 5, steps=2, cfg=5.0, shift=16.0,
                                                           vace=cond)[0]
    assert out["samples"].shape == (1, 16, 2, H // 8, W // 8)  # reference frames removed
    settings = pack.wan.sampling.SamplerSettings(steps=2, shift=16.0, cfg_high=5.0, cfg_low=5.0)
    shape = latent["samples"].shape
    result = pack.wan.sampling.sample(model, torch.zeros(shape), text, settings,
                                      noise=pack.wan.sampling.make_noise(shape, 5), vace=cond)
    expected = pack.wan.latents.denormalize(result.latents[:, :, 2:])
    assert torch.allclose(out["samples"], expected, atol=1e-5)


def test_chained_samplers_keep_the_references_until_the_end(pack, loaded):
    model, vae = loaded
    cond, latent = pack.nodes.vace.WanExpertsVace().make(vae, W, H, FRAMES, 1, 1.0,
                                                         reference_images=_images(1, H, W, seed=3))
    _, _, text = prompts()
    text = pack.wan.conditioning.TextEmbeds(text.positive, text.negative)
    run = pack.nodes.sampling.WanExpertsSampler().run
    first = run(model, text, latent, 1, steps=3, cfg_high=5.0, shift=16.0, end_step=1,
                return_with_leftover_noise=True, vace=cond)[0]
    assert first["samples"].shape[2] == 3  # leftover noise: the next sampler continues with the reference frame
    second = run(model, text, first, 1, steps=3, cfg_high=5.0, shift=16.0, start_step=1, add_noise=False,
                 vace=cond)[0]
    assert second["samples"].shape[2] == 2


def test_bad_inputs_are_named(pack, loaded, models_dir):
    _, vae = loaded
    make = pack.nodes.vace.WanExpertsVace().make
    errors = pack.wan.errors.InputError
    with pytest.raises(errors, match="control_video is 48x16"):
        make(vae, W, H, FRAMES, control_video=_images(FRAMES, 16, W))
    with pytest.raises(errors, match="control_video has 9 frames but the video has 5"):
        make(vae, W, H, FRAMES, control_video=_images(9, H, W))
    with pytest.raises(errors, match="control_masks are 16x32"):
        make(vae, W, H, FRAMES, control_masks=torch.ones(FRAMES, H, 16))
    with pytest.raises(errors, match="4 channels.*alpha"):
        make(vae, W, H, FRAMES, reference_images=_images(1, H, W, c=4))
    with pytest.raises(errors, match="1 channels"):
        make(vae, W, H, FRAMES, reference_images=_images(1, H, W, c=1))
    with pytest.raises(errors, match="RGB video"):
        make(vae, W, H, FRAMES, control_video=_images(FRAMES, H, W, c=4))
    node = pack.nodes.vace.WanExpertsVace
    assert node.VALIDATE_INPUTS(width=W, height=H, frames=FRAMES, batch_size=1, strength=1.0) is True
    assert "strength" in node.VALIDATE_INPUTS(strength=float("nan"))


def test_vace_context_to_a_plain_model_is_refused(pack, loaded, models_dir):
    from test_sampling_nodes import write_dit

    _, vae = loaded
    plain = pack.nodes.dit.WanExpertsLoadDiT().load(write_dit(models_dir, "wan2.1_t2v.safetensors"))[0]
    cond, latent = pack.nodes.vace.WanExpertsVace().make(vae, W, H, FRAMES, 1, 1.0)
    _, _, text = prompts()
    text = pack.wan.conditioning.TextEmbeds(text.positive, text.negative)
    with pytest.raises(pack.wan.errors.InputError, match="no VACE blocks"):
        pack.nodes.sampling.WanExpertsSamplerBasic().run(plain, text, latent, 0, steps=2, cfg=5.0, shift=5.0,
                                                         vace=cond)

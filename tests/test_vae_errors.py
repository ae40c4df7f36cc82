"""Bad inputs to the Wan VAEs fail early with errors that name the input, what was found and what to do."""
from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from oracles import official
from test_vae_tiny import official_vae, random_video, save_comfy, save_pth

from wan.errors import CheckpointError, InputError
from wan.vae import load_vae


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae")
    return {v: load_vae(save_pth(official_vae(v), folder / f"{v}.pth")) for v in ("2.1", "2.2")}


@pytest.mark.parametrize("version,size", [("2.1", (20, 24)), ("2.1", (16, 30)), ("2.2", (24, 48)), ("2.2", (32, 40))])
def test_frame_size_must_be_a_multiple_of_the_stride(vaes, version, size):
    with pytest.raises(InputError, match=r"not a multiple of (8|16).*resize or crop"):
        vaes[version].encode(torch.zeros(1, 3, 1, *size))


@pytest.mark.parametrize("version,channels", [("2.1", 48), ("2.2", 16), ("2.1", 4)])
def test_latents_of_the_other_vae_are_refused(vaes, version, channels):
    with pytest.raises(InputError, match=f"latents have {channels} channels.*this is the Wan {version} VAE"):
        vaes[version].decode(torch.zeros(1, channels, 1, 2, 3))


@pytest.mark.parametrize("shape", [(3, 5, 16, 24), (1, 4, 5, 16, 24)])
def test_video_shape_is_checked(vaes, shape):
    with pytest.raises(InputError, match=r"expected \[batch, 3, frames, height, width\]"):
        vaes["2.1"].encode(torch.zeros(shape))


def test_latent_shape_is_checked(vaes):
    with pytest.raises(InputError, match=r"expected \[batch, 16, frames"):
        vaes["2.1"].decode(torch.zeros(16, 2, 3))


def test_frames_not_4n_plus_1_are_trimmed_with_a_warning(vaes, caplog):
    """7 frames encode as their first 5 (the official encoder ignores the trailing frames too) and say so."""
    vae = vaes["2.1"]
    video = random_video("2.1", 7)
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        got = vae.encode(video)
    assert "7 frames is not 4n+1; encoding the first 5" in caplog.text
    assert torch.equal(got, vae.encode(video[:, :, :5]))
    assert got.shape[2] == 2


def test_unknown_tiling_mode_is_refused(vaes):
    with pytest.raises(InputError, match="tiled='sometimes' is unknown"):
        vaes["2.1"].decode(torch.zeros(1, 16, 1, 2, 3), tiled="sometimes")


def test_a_dit_file_is_refused_with_its_kind(tmp_path):
    path = tmp_path / "wan2.1_t2v_1.3B_fp16.safetensors"
    save_file({"head.modulation": torch.zeros(1, 2, 8), "patch_embedding.weight": torch.zeros(8, 16, 1, 2, 2)},
              str(path))
    with pytest.raises(CheckpointError, match="is not a Wan VAE: it looks like a Wan DiT.*DiT loader"):
        load_vae(path)


def test_a_text_encoder_file_is_refused(tmp_path):
    path = save_comfy({"shared.weight": torch.zeros(4, 2)}, tmp_path / "umt5.safetensors")
    with pytest.raises(CheckpointError, match="looks like a text encoder"):
        load_vae(path)


def test_an_incomplete_vae_is_refused(tmp_path):
    sd = official_vae("2.1").state_dict()
    del sd["decoder.upsamples.3.time_conv.weight"]
    with pytest.raises(CheckpointError, match="1 missing.*time_conv.*incomplete"):
        load_vae(save_comfy(sd, tmp_path / "cut.safetensors"))


def test_a_vae_with_a_wrong_shape_is_refused(tmp_path):
    sd = official_vae("2.1").state_dict()
    sd["decoder.middle.1.proj.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match="'decoder.middle.1.proj.bias' has shape"):
        load_vae(save_comfy(sd, tmp_path / "bad.safetensors"))


def test_a_vae_of_another_model_family_is_refused(tmp_path):
    """Same layout but 4 latent channels (not a Wan VAE: no latent statistics for it)."""
    model = official.load("modules.vae2_1").WanVAE_(dim=8, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                               attn_scales=[], temperal_downsample=[False, True, True])
    with pytest.raises(CheckpointError, match="4 latent channels"):
        load_vae(save_pth(model, tmp_path / "other.pth"))


def test_missing_file_and_unknown_dtype(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_vae(tmp_path / "nope.safetensors")
    with pytest.raises(InputError, match="dtype 'fp12' is unknown"):
        load_vae(save_pth(official_vae("2.1"), tmp_path / "v.pth"), dtype="fp12")

"""The VAE nodes: load from models/vae, encode IMAGE -> LATENT, decode LATENT -> IMAGE, progress and interruption."""
from __future__ import annotations

import importlib

import pytest
import torch

from test_vae_tiny import official_vae, random_video, save_comfy, save_pth


@pytest.fixture
def nodes(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.vae")


@pytest.fixture
def errors(pack):
    return importlib.import_module(f"{pack.__name__}.wan.errors")


@pytest.fixture
def vae_files(models_dir):
    save_pth(official_vae("2.1"), models_dir / "vae" / "Wan2.1_VAE.pth")
    save_comfy(official_vae("2.2").state_dict(), models_dir / "vae" / "wan2.2_vae.safetensors")
    return models_dir


def _load(nodes, name, dtype="default"):
    return nodes.WanExpertsLoadVAE().load(name, dtype)[0]


def test_node_contract(nodes, vae_files):
    assert set(nodes.NODES) == {"WanExpertsLoadVAE", "WanExpertsVAEEncode", "WanExpertsVAEDecode"}
    for cls in nodes.NODES.values():
        assert cls.CATEGORY == "Wan Experts/vae" and cls.DESCRIPTION and cls.DISPLAY_NAME
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
        for name, spec in cls.INPUT_TYPES()["required"].items():
            assert spec[1].get("tooltip"), name
    names = nodes.WanExpertsLoadVAE.INPUT_TYPES()["required"]["vae_name"][0]
    assert names == ["Wan2.1_VAE.pth", "wan2.2_vae.safetensors"]


@pytest.mark.parametrize("name,version", [("Wan2.1_VAE.pth", "2.1"), ("wan2.2_vae.safetensors", "2.2")])
def test_encode_then_decode_through_nodes(nodes, vae_files, name, version):
    """IMAGE [5, H, W, 3] in 0..1 -> LATENT [1, z, 2, h, w] equal to the engine's encode of the [-1, 1] video;
    LATENT -> IMAGE [5, H, W, 3] in 0..1 equal to the engine's decode."""
    vae = _load(nodes, name)
    assert vae.version == version
    video = random_video(version, 5)
    image = video[0].permute(1, 2, 3, 0).add(1).div(2)  # [F, H, W, 3]
    latent = nodes.WanExpertsVAEEncode().encode(vae, image)[0]
    samples = latent["samples"]
    assert samples.shape == (1, vae.z_dim, 2, 2, 3) and samples.device.type == "cpu"
    assert torch.allclose(samples, vae.encode(image.permute(3, 0, 1, 2)[None] * 2 - 1), atol=1e-6)
    frames = nodes.WanExpertsVAEDecode().decode(vae, latent, "off", 512, 64)[0]
    assert frames.shape == image.shape and frames.min() >= 0 and frames.max() <= 1
    expected = vae.decode(samples)[0].permute(1, 2, 3, 0).add(1).div(2)
    assert torch.allclose(frames, expected, atol=1e-6)


def test_a_batch_of_latents_decodes_to_frames_in_order(nodes, vae_files):
    vae = _load(nodes, "Wan2.1_VAE.pth")
    z = torch.randn(2, 16, 2, 2, 3)
    frames = nodes.WanExpertsVAEDecode().decode(vae, {"samples": z}, "on", 64, 16)[0]
    assert frames.shape == (10, 16, 24, 3)
    second = nodes.WanExpertsVAEDecode().decode(vae, {"samples": z[1:]}, "on", 64, 16)[0]
    assert torch.allclose(frames[5:], second, atol=1e-6)


def test_dtype_widget(nodes, vae_files):
    assert _load(nodes, "Wan2.1_VAE.pth", "bf16").dtype == torch.bfloat16
    assert _load(nodes, "Wan2.1_VAE.pth").dtype == torch.float32


def test_progress_per_chunk_and_interruption(nodes, vae_files, monkeypatch):
    """Every decoded latent frame is one progress step and a cancel point: cancelling stops the decode."""
    host = importlib.import_module(nodes.__name__.rsplit(".", 1)[0] + ".host")
    vae = _load(nodes, "Wan2.1_VAE.pth")
    steps = []

    class Cancelled(Exception):
        pass

    def check():
        steps.append(1)
        if len(steps) == 3:  # one check before the run, then one per chunk
            raise Cancelled

    monkeypatch.setattr(host, "check_interrupted", check)
    with pytest.raises(Cancelled):
        nodes.WanExpertsVAEDecode().decode(vae, {"samples": torch.randn(1, 16, 4, 2, 3)}, "off", 512, 64)
    assert len(steps) == 3


def test_mismatched_latents_and_bad_sizes_fail_clearly(nodes, errors, vae_files):
    vae21, vae22 = _load(nodes, "Wan2.1_VAE.pth"), _load(nodes, "wan2.2_vae.safetensors")
    with pytest.raises(errors.InputError, match="48 channels"):
        nodes.WanExpertsVAEDecode().decode(vae21, {"samples": torch.zeros(1, 48, 1, 2, 3)}, "auto", 512, 64)
    with pytest.raises(errors.InputError, match="not a multiple of 16"):
        nodes.WanExpertsVAEEncode().encode(vae22, torch.rand(1, 24, 24, 3))


def test_a_missing_file_names_the_folder(nodes, vae_files):
    with pytest.raises(FileNotFoundError, match="vae"):
        _load(nodes, "nope.safetensors")

"""The same VAE weights as official ``.pth``, Comfy-Org ``.safetensors`` and a diffusers folder load to the same model.

Oracles for the key mapping: diffusers' own ``convert_wan_vae_to_diffusers`` (2.1) and, for 2.2, the diffusers
parity tests (weights written by diffusers itself, outputs compared with diffusers').
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from test_vae_tiny import diffusers_vae, official_vae, random_video, save_comfy, save_pth

from wan.vae import load_vae


def _outputs(vae) -> tuple[torch.Tensor, torch.Tensor]:
    video = random_video(vae.version, 5)
    z = torch.randn(1, vae.z_dim, 2, 2, 3, generator=torch.Generator().manual_seed(6))
    return vae.encode(video), vae.decode(z, clamp=False)


def _assert_same(a, b, outputs: bool = True):
    """Same weights under every name (and, when asked, bit-identical encode/decode outputs)."""
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    if outputs:
        assert all(torch.equal(x, y) for x, y in zip(_outputs(a), _outputs(b)))


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_every_layout_loads_the_same_weights(version, tmp_path):
    """diffusers folder (pipeline root, vae/ folder, weight file) -> our model; its official-name weights written as
    official .pth, Comfy .safetensors (plain and 'vae.'-prefixed) all load the same tensors, and the .pth gives
    bit-identical outputs to the diffusers folder."""
    root = tmp_path / "Wan-Diffusers"
    diffusers_vae(version, seed=7).save_pretrained(str(root / "vae"))
    ref = load_vae(root)
    assert (ref.version, ref.z_dim, ref.dtype) == (version, 16 if version == "2.1" else 48, torch.float32)
    assert ref.stride == ((4, 8, 8) if version == "2.1" else (4, 16, 16))
    sd = ref.model.state_dict()
    others = [
        load_vae(root / "vae"),
        load_vae(root / "vae" / "diffusion_pytorch_model.safetensors"),
        load_vae(save_pth(ref.model, tmp_path / f"Wan{version}_VAE.pth")),
        load_vae(save_comfy(sd, tmp_path / "wan_vae.safetensors")),
        load_vae(save_comfy(sd, tmp_path / "wan_vae_prefixed.safetensors", prefix="vae.")),
    ]
    for i, other in enumerate(others):
        assert other.version == version
        _assert_same(ref, other, outputs=i == 2)


def test_official_pth_and_diffusers_conversion_agree(tmp_path):
    """2.1: official weights converted by diffusers' ``convert_wan_vae_to_diffusers`` load to the same outputs as the
    official ``.pth``."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    official = official_vae("2.1", seed=8)
    converted = convert_wan_vae_to_diffusers({k: v.clone() for k, v in official.state_dict().items()})
    folder = tmp_path / "vae"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in converted.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    _assert_same(load_vae(save_pth(official, tmp_path / "Wan2.1_VAE.pth")), load_vae(folder))


def test_official_model_folder_finds_its_vae(tmp_path):
    """An official Wan-AI folder holds the DiT, T5 and VAE; the VAE loader picks ``Wan2.1_VAE.pth``."""
    folder = tmp_path / "Wan2.1-T2V-1.3B"
    folder.mkdir()
    save_pth(official_vae("2.1"), folder / "Wan2.1_VAE.pth")
    save_file({"head.modulation": torch.zeros(1, 2, 8)}, str(folder / "diffusion_pytorch_model.safetensors"))
    torch.save({"shared.weight": torch.zeros(2, 2)}, str(folder / "models_t5_umt5-xxl-enc-bf16.pth"))
    assert load_vae(folder).version == "2.1"


def test_dtype_default_follows_the_file_and_can_be_chosen(tmp_path):
    """A bf16 Comfy file computes in bf16 by default; dtype='fp32' upcasts; bf16 output stays near the fp32 one."""
    sd = official_vae("2.1").state_dict()
    path = save_comfy(sd, tmp_path / "wan_2.1_vae_bf16.safetensors", dtype=torch.bfloat16)
    low, high = load_vae(path), load_vae(path, dtype="fp32")
    assert (low.dtype, high.dtype) == (torch.bfloat16, torch.float32)
    assert next(low.model.parameters()).dtype == torch.bfloat16
    for a, b in zip(_outputs(low), _outputs(high)):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).abs().max() <= 0.1 * b.abs().max()

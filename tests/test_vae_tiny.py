"""Tiny random Wan VAEs in the three file layouts, shared by the VAE tests; plus config detection tests.

Official modules come from ``wan22`` (``modules.vae2_1`` / ``modules.vae2_2``, the inner ``WanVAE_``), diffusers
ones from ``AutoencoderKLWan``; every parameter is random (conv weights and biases, RMS norm gammas).
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from oracles import official
from oracles.randomize import randomize_

import wan.vae as wv

TINY = {  # version -> (z, encoder base, decoder base, pixel size of a 2x3-latent frame)
    "2.1": dict(z_dim=16, dim=8, dec_dim=8, hw=(16, 24)),
    "2.2": dict(z_dim=48, dim=8, dec_dim=12, hw=(32, 48)),
}


def official_vae(version: str, seed: int = 0) -> torch.nn.Module:
    t = TINY[version]
    common = dict(z_dim=t["z_dim"], dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                  temperal_downsample=[False, True, True])
    if version == "2.1":
        model = official.load("modules.vae2_1").WanVAE_(dim=t["dim"], **common)
    else:
        model = official.load("modules.vae2_2").WanVAE_(dim=t["dim"], dec_dim=t["dec_dim"], **common)
    return randomize_(model, seed=seed).eval()


def diffusers_vae(version: str, seed: int = 0, head_scale: float = 0.25):
    """diffusers ``AutoencoderKLWan`` (2.2: ``is_residual``, patch 2); the output conv is scaled down so most decoded
    values stay inside diffusers' clamp to [-1, 1]."""
    from diffusers import AutoencoderKLWan

    t = TINY[version]
    if version == "2.1":
        model = AutoencoderKLWan(base_dim=t["dim"], z_dim=t["z_dim"])
    else:
        model = AutoencoderKLWan(base_dim=t["dim"], decoder_base_dim=t["dec_dim"], z_dim=t["z_dim"], is_residual=True,
                                 patch_size=2, in_channels=12, out_channels=12, scale_factor_spatial=16)
    randomize_(model, seed=seed)
    with torch.no_grad():
        model.decoder.conv_out.weight.mul_(head_scale)
    return model.eval()


def save_pth(module: torch.nn.Module, path) -> str:
    torch.save({k: v.detach().clone() for k, v in module.state_dict().items()}, str(path))
    return str(path)


def save_comfy(state_dict: dict, path, prefix: str = "", dtype: torch.dtype | None = None) -> str:
    save_file({prefix + k: (v if dtype is None else v.to(dtype)).contiguous() for k, v in state_dict.items()},
              str(path))
    return str(path)


def random_video(version: str, frames: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """[batch, 3, frames, H, W] in [-1, 1], H x W = a 2x3 latent frame."""
    h, w = TINY[version]["hw"]
    return torch.rand(batch, 3, frames, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def max_err(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max |ours - ref|, the parity bar 1e-4 * max|ref| + 1e-5)."""
    return (ours.float() - ref.float()).abs().max().item(), 1e-4 * ref.abs().max().item() + 1e-5


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_config_read_from_official_weights(version):
    cfg = wv.WanVAEConfig.from_state_dict(official_vae(version).state_dict())
    t = TINY[version]
    assert (cfg.version, cfg.z_dim, cfg.dim, cfg.dec_dim) == (version, t["z_dim"], t["dim"], t["dec_dim"])
    assert cfg.dim_mult == (1, 2, 4, 4) and cfg.num_res_blocks == 2 and cfg.temporal_down == (False, True, True)
    assert cfg.stride == ((4, 8, 8) if version == "2.1" else (4, 16, 16))


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_released_layouts_match_the_official_modules(version):
    """Oracle: the official ``WanVAE_`` built (on meta) with the released settings of ``Wan2_1_VAE`` /
    ``Wan2_2_VAE``: same parameter names and shapes as ours, and the config read back from them is the release."""
    config = wv.WAN21_VAE if version == "2.1" else wv.WAN22_VAE
    common = dict(z_dim=config.z_dim, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                  temperal_downsample=[False, True, True])
    with torch.device("meta"):
        if version == "2.1":
            ref = official.load("modules.vae2_1").WanVAE_(dim=96, **common)
        else:
            ref = official.load("modules.vae2_2").WanVAE_(dim=160, dec_dim=256, **common)
        ours = wv.WanVAEModel(config)
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == ref_shapes
    assert wv.WanVAEConfig.from_state_dict(ref.state_dict()) == config

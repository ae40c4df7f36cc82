"""Parity of our Wan VAEs (loaded through ``load_vae``) with the official ``wan22`` modules and with diffusers.

Tolerance everywhere: max|ours - ref| <= 1e-4 * max|ref| + 1e-5, float32, tiny random weights, 1, 5 and 9 frames.
"""
from __future__ import annotations

import pytest
import torch

from test_vae_tiny import diffusers_vae, max_err, official_vae, random_video, save_pth

from wan.latents import STATS
from wan.vae import load_vae

FRAMES = [1, 5, 9]


def official_scale(z_dim: int) -> list[torch.Tensor]:
    """What ``Wan2_1_VAE`` / ``Wan2_2_VAE`` pass to the inner module: [mean, 1 / std]."""
    mean, std = STATS[z_dim]
    return [torch.tensor(mean), 1.0 / torch.tensor(std)]


@pytest.fixture(scope="module", params=["2.1", "2.2"])
def official_pair(request, tmp_path_factory):
    ref = official_vae(request.param, seed=1)
    path = save_pth(ref, tmp_path_factory.mktemp("vae") / f"Wan{request.param}_VAE.pth")
    return request.param, ref, load_vae(path)


@pytest.fixture(scope="module", params=["2.1", "2.2"])
def diffusers_pair(request, tmp_path_factory):
    ref = diffusers_vae(request.param, seed=2)
    folder = tmp_path_factory.mktemp("vae") / "vae"
    ref.save_pretrained(str(folder))
    return request.param, ref, load_vae(folder)


@pytest.mark.parametrize("frames", FRAMES)
def test_encode_matches_official(official_pair, frames):
    """Oracle: official ``WanVAE_.encode(x, [mean, 1/std])`` (normalised means) vs ``normalize(ours.encode(x))``."""
    version, ref, ours = official_pair
    video = random_video(version, frames)
    with torch.no_grad():
        expected = ref.encode(video, official_scale(ours.z_dim))
    got = ours.normalize(ours.encode(video))
    assert got.shape == expected.shape == (1, ours.z_dim, 1 + (frames - 1) // 4, 2, 3)
    err, bar = max_err(got, expected)
    assert err <= bar, f"{version} encode {frames} frames: {err:.3g} > {bar:.3g}"


@pytest.mark.parametrize("frames", FRAMES)
def test_decode_matches_official(official_pair, frames):
    """Oracle: official ``WanVAE_.decode(z, [mean, 1/std])`` on normalised latents vs ``ours.decode(denormalize(z))``
    (unclamped; the official wrapper clamps afterwards)."""
    version, ref, ours = official_pair
    z = torch.randn(1, ours.z_dim, 1 + (frames - 1) // 4, 2, 3)
    with torch.no_grad():
        expected = ref.decode(z, official_scale(ours.z_dim))
    got = ours.decode(ours.denormalize(z), clamp=False)
    assert got.shape == expected.shape == (1, 3, frames, *random_video(version, 1).shape[3:])
    err, bar = max_err(got, expected)
    assert err <= bar, f"{version} decode {frames} frames: {err:.3g} > {bar:.3g}"
    assert torch.equal(ours.decode(ours.denormalize(z)), got.clamp(-1, 1))


@pytest.mark.parametrize("frames", FRAMES)
def test_encode_matches_diffusers(diffusers_pair, frames):
    """Oracle: diffusers ``AutoencoderKLWan.encode(x).latent_dist.mean`` (raw latents), weights from its own folder."""
    version, ref, ours = diffusers_pair
    video = random_video(version, frames)
    with torch.no_grad():
        expected = ref.encode(video).latent_dist.mean
    err, bar = max_err(ours.encode(video), expected)
    assert err <= bar, f"{version} encode {frames} frames: {err:.3g} > {bar:.3g}"


@pytest.mark.parametrize("frames", FRAMES)
def test_decode_matches_diffusers(diffusers_pair, frames):
    """Oracle: diffusers ``AutoencoderKLWan.decode(z).sample`` (clamped to [-1, 1], as ours)."""
    version, ref, ours = diffusers_pair
    z = torch.randn(1, ours.z_dim, 1 + (frames - 1) // 4, 2, 3)
    with torch.no_grad():
        expected = ref.decode(z).sample
    assert (expected.abs() < 1).float().mean() > 0.9, "the test model saturates; the clamp would hide errors"
    err, bar = max_err(ours.decode(z), expected)
    assert err <= bar, f"{version} decode {frames} frames: {err:.3g} > {bar:.3g}"


def test_batch_items_are_independent(official_pair):
    """A batch encodes/decodes like its items one by one (the official wrapper loops over a list)."""
    version, _, ours = official_pair
    video = random_video(version, 5, batch=2)
    z = ours.encode(video)
    assert torch.allclose(z[1:], ours.encode(video[1:]), atol=1e-6)
    assert torch.allclose(ours.decode(z)[:1], ours.decode(z[:1]), atol=1e-6)

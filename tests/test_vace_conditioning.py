"""VACE context parity with the official conditioning (Wan 2.1 ``WanVace.vace_encode_frames`` /
``vace_encode_masks`` / ``vace_latent`` and the reference fitting of ``prepare_source``, reproduced in
``oracles/vace_encode.py``) on the same frames, masks and references, with the same tiny random Wan 2.1 VAE (ours
loaded from the official module's ``.pth``; the oracle runs the official ``WanVAE_``). float32; tolerance
max|ours - ref| <= 1e-4 * max|ref| + 1e-5 (``tiny_dit.assert_close``); the 64 mask channels must be equal."""
import pytest
import torch

from oracles import vace_encode as official
from test_vae_tiny import official_vae, save_pth
from tiny_dit import assert_close
from wan.errors import InputError
from wan.sampling.vace import fit_reference, vace_context, vace_latent_shape
from wan.vae import load_vae

W, H = 48, 32  # 6 x 4 latent pixels


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    ref = official_vae("2.1", seed=3)
    return official.OfficialVAE(ref), load_vae(save_pth(ref, tmp_path_factory.mktemp("vae") / "Wan2.1_VAE.pth"))


def _inputs(frames, seed=0, refs=0, ref_size=(H, W)):
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(3, frames, H, W, generator=g) * 2 - 1
    mask = torch.rand(frames, H, W, generator=g)  # soft values: the mask channels keep them, the split binarises
    mask[:, :8] = 1.0  # whole 8x8 blocks on both sides of the threshold too
    mask[:, 8:16] = 0.0
    images = torch.rand(refs, 3, *ref_size, generator=g) * 2 - 1 if refs else None
    return video, mask, images


def _official(oracle_vae, video, mask, images, frames):
    """The official calls as ``WanVace.generate`` makes them (a missing video: grey frames and a mask of ones)."""
    video = torch.zeros(3, frames, H, W) if video is None else video
    mask = torch.ones(1, frames, H, W) if mask is None else mask[None].expand(1, frames, H, W)
    refs = None if images is None else [[official.fit_reference(img[:, None], (H, W)) for img in images]]
    z0 = official.vace_encode_frames(oracle_vae, [video], refs, masks=[mask])
    m0 = official.vace_encode_masks([mask], refs)
    return official.vace_latent(z0, m0)[0]


@pytest.mark.parametrize("case", ["video+mask", "video", "refs", "video+mask+refs", "one-mask"])
def test_context_matches_official(vaes, case):
    oracle_vae, ours = vaes
    frames = 9 if case != "refs" else 5
    video, mask, images = _inputs(frames, seed=len(case), refs=2 if "refs" in case else 0,
                                  ref_size=(H, W) if case == "video+mask+refs" else (20, 64))
    if case == "one-mask":
        mask = mask[:1]
    if case in ("video", "refs"):
        mask = None
    if case == "refs":
        video = None
    got = vace_context(ours, W, H, frames, video, mask, images, strength=0.5)
    expected = _official(oracle_vae, video, None if mask is None else mask.expand(frames, H, W), images, frames)
    assert got.latents.shape == (1, 96, *expected.shape[1:]) and got.strength == 0.5
    assert got.ref_frames == (0 if images is None else 2)
    assert torch.equal(got.latents[0, 32:], expected[32:])  # the folded masks
    assert_close(got.latents[0, :32], expected[:32])
    assert vace_latent_shape(ours, W, H, frames, 2, got.ref_frames) == (2, 16, *expected.shape[1:])


def test_reference_fitting_matches_official():
    g = torch.Generator().manual_seed(5)
    for size in ((20, 64), (64, 20), (H, W), (7, 9)):
        img = torch.rand(3, *size, generator=g) * 2 - 1
        assert torch.equal(fit_reference(img, W, H), official.fit_reference(img[:, None], (H, W))[:, 0])


def test_bad_inputs_are_named(vaes):
    _, ours = vaes
    video, mask, images = _inputs(9, refs=1)
    with pytest.raises(InputError, match="control_video is 48x16 .* resize"):
        vace_context(ours, W, H, 9, video[:, :, :16])
    with pytest.raises(InputError, match="control_video has 5 frames but the video has 9"):
        vace_context(ours, W, H, 9, video[:, :5])
    with pytest.raises(InputError, match="control_masks are 32x32"):
        vace_context(ours, W, H, 9, video, mask[..., :32])
    with pytest.raises(InputError, match="control_masks has 4 frames"):
        vace_context(ours, W, H, 9, video, mask[:4])
    with pytest.raises(InputError, match="reference_images have 4 channels.*alpha"):
        vace_context(ours, W, H, 9, reference_images=torch.cat([images, images[:, :1]], dim=1))
    with pytest.raises(InputError, match="reference_images have 1 channels"):
        vace_context(ours, W, H, 9, reference_images=images[:, :1])
    with pytest.raises(InputError, match="frames 8"):
        vace_context(ours, W, H, 8)
    with pytest.raises(InputError, match="strength"):
        vace_context(ours, W, H, 9, strength=float("nan"))

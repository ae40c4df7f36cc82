"""S2V DiT parity with the official ``WanModel_S2V`` (PyPI ``wan22``), float32, tiny random weights (every parameter
randomised: the official code zero-initialises the audio injector's output, the AdaIN linears, the pose encoder and
the kind embedding). Weights saved in the official names (= Comfy-Org repack names), loaded through ``wan.load_dit``.
Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5 (``tiny_dit.assert_close``)."""
import json

import pytest
import torch

import wan
from tiny_dit import assert_close, save_safetensors, save_scaled_fp8, save_sharded, state_dict_of
from tiny_s2v import INJECT, official_s2v, official_s2v_forward, s2v_inputs
from wan.dit.s2v import S2VInputs, WanS2VDiT, inject_layers
from wan.errors import CheckpointError, InputError


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ref = official_s2v()
    path = save_safetensors(state_dict_of(ref), tmp_path_factory.mktemp("s2v") / "wan2.2_s2v_tiny.safetensors")
    return ref, wan.load_dit(path)


@pytest.mark.parametrize("motion_frames,drop,pose,t", [
    (5, False, True, 937.0),  # fewer past latents than the 19 the frame packer holds: zero-padded
    (23, False, True, 412.0),  # more: the last 19 are used
    (5, True, True, 999.0),  # first clip: motion dropped (drop_first_motion)
    (19, False, False, 250.0),  # no pose video: zeros through the pose encoder
])
def test_forward_matches_official(pair, motion_frames, drop, pose, t):
    ref, ours = pair
    assert isinstance(ours, WanS2VDiT) and ours.variant == "wan22_s2v_14b"
    x, ctx, ref_lat, motion, pose_lat, audio = s2v_inputs(motion_frames=motion_frames)
    pose_lat = pose_lat if pose else None
    with torch.no_grad():
        out = ours(x, torch.tensor([t]), ctx, s2v=S2VInputs(audio, ref_lat, motion, pose_lat, drop))
    assert_close(out, official_s2v_forward(ref, x, t, ctx, ref_lat, motion, pose_lat, audio, drop))


def test_unconditional_audio_matches_official(pair):
    """The official unconditional branch passes the audio features times 0."""
    ref, ours = pair
    x, ctx, ref_lat, motion, pose_lat, audio = s2v_inputs(frames=2, seed=4)
    cond = S2VInputs(audio, ref_lat, motion, pose_lat).without_audio()
    with torch.no_grad():
        out = ours(x, torch.tensor([600.0]), ctx, s2v=cond)
    assert_close(out, official_s2v_forward(ref, x, 600.0, ctx, ref_lat, motion, pose_lat, audio * 0, False))


def test_official_folder_and_inject_layers_from_config(tmp_path):
    """An official folder (sharded + config.json) with injectors after blocks 0 and 2 of 3 (not the even spread)."""
    ref = official_s2v(layers=3, inject=[0, 2], seed=3)
    folder = save_sharded(state_dict_of(ref), tmp_path / "Wan2.2-S2V-14B")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "audio_inject_layers": [0, 2]}))
    ours = wan.load_dit(folder)
    assert ours.s2v_config.inject_layers == (0, 2)
    x, ctx, ref_lat, motion, pose_lat, audio = s2v_inputs(seed=5)
    with torch.no_grad():
        out = ours(x, torch.tensor([700.0]), ctx, s2v=S2VInputs(audio, ref_lat, motion, pose_lat))
    assert_close(out, official_s2v_forward(ref, x, 700.0, ctx, ref_lat, motion, pose_lat, audio, False))


def test_comfy_prefix_and_scaled_fp8(tmp_path):
    """Comfy-Org repack names under ``model.diffusion_model.``; scaled fp8 Linear weights (weight x scale_weight)."""
    ref = official_s2v(seed=2)
    path = save_scaled_fp8(ref, tmp_path / "s2v_fp8_scaled.safetensors",
                           lambda k: "blocks." in k or "audio_injector." in k)
    ours = wan.load_dit(path, dtype="float32")
    assert "scaled fp8" in ours.layout
    x, ctx, ref_lat, motion, pose_lat, audio = s2v_inputs(seed=6)
    with torch.no_grad():
        out = ours(x, torch.tensor([500.0]), ctx, s2v=S2VInputs(audio, ref_lat, motion, pose_lat))
    assert_close(out, official_s2v_forward(ref, x, 500.0, ctx, ref_lat, motion, pose_lat, audio, False))


def test_inject_layers_rule():
    assert inject_layers(12, 40, None) == (0, 4, 8, 12, 16, 20, 24, 27, 30, 33, 36, 39)
    assert inject_layers(len(INJECT), 2, None) == (0, 1)
    with pytest.raises(CheckpointError, match="audio injectors"):
        inject_layers(5, 2, None)


def test_bad_conditioning_is_named(pair):
    _, ours = pair
    x, ctx, ref_lat, motion, pose_lat, audio = s2v_inputs()
    t = torch.tensor([500.0])
    with pytest.raises(InputError, match="Wan Sound To Video"):
        ours(x, t, ctx)
    with pytest.raises(InputError, match="audio features"):
        ours(x, t, ctx, s2v=S2VInputs(audio[..., :8], ref_lat, motion))
    with pytest.raises(InputError, match="reference latent"):
        ours(x, t, ctx, s2v=S2VInputs(audio, ref_lat[..., :4], motion))
    with pytest.raises(InputError, match="pose latents"):
        ours(x, t, ctx, s2v=S2VInputs(audio, ref_lat, motion, pose_lat[:, :, :2]))


def test_variant_defaults_are_official():
    """wan_s2v_14B: shift 3, 40 steps, guidance 4.5, 80 frames per clip, its own negative prompt (read from the
    official config file's text: importing it needs easydict)."""
    from oracles.official import official_root

    text = (official_root() / "configs" / "wan_s2v_14B.py").read_text()
    v = wan.variants.VARIANTS["wan22_s2v_14b"]
    assert f'sample_neg_prompt = "{v.default_negative_prompt}"' in text
    assert (v.shift, v.steps, v.guidance, v.frames, v.fps) == (3.0, 40, (4.5, 4.5), 80, 16)
    for line in ("sample_shift = 3", "sample_steps = 40", "sample_guide_scale = 4.5", "motion_frames = 73"):
        assert line in text

"""The Wan Animate node with the real tiny VAE, a tiny CLIP vision tower and the demo's tiny Animate DiT (loaded
through ``load_dit`` from its saved weights): both modes end to end, the conditioning it hands the engine, and every
bad input named before sampling."""
import importlib

import numpy as np
import pytest
import torch

from tiny_dit import save_safetensors


@pytest.fixture(scope="module")
def parts(pack, tmp_path_factory):
    from wan.runner.demo import tiny_animate_dit, tiny_clip_state_dict, tiny_vae

    tmp = tmp_path_factory.mktemp("animate_node")
    pw = importlib.import_module(pack.__name__ + ".wan")
    variant = pw.variants.VARIANTS["wan22_animate_14b"]
    model = pw.load_dit(save_safetensors(tiny_animate_dit(variant).state_dict(), tmp / "animate.safetensors"))
    clip = pw.encoders.load_clip_vision(save_safetensors(tiny_clip_state_dict("hf"), tmp / "clip.safetensors"))
    vae = pw.vae.vae.WanVAE(tiny_vae("2.1"), torch.float32)
    text = pw.conditioning.TextEmbeds(torch.randn(1, 5, 64), torch.randn(1, 5, 64))
    node = importlib.import_module(pack.__name__ + ".nodes.animate")
    return node, model, clip, vae, text


def _video(n, h, w, seed=0):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("replace", [False, True])
def test_animate_node_runs_both_modes(parts, replace):
    node, model, clip, vae, text = parts
    n = 7  # one clip of 9 frames (padded by bouncing), cut back to 7
    extra = {"background_video": _video(n, 32, 48, 3), "character_mask": (_video(n, 32, 48, 4)[..., 0] > 0.5).float()}
    (frames,) = node.WanExpertsAnimate().run(model, vae, text, clip, _video(1, 20, 20, 1), _video(n, 32, 48, 2),
                                             _video(n, 24, 24, 5), clip_frames=9, steps=1,
                                             **(extra if replace else {}))
    assert frames.shape == (n, 32, 48, 3) and 0 <= frames.min() and frames.max() <= 1


def test_conditioning_prepared_as_official(parts):
    """The reference fitted on black into the pose size (official padding_resize: a square 20 px image into 32x48
    -> 32x32 centred), the face crops resized to the model's face size, the mask as given."""
    node = parts[0]
    ref = _video(1, 20, 20, 1)
    mask = (_video(7, 32, 48, 4)[..., 0] > 0.5).float()
    src = node.animate_source(ref, _video(7, 32, 48, 2), _video(7, 24, 24, 5), _video(7, 32, 48, 3), mask, 8)
    assert src.reference.shape == (3, 32, 48) and src.face.shape == (7, 3, 8, 8)
    assert torch.equal(src.reference[:, :, :8], torch.full((3, 32, 8), -1.0))
    assert torch.equal(src.reference[:, :, 40:], torch.full((3, 32, 8), -1.0))
    up = torch.nn.functional.interpolate(ref.permute(0, 3, 1, 2) * 2 - 1, size=(32, 32), mode="bilinear")
    assert torch.allclose(src.reference[:, :, 8:40], up[0], atol=1e-6)
    assert torch.equal(src.mask, mask) and np.allclose(src.pose.numpy(), _video(7, 32, 48, 2).permute(0, 3, 1, 2) * 2 - 1)


def test_bad_inputs_are_named_before_sampling(parts):
    node, model, clip, vae, text = parts
    run = node.WanExpertsAnimate().run
    ref, pose, face = _video(1, 20, 20), _video(7, 32, 48), _video(7, 24, 24)
    bg, mask = _video(7, 32, 48), torch.ones(7, 32, 48)
    with pytest.raises(Exception, match="face_video has 6 frames but pose_video has 7"):
        run(model, vae, text, clip, ref, pose, face[:6], clip_frames=9, steps=1)
    with pytest.raises(Exception, match="square"):
        run(model, vae, text, clip, ref, pose, _video(7, 24, 20), clip_frames=9, steps=1)
    with pytest.raises(Exception, match="character_mask is 7 frames of 40x32"):
        run(model, vae, text, clip, ref, pose, face, clip_frames=9, steps=1, background_video=bg,
            character_mask=mask[..., :40])
    with pytest.raises(Exception, match="connect character_mask"):
        run(model, vae, text, clip, ref, pose, face, clip_frames=9, steps=1, background_video=bg)
    with pytest.raises(Exception, match="1 or 5"):
        run(model, vae, text, clip, ref, pose, face, clip_frames=9, reference_frames=3, steps=1)
    cls = node.WanExpertsAnimate
    assert cls.VALIDATE_INPUTS(clip_frames=77, reference_frames=3) is not True
    assert cls.VALIDATE_INPUTS(clip_frames=76, reference_frames=1) is not True
    assert cls.VALIDATE_INPUTS(clip_frames=77, reference_frames=5) is True


def test_continue_from_earlier_frames(parts):
    """continue_from: its last reference_frames frames guide the first clip, which the driving videos start at; the
    output is the new frames only."""
    node, model, clip, vae, text = parts
    n = 7
    (frames,) = node.WanExpertsAnimate().run(model, vae, text, clip, _video(1, 32, 48, 1), _video(n, 32, 48, 2),
                                             _video(n, 8, 8, 5), clip_frames=5, steps=1,
                                             continue_from=_video(3, 32, 48, 6))
    assert frames.shape == (n - 1, 32, 48, 3)
    with pytest.raises(Exception, match="continue_from must be frames"):
        node.WanExpertsAnimate().run(model, vae, text, clip, _video(1, 32, 48, 1), _video(n, 32, 48, 2),
                                     _video(n, 8, 8, 5), clip_frames=5, steps=1, continue_from=_video(3, 16, 48, 6))

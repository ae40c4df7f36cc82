"""Animate DiT parity with the official ``WanAnimateModel`` (PyPI ``wan22``) and diffusers'
``WanAnimateTransformer3DModel`` (official weights through diffusers' own converter), float32, tiny random weights
(every parameter randomised). Weights saved in the official names (= Comfy-Org repack names), loaded through
``wan.load_dit``. Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5 (``tiny_dit.assert_close``)."""
import copy

import pytest
import torch

import wan
from tiny_animate import FACE, LAYERS, animate_inputs, diffusers_animate, official_animate, official_animate_forward
from tiny_dit import TEXT_LEN, assert_close, save_safetensors, save_scaled_fp8, save_sharded, state_dict_of
from wan.dit.animate import AnimateInputs, WanAnimateDiT
from wan.errors import InputError


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ref = official_animate()
    path = save_safetensors(state_dict_of(ref), tmp_path_factory.mktemp("animate") / "wan2.2_animate_tiny.safetensors")
    return ref, wan.load_dit(path)


def _ours(model, x, t, y, ctx, clip, pose, face):
    with torch.no_grad():
        return model(x, torch.tensor([t]), ctx, clip_fea=clip, y=y, animate=AnimateInputs(pose, face))


@pytest.mark.parametrize("frames,t", [(3, 999.0), (4, 412.0)])
def test_forward_matches_official(pair, frames, t):
    ref, ours = pair
    assert isinstance(ours, WanAnimateDiT) and ours.variant == "wan22_animate_14b"
    assert ours.animate_config.face_size == FACE and ours.face_every == 5 and ours.config.num_layers == LAYERS
    inputs = animate_inputs(latent_frames=frames, seed=frames)
    assert_close(_ours(ours, *inputs[:1], t, *inputs[1:]), official_animate_forward(ref, inputs[0], t, *inputs[1:]))


def test_unconditional_face_matches_official(pair):
    """The official unconditional branch passes the face crops as -1 everywhere."""
    ref, ours = pair
    x, y, ctx, clip, pose, face = animate_inputs(seed=7)
    cond = AnimateInputs(pose, face).unconditional()
    with torch.no_grad():
        out = ours(x, torch.tensor([600.0]), ctx, clip_fea=clip, y=y, animate=cond)
    assert_close(out, official_animate_forward(ref, x, 600.0, y, ctx, clip, pose, face * 0 - 1))
    with_face = _ours(ours, x, 600.0, y, ctx, clip, pose, face)
    without_pose = _ours(ours, x, 600.0, y, ctx, clip, pose * 0, face)
    for other in (with_face, without_pose):  # the face and the pose both reach the output
        assert (other - out).abs().max() > 1e-2 * out.abs().max()


def test_forward_matches_diffusers(pair):
    ref, ours = pair
    model = diffusers_animate(ref)
    x, y, ctx, clip, pose, face = animate_inputs(seed=3, text_tokens=TEXT_LEN)
    with torch.no_grad():
        out = model(torch.cat([x, y], dim=1), torch.tensor([700.0]), ctx, clip, pose, face, return_dict=False)[0]
    assert_close(_ours(ours, x, 700.0, y, ctx, clip, pose, face), out)


def test_official_folder(pair, tmp_path):
    """An official folder: sharded safetensors + index + config.json."""
    ref, _ = pair
    ours = wan.load_dit(save_sharded(state_dict_of(ref), tmp_path / "Wan2.2-Animate-14B"))
    inputs = animate_inputs(seed=5)
    assert_close(_ours(ours, inputs[0], 300.0, *inputs[1:]), official_animate_forward(ref, inputs[0], 300.0, *inputs[1:]))


def test_comfy_prefix_and_scaled_fp8(pair, tmp_path):
    """Comfy-Org repack names under ``model.diffusion_model.``; scaled fp8 Linear weights of the blocks and the face
    adapter (weight x scale_weight)."""
    ref = copy.deepcopy(pair[0])
    path = save_scaled_fp8(ref, ("blocks.", "face_adapter."), tmp_path / "animate_fp8_scaled.safetensors")
    ours = wan.load_dit(path, dtype="float32")
    assert "scaled fp8" in ours.layout
    inputs = animate_inputs(seed=6)
    assert_close(_ours(ours, inputs[0], 500.0, *inputs[1:]), official_animate_forward(ref, inputs[0], 500.0, *inputs[1:]))


def test_bad_conditioning_is_named(pair):
    _, ours = pair
    x, y, ctx, clip, pose, face = animate_inputs()
    t = torch.tensor([500.0])
    with pytest.raises(InputError, match="Wan Animate"):
        ours(x, t, ctx, clip_fea=clip, y=y)
    with pytest.raises(InputError, match="pose latents"):
        ours(x, t, ctx, clip_fea=clip, y=y, animate=AnimateInputs(pose[:, :, :1], face))
    with pytest.raises(InputError, match="face crops"):
        ours(x, t, ctx, clip_fea=clip, y=y, animate=AnimateInputs(pose, face[..., :4]))
    with pytest.raises(InputError, match="face crops"):
        ours(x, t, ctx, clip_fea=clip, y=y, animate=AnimateInputs(pose, face[:, :, :3]))


def test_variant_defaults_are_official():
    """wan_animate_14B: shift 5, 20 steps, guidance 1, clips of 77 frames, 30 fps, its prompt (read from the official
    config file's text: importing it needs easydict)."""
    from oracles.official import official_root

    text = (official_root() / "configs" / "wan_animate_14B.py").read_text()
    v = wan.variants.VARIANTS["wan22_animate_14b"]
    assert (v.shift, v.steps, v.guidance, v.frames, v.fps) == (5.0, 20, (1.0, 1.0), 77, 30)
    for line in ("sample_shift = 5.0", "sample_steps = 20", "sample_guide_scale = 1.0", "frame_num = 77",
                 "sample_fps = 30", f"prompt = '{wan.variants.ANIMATE_PROMPT}'"):
        assert line in text


def _tiny_demo(tmp_path):
    """The demo's tiny Animate DiT saved as safetensors, and inputs for it."""
    from wan.runner.demo import tiny_animate_dit

    model = tiny_animate_dit(wan.variants.VARIANTS["wan22_animate_14b"])
    path = save_safetensors(model.state_dict(), tmp_path / "tiny_animate.safetensors")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 16, 3, 4, 6, generator=g), torch.randn(1, 20, 3, 4, 6, generator=g)
    ctx, clip = torch.randn(1, 5, 64, generator=g), torch.randn(1, 257, 64, generator=g)
    cond = AnimateInputs(torch.randn(1, 16, 2, 4, 6, generator=g), torch.rand(1, 3, 5, 8, 8, generator=g) * 2 - 1)

    def run(m):
        with torch.no_grad():
            return m(x, torch.tensor([500.0]), ctx, clip_fea=clip, y=y, animate=cond)

    return model, path, run


def test_bf16_runs_close_to_float32(tmp_path):
    """The compute dtype of the released files: every Animate module (motion encoder convs and QR, face encoder
    convs, face adapter) runs in bf16 without dtype clashes, within 2% of float32 on the demo's tiny model."""
    _, path, run = _tiny_demo(tmp_path)
    full, half = run(wan.load_dit(path, dtype="fp32")), run(wan.load_dit(path, dtype="bf16"))
    assert half.dtype == torch.float32
    assert (half - full).abs().max() <= 0.02 * full.abs().max()


def test_gguf_q8_0_file(tmp_path):
    """A GGUF file as the community converters write it (Linears Q8_0 — the face adapter's and the face encoder's
    projection included —, convolutions F16, small tensors F32): recognised as the Animate DiT, its Linears kept
    quantised, within 2% of the float model."""
    from gguf import GGMLQuantizationType as T

    from wan.quant.gguf_write import write_gguf

    model, _, run = _tiny_demo(tmp_path)
    types = write_gguf(tmp_path / "animate.gguf", {k: v.contiguous() for k, v in model.state_dict().items()}, T.Q8_0,
                       prefix="model.diffusion_model.")
    assert types["face_adapter.fuser_blocks.0.linear1_kv.weight"] == T.Q8_0
    ours = wan.load_dit(tmp_path / "animate.gguf", dtype="fp32")
    assert isinstance(ours, WanAnimateDiT) and "GGUF" in ours.layout
    assert ours.face_adapter.fuser_blocks[0].linear1_kv.weight_format is not None
    full = run(model)
    assert (run(ours) - full).abs().max() <= 0.02 * full.abs().max()

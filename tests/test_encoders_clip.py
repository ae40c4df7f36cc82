"""CLIP vision tower: parity with the official Wan CLIP and with transformers, from every file layout; FLF2V
pairs; image checks."""
import logging

import pytest
import torch

import test_encoders_support as sup
from wan.encoders import load_clip_vision
from wan.errors import CheckpointError, InputError


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    tower = sup.official_clip_tower()
    path = tmp_path_factory.mktemp("wan_official") / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
    return sup.save_official_clip(tower, path), tower


def _images(n=1, h=72, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 2 - 1


def test_clip_matches_official_visual(official_file):
    """Oracle: official wan22 ``CLIPModel.visual`` (bicubic resize, [0,1], CLIP mean/std, ``VisionTransformer``
    with ``use_31_block=True``), float32. Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
    path, tower = official_file
    clip = load_clip_vision(path)
    image = _images(h=72, w=40)  # not square, not 56: the resize stretches it, as the official code does
    ref = sup.official_clip_visual(tower)([image[0][:, None]])
    out = clip.encode(image)
    assert out.shape == (1, 17, 64) and out.dtype == torch.float32
    ok, err, bound = sup.close(out, ref)
    assert ok, f"max error {err:.3g} > {bound:.3g}"
    assert len(clip.tower.transformer) == 2  # the last of the 3 blocks is never loaded


def test_clip_pair_matches_official_flf2v(official_file):
    """Oracle: official ``CLIPModel.visual([first, last])`` viewed as one [1, 2 x 17, dim] sequence (what the FLF2V
    model does before ``emb_pos``). Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
    path, tower = official_file
    clip = load_clip_vision(path)
    first, last = _images(seed=1), _images(seed=2)
    ref = sup.official_clip_visual(tower)([first[0][:, None], last[0][:, None]]).reshape(1, 34, 64)
    out = clip.encode_pair(first, last)
    ok, err, bound = sup.close(out, ref)
    assert ok, f"max error {err:.3g} > {bound:.3g}"
    two = clip.encode_pair(torch.cat([first, last]), torch.cat([last, first]))  # per sample: its first, its last
    assert torch.allclose(two[1], torch.cat([out[0, 17:], out[0, :17]]), atol=1e-5)


@pytest.mark.parametrize("layout", ["comfy_file", "transformers_folder"])
def test_clip_matches_transformers_hidden_states(tmp_path, layout):
    """Oracle: transformers ``CLIPVisionModel`` ``hidden_states[-2]`` on the same pixels, float32.
    Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
    model = sup.hf_clip_vision()
    if layout == "comfy_file":
        path = sup.save_comfy_clip(model, tmp_path / "clip_vision_h.safetensors")
    else:
        path = tmp_path / "clip_vision"
        model.save_pretrained(str(path))
    clip = load_clip_vision(path)
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        ref = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        out = clip.tower(pixels)
    ok, err, bound = sup.close(out, ref)
    assert ok, f"max error {err:.3g} > {bound:.3g}"


def test_alpha_channel_is_dropped_with_a_warning(official_file, caplog):
    clip = load_clip_vision(official_file[0])
    rgb = _images()
    rgba = torch.cat([rgb, torch.ones(1, 1, *rgb.shape[2:])], dim=1)
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        out = clip.encode(rgba)
    assert any("alpha channel" in r.getMessage() for r in caplog.records)
    assert torch.equal(out, clip.encode(rgb))


def test_wrong_range_and_layout_are_explained(official_file):
    clip = load_clip_vision(official_file[0])
    with pytest.raises(InputError, match="0..255"):
        clip.encode(_images() * 127.5 + 127.5)
    with pytest.raises(InputError, match="channels-last"):
        clip.encode(_images().permute(0, 2, 3, 1))
    with pytest.raises(InputError, match=r"\[B, 3, H, W\]"):
        clip.encode(_images()[0])
    with pytest.raises(InputError, match="one last image per first"):
        clip.encode_pair(_images(2), _images(1))


def test_text_encoder_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"shared.weight": torch.zeros(4, 4), "encoder.final_layer_norm.weight": torch.zeros(4)},
              str(tmp_path / "umt5.safetensors"))
    with pytest.raises(CheckpointError, match="text encoder"):
        load_clip_vision(tmp_path / "umt5.safetensors")


def test_clip_scaled_fp8_file(tmp_path):
    """Oracle: transformers ``CLIPVisionModel`` ``hidden_states[-2]`` with the dequantised (fp8 x scale_weight) weights
    of a Comfy scaled-fp8 file, float32. Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
    from safetensors.torch import save_file

    model = sup.hf_clip_vision()
    stored, dequant = sup.scaled_fp8(model.state_dict(), skip=("embedding",))
    save_file({("" if k == "scaled_fp8" else "vision_model.") + k: v for k, v in stored.items()},
              str(tmp_path / "clip_vision_h_fp8_scaled.safetensors"))
    model.load_state_dict(dequant)
    clip = load_clip_vision(tmp_path / "clip_vision_h_fp8_scaled.safetensors", dtype="fp32")
    assert "scaled fp8" in clip.layout and clip.tower.transformer[0].attn.q.weight.dtype == torch.float8_e4m3fn
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        ref = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        ok, err, bound = sup.close(clip.tower(pixels), ref)
    assert ok, f"max error {err:.3g} > {bound:.3g}"

"""Encoder nodes: files from the models folders, the official default negative prompt, ComfyUI IMAGE conversion
(checked against the official CLIP preprocessing), alpha channels, and the memory hand-off settings."""
import importlib
import logging

import pytest
import torch

import test_encoders_support as sup
from wan.variants import DEFAULT_NEGATIVE_PROMPT


@pytest.fixture
def nodes(pack):
    return importlib.import_module(pack.__name__ + ".nodes.encoders")


@pytest.fixture
def text_file(models_dir):
    spiece = sup.train_spiece()
    sup.save_comfy_t5(sup.hf_umt5(), spiece, models_dir / "text_encoders" / "umt5_xxl_fp16.safetensors")
    return "umt5_xxl_fp16.safetensors"


@pytest.fixture
def clip_file(models_dir):
    tower = sup.official_clip_tower()
    name = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
    sup.save_official_clip(tower, models_dir / "clip_vision" / name)
    return name, tower


def test_every_input_has_a_tooltip(nodes):
    for node_id, cls in nodes.NODES.items():
        assert node_id.startswith("WanExperts") and cls.DESCRIPTION and cls.DISPLAY_NAME
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
        for section in cls.INPUT_TYPES().values():
            for name, spec in section.items():
                assert spec[1].get("tooltip"), f"{node_id}.{name}"


def test_text_nodes_encode_both_prompts_with_the_default_negative(nodes, text_file, caplog):
    assert text_file in nodes.WanExpertsLoadTextEncoder.INPUT_TYPES()["required"]["text_encoder_name"][0]
    (encoder,) = nodes.WanExpertsLoadTextEncoder().load(text_file, "fp32", "cpu", False)
    assert encoder.run_device == torch.device("cpu") and not encoder.keep_loaded
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        (text,) = nodes.WanExpertsTextEncode().encode(encoder, "", "")
    assert any("positive prompt is empty" in r.getMessage() for r in caplog.records)
    assert text.negative_prompts == [DEFAULT_NEGATIVE_PROMPT]
    assert text.positive.shape == text.negative.shape == (1, 512, 64)
    assert torch.count_nonzero(text.positive[0, 1:]) == 0  # only the EOS row of the empty prompt
    (text,) = nodes.WanExpertsTextEncode().encode(encoder, "a cat", "blurry")
    assert text.negative_prompts == ["blurry"] and text.positive_prompts == ["a cat"]
    assert next(encoder.parameters()).device.type == "cpu"


def test_clip_nodes_match_the_official_visual_on_comfy_images(nodes, clip_file, caplog):
    """Oracle: official ``CLIPModel.visual`` on the IMAGE mapped to [-1, 1]; FLF2V: on [first, last].
    Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
    name, tower = clip_file
    (clip,) = nodes.WanExpertsLoadCLIPVision().load(name, "default", "gpu", True)
    start, end = torch.rand(1, 40, 72, 3), torch.rand(1, 40, 72, 3)
    visual = sup.official_clip_visual(tower)
    signed = [img[0].permute(2, 0, 1)[:, None] * 2 - 1 for img in (start, end)]
    (single,) = nodes.WanExpertsCLIPVisionEncode().encode(clip, start)
    ok, err, bound = sup.close(single.features, visual(signed[:1]))
    assert ok and single.features.shape == (1, 17, 64), f"{err:.3g} > {bound:.3g}"
    (pair,) = nodes.WanExpertsCLIPVisionEncode().encode(clip, start, end)
    ok, err, bound = sup.close(pair.features, visual(signed).reshape(1, 34, 64))
    assert ok, f"{err:.3g} > {bound:.3g}"
    rgba = torch.cat([start, torch.ones(1, 40, 72, 1)], dim=-1)
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        (with_alpha,) = nodes.WanExpertsCLIPVisionEncode().encode(clip, rgba)
    assert any("alpha channel" in r.getMessage() for r in caplog.records)
    assert torch.equal(with_alpha.features, single.features)


def test_clip_node_refuses_images_outside_0_1(nodes, clip_file, pack):
    (clip,) = nodes.WanExpertsLoadCLIPVision().load(clip_file[0])
    errors = importlib.import_module(pack.__name__ + ".wan.errors")
    with pytest.raises(errors.InputError, match="0..1"):
        nodes.WanExpertsCLIPVisionEncode().encode(clip, torch.rand(1, 8, 8, 3) * 255)

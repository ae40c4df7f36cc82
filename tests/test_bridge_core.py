"""Core ComfyUI conditioning into the pack: CONDITIONING made as core CLIP Text Encode makes it from a UMT5 loaded by
Load CLIP (type wan), and CLIP_VISION_OUTPUT made as core CLIP Vision Encode makes it, converted by the bridge
nodes, equal our own encoders' outputs for the same tiny weights.

The core side is built here from core's layouts, with independent parts (sentencepiece for the ids, transformers
for the encoders), as read from ComfyUI:
- ``comfy/text_encoders/wan.py``: UMT5 tokenizer without a start token, end token 1, pad token 0, ``min_length`` 512
  and no maximum; the model has ``enable_attention_masks=True, zero_out_masked=True``.
- ``comfy/text_encoders/spiece_tokenizer.py``: sentencepiece ``encode`` (its own end token is dropped and 1 added).
- ``comfy/sd1_clip.py`` (``SDTokenizer.tokenize_with_weights``, ``SDClipModel.process_tokens`` / ``forward``): mask 1
  up to and including the end token, states of masked rows multiplied by 0; ``comfy/sd.py``
  (``encode_from_tokens_scheduled``): CONDITIONING = ``[[states [1, L, D] float32, {"pooled_output": ...}]]``.
- ``comfy/clip_vision.py`` (``clip_preprocess`` with crop off: no resize at the model's size, rounding to 8 bit, CLIP
  mean/std; ``encode_image``: ``intermediate_output=-2`` = the second-to-last block's output), ``comfy/clip_model.py``
  (``CLIPEncoder``), ``comfy_extras/nodes_wan.py`` (first-last frame: start and end states joined on dim -2).
"""
import importlib
import logging

import pytest
import torch

import test_encoders_support as sup

PROMPTS = ("A cat walks on the grass, realistic style.", "The quick brown fox jumps over the lazy dog")
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


@pytest.fixture
def bridge(pack):
    return importlib.import_module(pack.__name__ + ".nodes.bridge")


@pytest.fixture(scope="module")
def umt5(tmp_path_factory):
    """transformers UMT5 with random weights, its sentencepiece model, and the same weights as a Comfy-Org file."""
    spiece, model = sup.train_spiece(), sup.hf_umt5()
    path = sup.save_comfy_t5(model, spiece, tmp_path_factory.mktemp("t5") / "umt5_xxl_fp16.safetensors")
    return model, spiece, path


def core_conditioning(model, spiece: bytes, prompt: str, min_length: int = 512):
    """What core CLIP Text Encode returns for ``prompt`` with this UMT5 (see the module docstring)."""
    import sentencepiece

    ids = sentencepiece.SentencePieceProcessor(model_proto=spiece).encode(prompt) + [1]
    length = max(min_length, len(ids))
    tokens = torch.tensor([ids + [0] * (length - len(ids))])
    mask = torch.tensor([[1] * len(ids) + [0] * (length - len(ids))])
    with torch.no_grad():
        states = model(input_ids=tokens, attention_mask=mask).last_hidden_state.float()
    return [[states * mask.unsqueeze(-1).float(), {"pooled_output": None}]]


class CoreClipOutput:
    """core ``comfy.clip_vision.Output``: attribute and item access to the same fields."""

    def __getitem__(self, key):
        return getattr(self, key)

    def __setitem__(self, key, value):
        setattr(self, key, value)


def core_clip_vision_encode(model, image: torch.Tensor) -> CoreClipOutput:
    """core CLIP Vision Encode (crop 'none') of IMAGE [B, H, W, 3] already at the model's size."""
    pixels = torch.clip(255.0 * image.movedim(-1, 1), 0, 255).round() / 255.0
    pixels = (pixels - CLIP_MEAN) / CLIP_STD
    out = CoreClipOutput()
    with torch.no_grad():
        out["penultimate_hidden_states"] = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    return out


def test_text_from_core_equals_wan_text_encode(pack, bridge, umt5):
    """Oracle: our UMT5 encoder (itself pinned to the official T5 and transformers) on the same weights; the core
    side comes from transformers + sentencepiece. Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
    model, spiece, path = umt5
    encoder = pack.wan.encoders.load_text_encoder(path)
    ref = pack.wan.encoders.encode_prompts(encoder, *PROMPTS)
    node = bridge.WanExpertsConditioningFromCore()
    text, = node.convert(core_conditioning(model, spiece, PROMPTS[0]), core_conditioning(model, spiece, PROMPTS[1]))
    assert isinstance(text, pack.wan.conditioning.TextEmbeds)
    for ours, theirs in ((text.positive, ref.positive), (text.negative, ref.negative)):
        assert ours.shape == theirs.shape == (1, 512, 64) and ours.dtype == torch.float32
        ok, err, bound = sup.close(ours, theirs)
        assert ok, f"max error {err:.3g} > {bound:.3g}"
        assert torch.equal(ours == 0, theirs == 0)  # the same rows are exactly zero


def test_text_from_core_pads_and_cuts_to_512_rows(bridge, umt5, caplog):
    model, spiece, _ = umt5
    short = core_conditioning(model, spiece, PROMPTS[0], min_length=256)  # a shorter pad than Load CLIP's
    full = core_conditioning(model, spiece, PROMPTS[0])
    padded = bridge.context_from_core(short, "positive")
    assert padded.shape == (1, 512, 64) and not padded[:, 256:].any()
    assert torch.allclose(padded[:, :20], full[0][0][:, :20], atol=1e-5)
    long_prompt = " ".join(["walks cat grass sun"] * 150)  # more than 512 tokens: core does not cut
    long = core_conditioning(model, spiece, long_prompt)
    assert long[0][0].shape[1] > 512
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        cut = bridge.context_from_core(long, "positive")
    assert cut.shape == (1, 512, 64) and torch.equal(cut, long[0][0][:, :512])
    assert "cut off" in caplog.text


def test_text_from_core_needs_both_prompts(bridge, umt5):
    model, spiece, _ = umt5
    cond = core_conditioning(model, spiece, PROMPTS[0])
    for positive, negative, missing in ((cond, None, "negative"), (None, cond, "positive"), (None, None, "and")):
        with pytest.raises(ValueError, match=f"needs both a positive and a negative CONDITIONING.*{missing}"):
            bridge.WanExpertsConditioningFromCore().convert(positive, negative)


@pytest.mark.parametrize("conditioning, match", [
    ("text", "must be a CONDITIONING"),
    ([[torch.zeros(1, 512, 8), {}], [torch.zeros(1, 512, 8), {}]], "combines 2 conditionings"),
    ([[torch.zeros(512, 8), {}]], "not text states"),
    ([torch.zeros(1, 512, 8)], "not in core's"),
])
def test_text_from_core_refuses_other_values(bridge, conditioning, match):
    with pytest.raises(ValueError, match=match):
        bridge.context_from_core(conditioning, "positive")


def test_clip_vision_from_core_equals_wan_clip_vision_encode(pack, bridge, tmp_path, caplog):
    """Oracle: our CLIP vision encoder (pinned to the official CLIP and transformers) on the same weights and image;
    the core side is transformers' ``hidden_states[-2]`` on core's preprocessing. An 8-bit image at the model's size
    makes both preprocessings the same pixels. Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
    model = sup.hf_clip_vision()
    ours = pack.wan.encoders.load_clip_vision(sup.save_comfy_clip(model, tmp_path / "clip_vision_h.safetensors"))
    g = torch.Generator().manual_seed(7)
    start, end = (torch.randint(0, 256, (2, 56, 56, 3), generator=g).float() / 255 for _ in range(2))
    node = bridge.WanExpertsCLIPVisionFromCore()
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        single, = node.convert(core_clip_vision_encode(model, start))
    assert "64 features per token" in caplog.text  # the tiny tower is not ViT-H/14
    pair, = node.convert(core_clip_vision_encode(model, start), core_clip_vision_encode(model, end))
    signed = [x.movedim(-1, 1) * 2 - 1 for x in (start, end)]
    for got, ref in ((single.features, ours.encode(signed[0])), (pair.features, ours.encode_pair(*signed))):
        assert got.shape == ref.shape and got.dtype == torch.float32
        ok, err, bound = sup.close(got, ref)
        assert ok, f"max error {err:.3g} > {bound:.3g}"
    assert pair.features.shape == (2, 34, 64) and isinstance(single, pack.wan.conditioning.ClipEmbeds)


def test_clip_vision_from_core_refuses_other_values(bridge):
    out = CoreClipOutput()
    out["penultimate_hidden_states"] = torch.zeros(1, 257, 1280)
    other = CoreClipOutput()
    other["penultimate_hidden_states"] = torch.zeros(2, 257, 1280)
    with pytest.raises(ValueError, match="output of core CLIP Vision Encode"):
        bridge.clip_from_core(torch.zeros(1, 257, 1280))
    with pytest.raises(ValueError, match="do not fit together"):
        bridge.clip_from_core(out, other)
    assert bridge.clip_from_core(out).features.shape == (1, 257, 1280)

"""UMT5 text encoder: parity with the official Wan T5 and with transformers, from every file layout; the
zero-padding rule; truncation; bad files."""
import logging

import pytest
import torch
from safetensors.torch import save_file

import test_encoders_support as sup
from wan.encoders import encode_prompts, load_text_encoder
from wan.errors import CheckpointError
from wan.variants import DEFAULT_NEGATIVE_PROMPT

PROMPTS = [
    "A cat walks on the grass, realistic style.",
    "  Hello &amp; welcome   to the\tcafé — naïve façade.  ",
    "",
    " ".join(["The quick brown fox jumps over the lazy dog 123 times!"] * 12),  # > 128 tokens: far buckets
    DEFAULT_NEGATIVE_PROMPT,
]


@pytest.fixture(scope="module")
def spiece():
    return sup.train_spiece()


@pytest.fixture(scope="module")
def official_folder(tmp_path_factory, spiece):
    """An official Wan folder: the T5 .pth in official key names and the tokenizer in google/umt5-xxl/."""
    root = tmp_path_factory.mktemp("wan_official")
    model = sup.official_t5_encoder()
    torch.save(model.state_dict(), root / "models_t5_umt5-xxl-enc-bf16.pth")
    sup.write_tokenizer_folder(spiece, root / "google" / "umt5-xxl")
    return root, model


@pytest.fixture(scope="module")
def reference_tokenizer(tmp_path_factory, spiece):
    return sup.official_tokenizer(sup.write_tokenizer_folder(spiece, tmp_path_factory.mktemp("tok") / "umt5-xxl"))


def _assert_zero_after(out, lengths):
    for row, n in zip(out, lengths):
        assert torch.count_nonzero(row[n:]) == 0
        assert torch.all(row[:n].abs().sum(-1) > 0)


def test_text_encoder_matches_official_t5(official_folder):
    """Oracle: official wan22 ``T5Encoder`` + ``T5EncoderModel`` call path + zero padding to 512, float32.
    Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
    root, model = official_folder
    ref = sup.official_t5_pipeline(model, root / "google" / "umt5-xxl")(PROMPTS)
    for path in (root / "models_t5_umt5-xxl-enc-bf16.pth", root):  # the file, or the model folder holding it
        encoder = load_text_encoder(path)
        out = encoder.encode(PROMPTS)
        assert out.shape == (len(PROMPTS), 512, 64) and out.dtype == torch.float32
        ok, err, bound = sup.close(out, ref)
        assert ok, f"max error {err:.3g} > {bound:.3g}"
    lengths = [int(n) for n in sup.official_tokenizer(root / "google" / "umt5-xxl")(
        PROMPTS, return_mask=True, add_special_tokens=True)[1].sum(1)]
    assert lengths[2] == 1 and lengths[3] > 128  # the empty prompt is its EOS; the long one uses far buckets
    _assert_zero_after(out, lengths)


@pytest.mark.parametrize("layout", ["comfy_file", "transformers_folder"])
def test_text_encoder_matches_transformers_umt5(tmp_path, spiece, reference_tokenizer, layout):
    """Oracle: transformers ``UMT5EncoderModel`` (HF key names) on the official tokenizer's ids, states of the real
    tokens kept and zero after them, float32. Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
    model = sup.hf_umt5()
    if layout == "comfy_file":
        path = sup.save_comfy_t5(model, spiece, tmp_path / "umt5_xxl_fp16.safetensors")
    else:
        path = tmp_path / "umt5"
        model.save_pretrained(str(path))
        sup.write_tokenizer_folder(spiece, path)
    encoder = load_text_encoder(path)
    ids, mask = reference_tokenizer(PROMPTS, return_mask=True, add_special_tokens=True)
    ref = sup.hf_umt5_encode(model, ids, mask)
    out = encoder.encode(PROMPTS)
    ok, err, bound = sup.close(out, ref)
    assert ok, f"max error {err:.3g} > {bound:.3g}"
    _assert_zero_after(out, mask.sum(1).tolist())


def test_text_encoder_scaled_fp8_file(tmp_path, spiece, reference_tokenizer):
    """Oracle: transformers ``UMT5EncoderModel`` holding the dequantised (fp8 x scale_weight) weights of a Comfy
    scaled-fp8 file, float32. Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
    model = sup.hf_umt5()
    sd = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    stored, dequant = sup.scaled_fp8(sd, skip=("relative_attention_bias", "shared"))
    stored["spiece_model"] = sup.spiece_tensor(spiece)
    save_file(stored, str(tmp_path / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"))
    model.load_state_dict(dequant, strict=False)
    encoder = load_text_encoder(tmp_path / "umt5_xxl_fp8_e4m3fn_scaled.safetensors", dtype="fp32")
    assert "scaled fp8" in encoder.layout
    assert encoder.model.blocks[0].attn.q.weight.dtype == torch.float8_e4m3fn
    ids, mask = reference_tokenizer(PROMPTS[:2], return_mask=True, add_special_tokens=True)
    ok, err, bound = sup.close(encoder.encode(PROMPTS[:2]), sup.hf_umt5_encode(model, ids, mask))
    assert ok, f"max error {err:.3g} > {bound:.3g}"


def test_long_prompt_is_truncated_with_a_warning(tmp_path, spiece, reference_tokenizer, caplog):
    """Oracle for the ids: the official tokenizer wrapper (truncation to 512 keeps EOS last)."""
    model = sup.hf_umt5()
    encoder = load_text_encoder(sup.save_comfy_t5(model, spiece, tmp_path / "umt5.safetensors"))
    prompt = " ".join(["walks cat grass sun"] * 150)  # 600 words, more than 512 tokens
    ids, mask = reference_tokenizer([prompt], return_mask=True, add_special_tokens=True)
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        tokens = encoder.tokenizer([prompt])
        out = encoder.encode([prompt])
    assert any("cut off" in r.getMessage() for r in caplog.records)
    assert torch.equal(tokens.ids, ids) and tokens.lengths == [512] and ids[0, -1] == 1
    assert torch.all(out[0].abs().sum(-1) > 0)


def test_encode_prompts_default_negative_and_empty_positive_warning(official_folder, caplog):
    root, _ = official_folder
    encoder = load_text_encoder(root)
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        embeds = encode_prompts(encoder, "   ", "")
    assert any("positive prompt is empty" in r.getMessage() for r in caplog.records)
    assert embeds.negative_prompts == [DEFAULT_NEGATIVE_PROMPT]
    assert embeds.positive.shape == embeds.negative.shape == (1, 512, 64)
    assert torch.allclose(embeds.negative, encoder.encode([DEFAULT_NEGATIVE_PROMPT]), atol=1e-6)


def test_dit_file_is_refused_with_a_pointer_to_the_dit_loader(tmp_path):
    sd = {"head.modulation": torch.zeros(1, 2, 8), "blocks.0.self_attn.q.weight": torch.zeros(8, 8),
          "patch_embedding.weight": torch.zeros(8, 16, 1, 2, 2)}
    save_file(sd, str(tmp_path / "wan2.1_t2v_1.3B_fp16.safetensors"))
    with pytest.raises(CheckpointError, match="Wan DiT"):
        load_text_encoder(tmp_path / "wan2.1_t2v_1.3B_fp16.safetensors")


def test_missing_tokenizer_is_explained(tmp_path):
    path = sup.save_comfy_t5(sup.hf_umt5(), None, tmp_path / "umt5_no_tokenizer.safetensors")
    with pytest.raises(CheckpointError, match="No tokenizer found.*google/umt5-xxl"):
        load_text_encoder(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_text_encoder(path, tokenizer=tmp_path / "nowhere" / "spiece.model")


def test_t5_without_per_block_position_bias_is_refused(tmp_path, spiece):
    model = sup.hf_umt5()
    sd = {k: v for k, v in model.state_dict().items()
          if k != "encoder.embed_tokens.weight" and not k.startswith("encoder.block.1.layer.0.SelfAttention.rel")}
    sd["spiece_model"] = sup.spiece_tensor(spiece)
    save_file(sd, str(tmp_path / "t5xxl_fp16.safetensors"))
    with pytest.raises(CheckpointError, match="UMT5-XXL"):
        load_text_encoder(tmp_path / "t5xxl_fp16.safetensors")


def test_fp16_file_computes_in_bf16_by_default(tmp_path, spiece):
    """The official code runs T5 in bf16 (fp16 overflows in T5); an explicit dtype still wins."""
    path = sup.save_comfy_t5(sup.hf_umt5().half(), spiece, tmp_path / "umt5_xxl_fp16.safetensors")
    encoder = load_text_encoder(path)
    assert encoder.compute_dtype == torch.bfloat16 and encoder.model.norm.weight.dtype == torch.bfloat16
    out = encoder.encode(["a cat"])
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert load_text_encoder(path, dtype="fp16").compute_dtype == torch.float16

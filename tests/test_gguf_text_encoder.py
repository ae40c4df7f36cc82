"""GGUF UMT5 text encoders (llama.cpp architecture 't5encoder', as umt5-xxl-encoder-Q8_0.gguf): weights that stay
quantised, the tokenizer rebuilt from the file's metadata, the node, and wrong files.

The tiny UMT5 of the other encoder tests is written here under llama.cpp's names, taken from the ``gguf`` package's
own table (``gguf.get_tensor_name_map(MODEL_ARCH.T5ENCODER)``, the names llama.cpp's converter gives HF T5 keys), with
the tokenizer metadata llama.cpp's converter writes for a sentencepiece model (pieces, scores, types, normaliser
settings, NFKC table, special ids; the vocabulary padded to the embedding's rows with unused ``[PADn]`` pieces).
"""
import importlib

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T, GGUFReader, quants

import test_encoders_support as sup
from gguf_t5_names import llama_t5_names
import wan
from test_encoders_text import PROMPTS
from test_encoders_tokenizer import TEXTS
from test_quant_gguf_dit import mapped_ranges, write_tiny_gguf
from wan.encoders import load_text_encoder
from wan.errors import CheckpointError
from wan.weights.ops import Linear
from wan.encoders.t5_gguf import GGUFEmbedding
from wan.quant.gguf_file import read_gguf
from wan.quant.gguf_format import GGUFFormat
from wan.quant.gguf_write import write_gguf

VOCAB = sup.SP_VOCAB + 16  # more embedding rows than pieces, as UMT5-XXL (256384 rows, 256300 pieces)
FFN = 256  # ffn_down then takes 256 inputs: whole K-quant blocks
# Per-tensor types of the quantised file (the rest: Q8_0 for Linear weights and the embedding, F32 for small ones).
# K-quants get random raw blocks (gguf cannot quantise them), so that file's model is defined by its blocks.
KQUANT = {"enc.blk.0.ffn_down.weight": T.Q4_K, "enc.blk.1.ffn_down.weight": T.Q6_K}
TYPES = {**KQUANT, "enc.blk.1.attn_o.weight": T.F16, "enc.blk.1.attn_rel_b.weight": T.F16}


def gguf_names(model) -> dict[str, str]:
    """HF T5 key -> llama.cpp name, by gguf's table (the tied ``encoder.embed_tokens`` copy is left out)."""
    return llama_t5_names(model.state_dict(), model.config.num_layers)


def add_tokenizer(spiece: bytes, vocab: int = VOCAB):
    """Metadata as llama.cpp's converter writes it for a T5 sentencepiece model."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(spiece)
    tokens, scores, types = [f"[PAD{i}]" for i in range(vocab)], [-10000.0] * vocab, [5] * vocab
    for i, piece in enumerate(proto.pieces):
        tokens[i], scores[i], types[i] = piece.piece, piece.score, piece.type

    def add(writer):
        writer.add_tokenizer_model("t5")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)
        writer.add_remove_extra_whitespaces(proto.normalizer_spec.remove_extra_whitespaces)
        writer.add_precompiled_charsmap(proto.normalizer_spec.precompiled_charsmap)
        writer.add_eos_token_id(1)
        writer.add_unk_token_id(2)
        writer.add_pad_token_id(0)
        writer.add_add_bos_token(False)
        writer.add_add_eos_token(True)

    return add


def write_t5_gguf(model, path, qtype=T.Q8_0, types=None, spiece=None, arch="t5encoder"):
    names = gguf_names(model)
    sd = model.state_dict()
    tensors = {g: (tuple(sd[k].shape) if g in (types or {}) and types[g] in KQUANT.values() else sd[k])
               for k, g in names.items()}
    write_gguf(path, tensors, qtype, types=types, arch=arch, metadata=add_tokenizer(spiece) if spiece else None)
    return path


def dequantised_reference(path, model_like):
    """A transformers model holding the file's tensors dequantised by gguf's numpy reference."""
    hf_of = {g: k for k, g in gguf_names(model_like).items()}
    sd = {}
    for t in GGUFReader(path).tensors:
        values = np.array(quants.dequantize(np.asarray(t.data), t.tensor_type), dtype=np.float32)
        sd[hf_of[t.name]] = torch.from_numpy(values.reshape(list(reversed(t.shape.tolist()))))
    ref = sup.hf_umt5(VOCAB, d_ff=FFN)
    ref.load_state_dict(sd, strict=False)
    ref.encoder.embed_tokens.weight = ref.shared.weight
    return ref


@pytest.fixture(scope="module")
def spiece():
    return sup.train_spiece()


@pytest.fixture(scope="module")
def reference_tokenizer(tmp_path_factory, spiece):
    return sup.official_tokenizer(sup.write_tokenizer_folder(spiece, tmp_path_factory.mktemp("tok") / "umt5-xxl"))


@pytest.fixture(scope="module")
def quantised(tmp_path_factory, spiece):
    path = tmp_path_factory.mktemp("gguf") / "umt5-xxl-encoder-Q8_0.gguf"
    return write_t5_gguf(sup.hf_umt5(VOCAB, d_ff=FFN), path, types=TYPES, spiece=spiece)


def test_f32_file_matches_transformers(tmp_path, spiece, reference_tokenizer):
    """Oracle: transformers ``UMT5EncoderModel`` with the same (F32) weights on the official tokenizer's ids, float32.
    Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5 (as the other text-encoder parity tests)."""
    model = sup.hf_umt5(VOCAB)
    path = write_t5_gguf(model, tmp_path / "umt5-xxl-encoder-f32.gguf", types={g: T.F32 for g in
                                                                               gguf_names(model).values()},
                         spiece=spiece)
    encoder = load_text_encoder(path)
    assert encoder.compute_dtype == torch.float32 and encoder.layout.startswith("GGUF (F32")
    ids, mask = reference_tokenizer(PROMPTS, return_mask=True, add_special_tokens=True)
    ok, err, bound = sup.close(encoder.encode(PROMPTS), sup.hf_umt5_encode(model, ids, mask))
    assert ok, f"max error {err:.3g} > {bound:.3g}"


def test_quantised_file_equals_its_dequantised_weights(quantised, spiece, reference_tokenizer, tmp_path):
    """Oracles: (1) our encoder loaded in float32 from a safetensors file of the GGUF tensors dequantised by gguf's
    numpy reference: max|ours - ref| <= 1e-5 * max|ref| (same weights bit for bit, so only the order of float
    operations differs); (2) transformers ``UMT5EncoderModel`` with those weights, <= 1e-4 * max|ref| + 1e-5."""
    ref_model = dequantised_reference(quantised, sup.hf_umt5(VOCAB, d_ff=FFN))
    encoder = load_text_encoder(quantised, dtype="fp32")
    out = encoder.encode(PROMPTS)
    plain = load_text_encoder(sup.save_comfy_t5(ref_model, spiece, tmp_path / "deq.safetensors"),
                              dtype="fp32").encode(PROMPTS)
    err = (out - plain).abs().max().item()
    assert err <= 1e-5 * plain.abs().max().item(), err
    ids, mask = reference_tokenizer(PROMPTS, return_mask=True, add_special_tokens=True)
    ok, err, bound = sup.close(out, sup.hf_umt5_encode(ref_model, ids, mask))
    assert ok, f"max error {err:.3g} > {bound:.3g}"


def test_quantised_linear_weights_stay_quantised(quantised):
    encoder = load_text_encoder(quantised)
    assert encoder.compute_dtype == torch.bfloat16  # quantised files compute in bf16 by default, as the official T5
    on_disk = {t.name: t for t in GGUFReader(quantised).tensors}
    names = {v: k for k, v in _official_of_gguf().items()}
    held = expected = 0
    for name, layer in encoder.model.named_modules():
        t = on_disk.get(names.get(f"{name}.weight", ""))
        if t is None or t.tensor_type in (T.F32, T.F16) or not isinstance(layer, Linear):
            continue
        assert isinstance(layer.weight_format, GGUFFormat) and layer.weight_format.qtype == t.tensor_type, name
        assert layer.weight.dtype == torch.uint8 and torch.equal(layer.weight, torch.from_numpy(np.asarray(t.data)))
        held += layer.weight_format.stored_bytes(layer)
        expected += t.n_bytes
    assert expected > 0 and held == expected
    qtypes = {layer.weight_format.qtype for layer in encoder.model.modules() if isinstance(
        getattr(layer, "weight_format", None), GGUFFormat)}
    assert qtypes == {T.Q8_0, T.Q4_K, T.Q6_K, T.F16}
    assert encoder.model.blocks[1].attn.o.weight.dtype == torch.float16  # an F16 Linear stays F16, cast per forward
    # the Q8_0 token embedding stays in its blocks too: its rows are the file's bytes, not a copy
    table = encoder.model.token_embedding
    embd = on_disk["token_embd.weight"]
    assert isinstance(table, GGUFEmbedding) and table.rows.dtype == torch.uint8
    assert torch.equal(table.rows.reshape(-1), torch.from_numpy(np.asarray(embd.data)).reshape(-1))
    start = table.rows.data_ptr()
    assert any(a <= start and start + table.rows.numel() <= b for a, b in mapped_ranges(quantised))  # the file's map
    assert torch.isfinite(encoder.encode(["a cat"])).all()


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_0, T.Q5_1, T.Q4_K, T.Q6_K])
def test_quantised_embedding_lookup_equals_gguf_dequantised_rows(tmp_path, qtype):
    """Oracle: gguf's numpy dequantiser on the whole table, rows picked by the ids; bit-equal in float32, and equal to
    those values rounded to bf16 in bf16 (one rounding). The ids repeat and come in a [batch, length] shape."""
    vocab, dim = 64, 512
    g = torch.Generator().manual_seed(3)
    if qtype in (T.Q4_K, T.Q6_K):  # gguf cannot quantise K-quants: random blocks (finite scales)
        table = (vocab, dim)
    else:
        table = torch.randn(vocab, dim, generator=g)
    path = tmp_path / "embd.gguf"
    write_gguf(path, {"token_embd.weight": table}, qtype, types={"token_embd.weight": qtype}, arch="t5encoder")
    t = GGUFReader(path).tensors[0]
    whole = torch.from_numpy(np.array(quants.dequantize(np.asarray(t.data), t.tensor_type), dtype=np.float32))
    whole = whole.reshape(vocab, dim)
    tensor = read_gguf(path).tensors["token_embd.weight"]
    ids = torch.tensor([[5, 0, 63, 5], [7, 7, 1, 2]])
    for dtype in (torch.float32, torch.bfloat16):
        out = GGUFEmbedding(tensor, dtype)(ids)
        assert out.dtype == dtype and out.shape == (2, 4, dim)
        assert torch.equal(out, whole[ids].to(dtype)), (qtype, dtype)


def _official_of_gguf() -> dict[str, str]:
    """llama.cpp name -> official name for the tiny model (through the loader's own map, checked in use above)."""
    from wan.encoders.t5_keys import gguf_key_to_official

    return {g: gguf_key_to_official(g) for g in gguf_names(sup.hf_umt5(VOCAB, d_ff=FFN)).values()}


def test_rebuilt_tokenizer_gives_the_official_ids(quantised, reference_tokenizer):
    """Oracle: the official tokenizer wrapper on the source sentencepiece model (non-English text, typed special
    tokens, NFKC-normalised characters, the official negative prompt)."""
    tokenizer = load_text_encoder(quantised).tokenizer
    assert "tokenizer.ggml" in tokenizer.source
    ref_ids, ref_mask = reference_tokenizer(TEXTS, return_mask=True, add_special_tokens=True)
    batch = tokenizer(TEXTS)
    assert torch.equal(batch.ids, ref_ids) and torch.equal(batch.mask, ref_mask)


def test_file_without_tokenizer_metadata_asks_for_a_tokenizer(tmp_path, spiece, reference_tokenizer):
    model = sup.hf_umt5(VOCAB)
    path = write_t5_gguf(model, tmp_path / "umt5-xxl-encoder-Q8_0.gguf")
    with pytest.raises(CheckpointError, match=r"umt5-xxl-encoder-Q8_0.gguf.*no tokenizer metadata.*'tokenizer' input"):
        load_text_encoder(path)
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "spiece.model").write_bytes(spiece)
    encoder = load_text_encoder(path, tokenizer=tmp_path / "tok" / "spiece.model")
    ids, _ = reference_tokenizer(PROMPTS, return_mask=True, add_special_tokens=True)
    assert torch.equal(encoder.tokenizer(PROMPTS).ids, ids)


def test_wrong_gguf_files_name_the_right_loader(tmp_path, quantised):
    dit = write_tiny_gguf(tmp_path / "wan2.1-t2v-1.3b-Q8_0.gguf")
    with pytest.raises(CheckpointError, match=r"wan2.1-t2v-1.3b-Q8_0.gguf.*Wan DiT.*Load Wan DiT"):
        load_text_encoder(dit)
    with pytest.raises(CheckpointError, match=r"umt5-xxl-encoder-Q8_0.gguf.*'t5encoder'.*text encoder.*Load Wan Text"):
        wan.load_dit(quantised)
    write_gguf(tmp_path / "llama-Q8_0.gguf", {"token_embd.weight": (64, 32)}, arch="llama")
    with pytest.raises(CheckpointError, match=r"llama-Q8_0.gguf.*'llama' architecture.*not a UMT5 text encoder"):
        load_text_encoder(tmp_path / "llama-Q8_0.gguf")


def test_tokenizer_of_another_kind_is_refused(tmp_path):
    def gpt2(writer):
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list(["a", "b"])

    write_gguf(tmp_path / "odd.gguf", {g: v for g, v in _named(sup.hf_umt5(VOCAB)).items()}, arch="t5encoder",
               metadata=gpt2)
    with pytest.raises(CheckpointError, match=r"odd.gguf.*'gpt2' tokenizer.*'tokenizer' input"):
        load_text_encoder(tmp_path / "odd.gguf")


def _named(model) -> dict:
    sd = model.state_dict()
    return {g: sd[k] for k, g in gguf_names(model).items()}


def test_node_lists_and_loads_gguf_encoders(pack, models_dir, quantised, spiece):
    nodes = importlib.import_module(pack.__name__ + ".nodes.encoders")
    folder = models_dir / "text_encoders"
    (folder / "umt5-xxl-encoder-Q8_0.gguf").write_bytes(quantised.read_bytes())
    write_t5_gguf(sup.hf_umt5(VOCAB), folder / "umt5-no-tokenizer-Q8_0.gguf")
    (folder / "tokenizers").mkdir()  # not a folder 'auto' looks in
    (folder / "tokenizers" / "spiece.model").write_bytes(spiece)
    inputs = nodes.WanExpertsLoadTextEncoder.INPUT_TYPES()
    assert {"umt5-xxl-encoder-Q8_0.gguf", "umt5-no-tokenizer-Q8_0.gguf"} <= set(inputs["required"]["text_encoder_name"][0])
    (encoder,) = nodes.WanExpertsLoadTextEncoder().load("umt5-xxl-encoder-Q8_0.gguf", "fp32", "cpu", False)
    (text,) = nodes.WanExpertsTextEncode().encode(encoder, "a cat", "")
    ref = load_text_encoder(quantised, dtype="fp32").encode(["a cat"])
    assert torch.allclose(text.positive, ref, rtol=0, atol=1e-5 * ref.abs().max().item())
    errors = importlib.import_module(pack.__name__ + ".wan.errors")
    with pytest.raises(errors.CheckpointError, match="'tokenizer' input"):
        nodes.WanExpertsLoadTextEncoder().load("umt5-no-tokenizer-Q8_0.gguf", "fp32", "cpu", False)
    (encoder,) = nodes.WanExpertsLoadTextEncoder().load("umt5-no-tokenizer-Q8_0.gguf", "fp32", "cpu", False,
                                                        tokenizer="tokenizers/spiece.model")
    assert encoder.tokenizer.source.endswith("spiece.model")

"""UMT5 tokenizer from every source gives the official ids (oracle: the official ``HuggingfaceTokenizer`` wrapper,
transformers' T5 tokenizer built from the same sentencepiece model, with ``clean='whitespace'``)."""
import pytest
import torch
from safetensors.torch import save_file

import test_encoders_support as sup
from oracles import official
from wan.encoders.text_clean import clean_prompt
from wan.encoders.tokenizer_source import find_tokenizer, tokenizer_from_path
from wan.errors import CheckpointError
from wan.variants import DEFAULT_NEGATIVE_PROMPT

TEXTS = [
    "A cat walks on the grass, realistic style.",
    "  double  spaces\tand tabs\nand newlines  ",
    "Hello &amp;amp; welcome &lt;b&gt; to the café — naïve façade.",
    "一只猫在草地上行走，阳光明媚。",
    "unknown ✨ emoji Ω and ﬁ ligature ① ＡＢＣ full width",
    "special tokens typed in: a</s>b <pad> <unk> end",
    "The quick brown fox jumps over the lazy dog 123 times! (test) [x] {y} 3.14",
    "mojibake cafÃ© and \u00a0no-break\u3000ideographic space",
    "",
    DEFAULT_NEGATIVE_PROMPT,
]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    spiece = sup.train_spiece()
    root = tmp_path_factory.mktemp("tok")
    official_folder = sup.write_tokenizer_folder(spiece, root / "google" / "umt5-xxl")
    save_file({"spiece_model": sup.spiece_tensor(spiece)}, str(root / "umt5_tokenizer_only.safetensors"))
    (root / "spiece_only").mkdir()
    (root / "spiece_only" / "spiece.model").write_bytes(spiece)
    return root, official_folder


def test_every_source_gives_the_official_ids(sources):
    root, official_folder = sources
    ref_ids, ref_mask = sup.official_tokenizer(official_folder)(TEXTS, return_mask=True, add_special_tokens=True)
    candidates = {
        "spiece_model tensor": find_tokenizer(root / "x.safetensors", {"spiece_model": sup.spiece_tensor(
            (root / "spiece_only" / "spiece.model").read_bytes())}),
        "official folder (tokenizer.json)": tokenizer_from_path(official_folder),
        "spiece.model only": tokenizer_from_path(root / "spiece_only"),
        "safetensors path": tokenizer_from_path(root / "umt5_tokenizer_only.safetensors"),
    }
    for name, tok in candidates.items():
        batch = tok(TEXTS)
        assert torch.equal(batch.ids, ref_ids), name
        assert torch.equal(batch.mask, ref_mask), name
        assert batch.lengths == ref_mask.sum(1).tolist(), name


def test_cleaning_matches_the_official_whitespace_clean():
    tk = official.load("modules.tokenizers")
    for text in TEXTS:
        assert clean_prompt(text) == tk.whitespace_clean(tk.basic_clean(text))


def test_official_folder_next_to_the_pth_is_found(sources):
    root, _ = sources
    tok = find_tokenizer(root / "models_t5_umt5-xxl-enc-bf16.pth", {})
    assert tok.source.endswith("tokenizer.json") and "umt5-xxl" in tok.source


def test_bad_tokenizer_sources_are_explained(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither tokenizer.json nor spiece.model"):
        tokenizer_from_path(tmp_path / "empty")
    (tmp_path / "spiece.model").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a sentencepiece model"):
        tokenizer_from_path(tmp_path / "spiece.model")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="no 'spiece_model' tensor"):
        tokenizer_from_path(tmp_path / "other.safetensors")

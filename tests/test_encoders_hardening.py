"""A tokenizer whose ids go past the text encoder's embedding rows is refused at load, naming both (on a GPU such
an id would be a device-side assert that leaves the process unusable)."""
import pytest

import test_encoders_support as sup
from wan.encoders.text_encoder import load_text_encoder
from wan.errors import CheckpointError


def test_tokenizer_beyond_the_encoder_vocabulary_is_refused_at_load(tmp_path):
    spiece = sup.train_spiece()
    small = sup.save_comfy_t5(sup.hf_umt5(vocab=sup.SP_VOCAB - 20), spiece, tmp_path / "umt5_small_vocab.safetensors")
    with pytest.raises(CheckpointError, match=rf"tokenizer '.*' gives ids up to {sup.SP_VOCAB - 1}, but the text "
                                              rf"encoder 'umt5_small_vocab.safetensors' has {sup.SP_VOCAB - 20} token "
                                              rf"embeddings"):
        load_text_encoder(small)
    exact = sup.save_comfy_t5(sup.hf_umt5(vocab=sup.SP_VOCAB), spiece, tmp_path / "umt5.safetensors")
    assert load_text_encoder(exact).encode(["a cat"]).shape[0] == 1

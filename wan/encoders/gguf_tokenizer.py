"""The UMT5 tokenizer of a GGUF text encoder, rebuilt from the file's metadata.

llama.cpp's converter stores the sentencepiece model as metadata instead of the model file:
``tokenizer.ggml.model`` ("t5" for sentencepiece unigram), ``tokens``, ``scores``, ``token_type`` (sentencepiece's
own piece types: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte), ``add_space_prefix``,
``remove_extra_whitespaces``, ``precompiled_charsmap`` (the normaliser's NFKC table) and the special ids. Those are
the fields a unigram model encodes with, so the rebuilt model gives the original ids.
"""
from __future__ import annotations

from ..errors import CheckpointError
from .spiece_proto import Normalizer, SpecialIds, model_proto
from .tokenizer import UMT5Tokenizer

PREFIX = "tokenizer.ggml."
PIECE_FIELDS = ("tokens", "scores", "token_type")


def has_tokenizer(gguf) -> bool:
    return gguf.value(PREFIX + "model") is not None or gguf.value(PREFIX + "tokens") is not None


def tokenizer_from_gguf(gguf) -> UMT5Tokenizer:
    """The tokenizer stored in ``gguf`` (a ``wan.quant.gguf_file.GGUFFile`` that ``has_tokenizer``)."""
    from .tokenizer_source import tokenizer_from_proto

    name = gguf.path.name
    kind = gguf.value(PREFIX + "model")
    if kind != "t5":
        raise CheckpointError(
            f"'{name}' carries a '{kind}' tokenizer, not the sentencepiece (T5) tokenizer of UMT5. Pick the UMT5 "
            f"tokenizer (spiece.model or tokenizer.json of google/umt5-xxl) in the loader's 'tokenizer' input.")
    tokens, scores, types = (gguf.value(PREFIX + f) for f in PIECE_FIELDS)
    if tokens is None or scores is None or types is None or not len(tokens) == len(scores) == len(types):
        raise CheckpointError(
            f"'{name}' has incomplete tokenizer metadata (it needs {', '.join(PREFIX + f for f in PIECE_FIELDS)} of "
            f"equal length). Pick the UMT5 tokenizer (spiece.model or tokenizer.json) in the 'tokenizer' input.")
    ids = SpecialIds(unk=_id(gguf, "unknown_token_id", types.index(2) if 2 in types else 0),
                     eos=_id(gguf, "eos_token_id", 1), pad=_id(gguf, "padding_token_id", 0))  # T5: no BOS
    normalizer = Normalizer(bytes(gguf.value(PREFIX + "precompiled_charsmap", [])),
                            bool(gguf.value(PREFIX + "add_space_prefix", True)),
                            bool(gguf.value(PREFIX + "remove_extra_whitespaces", True)))
    proto = model_proto(list(tokens), [float(s) for s in scores], [int(t) for t in types], ids, normalizer)
    return tokenizer_from_proto(proto, f"{name}:{PREFIX}*")


def _id(gguf, key: str, default: int) -> int:
    value = gguf.value(PREFIX + key)
    return default if value is None else int(value)

"""Transformers T5 / UMT5 key -> llama.cpp GGUF tensor name, by the ``gguf`` package's own name table (no pytest, no
oracles: the real-host check script uses it too)."""
from __future__ import annotations

from gguf import MODEL_ARCH, get_tensor_name_map


def llama_t5_names(keys, num_layers: int) -> dict[str, str]:
    """Each key's llama.cpp ``t5encoder`` name; the tied ``encoder.embed_tokens`` copy of ``shared`` is left out."""
    table = get_tensor_name_map(MODEL_ARCH.T5ENCODER, num_layers)
    return {k: table.get_name(k, try_suffixes=(".weight",)) for k in keys if k != "encoder.embed_tokens.weight"}

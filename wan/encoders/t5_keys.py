"""Bring every UMT5 checkpoint layout to the official Wan key names.

Layouts: official Wan (``token_embedding``, ``blocks.N.attn.q`` ...), Hugging Face T5 names as used by
transformers ``UMT5EncoderModel`` folders and Comfy-Org ``umt5_xxl_*.safetensors`` (``shared``,
``encoder.block.N.layer.0.SelfAttention.q`` ...; possibly scaled fp8, with the tokenizer inside as
``spiece_model``), and llama.cpp names in GGUF files (``token_embd``, ``enc.blk.N.attn_q`` ...; the ``gguf``
package's ``MODEL_ARCH.T5ENCODER`` table). Only module paths are renamed: suffixes such as ``.weight`` or
``.scale_weight`` are kept.
"""
from __future__ import annotations

import re

import torch

from ..weights.checkpoint import strip_prefix

TOKENIZER_KEY = "spiece_model"
OFFICIAL_MARKERS = ("token_embedding.weight", "blocks.0.attn.q.weight")
HF_MARKER = "encoder.block.0.layer.0.SelfAttention.q.weight"

_HF_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.layer\.([01])\.(.+)$")
_HF_BLOCK_PARTS = {
    "0": (("SelfAttention.relative_attention_bias.", "pos_embedding.embedding."), ("SelfAttention.", "attn."),
          ("layer_norm.", "norm1.")),
    "1": (("DenseReluDense.wi_0.", "ffn.gate.0."), ("DenseReluDense.wi_1.", "ffn.fc1."),
          ("DenseReluDense.wo.", "ffn.fc2."), ("layer_norm.", "norm2.")),
}
_HF_TOP = (("shared.", "token_embedding."), ("encoder.embed_tokens.", "token_embedding."),
           ("encoder.final_layer_norm.", "norm."))
# Parts of a full T5 checkpoint that the encoder does not use.
_HF_IGNORED = ("decoder.", "lm_head.")


# llama.cpp names (gguf's tensor_mapping.py: ffn_gate = wi_0, ffn_up = wi_1, ffn_down = wo)
_GGUF_BLOCK = re.compile(r"^enc\.blk\.(\d+)\.([a-z_]+)\.(.+)$")
_GGUF_BLOCK_PARTS = {
    "attn_q": "attn.q", "attn_k": "attn.k", "attn_v": "attn.v", "attn_o": "attn.o", "attn_norm": "norm1",
    "attn_rel_b": "pos_embedding.embedding", "ffn_norm": "norm2", "ffn_gate": "ffn.gate.0", "ffn_up": "ffn.fc1",
    "ffn_down": "ffn.fc2",
}
_GGUF_TOP = (("token_embd.", "token_embedding."), ("enc.output_norm.", "norm."))
GGUF_MARKER = "enc.blk.0.attn_q.weight"
# Parts of a full llama.cpp T5 (architecture "t5") that the encoder does not use: the decoder and the LM head.
GGUF_IGNORED = ("dec.", "output.")
_LINEAR = re.compile(r"^blocks\.\d+\.(attn\.[qkvo]|ffn\.gate\.0|ffn\.fc1|ffn\.fc2)\.weight$")


def detect_layout(sd: dict[str, torch.Tensor]) -> str | None:
    if all(k in sd for k in OFFICIAL_MARKERS):
        return "official"
    if HF_MARKER in sd:
        return "hf"
    return None


def normalize_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str | None]:
    """(tensors in official names, layout name or None when the keys are not a UMT5 encoder's).

    The tokenizer tensor and fp8 bookkeeping (``scaled_fp8``, ``*.scale_weight``) pass through unchanged in name.
    """
    sd = strip_prefix(sd)
    layout = detect_layout(sd)
    if layout != "hf":
        return sd, layout
    out = {}
    for key, value in sd.items():
        if key.startswith(_HF_IGNORED):
            continue
        out.setdefault(hf_key_to_official(key), value)  # shared and embed_tokens are the same tied matrix
    return out, layout


def hf_key_to_official(key: str) -> str:
    m = _HF_BLOCK.match(key)
    if m:
        block, layer, rest = m.groups()
        for old, new in _HF_BLOCK_PARTS[layer]:
            if rest.startswith(old):
                return f"blocks.{block}.{new}{rest[len(old):]}"
        return key
    for old, new in _HF_TOP:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def gguf_key_to_official(key: str) -> str:
    """A llama.cpp tensor name in official names; unknown names come back unchanged (the loader reports them)."""
    m = _GGUF_BLOCK.match(key)
    if m and m.group(2) in _GGUF_BLOCK_PARTS:
        block, part, rest = m.groups()
        return f"blocks.{block}.{_GGUF_BLOCK_PARTS[part]}.{rest}"
    for old, new in _GGUF_TOP:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def is_linear_weight(key: str) -> bool:
    """Whether an official key is the weight of a ``Linear`` layer (which may stay quantised)."""
    return _LINEAR.match(key) is not None


def has_relative_bias_in_every_block(sd: dict[str, torch.Tensor]) -> bool:
    """UMT5 learns a position bias in every block; T5 v1.1 / FLAN-T5 only in the first."""
    blocks = {k.split(".")[1] for k in sd if k.startswith("blocks.")}
    return all(f"blocks.{b}.pos_embedding.embedding.weight" in sd for b in blocks)

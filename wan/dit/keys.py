"""Bring every DiT checkpoint layout to the official key names.

Layouts: official Wan-AI / Comfy-Org (optionally prefixed ``model.diffusion_model.``), diffusers
``WanTransformer3DModel`` and ``WanVACETransformer3DModel``, plain fp8 and Comfy "scaled fp8" (``scaled_fp8`` marker + per-layer ``scale_weight``).
"""
from __future__ import annotations

import re

import torch

from ..weights.checkpoint import strip_prefix
from ..weights.ops import FP8_DTYPES
from ..quant.fp8 import is_marker
from ..weights.assign import split_fp8_scales

# diffusers name -> official name, for keys outside the blocks (prefix match, first match wins)
_DIFFUSERS_TOP = (
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("condition_embedder.image_embedder.norm1.", "img_emb.proj.0."),
    ("condition_embedder.image_embedder.ff.net.0.proj.", "img_emb.proj.1."),
    ("condition_embedder.image_embedder.ff.net.2.", "img_emb.proj.3."),
    ("condition_embedder.image_embedder.norm2.", "img_emb.proj.4."),
    ("condition_embedder.image_embedder.pos_embed", "img_emb.emb_pos"),
    ("scale_shift_table", "head.modulation"),
    ("proj_out.", "head.head."),
)
# diffusers name -> official name, inside ``blocks.N.``; diffusers' affine norm2 is the official norm3
_DIFFUSERS_BLOCK = (
    ("attn1.to_q.", "self_attn.q."), ("attn1.to_k.", "self_attn.k."), ("attn1.to_v.", "self_attn.v."),
    ("attn1.to_out.0.", "self_attn.o."), ("attn1.norm_q.", "self_attn.norm_q."), ("attn1.norm_k.", "self_attn.norm_k."),
    ("attn2.to_q.", "cross_attn.q."), ("attn2.to_k.", "cross_attn.k."), ("attn2.to_v.", "cross_attn.v."),
    ("attn2.to_out.0.", "cross_attn.o."), ("attn2.norm_q.", "cross_attn.norm_q."),
    ("attn2.norm_k.", "cross_attn.norm_k."), ("attn2.add_k_proj.", "cross_attn.k_img."),
    ("attn2.add_v_proj.", "cross_attn.v_img."), ("attn2.norm_added_k.", "cross_attn.norm_k_img."),
    ("norm2.", "norm3."), ("ffn.net.0.proj.", "ffn.0."), ("ffn.net.2.", "ffn.2."),
    ("scale_shift_table", "modulation"),
    ("proj_in.", "before_proj."), ("proj_out.", "after_proj."),  # VACE blocks (WanVACETransformer3DModel)
)
_DIFFUSERS_IGNORED = ("norm_added_q",)
_BLOCK = re.compile(r"^((?:vace_)?blocks\.\d+\.)(.*)$")


def is_diffusers(sd: dict) -> bool:
    return any(k.startswith(("condition_embedder.", "proj_out.")) or ".attn1." in k for k in sd)


def diffusers_key_to_official(key: str) -> str | None:
    m = _BLOCK.match(key)
    table, head, rest = (_DIFFUSERS_BLOCK, m.group(1), m.group(2)) if m else (_DIFFUSERS_TOP, "", key)
    if any(rest.startswith(f"attn2.{i}") for i in _DIFFUSERS_IGNORED):
        return None
    for old, new in table:
        if rest.startswith(old):
            return head + new + rest[len(old):]
    return key


def normalize_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], str]:
    """Return (weights in official names, per-layer fp8 ``scale_weight`` by layer name, layout name)."""
    scaled = any(is_marker(k) for k in sd)
    sd, scales = split_fp8_scales(sd)
    sd, scales = strip_prefix(sd), strip_prefix(scales)
    layout = "official"
    if is_diffusers(sd):
        renamed = ((diffusers_key_to_official(k), v) for k, v in sd.items())
        sd = {k: v for k, v in renamed if k is not None}
        layout = "diffusers"
    if scaled or scales:
        layout += " (scaled fp8)"
    elif any(v.dtype in FP8_DTYPES for v in sd.values()):
        layout += " (fp8)"
    return sd, scales, layout

"""Bring every CLIP vision checkpoint layout to the names of ``clip.ClipVisionTower``.

Layouts: official Wan ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (``visual.*`` with a fused
``to_qkv``, split here into views) and Hugging Face ``vision_model.*`` names (Comfy-Org ``clip_vision_h.safetensors``,
transformers ``CLIPVisionModel`` folders). The text tower, post-norm and projection heads are not used by Wan and
are dropped (the last block too, by the loader). Only module paths are renamed: suffixes such as ``.scale_weight``
are kept.
"""
from __future__ import annotations

import re

import torch

from ..weights.checkpoint import strip_prefix

HF_PREFIX = "vision_model."  # transformers 4 and Comfy-Org files; transformers 5 saves CLIPVisionModel without it
_HF_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_HF_LAYER_PARTS = (("self_attn.q_proj.", "attn.q."), ("self_attn.k_proj.", "attn.k."), ("self_attn.v_proj.", "attn.v."),
                   ("self_attn.out_proj.", "attn.proj."), ("layer_norm1.", "norm1."), ("layer_norm2.", "norm2."),
                   ("mlp.fc1.", "mlp.0."), ("mlp.fc2.", "mlp.2."))
_HF_TOP = {"embeddings.patch_embedding.weight": "patch_embedding.weight", "embeddings.class_embedding": "cls_embedding",
           "embeddings.position_embedding.weight": "pos_embedding", "pre_layrnorm.weight": "pre_norm.weight",
           "pre_layrnorm.bias": "pre_norm.bias"}
_OFFICIAL_QKV = re.compile(r"^transformer\.(\d+)\.attn\.to_qkv\.(weight|bias|scale_weight)$")
_OFFICIAL_KEEP = ("patch_embedding.weight", "cls_embedding", "pos_embedding", "pre_norm.", "transformer.")


def detect_layout(sd: dict[str, torch.Tensor]) -> str | None:
    if HF_PREFIX + "embeddings.patch_embedding.weight" in sd or "embeddings.patch_embedding.weight" in sd:
        return "hf"
    if "visual.patch_embedding.weight" in sd:
        return "official"
    return None


def normalize_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str | None]:
    """(tensors in our names, every block; layout name or None when these are not CLIP vision weights)."""
    sd = strip_prefix(sd)
    layout = detect_layout(sd)
    if layout is None:
        return sd, None
    out = _from_hf(sd) if layout == "hf" else _from_official(sd)
    extras = {k: v for k, v in sd.items() if k == "scaled_fp8"}
    return out | extras, layout


def _from_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if HF_PREFIX + "embeddings.patch_embedding.weight" in sd:  # drop a text tower and projections, if any
        sd = {k[len(HF_PREFIX):]: v for k, v in sd.items() if k.startswith(HF_PREFIX)}
    out = {}
    for key, value in sd.items():
        if key in _HF_TOP:
            out[_HF_TOP[key]] = _embedding_shape(_HF_TOP[key], value)
            continue
        m = _HF_LAYER.match(key)
        for old, new in _HF_LAYER_PARTS if m else ():
            if m.group(2).startswith(old):
                out[f"transformer.{m.group(1)}.{new}{m.group(2)[len(old):]}"] = value
    return out


def _embedding_shape(name: str, t: torch.Tensor) -> torch.Tensor:
    """HF keeps the class and position embeddings without the leading batch axes."""
    if name == "cls_embedding":
        return t.reshape(1, 1, -1)
    return t.unsqueeze(0) if name == "pos_embedding" else t


def _from_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        if not key.startswith("visual."):
            continue
        key = key[len("visual."):]
        m = _OFFICIAL_QKV.match(key)
        if m and m.group(2) != "scale_weight":
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"transformer.{m.group(1)}.attn.{name}.{m.group(2)}"] = part
        elif m:  # one scale for the fused layer holds for each third of it
            for name in "qkv":
                out[f"transformer.{m.group(1)}.attn.{name}.scale_weight"] = value
        elif key.startswith(_OFFICIAL_KEEP):
            out[key] = value
    return out


def drop_last_block(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan reads the tokens before the last block, so its weights are never loaded."""
    blocks = {int(k.split(".")[1]) for k in sd if k.startswith("transformer.")}
    if not blocks:
        return sd
    last = f"transformer.{max(blocks)}."
    return {k: v for k, v in sd.items() if not k.startswith(last)}

"""Bring every Wan VAE checkpoint layout to the official key names.

Layouts: official ``Wan2.1_VAE.pth`` / ``Wan2.2_VAE.pth``, the Comfy-Org repacks (same names, maybe prefixed),
and diffusers ``AutoencoderKLWan`` (``vae/diffusion_pytorch_model.safetensors``), 2.1 and 2.2 (``is_residual``).
"""
from __future__ import annotations

import re
from collections import Counter

import torch

from ..weights.checkpoint import COMMON_PREFIXES, strip_prefix

PREFIXES = ("first_stage_model.", "vae.") + COMMON_PREFIXES

_TOP = (("quant_conv.", "conv1."), ("post_quant_conv.", "conv2."), ("encoder.conv_in.", "encoder.conv1."),
        ("decoder.conv_in.", "decoder.conv1."), ("encoder.norm_out.", "encoder.head.0."),
        ("encoder.conv_out.", "encoder.head.2."), ("decoder.norm_out.", "decoder.head.0."),
        ("decoder.conv_out.", "decoder.head.2."))
_MID = (("mid_block.resnets.0.", "middle.0."), ("mid_block.attentions.0.", "middle.1."),
        ("mid_block.resnets.1.", "middle.2."))
_RESNET = (("norm1.", "residual.0."), ("conv1.", "residual.2."), ("norm2.", "residual.3."),
           ("conv2.", "residual.6."), ("conv_shortcut.", "shortcut."))
_MID_FULL = tuple((f"{part}.{old}", f"{part}.{new}") for part in ("encoder", "decoder") for old, new in _MID)
_MIDDLE_RESNET = re.compile(r"^((?:encoder|decoder)\.middle\.[02]\.)(.*)$")
_STAGE = re.compile(r"^(encoder|decoder)\.(?:down|up)_blocks\.(\d+)\.(.*)$")
_IN_STAGE = re.compile(r"^(resnets\.(\d+)\.|downsampler\.|upsampler\.|upsamplers\.0\.)(.*)$")


def is_diffusers(sd: dict) -> bool:
    return any(k.startswith(("post_quant_conv.", "decoder.conv_in.", "decoder.up_blocks.")) for k in sd)


def normalize_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Return (weights under official names, layout name: "official" or "diffusers")."""
    sd = strip_prefix(dict(sd), PREFIXES)
    if not is_diffusers(sd):
        return sd, "official"
    resnets = Counter((m.group(1), int(m.group(2))) for k in sd
                      if (m := re.match(r"^(encoder|decoder)\.(?:down|up)_blocks\.(\d+)\.resnets\.(\d+)\.norm1\.", k)))
    nested = any(part == "encoder" for part, _ in resnets)  # diffusers 2.2 groups encoder layers per stage
    return {_official_name(k, resnets, nested): v for k, v in sd.items()}, "diffusers"


def _official_name(key: str, resnets: Counter, nested: bool) -> str:
    key = _replace_prefix(key, _TOP)
    key = _replace_prefix(key, _MID_FULL)
    mid = _MIDDLE_RESNET.match(key)
    if mid:
        return mid.group(1) + _resnet_name(mid.group(2))
    m = _STAGE.match(key)
    if m is None:
        return key
    part, block, rest = m.group(1), int(m.group(2)), m.group(3)
    stages = "downsamples" if part == "encoder" else "upsamples"
    if part == "encoder" and not nested:  # 2.1 encoder: one flat list numbered like the official one
        return f"{part}.{stages}.{block}.{_resnet_name(rest)}"
    inner = _IN_STAGE.match(rest)
    if inner is None:
        return key
    count = resnets[(part, block)]
    index, tail = (int(inner.group(2)), _resnet_name(inner.group(3))) if inner.group(2) else (count, inner.group(3))
    if nested:  # 2.2: ``downsamples.i.downsamples.j`` / ``upsamples.i.upsamples.j``, the resample after the resnets
        return f"{part}.{stages}.{block}.{stages}.{index}.{tail}"
    offset = sum(resnets[(part, b)] + 1 for b in range(block))  # 2.1 decoder: earlier stages' resnets + upsampler
    return f"{part}.{stages}.{offset + index}.{tail}"


def _replace_prefix(key: str, table) -> str:
    for old, new in table:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _resnet_name(rest: str) -> str:
    return _replace_prefix(rest, _RESNET)

"""Wan DiT GGUF files (city96/ComfyUI-GGUF layout) -> plain tensors and quantised Linear layers, without copying.

2-D ``.weight`` tensors (the Linear layers) stay as stored, views of the memory-mapped file, with a ``GGUFFormat``
each: raw blocks dequantised per forward, or F32 / F16 / BF16 values cast per forward (like every compact layer,
so the F16 text and time embeddings of community files are never copied at load). Every other quantised tensor (a
reshaped patch embedding, a quantised modulation) is dequantised here, to float32; other float tensors are views
of the file.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..weights.checkpoint import GGUF_ARCHITECTURE_KINDS, KIND_LOADERS, strip_prefix, wrong_kind_message
from ..errors import CheckpointError
from ..quant.base import QuantizedLayer
from ..quant.gguf_file import GGUFFile, check_supported, read_gguf

ARCHITECTURE = "wan"
PATCH_EMBEDDING = "patch_embedding.weight"


def read_gguf_dit(source: Path) -> tuple[dict[str, torch.Tensor], dict[str, QuantizedLayer], str]:
    """(plain tensors, quantised Linear layers by layer name, layout description) of a Wan DiT GGUF file."""
    gguf = read_gguf(source, what="DiT file")
    _check_architecture(gguf)
    tensors = strip_prefix(gguf.tensors)
    _check_kind(gguf, tensors)
    check_supported(gguf)
    sd, quantized = {}, {}
    for name, t in tensors.items():
        if name.endswith(".weight") and len(t.shape) == 2:  # Linear weights, quantised or float: kept as stored
            quantized[name[: -len(".weight")]] = t.layer()
        else:
            sd[name] = t.dequantize(torch.float32) if t.quantized else t.data
    return sd, quantized, gguf.layout()


def _check_architecture(gguf: GGUFFile) -> None:
    kind = GGUF_ARCHITECTURE_KINDS.get(gguf.architecture)
    if gguf.architecture != ARCHITECTURE and kind in KIND_LOADERS:
        raise CheckpointError(f"'{gguf.path.name}' is a GGUF file of the '{gguf.architecture}' architecture: {kind}, "
                              f"not a Wan DiT. Load it with {KIND_LOADERS[kind]}.")
    if gguf.architecture not in (None, ARCHITECTURE):
        raise CheckpointError(
            f"'{gguf.path.name}' is a GGUF file of the '{gguf.architecture}' architecture, not a Wan DiT "
            f"(architecture '{ARCHITECTURE}'). Pick a Wan 2.1 / 2.2 GGUF diffusion model here.")


def _check_kind(gguf: GGUFFile, tensors: dict) -> None:
    if "head.modulation" not in tensors:
        raise CheckpointError(wrong_kind_message(gguf.path, "a Wan DiT (diffusion model)", tensors.keys())
                              + " GGUF files are read for diffusion models only: use that model's .safetensors file.")
    if PATCH_EMBEDDING not in tensors:
        raise CheckpointError(
            f"'{gguf.path.name}' has no '{PATCH_EMBEDDING}': it was converted without its 5-D patch embedding "
            f"(ComfyUI-GGUF's converter sets it aside). Add it back with that project's tools/fix_5d_tensors.py, "
            f"or download the complete file.")

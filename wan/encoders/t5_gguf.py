"""UMT5 text encoders in GGUF files (llama.cpp architecture ``t5encoder``, e.g. umt5-xxl-encoder-Q8_0.gguf).

Tensor names are llama.cpp's (``token_embd``, ``enc.blk.N.attn_q`` ...), renamed to the official ones by
``t5_keys``; shapes come from the file (ggml order reversed) or ``comfy.gguf.orig_shape.*`` metadata
(``wan.quant.gguf_file``). Linear weights keep their raw blocks (or F16 / F32 values), as views of the memory-mapped
file, with a ``GGUFFormat`` each, and are dequantised (cast) per layer, per forward, like the DiT's. A quantised token
embedding stays in its blocks too (``GGUFEmbedding``: a lookup dequantises the rows of the tokens it reads; for
UMT5-XXL the table is a fifth of the file). The other quantised tensors (norms, relative-position biases: small) are
dequantised once, at load, to the compute dtype.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from gguf import GGML_QUANT_SIZES

from ..errors import CheckpointError
from ..quant.base import QuantizedLayer
from ..quant.gguf_file import GGUFFile, GGUFTensor, check_supported, read_gguf
from ..quant.gguf_kernels import dequantize
from .gguf_tokenizer import has_tokenizer, tokenizer_from_gguf
from .t5_keys import GGUF_IGNORED, GGUF_MARKER, gguf_key_to_official, is_linear_weight

EMBEDDING = "token_embedding.weight"
ARCHITECTURES = ("t5encoder", "t5")  # llama.cpp: encoder-only T5, and the full T5 (whose decoder is skipped)
DIT_ARCHITECTURE = "wan"


@dataclass
class GGUFTextEncoder:
    """The tensors of a GGUF text encoder, in official names, before any is copied."""

    file: GGUFFile
    plain: dict[str, torch.Tensor]  # float tensors, views of the file
    quantized: dict[str, QuantizedLayer]  # Linear layers by layer name, kept quantised
    deferred: dict[str, GGUFTensor]  # other quantised tensors, dequantised at load (``dequantized``)

    def shapes(self) -> dict[str, torch.Tensor]:
        """Every tensor with its real shape (meta placeholders for the quantised ones), for config and checks."""
        out = dict(self.plain)
        out.update({k: torch.empty(t.shape, dtype=torch.uint8, device="meta") for k, t in self.deferred.items()})
        out.update({f"{name}.weight": q.placeholder() for name, q in self.quantized.items()})
        return out

    def dequantized(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The plain tensors plus the deferred ones dequantised to ``dtype``."""
        return {**self.plain, **{k: t.dequantize(dtype) for k, t in self.deferred.items()}}

    def kept_embedding(self, dtype: torch.dtype) -> "GGUFEmbedding | None":
        """The token embedding kept in its blocks (taken out of ``deferred``), or None where it is not quantised or
        its rows are not whole blocks (then it is dequantised at load with the rest)."""
        t = self.deferred.get(EMBEDDING)
        if t is None or len(t.shape) != 2 or t.shape[1] % GGML_QUANT_SIZES[t.qtype][0]:
            return None
        del self.deferred[EMBEDDING]
        return GGUFEmbedding(t, dtype)

    def embedded_tokenizer(self):
        return tokenizer_from_gguf(self.file) if has_tokenizer(self.file) else None

    @property
    def layout(self) -> str:
        return self.file.layout()


class GGUFEmbedding(nn.Module):
    """A token embedding stored in GGUF blocks: ``rows`` [vocab, bytes per row] is a view of the mapped file (a
    non-persistent buffer, so it moves with the module); a lookup gathers the rows of the ids and dequantises only
    those (the same kernels as every GGUF weight, so the values equal a table dequantised whole)."""

    def __init__(self, tensor: GGUFTensor, dtype: torch.dtype):
        super().__init__()
        self.num_embeddings, self.embedding_dim = tensor.shape
        self.qtype, self.compute_dtype = tensor.qtype, dtype
        self.register_buffer("rows", tensor.data.reshape(self.num_embeddings, -1), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        picked = self.rows.index_select(0, ids.reshape(-1).to(self.rows.device))
        return dequantize(picked, self.qtype, (*ids.shape, self.embedding_dim), self.compute_dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.qtype.name}, compute {self.compute_dtype}"


def read_gguf_text_encoder(path: Path) -> GGUFTextEncoder:
    gguf = read_gguf(path, what="text encoder file")
    _check_kind(gguf)
    check_supported(gguf)
    plain, quantized, deferred = {}, {}, {}
    for name, t in gguf.tensors.items():
        if name.startswith(GGUF_IGNORED):
            continue
        key = gguf_key_to_official(name)
        if is_linear_weight(key) and len(t.shape) == 2:  # quantised or float: kept as stored, per-forward cast
            quantized[key[: -len(".weight")]] = t.layer()
        elif not t.quantized:
            plain[key] = t.data
        else:
            deferred[key] = t
    return GGUFTextEncoder(gguf, plain, quantized, deferred)


def _check_kind(gguf: GGUFFile) -> None:
    name, arch = gguf.path.name, gguf.architecture
    if arch == DIT_ARCHITECTURE or any(k.endswith("head.modulation") for k in gguf.tensors):
        raise CheckpointError(f"'{name}' is a Wan DiT (diffusion model) GGUF file, not a text encoder. Load it with "
                              f"the DiT loader (Load Wan DiT, or Load Wan 2.2 MoE), from models/diffusion_models or "
                              f"models/unet.")
    if arch not in ARCHITECTURES or GGUF_MARKER not in gguf.tensors:
        found = f"the '{arch}' architecture" if arch else "no architecture"
        raise CheckpointError(
            f"'{name}' is a GGUF file of {found}{'' if GGUF_MARKER in gguf.tensors else f' without {GGUF_MARKER!r}'}"
            f", not a UMT5 text encoder (llama.cpp architecture 't5encoder'). Use a UMT5-XXL encoder GGUF, e.g. "
            f"umt5-xxl-encoder-Q8_0.gguf, or the Comfy-Org umt5_xxl_*.safetensors.")

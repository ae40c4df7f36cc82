"""Write a Wan DiT state dict as a GGUF file laid out like the files users download (tests, benchmarks).

Conventions of the community converters (ComfyUI-GGUF ``tools/convert.py`` + llama.cpp's quantiser): architecture
``wan``; the original parameter names (optionally under a prefix such as ``model.diffusion_model.``); 2-D Linear
weights in the chosen type; 1-D tensors, tensors of at most 1024 values and ``.modulation`` kept in F32; the 5-D
``patch_embedding`` either apart (its own 5-D F32 tensor, as ``tools/fix_5d_tensors.py`` adds it back) or reshaped
to 2-D with its real shape in ``comfy.gguf.orig_shape.<name>`` metadata.

Tensors are written one at a time (streamed), so a file of any size costs one tensor of memory. A tensor given as
values is quantised by ``gguf`` (which can make F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0); a tensor given
as a shape gets random valid blocks of its type (finite scales, values of a few hundredths): the only way to make
K-quant and IQ4 data here, since ``gguf`` can only dequantise those.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Union

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, GGUFWriter, quants

from .gguf_file import ORIG_SHAPE_KEY
from .gguf_scales import SCALES

Source = Union[torch.Tensor, np.ndarray, tuple]  # values, or a shape for random data
PATCH_EMBEDDING = "patch_embedding.weight"
SMALL = 1024  # tensors this small stay F32

# The float16 scales of each type (``gguf_scales.SCALES``); magnitudes are picked so that dequantised values are a
# few hundredths.
_SCALES = SCALES
_D = {T.Q8_0: 3e-4, T.Q4_0: 5e-3, T.Q5_0: 2.5e-3, T.IQ4_NL: 6e-4, T.Q4_1: 5e-3, T.Q5_1: 2.5e-3, T.Q2_K: 4e-3,
      T.Q3_K: 1.5e-3, T.Q4_K: 2e-4, T.Q5_K: 1e-4, T.Q6_K: 5e-5, T.IQ4_XS: 5e-5}
_MIN = {T.Q4_1: -0.04, T.Q5_1: -0.04, T.Q2_K: 6e-3, T.Q4_K: 1.5e-3, T.Q5_K: 1.5e-3}


def wan_qtype(name: str, shape: tuple[int, ...], qtype: int) -> T:
    """The type the community converters give a Wan tensor when the file's type is ``qtype``."""
    numel = math.prod(shape)
    if name == PATCH_EMBEDDING or len(shape) == 1 or numel <= SMALL or ".modulation" in name or name == "modulation":
        return T.F32
    if len(shape) == 2 and name.endswith(".weight") and shape[-1] % GGML_QUANT_SIZES[T(qtype)][0] == 0:
        return T(qtype)
    return T.F16


def encode(values: torch.Tensor | np.ndarray | None, shape: tuple[int, ...], qtype: int,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """The raw GGUF data of one tensor of torch-order ``shape``: ``values`` quantised, or (``values`` None) random."""
    qtype = T(qtype)
    if values is None:
        return _random(shape, qtype, rng or np.random.default_rng(0))
    array = values.detach().float().cpu().numpy() if torch.is_tensor(values) else np.asarray(values, np.float32)
    return quants.quantize(np.ascontiguousarray(array.reshape(shape)), qtype)


def write_gguf(path, tensors: Mapping[str, Source], qtype: int = T.Q8_0, *, types: Mapping[str, int] | None = None,
               patch_embedding: str = "apart", prefix: str = "", arch: str = "wan", seed: int = 0,
               metadata: Callable[[GGUFWriter], None] | None = None) -> dict[str, T]:
    """Write ``tensors`` (official names -> values or shapes) to ``path``; returns the type each tensor got.

    ``qtype``: the type of the Linear weights (``wan_qtype`` decides per tensor); ``types``: per-tensor overrides;
    ``patch_embedding``: "apart" or "reshaped" (see the module docstring); ``metadata``: adds key-value metadata
    (e.g. a tokenizer) to the writer before the header is written."""
    if patch_embedding not in ("apart", "reshaped"):
        raise ValueError(f"patch_embedding must be 'apart' or 'reshaped', not {patch_embedding!r}")
    plan = {}
    for name, source in tensors.items():
        shape = tuple(source) if isinstance(source, tuple) else tuple(source.shape)
        stored = _stored_shape(name, shape, patch_embedding)
        chosen = T((types or {}).get(name, wan_qtype(name, stored, qtype)))
        plan[name] = (shape, stored, chosen)
    writer = GGUFWriter(str(path), arch)
    if metadata is not None:
        metadata(writer)
    for name, (shape, stored, chosen) in plan.items():
        if stored != shape:
            writer.add_array(ORIG_SHAPE_KEY + prefix + name, list(shape))
        _add_info(writer, prefix + name, stored, chosen)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, (_, stored, chosen) in plan.items():
        source = tensors[name]
        writer.write_tensor_data(encode(None if isinstance(source, tuple) else source, stored, chosen, rng))
    writer.close()
    return {name: chosen for name, (_, _, chosen) in plan.items()}


def _stored_shape(name: str, shape: tuple[int, ...], patch_embedding: str) -> tuple[int, ...]:
    if name == PATCH_EMBEDDING and patch_embedding == "reshaped":
        return (shape[0], math.prod(shape[1:]))
    return shape


def _add_info(writer: GGUFWriter, name: str, shape: tuple[int, ...], qtype: T) -> None:
    if qtype in (T.F32, T.F16):
        dtype = np.float32 if qtype == T.F32 else np.float16
        writer.add_tensor_info(name, shape, np.dtype(dtype), math.prod(shape) * np.dtype(dtype).itemsize)
        return
    byte_shape = quants.quant_shape_to_byte_shape(shape, qtype)
    writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), math.prod(byte_shape), raw_dtype=qtype)


def _random(shape: tuple[int, ...], qtype: T, rng: np.random.Generator) -> np.ndarray:
    if qtype in (T.F32, T.F16, T.BF16):
        return quants.quantize(rng.standard_normal(shape, dtype=np.float32) * 0.02, qtype)
    if qtype not in _SCALES:
        raise ValueError(f"random {qtype.name} blocks are not supported")
    byte_shape = quants.quant_shape_to_byte_shape(shape, qtype)
    type_size = GGML_QUANT_SIZES[qtype][1]
    blocks = rng.integers(0, 256, size=(math.prod(byte_shape) // type_size, type_size), dtype=np.uint8)
    for offset, role in _SCALES[qtype]:
        magnitude = _D[qtype] if role == "d" else _MIN[qtype]
        scale = (magnitude * (0.5 + rng.random(blocks.shape[0], dtype=np.float32))).astype(np.float16)
        blocks[:, offset:offset + 2] = scale.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(byte_shape)

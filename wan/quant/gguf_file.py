"""Read a GGUF file (memory-mapped; its header with bounds by ``gguf_header``) into torch views of its tensors,
without copying them.

Tensor shapes are given in torch order: the file's ggml order reversed, or ``comfy.gguf.orig_shape.<name>``
metadata where a converter stored a tensor reshaped (ComfyUI-GGUF's convention). Float tensors (F32, F16, BF16)
come typed; quantised ones as their raw blocks (uint8), to be dequantised by ``wan.quant.gguf_kernels``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType

from ..errors import CheckpointError
from .base import QuantizedLayer
from .gguf_format import GGUFFormat
from .gguf_header import GGUFHeader
from .gguf_scales import nonfinite_scales
from .gguf_kernels import FLOAT_TYPES, SUPPORTED, dequantize

ORIG_SHAPE_KEY = "comfy.gguf.orig_shape."


@dataclass
class GGUFTensor:
    name: str
    qtype: GGMLQuantizationType
    data: torch.Tensor  # a view of the mapped file: typed and in ``shape`` for float types, raw uint8 blocks otherwise
    shape: tuple[int, ...]  # the real shape, torch order

    @property
    def quantized(self) -> bool:
        return self.qtype not in FLOAT_TYPES

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.data, self.qtype, self.shape, dtype)

    def layer(self) -> QuantizedLayer:
        """This tensor as a Linear layer's stored weight, still a view of the file: raw blocks (quantised types)
        or typed values (float types, cast per forward)."""
        return QuantizedLayer(GGUFFormat(self.qtype, self.shape), self.data, self.shape)


@dataclass
class GGUFFile:
    path: Path
    architecture: str | None  # ``general.architecture`` ("wan" for Wan DiTs), None when the file has none
    tensors: dict[str, GGUFTensor]
    reader: GGUFHeader | None = dataclass_field(default=None, repr=False)  # for metadata (``value``)

    def value(self, key: str, default=None):
        """The metadata value under ``key`` (a number, string, or list of them), ``default`` when absent."""
        return default if self.reader is None else self.reader.value(key, default)

    def layout(self) -> str:
        """For logs: ``GGUF (F32 x5, Q8_0 x12)``, the count of tensors of each type."""
        counts: dict[str, int] = {}
        for t in self.tensors.values():
            counts[t.qtype.name] = counts.get(t.qtype.name, 0) + 1
        return f"GGUF ({', '.join(f'{k} x{v}' for k, v in sorted(counts.items()))})"


def read_gguf(path, what: str = "GGUF file") -> GGUFFile:
    """Every tensor of ``path`` as a zero-copy view; a clear error for a missing, damaged or truncated file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: '{path}'. Check the path, or put the file in the folder the "
                              f"loader lists.")
    reader = _open(path, what)
    tensors = {t.name: _tensor(reader, t, path) for t in reader.tensors}
    architecture = reader.value("general.architecture")
    return GGUFFile(path, None if architecture is None else str(architecture), tensors, reader)


def check_supported(gguf: GGUFFile) -> None:
    """Refuse, before any work, a file holding a type the kernels cannot dequantise (name the type and tensor), or
    a quantised tensor with NaN / infinite block scales (name the tensor)."""
    bad = [(name, t.qtype.name) for name, t in gguf.tensors.items() if t.qtype not in SUPPORTED]
    if bad:
        examples = ", ".join(f"'{n}' ({q})" for n, q in bad[:3])
        names = ", ".join(GGMLQuantizationType(q).name for q in SUPPORTED)
        raise CheckpointError(
            f"'{gguf.path.name}' stores {len(bad)} tensor(s) in a GGUF type Wan Experts cannot dequantise: {examples}. "
            f"Supported types: {names}. Download a file quantised to one of those (e.g. Q8_0, Q6_K, Q5_K_M, Q4_K_M).")
    for name, t in gguf.tensors.items():
        count = nonfinite_scales(t.data.numpy(), t.qtype) if t.quantized else 0
        if count:
            raise CheckpointError(
                f"'{gguf.path.name}': the quantised tensor '{name}' ({t.qtype.name}) has {count} block(s) whose scale "
                f"is NaN or infinite, so their weights are too. The file is damaged or was quantised from a broken "
                f"model: download or make it again.")


def _open(path: Path, what: str) -> GGUFHeader:
    try:
        return GGUFHeader(path, what)
    except CheckpointError:
        raise
    except Exception as exc:  # the map cannot be made (an empty file, an unreadable one)
        if _magic(path) != b"GGUF":
            hint = "It does not start with the GGUF signature: it is not a GGUF file."
        else:
            hint = ("It may be truncated or still downloading: download it again and compare its size with the "
                    "published one.")
        raise CheckpointError(f"{what} '{path.name}' is not a readable GGUF file ({type(exc).__name__}: {exc}). "
                              f"{hint}") from exc


def _tensor(reader: GGUFHeader, t, path: Path) -> GGUFTensor:
    shape = _shape(reader, t, path)
    with warnings.catch_warnings():  # the map is read-only by design; nothing writes to these tensors
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        data = torch.from_numpy(np.asarray(t.data))
    if t.tensor_type == GGMLQuantizationType.BF16:
        data = data.view(torch.bfloat16)
    if t.tensor_type in FLOAT_TYPES:
        data = data.reshape(shape)
    return GGUFTensor(t.name, GGMLQuantizationType(t.tensor_type), data, shape)


def _shape(reader: GGUFHeader, t, path: Path) -> tuple[int, ...]:
    stored = tuple(int(d) for d in reversed(t.shape.tolist()))
    found = reader.value(ORIG_SHAPE_KEY + t.name)
    if found is None:
        return stored
    shape = _orig_shape(found, t.name, path)
    if math.prod(shape) != math.prod(stored):
        raise CheckpointError(f"'{path.name}': the metadata gives '{t.name}' the shape {shape}, which does not hold "
                              f"its {math.prod(stored)} values (stored as {stored}). The file is damaged.")
    return shape


def _orig_shape(found, name: str, path: Path) -> tuple[int, ...]:
    """``comfy.gguf.orig_shape`` metadata: a list of 1 to 8 positive whole numbers."""
    if not isinstance(found, list) or not 0 < len(found) <= 8 or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in found):
        raise CheckpointError(f"'{path.name}': the metadata {ORIG_SHAPE_KEY}{name} is {str(found)[:80]}, not a shape "
                              f"(1 to 8 positive whole numbers). The file is damaged.")
    return tuple(found)


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)

"""Read a weight file into memory the process owns, one tensor at a time, each converted as it arrives.

For a model that keeps its weights in another form than the file's (another dtype, the channels-last layout of
the CPU convolutions): reading through the memory map and converting afterwards holds the mapped pages and the
converted copy side by side (twice the model, until the last view of the map dies). Here each tensor is
allocated in its final form (``Form``: dtype and memory layout) and filled from the file with plain reads, a slab
of at most ``SLAB_BYTES`` at a time: peak ≈ the converted model plus one slab; the file's pages go to the
system's cache, not to the process. (A pickle checkpoint is loaded whole, then converted one tensor at a time.)

Same sources as ``read_state_dict`` (whose views give names, shapes and dtypes without reading any data):
``.safetensors``, a sharded index, a pickle checkpoint (``weights_only=True``), or a folder holding one of them.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import BinaryIO, Callable

import torch

from ..checks import json_value
from ..errors import CheckpointError
from .checkpoint import (INDEX_SUFFIX, SAFETENSORS_SUFFIX, find_weights_in_folder, read_state_dict,
                         require_regular_file)

# (name in the file, stored dtype, number of dimensions) -> (dtype, memory layout) the tensor is kept in
Form = Callable[[str, torch.dtype, int], tuple[torch.dtype, torch.memory_format]]

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
HEADER_LIMIT = 100 << 20  # bytes of JSON header a safetensors file may declare
SLAB_BYTES = 16 << 20  # a converted tensor is read this many bytes at a time
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
KEEP_SUFFIXES = (".scale_weight", ".scale_input")  # scaled-fp8 scales keep their own dtype


def converts_most(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> bool:
    """Whether giving ``sd`` (views of a file) the compute ``dtype`` converts most of its bytes: then reading it
    with ``read_owned(..., in_dtype(dtype))`` holds one copy where the map and the converted tensors hold two."""
    sizes = [(t.numel() * t.element_size(), t.dtype in FLOATS and t.dtype != dtype) for t in sd.values()]
    return 2 * sum(n for n, converted in sizes if converted) > sum(n for n, _ in sizes)


def in_dtype(dtype: torch.dtype, five_d: torch.memory_format = torch.contiguous_format) -> Form:
    """Float tensors in ``dtype`` (as ``wan.weights.assign`` would give them), 5-D ones in layout ``five_d``; fp8,
    integer tensors and scaled-fp8 scales keep their stored dtype."""
    def form(name: str, stored: torch.dtype, dims: int) -> tuple[torch.dtype, torch.memory_format]:
        keep = stored not in FLOATS or name.endswith(KEEP_SUFFIXES)
        return (stored if keep else dtype), (five_d if dims == 5 else torch.contiguous_format)
    return form


def read_owned(path, what: str, form: Form) -> dict[str, torch.Tensor]:
    """Every tensor of ``path`` by name, in the dtype and layout ``form`` gives it, in this process's own memory."""
    path = Path(path)
    if path.is_dir():
        path = find_weights_in_folder(path, what)
    name = path.name.lower()
    if name.endswith(INDEX_SUFFIX):
        out: dict[str, torch.Tensor] = {}
        for shard in sorted(set(_shard_paths(path, what))):
            out.update(_read_safetensors(shard, what, form))
        return out
    if name.endswith(SAFETENSORS_SUFFIX):
        require_regular_file(path, what)
        return _read_safetensors(path, what, form)
    return _converted(read_state_dict(path, what, mapped=False), form)


def _converted(sd: dict[str, torch.Tensor], form: Form) -> dict[str, torch.Tensor]:
    """Convert in place, dropping each original as soon as its converted tensor exists."""
    for key in list(sd):
        t = sd.pop(key)
        dtype, layout = form(key, t.dtype, t.dim())
        sd[key] = t.to(dtype=dtype, memory_format=layout)
    return sd


def _shard_paths(index: Path, what: str) -> list[Path]:
    read_state_dict(index, what)  # checks the index and that every shard is there (views only: no data read)
    weight_map = json_value(index.read_bytes(), f"{what} index '{index.name}'", CheckpointError)["weight_map"]
    return [index.parent / shard for shard in weight_map.values()]


def _read_safetensors(path: Path, what: str, form: Form) -> dict[str, torch.Tensor]:
    out = {}
    with open(path, "rb") as f:
        header, start = _header(f, path, what)
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            stored, shape, (begin, end) = SAFETENSORS_DTYPES.get(entry["dtype"]), entry["shape"], entry["data_offsets"]
            if stored is None:
                raise CheckpointError(f"{what} '{path.name}': tensor '{key}' has dtype {entry['dtype']}, which this "
                                      f"loader does not read. Use a float16 / bfloat16 / float32 file.")
            dtype, layout = form(key, stored, len(shape))
            tensor = torch.empty(shape, dtype=dtype, memory_format=layout)
            _fill(tensor, stored, _Source(f, start + begin, end - begin, path, what, key))
            out[key] = tensor
    return out


class _Source:
    """One tensor's bytes in the open file."""

    def __init__(self, f: BinaryIO, offset: int, nbytes: int, path: Path, what: str, name: str):
        self.f, self.offset, self.nbytes, self.path, self.what, self.name = f, offset, nbytes, path, what, name

    def read_into(self, buffer: torch.Tensor, at: int = 0) -> None:
        """Fill the uint8 ``buffer`` from byte ``at`` of the tensor."""
        self.f.seek(self.offset + at)
        want = buffer.numel()
        if at + want > self.nbytes or self.f.readinto(buffer.numpy()) != want:
            raise CheckpointError(f"{self.what} '{self.path.name}' ends inside tensor '{self.name}': the file is "
                                  f"truncated. Download it again.")


def _fill(tensor: torch.Tensor, stored: torch.dtype, source: _Source) -> None:
    """``tensor`` := the stored values, read straight into it when it keeps the stored form, else a slab of rows at
    a time through a small buffer."""
    if tensor.numel() * stored.itemsize != source.nbytes:
        raise CheckpointError(f"{source.what} '{source.path.name}': tensor '{source.name}' declares {source.nbytes} "
                              f"bytes for shape {list(tensor.shape)}. The file is damaged.")
    if tensor.dtype == stored and tensor.is_contiguous():
        if source.nbytes:
            source.read_into(tensor.reshape(-1).view(torch.uint8))
        return
    rows = tensor.reshape(1, *tensor.shape) if tensor.dim() == 0 else tensor
    row_bytes = source.nbytes // max(1, rows.shape[0])
    step = max(1, SLAB_BYTES // max(1, row_bytes))
    for first in range(0, rows.shape[0], step):
        count = min(step, rows.shape[0] - first)
        buffer = torch.empty(count * row_bytes, dtype=torch.uint8)
        source.read_into(buffer, first * row_bytes)
        rows[first:first + count].copy_(buffer.view(stored).reshape(count, *rows.shape[1:]))


def _header(f, path: Path, what: str) -> tuple[dict, int]:
    """The JSON header (checked by ``read_state_dict`` already) and where the data starts."""
    (size,) = struct.unpack("<Q", f.read(8))
    if size > HEADER_LIMIT:
        raise CheckpointError(f"{what} '{path.name}' declares a {size}-byte header: not a safetensors file.")
    return json.loads(f.read(size)), 8 + size

"""Read a weight file into memory the process owns, one tensor at a time, each converted as it arrives.

For a model that keeps its weights in another form than the file's (another dtype, the channels-last layout of
the CPU convolutions): reading through the memory map and converting afterwards holds the mapped pages and the
converted copy side by side (twice the model, until the last view of the map dies). Here each tensor is read
with plain file reads into a buffer of its own, handed to ``convert``, and the buffer dropped before the next:
peak ≈ the converted model plus one tensor; the file's pages go to the system's cache, not to the process.

Same sources as ``read_state_dict`` (whose views give names, shapes and dtypes without reading any data):
``.safetensors``, a sharded index, a pickle checkpoint (``weights_only=True``), or a folder holding one of them.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Callable

import torch

from ..checks import json_value
from ..errors import CheckpointError
from .checkpoint import (INDEX_SUFFIX, SAFETENSORS_SUFFIX, find_weights_in_folder, read_state_dict,
                         require_regular_file)

Convert = Callable[[str, torch.Tensor], torch.Tensor]  # (name in the file, tensor as read) -> tensor to keep

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
HEADER_LIMIT = 100 << 20  # bytes of JSON header a safetensors file may declare


def read_owned(path, what: str, convert: Convert) -> dict[str, torch.Tensor]:
    """Every tensor of ``path`` by name, as ``convert(name, tensor)`` returned it, in this process's own memory."""
    path = Path(path)
    if path.is_dir():
        path = find_weights_in_folder(path, what)
    name = path.name.lower()
    if name.endswith(INDEX_SUFFIX):
        shards = sorted(set(_shard_paths(path, what)))
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            out.update(_read_safetensors(shard, what, convert))
        return out
    if name.endswith(SAFETENSORS_SUFFIX):
        require_regular_file(path, what)
        return _read_safetensors(path, what, convert)
    return _converted(read_state_dict(path, what, mapped=False), convert)


def _converted(sd: dict[str, torch.Tensor], convert: Convert) -> dict[str, torch.Tensor]:
    """Convert in place, dropping each original as soon as its converted tensor exists."""
    for key in list(sd):
        sd[key] = convert(key, sd.pop(key))
    return sd


def _shard_paths(index: Path, what: str) -> list[Path]:
    read_state_dict(index, what)  # checks the index and that every shard is there (views only: no data read)
    weight_map = json_value(index.read_bytes(), f"{what} index '{index.name}'", CheckpointError)["weight_map"]
    return [index.parent / shard for shard in weight_map.values()]


def _read_safetensors(path: Path, what: str, convert: Convert) -> dict[str, torch.Tensor]:
    out = {}
    with open(path, "rb") as f:
        header, start = _header(f, path, what)
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            dtype, shape, (begin, end) = SAFETENSORS_DTYPES.get(entry["dtype"]), entry["shape"], entry["data_offsets"]
            if dtype is None:
                raise CheckpointError(f"{what} '{path.name}': tensor '{key}' has dtype {entry['dtype']}, which this "
                                      f"loader does not read. Use a float16 / bfloat16 / float32 file.")
            buffer = torch.empty(end - begin, dtype=torch.uint8)
            f.seek(start + begin)
            if f.readinto(buffer.numpy()) != end - begin:
                raise CheckpointError(f"{what} '{path.name}' ends inside tensor '{key}': the file is truncated. "
                                      f"Download it again.")
            out[key] = convert(key, buffer.view(dtype).reshape(shape))
            del buffer
    return out


def _header(f, path: Path, what: str) -> tuple[dict, int]:
    """The JSON header (checked by ``read_state_dict`` already) and where the data starts."""
    (size,) = struct.unpack("<Q", f.read(8))
    if size > HEADER_LIMIT:
        raise CheckpointError(f"{what} '{path.name}' declares a {size}-byte header: not a safetensors file.")
    return json.loads(f.read(size)), 8 + size

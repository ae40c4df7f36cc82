"""The header of a GGUF file (metadata and tensor directory), read with bounds from a memory map.

Every count and length the file declares (metadata entries, array items, string bytes, tensors, dimensions) is
checked against the bytes left in the file before anything is allocated or looped over, so a small damaged or
hostile file fails at once with ``CheckpointError`` instead of allocating or looping for what it claims. Numeric
arrays are read in one vectorised pass (``numpy.frombuffer``); strings must be UTF-8.

Layout (GGUF v2 / v3, little-endian): ``GGUF``, version u32, tensor count u64, metadata count u64; each metadata
entry a string key, a u32 value type and the value (arrays: item type u32, count u64, items); each tensor a string
name, u32 dimension count, u64 dimensions (ggml order), u32 ggml type, u64 offset; the data from the next multiple
of ``general.alignment`` (32 by default).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import quant_shape_to_byte_shape

from ..errors import CheckpointError

# GGUF value types -> little-endian numpy type of the scalar; 8 STRING and 9 ARRAY are read apart
SCALARS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8",
           12: "<f8"}
STRING, ARRAY = 8, 9
MAX_DIMS = 8  # ggml uses 4; a tensor may not declare more than this
MAX_NESTING = 3  # arrays of arrays of arrays at most
MAX_ALIGNMENT = 1 << 20
# the fewest bytes an item of each value type takes (a string: its length; an array: item type and count)
_LEAST = {**{t: np.dtype(d).itemsize for t, d in SCALARS.items()}, STRING: 8, ARRAY: 12}
# ggml types whose data the reader gives typed (others: raw uint8 blocks, a row of blocks per last dimension)
_TYPED = {GGMLQuantizationType.F16: np.float16, GGMLQuantizationType.F32: np.float32,
          GGMLQuantizationType.F64: np.float64, GGMLQuantizationType.I8: np.int8,
          GGMLQuantizationType.I16: np.int16, GGMLQuantizationType.I32: np.int32,
          GGMLQuantizationType.I64: np.int64}


@dataclass
class GGUFTensorInfo:
    """One tensor of the directory; ``data`` a read-only view of the map (typed, or uint8 blocks)."""

    name: str
    tensor_type: GGMLQuantizationType
    shape: np.ndarray  # ggml order (innermost first), as the file stores it
    n_elements: int
    n_bytes: int
    data_offset: int
    data: np.ndarray


class GGUFHeader:
    """Metadata (``value``) and tensors (``tensors``) of one GGUF file."""

    byte_order = "I"  # big-endian files are refused while reading

    def __init__(self, path, what: str = "GGUF file"):
        self.path = Path(path)
        self.what = what
        self.map = np.memmap(self.path, dtype=np.uint8, mode="r")
        self.fields: dict = {}
        self.tensors: list[GGUFTensorInfo] = []
        _Parser(self).read()

    def value(self, key: str, default=None):
        """The value under ``key``: a number, bool, string, or a list of them; ``default`` when absent."""
        found = self.fields.get(key, _ABSENT)
        return default if found is _ABSENT else _plain(found)


_ABSENT = object()


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Parser:
    def __init__(self, header: GGUFHeader):
        self.header = header
        self.map = header.map
        self.pos = 0
        self.end = len(header.map)

    def fail(self, problem: str, truncated: bool = False):
        hint = ("It may be truncated or still downloading: download it again and compare its size with the "
                "published one." if truncated else "The file is damaged: download it again.")
        raise CheckpointError(f"{self.header.what} '{self.header.path.name}' is not a readable GGUF file: {problem}. "
                              f"{hint}")

    def read(self) -> None:
        if self.end < 24 or bytes(self.map[:4]) != b"GGUF":
            self.fail("it does not start with the GGUF signature (it is not a GGUF file)")
        self.pos = 4
        version = self.scalar(4, "the version")
        if version not in (2, 3):
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            if swapped in (2, 3):
                raise CheckpointError(f"{self.header.what} '{self.header.path.name}' is a GGUF file for big-endian "
                                      f"machines; use the usual (little-endian) file.")
            self.fail(f"GGUF version {version} is not read here (versions 2 and 3 are); convert the model again "
                      f"with a current converter")
        tensor_count = self.count(10, "the tensor count", 8 + 4 + 4 + 8)
        field_count = self.count(10, "the metadata count", 8 + 4 + 1)
        for index in range(field_count):
            key = self.string(f"metadata key #{index}")
            if key in self.header.fields:
                self.fail(f"the metadata key '{key}' appears twice")
            kind = self.scalar(4, f"the type of metadata '{key}'")
            self.header.fields[key] = self.value(kind, f"metadata '{key}'", 0)
        infos = [self.tensor_info(index) for index in range(tensor_count)]
        data_start = _aligned(self.pos, self.alignment())
        names = set()
        for info in infos:
            tensor = self.tensor(*info, data_start)
            if tensor.name in names:
                self.fail(f"the tensor '{tensor.name}' appears twice")
            names.add(tensor.name)
            self.header.tensors.append(tensor)

    # ---- primitives: each checks the bytes it needs against the bytes left
    def need(self, size: int, what: str) -> None:
        if size > self.end - self.pos:
            self.fail(f"{what} needs {size} bytes at byte {self.pos}, but the file has {self.end - self.pos} left",
                      truncated=True)

    def scalar(self, kind: int, what: str):
        dtype = np.dtype(SCALARS[kind])
        self.need(dtype.itemsize, what)
        value = np.frombuffer(self.map, dtype, 1, self.pos)[0]
        self.pos += dtype.itemsize
        return bool(value) if kind == 7 else value.item()

    def count(self, kind: int, what: str, least: int) -> int:
        """A declared count, refused when that many items of ``least`` bytes each cannot fit in the file."""
        count = self.scalar(kind, what)
        if count < 0 or count * least > self.end - self.pos:
            self.fail(f"{what} is {count}, more than the {self.end - self.pos} bytes left can hold", truncated=True)
        return count

    def string(self, what: str) -> str:
        length = self.scalar(10, f"the length of {what}")
        self.need(length, what)
        raw = bytes(self.map[self.pos:self.pos + length])
        self.pos += length
        return self.text(raw, what)

    def text(self, raw: bytes, what: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.fail(f"{what} is not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 4]!r})")

    def value(self, kind: int, what: str, depth: int):
        if kind in SCALARS:
            return self.scalar(kind, what)
        if kind == STRING:
            return self.string(what)
        if kind != ARRAY:
            self.fail(f"{what} has the unknown value type {kind}")
        if depth >= MAX_NESTING:
            self.fail(f"{what} nests arrays more than {MAX_NESTING} deep")
        item = self.scalar(4, f"the item type of {what}")
        if item not in _LEAST:
            self.fail(f"{what} is an array of the unknown value type {item}")
        count = self.count(10, f"the item count of {what}", _LEAST[item])
        if item in SCALARS:  # one vectorised read
            items = np.frombuffer(self.map, np.dtype(SCALARS[item]), count, self.pos)
            self.pos += items.nbytes
            return items
        if item == STRING:
            return self.strings(count, what)
        return [self.value(item, f"{what} item {i}", depth + 1) for i in range(count)]

    def strings(self, count: int, what: str) -> list[str]:
        """``count`` strings in one pass over the map (lengths read as integers, no per-item arrays)."""
        view, pos, end = memoryview(self.map), self.pos, self.end
        raw = []
        for i in range(count):
            if end - pos < 8:
                self.pos = pos
                self.need(8, f"the length of {what} item {i}")
            length = int.from_bytes(view[pos:pos + 8], "little")
            pos += 8
            if length > end - pos:
                self.pos = pos
                self.need(length, f"{what} item {i}")
            raw.append(bytes(view[pos:pos + length]))
            pos += length
        self.pos = pos
        try:
            return [r.decode("utf-8") for r in raw]
        except UnicodeDecodeError:
            index = next(i for i, r in enumerate(raw) if not _utf8(r))
            return self.text(raw[index], f"{what} item {index}")

    # ---- the tensor directory
    def tensor_info(self, index: int) -> tuple:
        name = self.string(f"the name of tensor #{index}")
        n_dims = self.scalar(4, f"the dimension count of tensor '{name}'")
        if n_dims > MAX_DIMS:
            self.fail(f"tensor '{name}' declares {n_dims} dimensions (at most {MAX_DIMS})")
        self.need(8 * n_dims, f"the dimensions of tensor '{name}'")
        dims = np.frombuffer(self.map, np.dtype("<u8"), n_dims, self.pos).copy()
        self.pos += 8 * n_dims
        code = self.scalar(4, f"the type of tensor '{name}'")
        offset = self.scalar(10, f"the data offset of tensor '{name}'")
        try:
            kind = GGMLQuantizationType(code)
        except ValueError:
            self.fail(f"tensor '{name}' has the unknown ggml type {code}; a newer converter may have written it")
        return name, dims, kind, offset

    def alignment(self) -> int:
        alignment = self.header.fields.get("general.alignment", 32)
        if not isinstance(alignment, int) or isinstance(alignment, bool) or not 0 < alignment <= MAX_ALIGNMENT \
                or alignment & (alignment - 1):
            self.fail(f"general.alignment is {alignment!r}, not a power of two up to {MAX_ALIGNMENT}")
        return alignment

    def tensor(self, name: str, dims: np.ndarray, kind: GGMLQuantizationType, offset: int,
               data_start: int) -> GGUFTensorInfo:
        shape = [int(d) for d in dims]
        block, type_size = GGML_QUANT_SIZES[kind]
        n_elements = math.prod(shape)
        if shape and shape[0] % block:
            self.fail(f"tensor '{name}' ({kind.name}) has rows of {shape[0]} values, not a multiple of its "
                      f"{block}-value blocks")
        n_bytes = n_elements // block * type_size
        start = data_start + offset
        if start + n_bytes > self.end:
            self.fail(f"tensor '{name}' ({kind.name}, {shape}) needs bytes {start}..{start + n_bytes}, past the end "
                      f"of the file ({self.end} bytes)", truncated=True)
        if kind in _TYPED:
            data = np.frombuffer(self.map, _TYPED[kind], n_elements, start).reshape(shape[::-1])
        else:
            byte_shape = quant_shape_to_byte_shape(tuple(shape[::-1]), kind)
            data = np.frombuffer(self.map, np.uint8, n_bytes, start).reshape(byte_shape)
        return GGUFTensorInfo(name, kind, dims, n_elements, n_bytes, start, data)


def _aligned(pos: int, alignment: int) -> int:
    return (pos + alignment - 1) // alignment * alignment


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False

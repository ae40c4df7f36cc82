"""The GGUF header reader: every declared count and length is checked against the bytes left before anything is
allocated or looped over; damaged metadata ends in CheckpointError naming the file and the entry.

Oracle for the good case: ``gguf.GGUFWriter`` writes the file and ``gguf.GGUFReader`` (the reference reader) reads it
back; our reader must give the same metadata values and tensor bytes."""
import struct
import time
import tracemalloc

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T, GGUFReader, GGUFWriter

from wan.errors import CheckpointError
from wan.quant.gguf_file import read_gguf
from wan.quant.gguf_header import GGUFHeader

HUGE = 1 << 40


def _str(text) -> bytes:
    raw = text if isinstance(text, bytes) else text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv(key, kind: int, payload: bytes) -> bytes:
    return _str(key) + struct.pack("<I", kind) + payload


def raw_gguf(path, fields: list[bytes], tensors: list[bytes] = (), tensor_count=None, field_count=None,
             tail=b"") -> str:
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors) if tensor_count is None else tensor_count,
                                 len(fields) if field_count is None else field_count)
    body = head + b"".join(fields) + b"".join(tensors)
    body += b"\0" * (-len(body) % 32) + tail
    path.write_bytes(body + b"\0" * 64)
    return str(path)


def _tensor(name, dims, kind=0, offset=0) -> bytes:
    return _str(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", kind,
                                                                                                           offset)


def _refused_fast(path, match):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(CheckpointError, match=match):
            read_gguf(path)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0, f"{elapsed:.2f} s"
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB allocated"


@pytest.mark.parametrize("field,match", [
    (_kv("evil.bytes", 9, struct.pack("<IQ", 0, HUGE)), r"evil.gguf.*item count of metadata 'evil.bytes' is "
                                                          r"1099511627776"),
    (_kv("evil.strings", 9, struct.pack("<IQ", 8, HUGE)), r"item count of metadata 'evil.strings' is 1099511627776"),
    (_kv("evil.nested", 9, struct.pack("<IQ", 9, HUGE)), r"item count of metadata 'evil.nested'"),
    (_kv("evil.string", 8, struct.pack("<Q", HUGE)), r"metadata 'evil.string' needs 1099511627776 bytes"),
    (_kv("evil.deep", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 9, 1)
         + struct.pack("<IQ", 0, 1) + b"\0"), r"metadata .evil.deep. item 0 item 0 item 0 nests arrays more than 3 deep"),
    (_kv("evil.kind", 13, b""), r"metadata 'evil.kind' has the unknown value type 13"),
])
def test_declared_sizes_beyond_the_file_are_refused_at_once(tmp_path, field, match):
    _refused_fast(raw_gguf(tmp_path / "evil.gguf", [field]), match)


def test_declared_counts_beyond_the_file_are_refused_at_once(tmp_path):
    _refused_fast(raw_gguf(tmp_path / "evil.gguf", [], tensor_count=HUGE), r"tensor count is 1099511627776")
    _refused_fast(raw_gguf(tmp_path / "evil.gguf", [], field_count=HUGE), r"metadata count is 1099511627776")
    dims = raw_gguf(tmp_path / "evil.gguf", [], [_tensor("blocks.0.weight", [1 << 20] * 4)])
    _refused_fast(dims, r"tensor 'blocks.0.weight' \(F32, \[1048576, 1048576, 1048576, 1048576\]\) needs bytes "
                        r".* past the end")
    _refused_fast(raw_gguf(tmp_path / "evil.gguf", [], [_tensor("w", [1] * 40)]),
                  r"tensor 'w' declares 40 dimensions")


@pytest.mark.parametrize("field,match", [
    (_kv("general.name", 8, _str(b"Wan\xff\xfe")), r"metadata 'general.name' is not UTF-8 text \(byte 3"),
    (_kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + _str("a") + _str(b"\xc3") + _str("c")),
     r"metadata 'tokenizer.ggml.tokens' item 1 is not UTF-8 text"),
    (_str(b"key\xff") + struct.pack("<I", 4) + b"\0" * 4, r"metadata key #0 is not UTF-8 text"),
    (_kv("general.alignment", 4, struct.pack("<I", 48)), r"general.alignment is 48, not a power of two"),
])
def test_damaged_metadata_is_named(tmp_path, field, match):
    with pytest.raises(CheckpointError, match=r"bad.gguf.*" + match):
        read_gguf(raw_gguf(tmp_path / "bad.gguf", [field]))


def test_unknown_tensor_type_and_odd_rows_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"tensor 'w' has the unknown ggml type 77"):
        read_gguf(raw_gguf(tmp_path / "bad.gguf", [], [_tensor("w", [32], kind=77)]))
    with pytest.raises(CheckpointError, match=r"tensor 'w' \(Q8_0\) has rows of 33 values, not a multiple of its "
                                              r"32-value blocks"):
        read_gguf(raw_gguf(tmp_path / "bad.gguf", [], [_tensor("w", [33], kind=int(T.Q8_0))]))


@pytest.mark.parametrize("orig", [[-4, -8], [0, 32], [4.0, 8.0], [8, 8]])
def test_bad_orig_shape_metadata_is_named(tmp_path, orig):
    path = tmp_path / "orig.gguf"
    writer = GGUFWriter(str(path), "wan")
    writer.add_array("comfy.gguf.orig_shape.w", orig)
    writer.add_tensor("w", np.zeros((4, 8), np.float32))
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        step()
    writer.close()
    with pytest.raises(CheckpointError, match=r"orig.gguf.*(orig_shape.w is .*not a shape|'w' the shape .*does not hold)"):
        read_gguf(path)


def test_values_and_tensors_equal_the_reference_reader(tmp_path):
    path = tmp_path / "good.gguf"
    writer = GGUFWriter(str(path), "t5encoder")
    writer.add_uint32("t5encoder.block_count", 2)
    writer.add_float32("t5encoder.eps", 1e-6)
    writer.add_bool("tokenizer.ggml.add_space_prefix", False)
    writer.add_string("general.name", "umt5 ✓")
    writer.add_array("tokenizer.ggml.tokens", ["<pad>", "▁a", "ü", ""])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.5, -2.25, 3.0])
    writer.add_array("tokenizer.ggml.token_type", [3, 1, 1, 6])
    writer.add_array("nested", [[1, 2], [3]])
    rng = np.random.default_rng(0)
    writer.add_tensor("a", rng.standard_normal((3, 64)).astype(np.float32))
    writer.add_tensor("b", rng.standard_normal((2, 32)).astype(np.float16))
    writer.add_tensor("c", rng.integers(0, 255, (2, 34), dtype=np.uint8), raw_dtype=T.Q8_0)
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        step()
    writer.close()
    reference, ours = GGUFReader(path), GGUFHeader(path)
    for key, field in reference.fields.items():
        if not key.startswith("GGUF.") and key != "nested":
            assert ours.value(key) == field.contents(), key
    assert ours.value("nested") == [[1, 2], [3]]  # the reference reader flattens arrays of arrays
    assert [t.name for t in ours.tensors] == [t.name for t in reference.tensors]
    for mine, theirs in zip(ours.tensors, reference.tensors):
        assert mine.tensor_type == theirs.tensor_type and mine.shape.tolist() == theirs.shape.tolist()
        assert mine.data.dtype == theirs.data.dtype and mine.data.shape == theirs.data.shape
        assert np.array_equal(mine.data, theirs.data) and mine.data_offset == theirs.data_offset

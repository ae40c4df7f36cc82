"""GGUF text encoder: time to read a full-size tokenizer table (UMT5: 256,384 pieces with scores and types, as
llama.cpp's converter stores them) from the file's metadata, ours (``wan.quant.gguf_header``: bounded, numeric arrays
in one numpy pass) against ``gguf.GGUFReader`` (the reader the pack used before, which builds an array per item),
in the same process; plus the whole tokenizer rebuilt from our read.

    python benchmarks/gguf_metadata.py            # 256,384 pieces (the UMT5-XXL table)
    python benchmarks/gguf_metadata.py --tiny     # 4,096 pieces, a quick smoke run

Target: ours <= 0.1 x GGUFReader's time, and the tokenizer ready within a few seconds.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from gguf import GGUFReader, GGUFWriter  # noqa: E402

from benchmarks.harness import ratio_line  # noqa: E402
from wan.encoders.gguf_tokenizer import tokenizer_from_gguf  # noqa: E402
from wan.quant.gguf_file import read_gguf  # noqa: E402

UMT5_PIECES = 256_384


def write_file(path: Path, pieces: int) -> None:
    writer = GGUFWriter(str(path), "t5encoder")
    writer.add_string("tokenizer.ggml.model", "t5")
    tokens = ["<pad>", "</s>", "<unk>"] + [f"\u2581p{i}" for i in range(pieces - 3)]
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_array("tokenizer.ggml.scores", [0.0, 0.0, 0.0] + [-float(i) / pieces for i in range(pieces - 3)])
    writer.add_array("tokenizer.ggml.token_type", [3, 3, 2] + [1] * (pieces - 3))
    writer.add_uint32("tokenizer.ggml.unknown_token_id", 2)
    writer.add_uint32("tokenizer.ggml.eos_token_id", 1)
    writer.add_uint32("tokenizer.ggml.padding_token_id", 0)
    writer.add_tensor("token_embd.weight", np.zeros((pieces, 8), np.float16))
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        step()
    writer.close()


def reference_table(path: Path) -> list:
    reader = GGUFReader(path)
    return [reader.get_field(f"tokenizer.ggml.{k}").contents() for k in ("tokens", "scores", "token_type")]


def our_table(path: Path) -> list:
    gguf = read_gguf(path, "text encoder file")
    return [gguf.value(f"tokenizer.ggml.{k}") for k in ("tokens", "scores", "token_type")]


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    pieces = 4096 if args.tiny else UMT5_PIECES
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "umt5-xxl-encoder.gguf"
        write_file(path, pieces)
        ours, ours_table = timed(our_table, path)
        theirs, their_table = timed(reference_table, path)
        assert ours_table[0] == their_table[0] and ours_table[2] == their_table[2]
        assert np.array_equal(np.float32(ours_table[1]), np.float32(their_table[1]))
        rebuilt, _ = timed(lambda: tokenizer_from_gguf(read_gguf(path, "text encoder file")))
    print(f"tokenizer table of {pieces:,} pieces: ours {ours:.3f} s, gguf.GGUFReader {theirs:.2f} s")
    print(ratio_line("gguf.GGUFReader (table)", ours, theirs, 0.1))
    print(f"whole tokenizer rebuilt from the file (our read + sentencepiece model): {rebuilt:.2f} s")


if __name__ == "__main__":
    main()

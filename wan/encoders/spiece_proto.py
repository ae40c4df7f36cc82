"""Write a sentencepiece model file (a ``ModelProto`` message) from its pieces, without the protobuf runtime.

Only the fields a unigram tokenizer needs to encode are written (field numbers of sentencepiece's
``sentencepiece_model.proto``): the pieces (text, score, type), the trainer spec (model type, vocabulary size, byte
fallback, special ids and pieces) and the normaliser spec (NFKC table, dummy prefix, whitespace handling). Protobuf
wire format: a key ``(field << 3) | wire_type`` as a varint, then a varint (0), a 32-bit float (5) or a length and
bytes (2).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

UNIGRAM = 1
BYTE = 6  # the sentencepiece piece type of byte-fallback pieces <0x00> ... <0xFF>


@dataclass(frozen=True)
class SpecialIds:
    unk: int
    eos: int
    pad: int
    bos: int = -1


@dataclass(frozen=True)
class Normalizer:
    charsmap: bytes = b""  # sentencepiece's precompiled character map (NFKC rules); empty: no normalisation
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True


def model_proto(pieces: list[str], scores: list[float], types: list[int], ids: SpecialIds,
                normalizer: Normalizer) -> bytes:
    """The serialised ``ModelProto`` of a unigram model with these pieces (piece i has id i)."""
    out = bytearray()
    piece_key, score_key, type_key = _key(1, 2), _key(2, 5), _key(3, 0)  # also the message key (field 1, bytes)
    for piece, score, kind in zip(pieces, scores, types):  # the hot loop (256k pieces): _message(1, ...) inlined
        text = piece.encode("utf-8")
        body = piece_key + _short(len(text)) + text + score_key + struct.pack("<f", score) + type_key + _short(kind)
        out += piece_key + _short(len(body)) + body
    out += _message(2, _trainer_spec(pieces, types, ids))
    out += _message(3, _string(1, "nmt_nfkc" if normalizer.charsmap else "identity")
                    + _bytes(2, normalizer.charsmap) + _varint_field(3, normalizer.add_dummy_prefix)
                    + _varint_field(4, normalizer.remove_extra_whitespaces) + _varint_field(5, True))
    return bytes(out)


def _trainer_spec(pieces: list[str], types: list[int], ids: SpecialIds) -> bytes:
    spec = _varint_field(3, UNIGRAM) + _varint_field(4, len(pieces)) + _varint_field(35, BYTE in types)
    for number, index in ((40, ids.unk), (41, ids.bos), (42, ids.eos), (43, ids.pad)):
        spec += _varint_field(number, index)
    for number, index in ((45, ids.unk), (46, ids.bos), (47, ids.eos), (48, ids.pad)):
        if 0 <= index < len(pieces):
            spec += _string(number, pieces[index])
    return spec


_ONE_BYTE = [bytes([v]) for v in range(128)]


def _short(value: int) -> bytes:
    """``_varint`` with the one-byte values looked up."""
    return _ONE_BYTE[value] if 0 <= value < 128 else _varint(value)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 values are written as 64-bit two's complement, as protobuf does
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _varint_field(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(int(value))


def _bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _string(field: int, text: str) -> bytes:
    return _bytes(field, text.encode("utf-8"))


def _message(field: int, body: bytes) -> bytes:
    return _bytes(field, body)

"""GGUF (ggml) block formats turned back into float weights by plain torch ops, on whatever device the bytes are.

Each kernel takes the raw blocks as a uint8 tensor ``[n_blocks, type_size]`` and writes ``out`` ``[n_blocks,
block_size]`` (float32, or another float dtype: the float32 value rounded once), computed in the same order as
ggml's reference (``gguf.quants``), so the float32 result is bit for bit the reference's. A kernel is a few
whole-tensor ops (integer codes, then one product and at most one sum in float32), each of which torch runs on all
its threads; ``dequantize`` hands it a million values at a time (see ``BLOCK_VALUES``). Layouts (bytes per block,
``QK_K = 256`` elements for the K-quants):

    Q8_0  d:f16 | qs:int8[32]                          Q4_0  d | qs:u8[16] (low nibbles = 0..15, high = 16..31)
    Q4_1  d | m | qs[16]                                Q5_0  d | qh:u8[4] (bit i = 5th bit of i) | qs[16]
    Q5_1  d | m | qh[4] | qs[16]                        IQ4_NL  d | qs[16], codes index a 16-value table
    Q2_K  scales:u8[16] | qs[64] | d | dmin             Q3_K  hmask[32] | qs[64] | scales:6-bit x16 in 12 | d
    Q4_K  d | dmin | scales:6-bit x8 + mins x8 in 12 | qs[128]
    Q5_K  d | dmin | scales[12] | qh[32] | qs[128]      Q6_K  ql[128] | qh[64] | scales:int8[16] | d
    IQ4_XS  d | scales_h:u16 | scales_l[4] | qs[128]
"""
from __future__ import annotations

import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

from .constants import device_constant as _const

QK_K = 256
IQ4_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


def _f16(blocks: torch.Tensor, at: int) -> torch.Tensor:
    """The little-endian float16 at (even) byte ``at`` of every (contiguous, even-sized) block: float32 ``[n, 1]``."""
    return blocks.view(torch.float16)[:, at // 2:at // 2 + 1].float()


def _bits(x: torch.Tensor, shifts, mask: int) -> torch.Tensor:
    """``(x[..., None, :] >> s) & mask`` for each shift ``s``: ``[..., len(shifts), k]``. A few shifts go as scalar
    ops joined by one stack (2.3x faster for (0, 4) than the broadcast shift, measured); many as one broadcast."""
    shifts = tuple(shifts)
    if len(shifts) <= 4:
        return torch.stack([(x >> s) & mask if s else x & mask for s in shifts], dim=-2)
    s = _const(shifts, torch.uint8, x.device).view(-1, 1)
    return (x.unsqueeze(-2) >> s) & mask


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """Low nibbles first, then high nibbles, along the last dimension (ggml's 4-bit order)."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=-1)


def _to_float(q: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Small scale factors (a few per block) as float32."""
    return (q.to(torch.int16) - offset).float() if offset else q.float()


def _centred(codes: torch.Tensor, offset: int) -> torch.Tensor:
    """Unsigned codes below 128 minus ``offset``, as int8 (exact), in place on ``codes`` (a fresh tensor)."""
    return codes.view(torch.int8).sub_(offset)


def _scaled(codes: torch.Tensor, scale: torch.Tensor, out: torch.Tensor, offset: torch.Tensor | None = None,
            subtract: bool = True) -> None:
    """``out = scale * codes (-|+) offset``, computed in float32 and rounded once into ``out``'s dtype.

    ``codes``: integer codes shaped like ``out``; ``scale`` / ``offset``: float32, broadcast over them. Every step
    is one whole-tensor op on operands of one dtype (torch's vectorised kernels, spread over its threads)."""
    values = out if out.dtype == torch.float32 else torch.empty(out.shape, dtype=torch.float32, device=out.device)
    values.copy_(codes).mul_(scale)
    if offset is not None:
        values.sub_(offset) if subtract else values.add_(offset)
    if values is not out:
        out.copy_(values)


def q8_0(b: torch.Tensor, out: torch.Tensor) -> None:
    _scaled(b[:, 2:].view(torch.int8), _f16(b, 0), out)


def q4_0(b: torch.Tensor, out: torch.Tensor) -> None:
    _scaled(_centred(_nibbles(b[:, 2:]), 8), _f16(b, 0), out)


def q4_1(b: torch.Tensor, out: torch.Tensor) -> None:
    _scaled(_nibbles(b[:, 4:]), _f16(b, 0), out, _f16(b, 2), subtract=False)


def _five_bit(qh: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
    high = _bits(qh, range(8), 1).transpose(-1, -2).flatten(-2)  # bit i of the little-endian u32: element i
    return _nibbles(qs) | (high << 4)


def q5_0(b: torch.Tensor, out: torch.Tensor) -> None:
    _scaled(_centred(_five_bit(b[:, 2:6], b[:, 6:]), 16), _f16(b, 0), out)


def q5_1(b: torch.Tensor, out: torch.Tensor) -> None:
    _scaled(_five_bit(b[:, 4:8], b[:, 8:]), _f16(b, 0), out, _f16(b, 2), subtract=False)


def _lookup(codes: torch.Tensor) -> torch.Tensor:
    """The IQ4 table's int8 values at 4-bit ``codes``."""
    return _const(IQ4_VALUES, torch.int8, codes.device)[codes.long()]


def iq4_nl(b: torch.Tensor, out: torch.Tensor) -> None:
    _scaled(_lookup(_nibbles(b[:, 2:])), _f16(b, 0), out)


def q2_k(b: torch.Tensor, out: torch.Tensor) -> None:
    n = b.shape[0]
    scales, qs = b[:, :16], b[:, 16:80]
    dl = (_f16(b, 80) * _to_float(scales & 0x0F)).view(n, 16, 1)
    ml = (_f16(b, 82) * _to_float(scales >> 4)).view(n, 16, 1)
    q = _bits(qs.reshape(n, 2, 32), (0, 2, 4, 6), 3).reshape(n, 16, 16)
    _scaled(q, dl, out.view(n, 16, 16), ml)


def _q3_k_scales(s: torch.Tensor) -> torch.Tensor:
    """Sixteen 6-bit scales: low 4 bits from bytes 0..7 (low nibbles, then high), top 2 bits from bytes 8..11."""
    n = s.shape[0]
    low = _nibbles(s[:, :8])
    high = _bits(s[:, 8:12], (0, 2, 4, 6), 3).reshape(n, 16)
    return _to_float(low | (high << 4), 32)


def q3_k(b: torch.Tensor, out: torch.Tensor) -> None:
    n = b.shape[0]
    hmask, qs = b[:, :32], b[:, 32:96]
    dl = (_f16(b, 108) * _q3_k_scales(b[:, 96:108])).view(n, 16, 1)
    low = _bits(qs.reshape(n, 2, 32), (0, 2, 4, 6), 3).reshape(n, 16, 16)
    high = _bits(hmask, range(8), 1).reshape(n, 16, 16)
    codes = low.view(torch.int8).sub_(((high ^ 1) << 2).view(torch.int8))  # low - 4 where the high bit is clear
    _scaled(codes, dl, out.view(n, 16, 16))


def _k_scales_mins(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight 6-bit scales and eight 6-bit mins packed in 12 bytes (Q4_K, Q5_K)."""
    d, m, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    scales = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=1)
    mins = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=1)
    return _to_float(scales), _to_float(mins)


def _k_dequant(b: torch.Tensor, q: torch.Tensor, out: torch.Tensor) -> None:
    n = b.shape[0]
    scales, mins = _k_scales_mins(b[:, 4:16])
    d = (_f16(b, 0) * scales).view(n, 8, 1)
    dm = (_f16(b, 2) * mins).view(n, 8, 1)
    _scaled(q, d, out.view(n, 8, 32), dm)


def _k_low4(qs: torch.Tensor) -> torch.Tensor:
    """Q4_K/Q5_K 4-bit codes: each 32-byte chunk gives a group of low nibbles, then one of high nibbles."""
    n = qs.shape[0]
    return _bits(qs.reshape(n, 4, 32), (0, 4), 0x0F).reshape(n, 8, 32)


def q4_k(b: torch.Tensor, out: torch.Tensor) -> None:
    _k_dequant(b, _k_low4(b[:, 16:144]), out)


def q5_k(b: torch.Tensor, out: torch.Tensor) -> None:
    high = _bits(b[:, 16:48], range(8), 1)  # group g takes bit g of the 32 qh bytes
    _k_dequant(b, _k_low4(b[:, 48:176]) | (high << 4), out)


def q6_k(b: torch.Tensor, out: torch.Tensor) -> None:
    n = b.shape[0]
    ql, qh = b[:, :128], b[:, 128:192]
    d = (_f16(b, 208) * b[:, 192:208].view(torch.int8).float()).view(n, 16, 1)
    low = _bits(ql.reshape(n, 2, 64), (0, 4), 0x0F).reshape(n, 8, 32)
    high = _bits(qh.reshape(n, 2, 32), (0, 2, 4, 6), 3).reshape(n, 8, 32)
    codes = _centred(low | (high << 4), 32).view(n, 16, 16)
    _scaled(codes, d, out.view(n, 16, 16))


def iq4_xs(b: torch.Tensor, out: torch.Tensor) -> None:
    n = b.shape[0]
    scales_h = b[:, 2].to(torch.int32) | (b[:, 3].to(torch.int32) << 8)
    high = ((scales_h.unsqueeze(1) >> _const(tuple(range(0, 16, 2)), torch.int32, b.device)) & 3).to(torch.uint8)
    low = torch.stack([b[:, 4:8] & 0x0F, b[:, 4:8] >> 4], dim=2).reshape(n, 8)
    dl = (_f16(b, 0) * _to_float(low | (high << 4), 32)).view(n, 8, 1)
    codes = _bits(b[:, 8:].reshape(n, 8, 16), (0, 4), 0x0F).reshape(n, 8, 32)
    _scaled(_lookup(codes), dl, out.view(n, 8, 32))


KERNELS = {
    T.Q8_0: q8_0, T.Q4_0: q4_0, T.Q4_1: q4_1, T.Q5_0: q5_0, T.Q5_1: q5_1, T.IQ4_NL: iq4_nl,
    T.Q2_K: q2_k, T.Q3_K: q3_k, T.Q4_K: q4_k, T.Q5_K: q5_k, T.Q6_K: q6_k, T.IQ4_XS: iq4_xs,
}
FLOAT_TYPES = {T.F32: torch.float32, T.F16: torch.float16, T.BF16: torch.bfloat16}
SUPPORTED = tuple(FLOAT_TYPES) + tuple(KERNELS)
# The kernels take at most this many values at a time: few enough that their float32 intermediates stay in the
# CPU's cache, many enough that each op spreads over every thread (torch's grain: 32768) and that a tensor takes a
# handful of ops per million values. Measured against whole-tensor passes (1536 x 8960, one thread, process time):
# Q8_0 to bf16 15 ms against 71 ms, Q4_K 81 against 151, Q6_K 71 against 167; to fp32 within noise of them.
BLOCK_VALUES = 1 << 20


def dequantize(raw: torch.Tensor, qtype: int, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The float tensor of ``shape`` (in ``dtype``, on ``raw``'s device) that the whole blocks in ``raw`` encode.

    ``raw``: the tensor's bytes as uint8 (any shape; float types may also come already typed)."""
    qtype = T(qtype)
    if qtype in FLOAT_TYPES:
        values = raw if raw.dtype == FLOAT_TYPES[qtype] else raw.contiguous().view(torch.uint8).view(FLOAT_TYPES[qtype])
        return values.reshape(shape).to(dtype)
    if qtype not in KERNELS:
        raise NotImplementedError(f"GGUF type {qtype.name} cannot be dequantised")
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    blocks, kernel = raw.reshape(-1, type_size).contiguous(), KERNELS[qtype]
    out = torch.empty(blocks.shape[0], block_size, dtype=dtype, device=blocks.device)
    step = blocks.shape[0] if blocks.device.type != "cpu" else max(1, BLOCK_VALUES // block_size)
    for start in range(0, blocks.shape[0], step):
        kernel(blocks[start:start + step], out[start:start + step])
    return out.reshape(shape)

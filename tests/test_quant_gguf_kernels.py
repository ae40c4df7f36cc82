"""Each GGUF dequantisation kernel (torch) against ggml's reference, ``gguf.quants.dequantize`` (numpy).

Oracle: ``gguf.quants.dequantize``; tolerance: none, the float32 results must be equal bit for bit. Inputs: for the
types gguf can quantise, ``gguf.quants.quantize`` of random values; for the others (K-quants, IQ4), random raw
blocks whose float16 fields are made finite.
"""
import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, quants

from wan.quant.gguf_kernels import CPU_CHUNK, dequantize

QUANTIZED_BY_GGUF = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
RAW_ONLY = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS]
SHAPE = (37, 2048)  # 75776 values: the CPU path works through them in 2.3 chunks of CPU_CHUNK


def _raw_blocks(qtype, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Random bytes; every 16-bit word that would be an inf/NaN float16 gets a smaller exponent (finite scales)."""
    block, type_size = GGML_QUANT_SIZES[qtype]
    raw = np.random.default_rng(seed).integers(0, 256, size=(rows, cols // block * type_size), dtype=np.uint8)
    words = raw.view(np.uint16)
    words[(words & 0x7C00) == 0x7C00] &= 0xBFFF
    return raw


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32)).view(np.int32)


@pytest.mark.parametrize("qtype", QUANTIZED_BY_GGUF, ids=lambda q: q.name)
def test_types_gguf_can_quantize(qtype):
    values = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32) * 0.05
    raw = quants.quantize(values, qtype)
    ours = dequantize(torch.from_numpy(np.ascontiguousarray(raw)), qtype, SHAPE)
    assert ours.dtype == torch.float32 and ours.shape == SHAPE and 2 * CPU_CHUNK < ours.numel() < 3 * CPU_CHUNK
    np.testing.assert_array_equal(_bits(ours.numpy()), _bits(quants.dequantize(raw, qtype)))


@pytest.mark.parametrize("qtype", RAW_ONLY, ids=lambda q: q.name)
def test_raw_blocks(qtype):
    raw = _raw_blocks(qtype, *SHAPE, seed=int(qtype))
    ours = dequantize(torch.from_numpy(raw), qtype, SHAPE)
    reference = quants.dequantize(raw, qtype)
    assert np.isfinite(reference).all()
    np.testing.assert_array_equal(_bits(ours.numpy()), _bits(reference))


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_K, T.Q6_K], ids=lambda q: q.name)
def test_other_dtypes_round_the_float32_result(qtype):
    """bf16 / fp16 weights are the float32 dequantisation rounded once (no extra rounding on the way)."""
    raw = torch.from_numpy(_raw_blocks(qtype, 4, 512, seed=3))
    exact = dequantize(raw, qtype, (4, 512))
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(dequantize(raw, qtype, (4, 512), dtype), exact.to(dtype))


def test_unknown_type_is_refused():
    with pytest.raises(NotImplementedError, match="IQ2_XXS"):
        dequantize(torch.zeros(66, dtype=torch.uint8), T.IQ2_XXS, (256,))

"""Each GGUF dequantisation kernel (torch) against ggml's reference, ``gguf.quants.dequantize`` (numpy).

Oracle: ``gguf.quants.dequantize``; tolerance: none, the float32 results must be equal bit for bit. Inputs: for the
types gguf can quantise, ``gguf.quants.quantize`` of random values; for the others (K-quants, IQ4), random raw
blocks whose float16 fields are made finite.
"""
import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, quants

from torch.utils._python_dispatch import TorchDispatchMode

from wan.quant import gguf_kernels
from wan.quant.gguf_kernels import dequantize

QUANTIZED_BY_GGUF = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
RAW_ONLY = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS]
SHAPE = (37, 2048)  # 75776 values: over torch's grain size (32768), so the ops run split across threads


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
    assert ours.dtype == torch.float32 and ours.shape == SHAPE
    np.testing.assert_array_equal(_bits(ours.numpy()), _bits(quants.dequantize(raw, qtype)))


@pytest.mark.parametrize("qtype", RAW_ONLY, ids=lambda q: q.name)
def test_raw_blocks(qtype):
    raw = _raw_blocks(qtype, *SHAPE, seed=int(qtype))
    ours = dequantize(torch.from_numpy(raw), qtype, SHAPE)
    reference = quants.dequantize(raw, qtype)
    assert np.isfinite(reference).all()
    np.testing.assert_array_equal(_bits(ours.numpy()), _bits(reference))


@pytest.mark.parametrize("qtype", RAW_ONLY + QUANTIZED_BY_GGUF[3:], ids=lambda q: q.name)
def test_other_dtypes_round_the_float32_result(qtype):
    """bf16 / fp16 weights are the float32 dequantisation rounded once (no extra rounding on the way)."""
    raw = torch.from_numpy(_raw_blocks(qtype, 4, 512, seed=3))
    exact = dequantize(raw, qtype, (4, 512))
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(dequantize(raw, qtype, (4, 512), dtype), exact.to(dtype))


@pytest.mark.parametrize("qtype", RAW_ONLY + QUANTIZED_BY_GGUF[3:], ids=lambda q: q.name)
def test_tensors_of_several_kernel_calls_and_threads_are_unchanged(qtype, monkeypatch):
    """Cut into several kernel calls (a tensor over ``BLOCK_VALUES``, made small here) and run on one or two
    threads, the result is the reference's, bit for bit, in float32 and bf16."""
    raw = _raw_blocks(qtype, 6, 1024, seed=4)
    reference = torch.from_numpy(quants.dequantize(raw, qtype))
    monkeypatch.setattr(gguf_kernels, "BLOCK_VALUES", 1000)  # several calls, the last one partial
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            for dtype in (torch.float32, torch.bfloat16):
                ours = dequantize(torch.from_numpy(raw), qtype, (6, 1024), dtype)
                assert torch.equal(ours, reference.to(dtype)), (n, dtype)
    finally:
        torch.set_num_threads(threads)


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_K, T.Q6_K, T.IQ4_XS], ids=lambda q: q.name)
def test_op_count_does_not_grow_with_the_tensor_below_a_million_values(qtype):
    """Whole-tensor kernels: dequantising 512K values dispatches as many torch ops as 8K values (no loop over small
    chunks, each op spread over the threads by torch itself)."""
    counts = []
    for rows in (4, 256):
        raw = torch.from_numpy(_raw_blocks(qtype, rows, 2048, seed=5))
        with _Ops() as ops:
            dequantize(raw, qtype, (rows, 2048), torch.bfloat16)
        counts.append(ops.count)
    assert counts[0] == counts[1] < 80, counts


def test_unknown_type_is_refused():
    with pytest.raises(NotImplementedError, match="IQ2_XXS"):
        dequantize(torch.zeros(66, dtype=torch.uint8), T.IQ2_XXS, (256,))

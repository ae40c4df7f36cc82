"""Compact Linear weights on the CPU are dequantised a block of rows at a time, never whole.

Oracles: each format's own whole-tensor ``dequantize`` (itself checked against the ``gguf`` package's dequantisers,
the NVFP4 reference decoder and plain fp8 casts in tests/test_quant_*), sliced, must equal ``dequantize_rows`` bit
for bit; a layer's forward must equal ``wan.weights.ops.linear`` on that whole dequantised weight bit for bit (the
blocks are the same shapes as ``linear``'s own), with the whole-tensor ``dequantize`` made to fail meanwhile.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T, quants

from test_quant_comfy_quant import nvfp4
from wan.quant.fp8 import SCALED_FP8
from wan.quant.gguf_format import GGUFFormat
from wan.quant.gguf_write import _random  # random Q4_K blocks with sane scales (gguf cannot quantise Q4_K)
from wan.quant.nvfp4 import NVFP4_FORMAT
from wan.weights import ops
from wan.weights.ops import Linear

OUT, IN = 3008, 1536  # blocks of 682 weight rows when widening, of 2730 rows otherwise (NVFP4: multiples of 16)


def _layer(form: str, out: int = OUT, inp: int = IN) -> Linear:
    torch.manual_seed(0)
    layer = Linear(inp, out).requires_grad_(False)
    w = torch.randn(out, inp) * 0.05
    if form == "fp8":
        layer.weight = torch.nn.Parameter(w.to(torch.float8_e4m3fn), requires_grad=False)
    elif form in ("scaled fp8", "scaled fp8 rows"):
        layer.weight = torch.nn.Parameter((w / 0.01).to(torch.float8_e4m3fn), requires_grad=False)
        layer.scale_weight = torch.rand(out, 1) * 0.02 if form.endswith("rows") else torch.tensor(0.01)
        layer.weight_format = SCALED_FP8
    elif form.startswith("gguf"):
        qtype = {"gguf Q8_0": T.Q8_0, "gguf Q4_K": T.Q4_K, "gguf F16": T.F16}[form]
        raw = _random((out, inp), qtype, np.random.default_rng(0)) if qtype == T.Q4_K else quants.quantize(w.numpy(),
                                                                                                         qtype)
        layer.weight = torch.nn.Parameter(torch.from_numpy(raw), requires_grad=False)
        layer.weight_format = GGUFFormat(int(qtype), (out, inp))
    elif form == "nvfp4":
        stored, _ = nvfp4(w)
        layer.weight = torch.nn.Parameter(stored["weight"], requires_grad=False)
        layer.register_buffer("weight_scale", stored["weight_scale"], persistent=False)
        layer.register_buffer("weight_scale_2", stored["weight_scale_2"].float(), persistent=False)
        layer.weight_format = NVFP4_FORMAT
    elif form == "bf16 stored":
        layer.weight = torch.nn.Parameter(w.bfloat16(), requires_grad=False)
    return layer


FORMS = ["fp8", "scaled fp8", "scaled fp8 rows", "gguf Q8_0", "gguf Q4_K", "gguf F16", "nvfp4", "bf16 stored"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_equal_the_whole_dequantised_weight(form, dtype):
    layer = _layer(form)
    whole = layer.dequantize(dtype, torch.device("cpu"))
    for start, stop in [(0, 37), (37, 300), (300, 682), (682, 2730), (2730, OUT), (129, 131)]:
        rows = layer.dequantize_rows(start, stop, dtype, torch.device("cpu"))
        assert rows.dtype == dtype and torch.equal(rows, whole[start:stop]), (form, start, stop)


@pytest.fixture(params=[False, True], ids=["generic-half", "native-half"])
def native(request, monkeypatch):
    monkeypatch.setattr(ops, "_NATIVE", {torch.bfloat16: request.param, torch.float16: request.param})
    return request.param


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_goes_by_rows_and_equals_the_whole_product(form, dtype, native, monkeypatch):
    layer = _layer(form)
    x = torch.randn(2, 800, IN).to(dtype)  # 1600 rows: several blocks of input rows (widened), of weight rows
    assert 2 * ops.wide_block(IN) < 1600 and ops.row_block(IN, False) < OUT
    expected = ops.linear(x, layer.dequantize(dtype, x.device), layer.bias.to(dtype))
    if layer.weight_format is not None:
        monkeypatch.setattr(type(layer.weight_format), "dequantize", lambda *a, **k: pytest.fail("dequantised whole"))
    if layer.weight_format is not None or layer.weight.dtype != dtype:  # (else the weight is used as it is)
        monkeypatch.setattr(Linear, "dequantize", lambda *a, **k: pytest.fail("dequantised whole"))
    out = layer(x)
    assert out.dtype == dtype and torch.equal(out, expected), form


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_blocks_are_bounded(dtype, native, monkeypatch):
    """No block of dequantised rows is larger than ``row_block`` rows (16 MB of float32 values; 4 MB widened)."""
    layer = _layer("gguf Q8_0")
    sizes = []
    real = layer.dequantize_rows
    monkeypatch.setattr(layer, "dequantize_rows", lambda a, b, *r: sizes.append(b - a) or real(a, b, *r))
    layer(torch.randn(50, IN).to(dtype))
    wide = dtype == torch.bfloat16 and not native
    assert len(sizes) > 1 and max(sizes) <= ops.row_block(IN, wide) and sum(sizes) == OUT
    assert ops.row_block(IN, wide) * IN * 4 <= (1 << 22 if wide else 1 << 24)


def test_a_compiled_layer_dequantises_whole(monkeypatch):
    """Under ``torch.compile`` (as on a GPU) the layer takes one dequantised weight and one product."""
    layer = _layer("scaled fp8")
    x = torch.randn(3, IN)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(Linear, "dequantize_rows", lambda *a, **k: pytest.fail("went by rows"))
    expected = torch.nn.functional.linear(x, layer.dequantize(torch.float32, x.device), layer.bias)
    assert torch.equal(layer(x), expected)


def test_a_format_without_rows_is_dequantised_whole():
    """A ``WeightFormat`` of someone else's that implements only ``dequantize`` still works (whole, as before)."""
    from wan.quant.base import WeightFormat

    class Doubled(WeightFormat):
        def dequantize(self, layer, dtype, device):
            return layer.weight.to(device=device, dtype=dtype) * 2

    layer = _layer("fp8")
    layer.weight_format = Doubled()
    assert not layer.weight_format.dequantizes_rows and SCALED_FP8.dequantizes_rows
    x = torch.randn(5, IN)
    expected = torch.nn.functional.linear(x, layer.weight.float() * 2, layer.bias)
    assert torch.equal(layer(x), expected)


def _patches(kind: str):
    from wan.weights.patches import Decomposed, Full, Hadamard, Kronecker, LowRank

    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g) * 0.01  # noqa: E731
    if kind == "lora":
        return (LowRank(r(OUT, 8), r(8, IN), 0.7),)
    if kind == "full":
        return (Full(r(OUT, IN), 0.5),)
    if kind == "loha":
        return (Hadamard(r(OUT, 4), r(4, IN), r(OUT, 4), r(4, IN), 0.9),)
    if kind == "dora rows":
        return (Decomposed(LowRank(r(OUT, 8), r(8, IN), 1.0), r(OUT, 1).abs() + 1, 0.8),)
    if kind == "lora then full":
        return (LowRank(r(OUT, 8), r(8, IN), 0.7), Full(r(OUT, IN), 0.5))
    if kind == "dora columns":
        return (Decomposed(LowRank(r(OUT, 8), r(8, IN), 1.0), r(1, IN).abs() + 1, 1.0),)
    return (Kronecker(r(16, 16), None, None, r(OUT // 16, IN // 16), None, None, 0.3),)


@pytest.mark.parametrize("kind", ["lora", "full", "loha", "dora rows", "lora then full", "dora columns", "lokr"])
@pytest.mark.parametrize("form", ["gguf Q8_0", "bf16 stored"])
def test_patched_weight_is_rebuilt_by_rows(kind, form, native, monkeypatch):
    """A patched layer rebuilds its weight a block of rows at a time where every patch is row by row (low rank, full
    differences, LoHa, DoRA with a norm per output row), equal to the whole rebuilt weight's product; a patch that
    needs the whole weight (DoRA normed per input column, LoKr) rebuilds it whole, as before."""
    layer = _layer(form)
    layer.weight_patches = _patches(kind)
    layer.side_path = "never"
    x = torch.randn(1600, IN).bfloat16()
    expected = ops.linear(x, layer.compute_weight(x.dtype, x.device), layer.bias.bfloat16())
    whole = kind in ("dora columns", "lokr")
    if not whole:
        monkeypatch.setattr(Linear, "compute_weight", lambda *a, **k: pytest.fail("rebuilt whole"))
    out = layer(x)
    assert torch.equal(out, expected), kind


@pytest.mark.parametrize("kind", ["lora", "full", "loha", "dora rows", "lora then full", "dora columns", "lokr"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_merge_goes_by_rows_and_equals_the_whole_merge(kind, dtype, monkeypatch):
    """Merging patches into a float weight (``patches.merged``) builds it a block of rows at a time where every patch
    is row by row, bit-equal to the whole float32 patched weight rounded once (``apply_all``, the oracle: every
    patch's own formula on the whole weight); DoRA normed per column and LoKr merge whole."""
    from wan.weights import patches as P

    w = (torch.randn(OUT, IN, generator=torch.Generator().manual_seed(4)) * 0.05).to(dtype)
    expected = P.apply_all(w, _patches(kind)).to(dtype)
    blocks = [stop - start for start, stop in P.even_blocks(OUT, P.MERGE_VALUES // IN)]
    assert len(blocks) == 5 and max(blocks) <= P.MERGE_VALUES // IN
    calls = []
    whole = P.apply_all
    monkeypatch.setattr(P, "apply_all", lambda t, p: calls.append(t.shape[0]) or whole(t, p))
    out = P.merged(w, _patches(kind))
    assert out.dtype == dtype and torch.equal(out, expected), kind
    assert calls == ([OUT] if kind in ("dora columns", "lokr") else blocks)


def test_even_blocks_cover_the_rows_in_blocks_of_one_aligned_size():
    """``even_blocks``: consecutive blocks covering every row once, none over ``most`` rows, all of one size but the
    last, that size a multiple of 64 where ``most`` >= 64, and as few blocks as that allows."""
    from wan.weights.patches import BLOCK_ALIGN, even_blocks

    g = torch.Generator().manual_seed(0)
    cases = [(8960, 2730), (1536, 468), (8960, 682), (1, 256), (64, 64), (5, 2)] + \
        [(int(n), int(m)) for n, m in zip(torch.randint(1, 20000, (300,), generator=g),
                                          torch.randint(1, 5000, (300,), generator=g))]
    for n, most in cases:
        blocks = even_blocks(n, most)
        sizes = [stop - start for start, stop in blocks]
        assert blocks[0][0] == 0 and blocks[-1][1] == n and sum(sizes) == n, (n, most)
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:])), (n, most)
        assert max(sizes) <= most and len(set(sizes[:-1])) <= 1 and sizes[-1] <= sizes[0], (n, most)
        if most >= BLOCK_ALIGN and len(blocks) > 1:
            assert sizes[0] % BLOCK_ALIGN == 0 and len(blocks) == -(-n // (most // BLOCK_ALIGN * BLOCK_ALIGN))
    assert [b - a for a, b in even_blocks(8960, 2730)] == [2240] * 4  # not 2730 x 3 + 770

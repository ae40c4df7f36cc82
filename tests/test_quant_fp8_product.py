"""fp8 products (``wan.quant.fp8_product``): fp8 weights times e4m3-quantised activations on PyTorch's CPU kernel.

Oracle: the float32 product of the same input with the float32 dequantised weight. Tolerance: the elementwise bound
derived in ``wan.quant.fp8_product`` (activation rounding 2^-4 relative, 2^-10 · scale absolute for subnormals, float32
accumulation), plus the final rounding to bfloat16 (2^-8 relative)."""
import logging

import pytest
import torch

import wan
from tiny_dit import assert_close, inputs
from tiny_fp8 import F8, scaled_fp8, scaled_fp8_dit
from wan.quant import fp8_product
from wan.weights.ops import Linear
from wan.weights.patches import LowRank

BF16_ROUNDING = 2.0 ** -8


@pytest.fixture
def kernels(monkeypatch):
    """A private probe table, so a test that pretends a device has no kernel leaves the others alone."""
    monkeypatch.setattr(fp8_product, "KERNELS", {})
    return fp8_product.KERNELS


def _layer(out_f: int, in_f: int, per_row: bool, seed: int = 0) -> tuple[Linear, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    layer = Linear(in_f, out_f)
    w = torch.randn(out_f, in_f, generator=g) * 0.05
    q, scale = scaled_fp8(w, per_row)
    layer.weight = torch.nn.Parameter(q, requires_grad=False)
    layer.bias = torch.nn.Parameter(torch.randn(out_f, generator=g).bfloat16(), requires_grad=False)
    layer.scale_weight = scale
    layer.weight_format = wan.quant.SCALED_FP8
    layer.fp8_products = True
    return layer, q.float() * scale


def _activations(rows: int, k: int, seed: int = 1) -> torch.Tensor:
    """Heavy-tailed rows with some tiny values, so both normal and subnormal e4m3 rounding occur."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g) * torch.exp(torch.randn(rows, k, generator=g))
    x[:, ::7] *= 1e-4
    return x.bfloat16()


def test_cpu_has_a_rowwise_kernel(kernels):
    assert fp8_product.kernel(torch.device("cpu")) == "row"


@pytest.mark.parametrize("per_row_weight", [False, True])
@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_product_within_the_derived_bound(kernels, granularity, per_row_weight):
    kernels[("cpu", None)] = granularity
    layer, w_real = _layer(96, 160, per_row_weight)
    x = _activations(2 * 37, 160).reshape(2, 37, 160)
    with torch.no_grad():
        y = layer(x)
    assert y.dtype == torch.bfloat16 and layer.weight.dtype == F8  # the weight stays fp8
    rows = x.reshape(-1, 160)
    ref = rows.float() @ w_real.t() + layer.bias.float()
    bound = fp8_product.error_bound(rows, w_real, rowwise=granularity == "row")
    err = (y.reshape(-1, 96).float() - ref).abs()
    allowed = bound + BF16_ROUNDING * (ref.abs() + bound)
    assert bool((err <= allowed).all()), float((err - allowed).max())
    assert err.max() > 0  # the activations really were quantised: the dequantised product would be exact here
    assert float((err / allowed).max()) > 0.01  # and the bound is not vacuous for this input


def _aligned_rows(value: float, k: int = 128) -> torch.Tensor:
    """Rows whose every rounding error has the same sign: one anchor 448 (scale 1, its weight column is 0), the rest
    ``value``."""
    x = torch.full((4, k), value)
    x[:, 0] = 448.0
    return x.bfloat16()


def test_bound_is_nearly_attained_and_a_coarser_rounding_breaks_it(kernels):
    kernels[("cpu", None)] = "row"
    layer, w_real = _layer(16, 128, False)
    w_real = torch.full_like(w_real, 0.0625)
    w_real[:, 0] = 0
    layer.weight = torch.nn.Parameter(w_real.to(F8), requires_grad=False)
    layer.scale_weight, layer.bias = torch.tensor(1.0), None
    x = _aligned_rows(1.0625)  # halfway between the e4m3 values 1 and 1.125: error 1/17 of each term
    with torch.no_grad():
        err = (layer(x).float() - x.float() @ w_real.t()).abs()
    ratio = err / fp8_product.error_bound(x, w_real)
    assert bool((ratio <= 1 + 2 * BF16_ROUNDING).all()) and bool((ratio > 0.9).all())
    x = _aligned_rows(1.125)  # exact in e4m3, halfway between the e5m2 values 1 and 1.25
    coarse = x.float().to(torch.float8_e5m2).float() @ w_real.t() - x.float() @ w_real.t()
    assert bool((coarse.abs() > fp8_product.error_bound(x, w_real)).all())


def test_model_uses_fp8_products_and_keeps_weights_fp8(kernels, tmp_path, monkeypatch):
    path = scaled_fp8_dit(tmp_path / "wan2.1_t2v_fp8_scaled.safetensors", per_row=True)
    exact = wan.load_dit(path)
    fast = wan.load_dit(path, fp8_matmul=True)
    assert fast.compute_dtype == torch.bfloat16 and fast.blocks[0].ffn[0].weight.dtype == F8
    fp8_product.kernel(torch.device("cpu"))  # the probe's own tiny product is not counted
    calls = []
    real = torch._scaled_mm
    monkeypatch.setattr(torch, "_scaled_mm", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        out, ref = fast(x, t, ctx), exact(x, t, ctx)
    assert len(calls) == 2 * 10  # every block Linear: 4 self-attention, 4 cross-attention, 2 feed-forward
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()  # whole model: loose; the bound is checked per layer


def test_without_a_kernel_the_dequantising_product_runs_with_one_note(kernels, tmp_path, monkeypatch, caplog):
    def missing(*args, **kwargs):
        raise RuntimeError("no fp8 kernel here")

    path = scaled_fp8_dit(tmp_path / "wan2.1_t2v_fp8_scaled.safetensors")
    exact, fast = wan.load_dit(path), wan.load_dit(path, fp8_matmul=True)
    monkeypatch.setattr(torch, "_scaled_mm", missing)
    x, t, ctx, _ = inputs()
    with caplog.at_level(logging.INFO, logger="wan_experts"), torch.no_grad():
        out = fast(x, t, ctx)
        fast(x, t, ctx)
    assert torch.equal(out, exact(x, t, ctx))
    notes = [r.getMessage() for r in caplog.records if "fp8_matmul" in r.getMessage()]
    assert len(notes) == 1 and "no fp8 kernel here" in notes[0] and "dequantised" in notes[0]


def test_float32_inputs_and_rebuilt_patches_stay_exact(kernels):
    layer, w_real = _layer(32, 64, False)
    x = _activations(5, 64)
    with torch.no_grad():
        assert torch.equal(layer(x.float()), torch.nn.functional.linear(x.float(), w_real, layer.bias.float()))


def test_low_rank_patches_add_their_side_product(kernels):
    layer, w_real = _layer(32, 64, False)
    x = _activations(9, 64)
    with torch.no_grad():
        base = layer(x)
        g = torch.Generator().manual_seed(3)
        layer.weight_patches = (LowRank(torch.randn(32, 4, generator=g), torch.randn(4, 64, generator=g), 0.5),)
        patched = layer(x)
    side = 0.5 * (x.float() @ layer.weight_patches[0].down.t() @ layer.weight_patches[0].up.t())
    assert_close(patched, base.float() + side, rel=2 ** -6, abs_=0.0)  # bfloat16 side product and sum


def test_comfy_quant_fp8_layers_take_part(kernels, tmp_path, caplog):
    from test_quant_comfy_quant import write_comfy_quant

    write_comfy_quant(tmp_path / "wan_mixed.safetensors", "markers")
    with caplog.at_level(logging.INFO, logger="wan_experts"):
        model = wan.load_dit(tmp_path / "wan_mixed.safetensors", fp8_matmul=True)
    flagged = [n for n, m in model.named_modules() if isinstance(m, Linear) and m.fp8_products]
    assert len(flagged) == 3  # the three comfy_quant fp8 layers; NVFP4 layers keep their own dequantisation
    assert any("fp8 products on 3 layers" in r.getMessage() for r in caplog.records)
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        assert torch.isfinite(model(x, t, ctx)).all()

"""Layers shared by the Wan models.

``Linear`` computes in the dtype of its input with ``weight = dequantise(stored) + patches``:
- the stored weight may be in another dtype or a compact format: fp8 checkpoints stay fp8 in memory; Comfy-Org
  "scaled fp8", GGUF and comfy_quant layers carry a ``weight_format`` (``wan.quant``) that turns the stored tensor
  (plus the layer's scale buffers) into the real weight, one layer at a time, per forward (on the CPU a block of
  weight rows at a time, ``products_by_rows``, so a forward never holds a whole dequantised layer, 141 MB in bf16
  for a 5120 x 13824 one, beside the stored one);
- ``weight_patches`` (``wan.weights.patches``: LoRA low-rank factors, full differences, DoRA) are applied on top, in float32,
  without ever changing the stored weight. A layer whose patches are all low rank computes them as a side path
  ``x @ down.T @ up.T`` when that costs less than rebuilding the weight (few input rows), else it rebuilds the
  weight: both are exact up to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..quant import fp8_product
from .patches import apply_all, even_blocks, restricts_to_rows, rows_of
from ..quant.fp8 import SCALED_FP8
from ..quant.fp8_product import HALF_DTYPES

FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
PASS_MACS = 32  # one elementwise pass over a weight, in multiply-adds of a matrix product (see Linear._side_path_is_cheaper)


class Linear(nn.Linear):
    side_path = "auto"  # "auto" (cheaper path), "never" (always rebuild the weight) or "always" (when possible)
    fp8_products = False  # fp8 weight x fp8 activation products (``wan.quant.fp8_product``); set by ``use_fp8_products``

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("scale_weight", None, persistent=False)
        self.weight_format = None  # a wan.quant.WeightFormat, or None for a plain (cast-only) weight
        self.weight_patches: tuple = ()  # wan.weights.patches.Patch objects, applied in order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = _cast(self.bias, x.dtype, x.device)
        if self.fp8_products and self._fp8_product_applies(x):
            y = fp8_product.fp8_linear(x, self.weight, self.scale_weight, bias)
            for patch in self.weight_patches:
                y = patch.add_side(y, x)
            return y
        if self.weight_patches and self._side_path_is_cheaper(x):
            y = self._product(x, bias)
            for patch in self.weight_patches:
                y = patch.add_side(y, x)
            return y
        if not self.weight_patches:
            return self._product(x, bias)
        if self._by_rows(x) and restricts_to_rows(self.weight_patches, self.weight_shape):
            return products_by_rows(x, lambda a, b: self.compute_weight_rows(a, b, x.dtype, x.device),
                                    self.out_features, bias)
        return linear(x, self.compute_weight(x.dtype, x.device), bias)

    def _by_rows(self, x: torch.Tensor) -> bool:
        """Whether this forward makes its weight a block of rows at a time: on the CPU, eagerly, where the format can
        (``WeightFormat.dequantizes_rows``; a plain weight can); else the whole weight at once (one kernel on a GPU,
        one graph under ``torch.compile``)."""
        fmt = self.weight_format
        return x.device.type == "cpu" and self.weight.device.type == "cpu" and not torch.compiler.is_compiling() \
            and (fmt is None or fmt.dequantizes_rows)

    def _product(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x @ dequantised weight.T + bias``; a compact (or other-dtype) weight by rows where ``_by_rows``."""
        if (self.weight_format is None and self.weight.dtype == x.dtype) or not self._by_rows(x):
            return linear(x, self.dequantize(x.dtype, x.device), bias)
        return products_by_rows(x, lambda a, b: self.dequantize_rows(a, b, x.dtype, x.device), self.out_features,
                                bias)

    def dequantize(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The real weight without patches, in ``dtype`` on ``device``."""
        if self.weight_format is not None:
            return self.weight_format.dequantize(self, dtype, device)
        return _cast(self.weight, dtype, device)

    def dequantize_rows(self, start: int, stop: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Rows ``start:stop`` of ``dequantize(dtype, device)``, dequantising only those."""
        if self.weight_format is not None:
            return self.weight_format.dequantize_rows(self, start, stop, dtype, device)
        return _cast(self.weight[start:stop], dtype, device)

    def compute_weight(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The weight the layer computes with: dequantised, then patched (in float32), in ``dtype``."""
        if not self.weight_patches:
            return self.dequantize(dtype, device)
        patched = apply_all(self.dequantize(torch.float32, device), self.weight_patches)
        return patched.to(self.merge_dtype(dtype)).to(dtype)

    def compute_weight_rows(self, start: int, stop: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Rows ``start:stop`` of ``compute_weight`` (every patch applied to those rows alone: ``Patch.rows``)."""
        patches = rows_of(self.weight_patches, start, stop, self.weight_shape)
        patched = apply_all(self.dequantize_rows(start, stop, torch.float32, device), patches)
        return patched.to(self.merge_dtype(dtype)).to(dtype)

    def merge_dtype(self, compute: torch.dtype) -> torch.dtype:
        """The dtype a patched weight is rounded to: the stored dtype for float weights (so patching on the fly
        equals merging into the stored weight, bit for bit), the compute dtype for fp8 and quantised ones."""
        stored = self.weight.dtype
        return stored if self.weight_format is None and stored in FLOAT_DTYPES else compute

    @property
    def weight_shape(self) -> tuple[int, int]:
        """The real weight shape [out, in] (the stored tensor of a quantised format may be shaped otherwise)."""
        return (self.out_features, self.in_features)

    def _side_path_is_cheaper(self, x: torch.Tensor) -> bool:
        """Side path when its ``rows · Σ r·(in + out)`` multiply-adds undercut rebuilding the weight: ``in · out ·
        Σ (r + 1)`` multiply-adds plus three passes over it (dequantise, add, cast), a pass costing about
        ``PASS_MACS`` multiply-adds, all in float32, which costs about twice a half-precision product.

        Measured per layer, 1 thread, rank 32 (``side / rebuild`` time; this rule picks the faster or a tie in each):
        float32 1536x1536 1.00 at 1950 rows, 1.04 at 8000; float32 1536x8960 0.94 at 1950, 0.99 at 8000; bfloat16
        1536x8960 0.64 at 1950, 0.89 at 8000, 0.99 at 32760; bfloat16 5120x5120 0.56 at 1950, 0.85 at 8000."""
        if self.side_path != "auto":
            return self.side_path == "always" and all(p.side_cost() is not None for p in self.weight_patches)
        if half_on_generic_cpu(x):  # the side products would take the generic half kernels: rebuild, then widen
            return False
        costs = [p.side_cost() for p in self.weight_patches]
        if any(c is None for c in costs):
            return False
        rows = x.numel() // self.in_features
        rebuild = self.in_features * self.out_features * (sum(p.rank + 1 for p in self.weight_patches) + 3 * PASS_MACS)
        if x.dtype in (torch.float16, torch.bfloat16):
            rebuild *= 2
        return rows * sum(costs) < rebuild

    def _fp8_product_applies(self, x: torch.Tensor) -> bool:
        """fp8 products need the fp8 values as stored (plain or scaled fp8), patches with a side form (rebuilding
        the weight would undo the point), a half-precision input and a device kernel."""
        return (self.weight_format in (None, SCALED_FP8) and all(p.side_cost() is not None for p in self.weight_patches)
                and fp8_product.usable(self.weight, x))

    def _apply(self, fn, recurse=True):
        """Move patches with the layer (``.to(device)``, block streaming); a patch is never changed in place."""
        out = super()._apply(fn, recurse)
        if self.weight_patches:
            self.weight_patches = tuple(p.moved(fn) for p in self.weight_patches)
        return out

    def extra_repr(self) -> str:
        extra = f", format={self.weight_format}" if self.weight_format is not None else ""
        patches = f", patches={len(self.weight_patches)}" if self.weight_patches else ""
        return super().extra_repr() + extra + patches


def use_fp8_products(model: nn.Module, on: bool = True) -> int:
    """Turn fp8 products on (or off) for every Linear of ``model`` whose weight is stored as fp8 or scaled fp8
    (comfy_quant fp8 included); returns how many layers can use them."""
    count = 0
    for layer in model.modules():
        if isinstance(layer, Linear) and layer.weight.dtype in FP8_DTYPES and layer.weight_format in (None, SCALED_FP8):
            layer.fp8_products = on
            count += 1
    return count


WIDE_VALUES = 1 << 20  # float32 values (4 MiB) per block of input rows, and per block of weight rows


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` in ``x``'s dtype. On a CPU without native half-precision matrix products (no
    AVX512-BF16 / AVX512-FP16 / AMX: torch then falls back to a generic kernel, about 5x slower than float32), bf16
    and fp16 operands are widened to float32 (exact), multiplied there and the result rounded once to ``x``'s dtype:
    the product a GPU's half-precision matrix multiply computes (float32 accumulation, one rounding), at float32
    speed, block by block (``products_by_rows``; under ``torch.compile``: one product)."""
    if x.dtype != weight.dtype or not half_on_generic_cpu(x):
        return F.linear(x, weight, bias)
    if torch.compiler.is_compiling():
        return widened(F.linear, x, weight, bias)
    return products_by_rows(x, lambda a, b: weight[a:b], weight.shape[0], bias)


def products_by_rows(x: torch.Tensor, weight_rows, n_out: int, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, W, bias)`` on the CPU with ``W``'s rows ``a:b`` given by ``weight_rows(a, b)`` (in ``x``'s
    dtype), one block of weight rows at a time, each block made once; so a compact layer never exists dequantised
    whole. Where the product runs in ``x``'s dtype, a block is ``4 x WIDE_VALUES`` values (16 MB in float32) and
    multiplies every input row straight into its columns of the output (one matrix product per block, as fast as
    one over the whole weight). bf16 / fp16 on a CPU without native half products: blocks of ``wide_block`` weight
    rows times as many input rows, widened to float32 and rounded once (see ``linear``), so the float32 copies stay
    near 4 MiB each whatever the layer and token count (``widened_bytes``)."""
    rows = x.reshape(-1, x.shape[-1])
    wide = half_on_generic_cpu(x)
    step = row_block(x.shape[-1], wide)
    if n_out <= step and (rows.shape[0] <= step or not wide):  # one block
        w = weight_rows(0, n_out)
        return widened(F.linear, x, w, bias) if wide else F.linear(x, w, bias)
    out = torch.empty(rows.shape[0], n_out, dtype=x.dtype, device=x.device)
    for c, d in even_blocks(n_out, step):
        w, b = weight_rows(c, d), None if bias is None else bias[c:d]
        if not wide:  # the output's columns c:d are a strided view the product writes in place
            columns = out[:, c:d]
            torch.mm(rows, w.t(), out=columns) if b is None else torch.addmm(b, rows, w.t(), out=columns)
            continue
        w, b = w.float(), None if b is None else b.float()
        for r, s in even_blocks(rows.shape[0], step):
            out[r:s, c:d] = F.linear(rows[r:s].float(), w, b)
    return out.reshape(*x.shape[:-1], n_out)


def generic_half(device_type: str, dtype: torch.dtype) -> bool:
    """Whether ``dtype`` is bf16 / fp16 on a CPU whose half-precision products and convolutions take torch's generic
    kernels (no native support: see ``native_half_products``)."""
    return device_type == "cpu" and dtype in HALF_DTYPES and not native_half_products(dtype)


def half_on_generic_cpu(x: torch.Tensor) -> bool:
    return generic_half(x.device.type, x.dtype)


def widened(fn, x: torch.Tensor, *tensors: torch.Tensor | None, **kwargs) -> torch.Tensor:
    """``fn(x, *tensors, **kwargs)`` (a convolution or product); for half-precision ``x`` on such a CPU computed on
    float32 copies of its operands and rounded once to ``x``'s dtype (for the small convolutions of the encoders;
    ``linear`` does the large products block by block)."""
    if not half_on_generic_cpu(x):
        return fn(x, *tensors, **kwargs)
    return fn(x.float(), *(None if t is None else t.float() for t in tensors), **kwargs).to(x.dtype)


def row_block(in_features: int, wide: bool) -> int:
    """Weight rows per block of ``products_by_rows``: ``wide_block`` when widening, else ``4 x WIDE_VALUES`` values."""
    return wide_block(in_features) if wide else max(256, 4 * WIDE_VALUES // in_features)


def wide_block(in_features: int) -> int:
    """Rows per widened block: ``WIDE_VALUES`` float32 values, at least 256 rows."""
    return max(256, WIDE_VALUES // in_features)


def widened_bytes(in_features: int, out_features: int, rows: int, dtype: torch.dtype, device) -> int:
    """The float32 copies ``linear`` makes at once for one product (0 where it widens nothing): a block of input
    rows, of weight rows and of output values."""
    if not generic_half(torch.device(device).type, dtype):
        return 0
    step = wide_block(in_features)
    r, c = min(rows, step), min(out_features, step)
    return 4 * (r * in_features + c * in_features + r * c)


_NATIVE: dict[torch.dtype, bool] = {}


def native_half_products(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies ``dtype`` matrices natively (oneDNN's check, as torch's own matmul dispatch)."""
    if dtype not in _NATIVE:
        check = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}[dtype]
        try:
            _NATIVE[dtype] = bool(getattr(torch.ops.mkldnn, check)())
        except (AttributeError, RuntimeError):  # a build without oneDNN: assume the generic kernel
            _NATIVE[dtype] = False
    return _NATIVE[dtype]


def _cast(t: torch.Tensor | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    if t is None or (t.dtype == dtype and t.device == device):
        return t
    return t.to(device=device, dtype=dtype)


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm computed in float32 (as the official code does), returned in float32."""
    w = None if weight is None else weight.float()
    b = None if bias is None else bias.float()
    return F.layer_norm(x.float(), (x.shape[-1],), w, b, eps)


class LayerNorm(nn.Module):
    """LayerNorm in float32; optional affine parameters (stored in any dtype). Returns float32."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension: normalised in float32, then cast back and scaled (official order)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype)
        return normed * _cast(self.weight, x.dtype, x.device)

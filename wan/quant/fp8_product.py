"""fp8 matrix products: a Linear with an fp8 weight multiplies fp8 activations by it (``torch._scaled_mm``) instead
of dequantising the weight to the compute dtype.

The formula, for an input row ``x`` (length K) and output column ``j`` of a layer whose real weight is
``W[j, k] = s_w[j] · W8[j, k]`` (``W8`` the stored fp8 values, ``s_w`` one float32 scale for the layer or one per
output row; a plain fp8 file has ``s_w = 1``):

    s_x  = max(|x|) / 448                                         (448: the largest e4m3 value; one scale per row)
    x8   = e4m3(x / s_x)                                          (round to nearest, saturated to ±448)
    y[j] = s_x · s_w[j] · Σ_k x8[k] · W8[j, k]  + b[j]            (products exact, accumulated in float32)

Error bound against the same product with the unquantised activation, ``Σ_k x[k] · W[j, k]``: e4m3 has 3 stored
mantissa bits, so rounding a normal value changes it by at most ``u = 2⁻⁴`` of itself, and a value below the
smallest normal ``2⁻⁶`` (a subnormal, spacing ``2⁻⁹``) by at most ``2⁻¹⁰`` in the scaled domain, i.e.
``2⁻¹⁰ · s_x`` after scaling back. Hence, elementwise,

    |y[j] − ŷ[j]| ≤ 2⁻⁴ · Σ_k |x[k]| · |W[j, k]|  +  2⁻¹⁰ · s_x · Σ_k |W[j, k]|  +  γ_K · Σ_k |x[k]| · |W[j, k]|

with ``γ_K = K · 2⁻²⁴ / (1 − K · 2⁻²⁴)`` for the float32 accumulation (in either product), plus the final rounding
to the output dtype (``2⁻⁸`` relative for bf16). The bound is attained only when every element rounds the same
way; a typical error is about ``2⁻⁴ / √3 · ‖x ⊙ W[j]‖₂``. ``error_bound`` computes it; the tests hold the CPU kernel
to it. The weight is never rounded again: only the activation is quantised.

Scales per row of ``x`` (one per token) where the kernel has row-wise scaling (the CPU kernel; CUDA sm90+ with a
bfloat16 output), else one scale for the whole input (CUDA sm89, or float16 on CUDA). A device without a kernel (no fp8 support, CUDA
before sm89) runs the dequantising product, with one note in the log. The products run only for inputs in half
precision (bf16, fp16): the layers the official code keeps in float32 (time embedding, head) stay exact.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger("wan_experts")

E4M3 = getattr(torch, "float8_e4m3fn", None)
E4M3_MAX = 448.0
HALF_DTYPES = (torch.bfloat16, torch.float16)
UNIT_ROUNDOFF = 2.0 ** -4  # e4m3: 3 mantissa bits, round to nearest
SUBNORMAL_ERROR = 2.0 ** -10  # half the subnormal spacing 2^-9
FLOAT32_EPS = 2.0 ** -24
CUDA_MIN_CAPABILITY = (8, 9)
CUDA_ROWWISE_CAPABILITY = (9, 0)
CUDA_MULTIPLE = 16  # cuBLASLt fp8: both weight dims a multiple of 16

# (device type, index) -> "row", "tensor" or None (no kernel); filled by ``kernel`` (before compiled code runs)
KERNELS: dict[tuple[str, int | None], str | None] = {}


def kernel(device: torch.device) -> str | None:
    """The activation-scale granularity the device's fp8 kernel takes ("row" or "tensor"), None without a kernel
    (noted once in the log). Probed once per device with a tiny product."""
    key = _key(device)
    if key not in KERNELS:
        KERNELS[key] = _probe(device)
    return KERNELS[key]


def usable(weight: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether the fp8 product applies to this weight and input (probes the device's kernel on first use)."""
    if kernel(x.device) is None or x.dtype not in HALF_DTYPES or weight.dtype not in _FP8_WEIGHTS:
        return False
    if x.device.type == "cuda":
        return all(d % CUDA_MULTIPLE == 0 for d in weight.shape)
    return True


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor | None,
               bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ (s_w · W8)ᵀ + b`` with ``x`` quantised to e4m3 (see the module docstring); ``weight`` [N, K] fp8,
    ``weight_scale`` None, a scalar or [N, 1]; the result in ``x``'s dtype."""
    rowwise = KERNELS[_key(x.device)] == "row" and (x.device.type != "cuda" or x.dtype == torch.bfloat16)
    rows = x.reshape(-1, x.shape[-1])
    x8, scale_x = quantize(rows, rowwise)
    n = weight.shape[0]
    scale_w = torch.ones((), device=x.device) if weight_scale is None else weight_scale.float().to(x.device)
    per_column = None
    if rowwise:
        scale_w = scale_w.reshape(1, -1).expand(1, n).contiguous()
    elif scale_w.numel() > 1:  # a per-row weight scale with a per-tensor kernel: applied to the output columns
        per_column, scale_w = scale_w.reshape(1, n), torch.ones((), device=x.device)
    out_dtype = torch.float32 if per_column is not None else x.dtype
    y = torch._scaled_mm(x8, weight.t(), scale_x, scale_w, out_dtype=out_dtype)
    if per_column is not None:
        y = (y * per_column).to(x.dtype)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], n)


def quantize(rows: torch.Tensor, rowwise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 values, float32 scales) of ``rows`` [M, K]: one scale per row ([M, 1]) or one for all (a scalar)."""
    xf = rows.float()
    amax = xf.abs().amax(dim=-1, keepdim=True) if rowwise else xf.abs().amax()
    scale = amax.clamp(min=torch.finfo(torch.float32).tiny) / E4M3_MAX
    return (xf / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def error_bound(x: torch.Tensor, weight: torch.Tensor, rowwise: bool = True) -> torch.Tensor:
    """The elementwise bound on ``|fp8 product − x @ weightᵀ|`` (float32 output) for ``x`` [M, K] and the real
    weight [N, K] (float32), as derived in the module docstring."""
    xf, w = x.float(), weight.float()
    k = xf.shape[-1]
    gamma = k * FLOAT32_EPS / (1 - k * FLOAT32_EPS)
    magnitude = xf.abs() @ w.abs().t()
    _, scale = quantize(xf, rowwise)
    return (UNIT_ROUNDOFF + 2 * gamma) * magnitude + SUBNORMAL_ERROR * scale * w.abs().sum(dim=1)


def _probe(device: torch.device) -> str | None:
    if E4M3 is None or not hasattr(torch, "_scaled_mm"):
        return _none(device, f"this PyTorch ({torch.__version__}) has no fp8 matrix product")
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if capability < CUDA_MIN_CAPABILITY:
            return _none(device, f"fp8 products need a GPU of compute capability 8.9 or newer (this one has "
                                 f"{capability[0]}.{capability[1]})")
        rowwise = capability >= CUDA_ROWWISE_CAPABILITY
    else:
        rowwise = True
    for granularity in (("row", "tensor") if rowwise else ("tensor",)):
        try:
            a = torch.ones(CUDA_MULTIPLE, CUDA_MULTIPLE, device=device).to(E4M3)
            scale = torch.ones((CUDA_MULTIPLE, 1) if granularity == "row" else (), device=device)
            torch._scaled_mm(a, a.t(), scale, scale.reshape(1, -1) if granularity == "row" else scale,
                             out_dtype=torch.bfloat16)
            return granularity
        except (RuntimeError, NotImplementedError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _none(device, f"PyTorch has no fp8 matrix product kernel for {device.type} ({reason})")


def _none(device: torch.device, reason: str) -> None:
    log.info("fp8_matmul: %s; the fp8 weights are dequantised for a %s product on %s instead", reason,
             "bf16/fp16", device)
    return None


def _key(device: torch.device) -> tuple[str, int | None]:
    return device.type, device.index


_FP8_WEIGHTS = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))

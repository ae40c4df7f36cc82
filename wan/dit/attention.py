"""Attention backends. Every backend takes q, k, v as [B, L, H, D] and returns [B, Lq, H*D] in q's dtype.

- ``sdpa``: PyTorch's ``scaled_dot_product_attention``.
- ``split``: softmax(q kᵀ / √D) v as two batched matrix products over chunks of queries. Exact attention (no
  approximation, only float rounding: the scores are rounded once to the compute dtype, as the matrix product
  returns them); memory bounded by ``SPLIT_SCORES_BYTES`` whatever the sequence length.
- ``sage``, ``flash``: the SageAttention / FlashAttention packages (CUDA only, when installed).
- ``auto`` (the default): on every call, the backend that ``AUTO_TABLE`` names for the device type and dtype of q.
"""
from __future__ import annotations

import importlib.util
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..weights.ops import generic_half

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# backend name -> (python module to import, pip package that provides it)
OPTIONAL_BACKENDS = {"sage": ("sageattention", "sageattention"), "flash": ("flash_attn", "flash-attn")}
BUILTIN_BACKENDS = ("auto", "sdpa", "split")  # exact attention, needing nothing beyond torch
BACKENDS = BUILTIN_BACKENDS + tuple(OPTIONAL_BACKENDS)

SPLIT_SCORES_BYTES = 128 * 2**20  # the split backend holds the scores of at most this many bytes at once

# What ``auto`` runs, by (device type, dtype): the fastest exact backend measured by
# ``benchmarks/dit_forward.py --dtype <dtype> --threads 1 --clock cpu`` ("attention kernels" lines: 12 heads x 128,
# 1950 queries over 1950 / 512 keys, ms per call, median of 7 interleaved rounds; 2-core AMD EPYC (Zen 5,
# AVX-512 BF16, no AVX-512 FP16), torch 2.13):
#   cpu bfloat16: self sdpa 246, split 120;  cross sdpa 64, split 22        -> split
#   cpu float16:  self sdpa 398, split 10188; cross sdpa 95, split 1483     -> sdpa (no fast fp16 matmul here)
#   cpu float32:  self sdpa 262, split 462;  cross sdpa 70, split 119       -> sdpa
# On a CPU without native half-precision matrix products (``wan.weights.ops.native_half_products`` False: AVX2 only,
# e.g. a 2-core AMD EPYC without AVX-512, same torch, same sizes, CPU clock) split's products take torch's generic
# kernel, and every half dtype runs sdpa (its CPU kernel accumulates in float32 itself):
#   cpu bfloat16: self sdpa 560, split 17836;  cross sdpa 128, split 3842   -> sdpa
#   cpu float16:  self sdpa 909, split 18253;  cross sdpa 212, split 3415   -> sdpa
#   cpu float32:  self sdpa 456, split 705;    cross sdpa 117, split 204    -> sdpa
# Anything else (CUDA and other devices) runs ``sdpa``: PyTorch dispatches it to its own FlashAttention /
# memory-efficient kernels there. ``flash`` (the same algorithm) and ``sage`` (8-bit quantised q kᵀ, so not exact)
# are picked by ``auto`` on CUDA only through ``CUDA_MEASURED``: backends that ``benchmarks/gpu.py`` (its "attention"
# rows: time / sdpa's and the output's deviation from sdpa's) measured faster than ``sdpa`` and within
# ``AUTO_MAX_ERROR``, in order of preference, each used only when its package is installed. No GPU run has filled it
# yet, so it is empty: nothing is claimed that was not measured.
AUTO_TABLE: dict[tuple[str, torch.dtype], str] = {
    ("cpu", torch.bfloat16): "split",
    ("cpu", torch.float16): "sdpa",
    ("cpu", torch.float32): "sdpa",
}
CUDA_MEASURED: dict[torch.dtype, tuple[str, ...]] = {}
AUTO_MAX_ERROR = 2e-2  # largest relative deviation (max |Δ| / max |sdpa|) a measured backend may show for auto
AUTO_FALLBACK = "sdpa"


def available_backends() -> list[str]:
    return list(BUILTIN_BACKENDS) + [name for name, installed in _installed().items() if installed]


def _installed() -> dict[str, bool]:
    """Which optional backends' packages are installed (looked up once per process)."""
    if not _INSTALLED:
        _INSTALLED.update({name: importlib.util.find_spec(mod) is not None
                           for name, (mod, _) in OPTIONAL_BACKENDS.items()})
    return _INSTALLED


_INSTALLED: dict[str, bool] = {}


def get_attention(name: str = "auto") -> AttentionFn:
    """The attention function of backend ``name``; a clear error when it is unknown or not installed."""
    if name in _BUILTIN:
        return _BUILTIN[name]
    if name not in OPTIONAL_BACKENDS:
        raise InputError(f"attention backend '{name}' is unknown; choose one of {list(BACKENDS)}.")
    module, package = OPTIONAL_BACKENDS[name]
    if not _installed()[name]:
        raise InputError(
            f"attention backend '{name}' needs the '{package}' package, which is not installed. "
            f"Install it with 'pip install {package}' (needs a CUDA GPU), or choose 'auto'."
        )
    return _sage if name == "sage" else _flash


def auto_backend(device_type: str, dtype: torch.dtype) -> str:
    """The backend ``auto`` runs for tensors of this device type and dtype (``AUTO_TABLE``; on CUDA the first
    installed backend of ``CUDA_MEASURED``)."""
    if device_type == "cuda":
        installed = _installed()
        return next((name for name in CUDA_MEASURED.get(dtype, ()) if installed.get(name)), AUTO_FALLBACK)
    if generic_half(device_type, dtype):
        return AUTO_FALLBACK
    return AUTO_TABLE.get((device_type, dtype), AUTO_FALLBACK)


def describe(name: str, device_type: str, dtype: torch.dtype) -> str:
    """``name``, and for ``auto`` what it runs for this device type and dtype (for logs)."""
    if name != "auto":
        return name
    return f"auto: {auto_backend(device_type, dtype)} for {device_type} {str(dtype).replace('torch.', '')}"


def auto(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    name = auto_backend(q.device.type, q.dtype)
    return _BUILTIN[name](q, k, v) if name in _BUILTIN else get_attention(name)(q, k, v)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).flatten(2)


def split(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √D) v, one chunk of queries (all heads) at a time; the scale is applied inside the product."""
    b, lq, h, d = q.shape
    lk = k.shape[1]
    queries = q.transpose(1, 2).reshape(b * h, lq, d)
    keys_t = k.permute(0, 2, 3, 1).reshape(b * h, d, lk)
    values = v.transpose(1, 2).reshape(b * h, lk, d)
    out = q.new_empty(b * h, lq, d)
    unused = q.new_empty(1, 1, 1)  # baddbmm's input, ignored with beta=0
    chunk = max(1, SPLIT_SCORES_BYTES // (b * h * lk * q.element_size()))
    for start in range(0, lq, chunk):
        scores = torch.baddbmm(unused, queries[:, start:start + chunk], keys_t, beta=0, alpha=d ** -0.5)
        torch.softmax(scores, dim=-1, out=scores)  # in place: no second buffer of this size to allocate and fill
        torch.bmm(scores, values, out=out[:, start:start + chunk])
        del scores
    return out.view(b, h, lq, d).transpose(1, 2).flatten(2)


_BUILTIN: dict[str, AttentionFn] = {"auto": auto, "sdpa": sdpa, "split": split}


def _half(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float16, torch.bfloat16) else x.to(torch.bfloat16)


def _sage(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover - needs CUDA
    from sageattention import sageattn

    out = sageattn(_half(q), _half(k), _half(v), tensor_layout="NHD", is_causal=False)
    return out.to(q.dtype).flatten(2)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover - needs CUDA
    from flash_attn import flash_attn_func

    out = flash_attn_func(_half(q), _half(k), _half(v))
    return out.to(q.dtype).flatten(2)

"""Attention backends. PyTorch SDPA by default; SageAttention and FlashAttention only when importable and chosen.

Every backend takes q, k, v as [B, L, H, D] and returns [B, Lq, H*D] in q's dtype.
"""
from __future__ import annotations

import importlib.util
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import InputError

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# backend name -> (python module to import, pip package that provides it)
OPTIONAL_BACKENDS = {"sage": ("sageattention", "sageattention"), "flash": ("flash_attn", "flash-attn")}
BACKENDS = ("sdpa",) + tuple(OPTIONAL_BACKENDS)


def available_backends() -> list[str]:
    return ["sdpa"] + [name for name, (mod, _) in OPTIONAL_BACKENDS.items() if importlib.util.find_spec(mod)]


def get_attention(name: str = "sdpa") -> AttentionFn:
    """The attention function of backend ``name``; a clear error when it is unknown or not installed."""
    if name == "sdpa":
        return sdpa
    if name not in OPTIONAL_BACKENDS:
        raise InputError(f"attention backend '{name}' is unknown; choose one of {list(BACKENDS)}.")
    module, package = OPTIONAL_BACKENDS[name]
    if importlib.util.find_spec(module) is None:
        raise InputError(
            f"attention backend '{name}' needs the '{package}' package, which is not installed. "
            f"Install it with 'pip install {package}' (needs a CUDA GPU), or choose 'sdpa'."
        )
    return _sage if name == "sage" else _flash


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).flatten(2)


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

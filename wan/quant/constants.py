"""Small constant tensors (lookup tables, shift amounts) made once per device, so dequantising a layer on the GPU
costs no host-to-device copy."""
from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def device_constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.tensor(values)`` on ``device``; shared, never to be modified in place."""
    return torch.tensor(values, dtype=dtype, device=device)

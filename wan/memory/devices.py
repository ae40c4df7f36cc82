"""Where a module's weights are, and whether two device names mean the same device."""
from __future__ import annotations

import torch
import torch.nn as nn


def module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """``cuda`` and ``cuda:0`` are the same device when one of them names no index."""
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)

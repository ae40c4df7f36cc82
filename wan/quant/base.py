"""The protocol a stored-weight format follows.

A format object sits on a ``wan.weights.ops.Linear`` as ``weight_format``. The stored tensor is the layer's ``weight``
parameter (its dtype and shape are the format's business: fp8 values, raw GGUF blocks as uint8, packed e2m1 ...);
any extra tensors the format needs (scales) are non-persistent buffers of the layer, so that moving the layer
(``.to(device)``, block streaming) moves them too. Formats hold no tensors themselves: one object may serve many
layers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


class WeightFormat:
    """Base class; subclasses implement ``dequantize`` (and should ``dequantize_rows``) and may override ``shape``
    and ``stored_bytes``."""

    name = "plain"

    def dequantize(self, layer: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The real weight [out_features, in_features] of ``layer`` in ``dtype`` on ``device``."""
        raise NotImplementedError

    def dequantize_rows(self, layer: torch.nn.Module, start: int, stop: int, dtype: torch.dtype,
                        device: torch.device) -> torch.Tensor:
        """Rows ``start:stop`` of the real weight, dequantising only those (the CPU forward goes a block of rows at
        a time: ``wan.weights.ops.products_by_rows``). A format without it is dequantised whole."""
        raise NotImplementedError

    @property
    def dequantizes_rows(self) -> bool:
        return type(self).dequantize_rows is not WeightFormat.dequantize_rows

    def shape(self, layer: torch.nn.Module) -> tuple[int, int]:
        """The real (logical) weight shape, which the stored tensor need not have."""
        return (layer.out_features, layer.in_features)

    def stored_bytes(self, layer: torch.nn.Module) -> int:
        """Bytes the layer's stored weight and its format buffers hold."""
        tensors = [layer.weight] + [b for b in layer.buffers(recurse=False) if b is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

    def __repr__(self) -> str:
        return self.name


@dataclass
class QuantizedLayer:
    """A Linear weight as a loader hands it over: the stored tensor, its format, the real weight's shape and the
    extra tensors (scales) that become non-persistent buffers of the layer."""

    format: WeightFormat
    stored: torch.Tensor
    shape: tuple[int, ...]
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)

    def placeholder(self) -> torch.Tensor:
        """A meta tensor of the real shape and the stored dtype, for code that reads shapes off a state dict."""
        return torch.empty(self.shape, dtype=self.stored.dtype, device="meta")

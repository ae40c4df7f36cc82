"""GGUF-quantised Linear weights: the layer keeps the file's raw blocks (uint8) and dequantises them per forward."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from gguf import GGMLQuantizationType

from .base import WeightFormat
from .gguf_kernels import dequantize


@dataclass(frozen=True)
class GGUFFormat(WeightFormat):
    """One per layer: the ggml type of its blocks and the real weight shape ``[out, in]``."""

    qtype: int
    logical_shape: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"GGUF {GGMLQuantizationType(self.qtype).name}"

    def dequantize(self, layer, dtype: torch.dtype, device) -> torch.Tensor:
        return dequantize(layer.weight.to(device), self.qtype, self.logical_shape, dtype)

    def dequantize_rows(self, layer, start: int, stop: int, dtype: torch.dtype, device) -> torch.Tensor:
        rows = layer.weight.reshape(self.logical_shape[0], -1)[start:stop]  # a row: whole blocks (ggml's rule)
        return dequantize(rows.to(device), self.qtype, (rows.shape[0], *self.logical_shape[1:]), dtype)

    def shape(self, layer) -> tuple[int, ...]:
        return tuple(self.logical_shape)

    def __repr__(self) -> str:
        return self.name

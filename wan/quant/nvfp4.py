"""NVFP4 (Comfy-Org comfy_quant ``nvfp4``, as comfy-kitchen writes it): 4-bit e2m1 codes in blocks of 16 with an
fp8 (e4m3) scale per block and a float32 scale for the whole tensor.

Stored per layer: ``weight`` uint8 ``[rows, cols / 2]`` (two codes a byte, the even element in the high nibble;
rows and cols padded to multiples of 16), ``weight_scale`` the block scales ``[rows, cols / 16]`` in cuBLAS's tiled
layout (padded to 128 x 4 tiles), ``weight_scale_2`` the tensor scale. Real weight = e2m1(code) x (tensor scale x
block scale), formed in float32.
"""
from __future__ import annotations

import math

import torch

from ..errors import CheckpointError
from .base import QuantizedLayer, WeightFormat
from .constants import device_constant

BLOCK = 16
TILE_ROWS = 128  # rows per tile of the block-scale layout (``untile``)
E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


class NVFP4(WeightFormat):
    name = "nvfp4"

    def dequantize(self, layer, dtype: torch.dtype, device) -> torch.Tensor:
        w = dequantize_nvfp4(layer.weight.to(device), layer.weight_scale.to(device), layer.weight_scale_2.to(device))
        rows, cols = layer.weight_shape
        return w[:rows, :cols].to(dtype)

    def dequantize_rows(self, layer, start: int, stop: int, dtype: torch.dtype, device) -> torch.Tensor:
        """Through the 128-row tiles of block scales that hold rows ``start:stop``."""
        packed, cols = layer.weight, layer.weight_shape[1]
        first, last = start // TILE_ROWS, -(-stop // TILE_ROWS)
        tiles = layer.weight_scale.reshape(-(-packed.shape[0] // TILE_ROWS), -1)[first:last]
        scales = untile(tiles.to(device), (last - first) * TILE_ROWS, packed.shape[1] * 2 // BLOCK)
        offset = first * TILE_ROWS
        w = _scaled(packed[start:stop].to(device), scales[start - offset:stop - offset],
                    layer.weight_scale_2.to(device))
        return w[:, :cols].to(dtype)


NVFP4_FORMAT = NVFP4()


def nvfp4_layer(packed: torch.Tensor, block_scales: torch.Tensor, tensor_scale: torch.Tensor, layer: str = "?",
                source: str = "?") -> QuantizedLayer:
    """A layer as stored (the real shape is the stored one: Wan's Linear sizes are all multiples of 16). Scales of
    the wrong size or with NaN / inf are refused here, at load, naming the layer."""
    if block_scales.dtype == torch.uint8:  # older files keep the fp8 scales as raw bytes
        block_scales = block_scales.view(torch.float8_e4m3fn)
    shape = (packed.shape[0], packed.shape[1] * 2)
    tiles = math.ceil(shape[0] / 128) * 128 * math.ceil(shape[1] // BLOCK / 4) * 4
    problem = (f"has {block_scales.numel()} block scales; its {shape[0]} x {shape[1]} weight needs {tiles} (128 x 4 "
               f"tiles)" if packed.dim() != 2 or block_scales.numel() != tiles else
               f"has {tensor_scale.numel()} tensor scales, not one" if tensor_scale.numel() != 1 else
               "holds NaN or infinite scales" if not (bool(torch.isfinite(block_scales.float()).all())
                                                      and bool(torch.isfinite(tensor_scale.float()).all())) else None)
    if problem:
        raise CheckpointError(f"'{source}': the NVFP4 layer '{layer}' {problem}. The quantised file is broken: "
                              f"download or make it again.")
    return QuantizedLayer(NVFP4_FORMAT, packed, shape,
                          {"weight_scale": block_scales, "weight_scale_2": tensor_scale.float()})


def dequantize_nvfp4(packed: torch.Tensor, block_scales: torch.Tensor, tensor_scale: torch.Tensor) -> torch.Tensor:
    """The (padded) weight in float32."""
    return _scaled(packed, untile(block_scales, packed.shape[0], packed.shape[1] * 2 // BLOCK), tensor_scale)


def _scaled(packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor) -> torch.Tensor:
    """Rows of codes ``packed`` [rows, cols / 2] times their block scales ``scales`` [rows, cols / 16] (untiled)
    and the tensor scale, in float32."""
    rows, cols = packed.shape[0], packed.shape[1] * 2
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=-1).reshape(rows, cols)
    values = device_constant(E2M1, torch.float32, packed.device)[codes.long()].view(rows, cols // BLOCK, BLOCK)
    return (values * (scales.float() * tensor_scale.float()).unsqueeze(-1)).view(rows, cols)


def untile(tiled: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``[rows, cols]`` from cuBLAS's block-scale layout: 128 x 4 tiles in row-major order, each stored as 32 x 16
    where row ``32 i + j``, column ``c`` of the tile sits at ``[j, 4 i + c]``."""
    row_tiles, col_tiles = math.ceil(rows / TILE_ROWS), math.ceil(cols / 4)
    t = tiled.reshape(row_tiles, col_tiles, 32, 4, 4).permute(0, 3, 2, 1, 4)
    return t.reshape(row_tiles * TILE_ROWS, col_tiles * 4)[:rows, :cols]

"""Float32 islands: the small DiT layers that the official code runs in float32 whatever the compute dtype.

The official model keeps every parameter in float32 and runs these under ``autocast(float32)``: the time embedding
and projection, the modulation tables, the cross-attention LayerNorm (``norm3``), the head, and the image
projection's LayerNorms and FLF2V position table. Stored in the compute dtype they would be converted on every
forward; the DiT loader keeps them in float32 instead, taken from the file at its own precision.

Memory cost over storing them in bf16/fp16, 2 bytes per island parameter, counted by ``island_parameters`` on each
released config (compact Linear weights — fp8, GGUF, comfy_quant — stay compact, so fp8 and GGUF files pay only for
their few float-stored island tensors):

    variant                               island parameters   extra memory (bf16/fp16 file)   model (bf16)
    Wan 2.1 T2V-1.3B                            17.4 M                 +34.8 MB                  2.8 GB
    Wan 2.2 TI2V-5B                             68.2 M                +136.4 MB                 10.0 GB
    Wan 2.1 T2V/I2V-14B, 2.2 A14B expert       186.8 M                +373.7 MB           28.6-32.8 GB
    Wan 2.1 FLF2V-14B                          187.5 M                +375.0 MB                 32.8 GB

The time projection (dim x 6 dim) is nearly all of it; converting it per forward needed a transient float32 copy
of the same size anyway (e.g. 629 MB for a 14B model).
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn

from ..weights.ops import FLOAT_DTYPES, FP8_DTYPES, Linear
from ..weights.pages import MappedPages

FLOAT32_ISLANDS = re.compile(
    r"^(time_embedding\.|time_projection\.|head\.|(vace_)?blocks\.\d+\.(modulation$|norm3\.)"
    r"|img_emb\.(proj\.[04]\.|emb_pos$))"
)


def is_float32_island(name: str) -> bool:
    """Whether the parameter ``name`` (official key) is kept in float32."""
    return FLOAT32_ISLANDS.match(name) is not None


def island_parameters(model: nn.Module) -> int:
    """How many parameters of ``model`` are float32 islands (works on the meta device)."""
    return sum(p.numel() for name, p in model.named_parameters() if is_float32_island(name))


def keep_float32_islands(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """After the weights are assigned: make every float-stored island parameter float32, from the file's tensor
    ``sd[name]``. Compact Linear weights (fp8, GGUF, comfy_quant) stay compact: like every compact layer they are
    dequantised per forward, which costs far less than holding them in float32. The file's pages of a converted
    tensor go back to the system (``wan.weights.pages``)."""
    pages = MappedPages()
    for name, param in list(model.named_parameters()):
        if not is_float32_island(name) or param.dtype == torch.float32:
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        if isinstance(owner, Linear) and attr == "weight" and (owner.weight_format is not None
                                                               or param.dtype in FP8_DTYPES):
            continue
        stored = sd.get(name)
        if stored is not None and stored.dtype in FLOAT_DTYPES:
            value = stored.to(device=param.device, dtype=torch.float32)
            if value is not stored:
                pages.release(stored)
        else:
            value = param.float()  # the loader already dequantised it to the compute dtype
        setattr(owner, attr, nn.Parameter(value, requires_grad=False))

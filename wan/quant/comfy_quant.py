"""Comfy-Org "comfy_quant" files: Linear layers quantised one by one, each named by a JSON marker.

A quantised layer ``L`` stores ``L.weight``, ``L.weight_scale``, for NVFP4 ``L.weight_scale_2``, maybe
``L.input_scale`` (for ComfyUI's quantised-activation matmul; unused here: the weight is dequantised and the matmul
runs in the compute dtype, as ComfyUI does in its full-precision mode), and the marker ``L.comfy_quant``: the bytes
(uint8) of a JSON object such as ``{"format": "nvfp4"}``. Files may instead list the layers in the safetensors
header, ``_quantization_metadata = {"layers": {L: {"format": ...}}}``; ComfyUI turns those into markers, and so do
we. Every layer without a marker is plain and is loaded as stored.

Formats: ``float8_e4m3fn`` / ``float8_e5m2`` (fp8 weight x float32 tensor scale: the scaled-fp8 format) and
``nvfp4`` (``wan.quant.nvfp4``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..weights.checkpoint import COMMON_PREFIXES, SAFETENSORS_SUFFIX
from ..errors import CheckpointError
from .base import QuantizedLayer
from .fp8 import SCALED_FP8
from .nvfp4 import nvfp4_layer

MARKER = ".comfy_quant"
HEADER_KEY = "_quantization_metadata"
FP8_FORMATS = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
FORMATS = (*FP8_FORMATS, "nvfp4")
UNUSED = ("input_scale",)


def with_header_markers(sd: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """``sd`` plus a marker for every layer the safetensors header of ``source`` lists (no-op without a list)."""
    layers = _header_layers(source)
    if not layers:
        return sd
    sd = dict(sd)
    for name, conf in layers.items():
        key = _stored_layer_name(sd, name, source)
        if key + MARKER not in sd:
            conf = {"format": conf} if isinstance(conf, str) else conf
            sd[key + MARKER] = torch.tensor(list(json.dumps(conf).encode("utf-8")), dtype=torch.uint8)
    return sd


def split_quantized_layers(sd: dict[str, torch.Tensor], source: Path) -> tuple[dict, dict[str, QuantizedLayer]]:
    """(the plain tensors, the quantised layers by name) of a state dict with comfy_quant markers."""
    markers = sorted(k for k in sd if k.endswith(MARKER))
    if not markers:
        return sd, {}
    sd = dict(sd)
    quantized = {}
    for key in markers:
        layer = key[: -len(MARKER)]
        quantized[layer] = _layer(sd, layer, _config(sd.pop(key), layer, source), source)
    return sd, quantized


def format_counts(quantized: dict[str, QuantizedLayer]) -> str:
    counts: dict[str, int] = {}
    for q in quantized.values():
        counts[q.format.name] = counts.get(q.format.name, 0) + 1
    return ", ".join(f"{n} x{c}" for n, c in sorted(counts.items()))


def _layer(sd: dict[str, torch.Tensor], layer: str, conf: dict, source: Path) -> QuantizedLayer:
    fmt = conf.get("format")
    if fmt not in FORMATS:
        raise CheckpointError(f"'{source.name}': layer '{layer}' is quantised as '{fmt}', a comfy_quant format Wan "
                              f"Experts cannot dequantise (supported: {', '.join(FORMATS)}). Use an fp8, NVFP4 or "
                              f"bf16 file of this model.")
    if f"{layer}.pre_quant_scale" in sd:
        raise CheckpointError(f"'{source.name}': layer '{layer}' carries activation smoothing scales "
                              f"(pre_quant_scale), which Wan Experts does not support. Use another file.")
    for name in UNUSED:
        sd.pop(f"{layer}.{name}", None)
    weight = _pop(sd, layer, "weight", fmt, source)
    scale = _pop(sd, layer, "weight_scale", fmt, source)
    if fmt == "nvfp4":
        return nvfp4_layer(weight, scale, _pop(sd, layer, "weight_scale_2", fmt, source))
    if weight.dtype == torch.uint8:  # older files keep the fp8 values as raw bytes
        weight = weight.view(FP8_FORMATS[fmt])
    scale = scale.float().reshape(-1, 1) if scale.numel() > 1 else scale.float()
    return QuantizedLayer(SCALED_FP8, weight, tuple(weight.shape), {"scale_weight": scale})


def _pop(sd: dict[str, torch.Tensor], layer: str, name: str, fmt: str, source: Path) -> torch.Tensor:
    tensor = sd.pop(f"{layer}.{name}", None)
    if tensor is None:
        raise CheckpointError(f"'{source.name}': layer '{layer}' is marked {fmt} but has no '{name}'. The file is "
                              f"incomplete or damaged.")
    return tensor


def _config(marker: torch.Tensor, layer: str, source: Path) -> dict:
    try:
        conf = json.loads(bytes(marker.to(torch.uint8).flatten().tolist()).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"'{source.name}': the comfy_quant marker of layer '{layer}' is not valid JSON "
                              f"({exc}). The file is damaged.") from exc
    return {"format": conf} if isinstance(conf, str) else conf if isinstance(conf, dict) else {}


def _header_layers(source: Path) -> dict:
    if not source.name.lower().endswith(SAFETENSORS_SUFFIX):
        return {}
    from safetensors import safe_open

    with safe_open(str(source), framework="pt", device="cpu") as f:
        raw = (f.metadata() or {}).get(HEADER_KEY)
    if not raw:
        return {}
    try:
        layers = json.loads(raw).get("layers")
    except (ValueError, AttributeError) as exc:
        raise CheckpointError(f"'{source.name}': the header's {HEADER_KEY} is not valid JSON ({exc}).") from exc
    return layers if isinstance(layers, dict) else {}


def _stored_layer_name(sd: dict[str, torch.Tensor], name: str, source: Path) -> str:
    """The header may name layers with or without the file's wrapper prefix (``model.diffusion_model.``)."""
    for candidate in (name, *(p + name for p in COMMON_PREFIXES)):
        if f"{candidate}.weight" in sd:
            return candidate
    raise CheckpointError(f"'{source.name}': the header lists the quantised layer '{name}', which the file does "
                          f"not hold. The file is inconsistent or damaged.")

"""Put a checkpoint's tensors into a module built on the meta device, keeping fp8 Linear weights as they are.

Shared by the model loaders (DiT, text and image encoders): pick the compute dtype, split off Comfy "scaled fp8" scales, check every
key and shape against the module, then assign (no copy unless a tensor must change dtype; the mapped pages a
converted tensor was read from go back to the system: ``wan.weights.pages``).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, InputError
from ..finite import check_loaded_weights
from .ops import FLOAT_DTYPES, FP8_DTYPES, Linear
from .pages import MappedPages
from ..quant import SCALED_FP8
from ..quant.fp8 import checked_scale, is_marker

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}
SCALE_SUFFIX = ".scale_weight"
INPUT_SCALE_SUFFIX = ".scale_input"


def split_fp8_scales(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(tensors without the scaled-fp8 bookkeeping, ``scale_weight`` by layer name)."""
    scales = {k[: -len(SCALE_SUFFIX)]: v for k, v in sd.items() if k.endswith(SCALE_SUFFIX)}
    rest = {k: v for k, v in sd.items()
            if not is_marker(k) and not k.endswith((SCALE_SUFFIX, INPUT_SCALE_SUFFIX))}
    return rest, scales


def compute_dtype(dtype, stored: torch.dtype, fallback: torch.dtype = torch.bfloat16) -> torch.dtype:
    """The dtype to compute in: the one asked for, else the file's own (``fallback`` for fp8 files)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in (None, "", "default", "auto"):
        if dtype not in DTYPES:
            raise InputError(f"dtype '{dtype}' is unknown; use one of {sorted(set(DTYPES))} or 'default'")
        return DTYPES[dtype]
    return stored if stored in DTYPES.values() else fallback


def build_with_weights(factory, sd: dict[str, torch.Tensor], scales: dict[str, torch.Tensor], dtype: torch.dtype,
                       source: Path, what: str, quantized: dict | None = None, sharding=None) -> nn.Module:
    """``factory()`` built on the meta device, given the checkpoint's tensors, frozen and in eval mode."""
    with torch.device("meta"):
        module = factory()
    if sharding is not None:
        sharding.wrap(module)
    assign_weights(module, sd, scales, dtype, source, what, quantized, sharding)
    return module.requires_grad_(False).eval()


def official_file_in(path: Path, pattern: str) -> Path:
    """An official Wan model folder keeps the encoders as ``.pth`` files beside the DiT: pick the one matching."""
    if path.is_dir():
        found = sorted(path.glob(pattern))
        if len(found) == 1:
            return found[0]
    return path


def assign_weights(module: nn.Module, sd: dict[str, torch.Tensor], scales: dict[str, torch.Tensor],
                   dtype: torch.dtype, source: Path, what: str, quantized: dict | None = None, sharding=None) -> None:
    """Load ``sd`` (already in the module's names) into ``module``; every key must match in name and shape.

    ``quantized``: Linear layers by name whose weight is stored in a compact format (``wan.quant.QuantizedLayer``);
    their stored tensor is kept as it is and the layer gets the format and its buffers.
    ``sharding`` (``wan.distributed.fsdp.FsdpSharding``, the module already wrapped by it): each tensor is cut to
    this rank's shard before it is converted, so only the shard is ever copied.
    """
    linear_weights = {f"{n}.weight" for n, m in module.named_modules() if isinstance(m, Linear)}
    sd, quantized = _float_layers_as_tensors(sd, quantized or {}, linear_weights if sharding is None else set())
    if sharding is not None:
        sharding.refuse_quantized(quantized)
    expected = module.state_dict()
    _check_keys(set(expected), set(sd) | {f"{name}.weight" for name in quantized}, source, what)
    weights, pages = {}, MappedPages()
    for key, want in expected.items():
        layer = quantized.get(key[: -len(".weight")]) if key.endswith(".weight") else None
        found = tuple(layer.shape) if layer is not None else tuple(sd[key].shape)
        if found != tuple(want.shape):
            raise CheckpointError(f"'{source.name}': '{key}' has shape {found}, expected "
                                  f"{tuple(want.shape)} for this {what}. The file is inconsistent or damaged.")
        if layer is not None and key not in linear_weights:
            raise CheckpointError(f"'{source.name}': '{key}' is stored quantised ({layer.format}), which only "
                                  f"Linear weights may be in this {what}.")
        if layer is None:
            t = sd[key] if sharding is None else sharding.shard(key, sd[key])
            weights[key] = _as_stored(key, t, dtype, key in linear_weights, scales)
            if weights[key] is not t:  # converted: the file's pages of it are done with
                pages.release(t)
    module.load_state_dict(weights, strict=False, assign=True)  # every key was checked above
    for name, layer in quantized.items():
        _set_quantized(module.get_submodule(name), layer)
    for name, scale in scales.items():
        layer = module.get_submodule(name) if _has_module(module, name) else None
        if isinstance(layer, Linear) and layer.weight.dtype in FP8_DTYPES and layer.weight_format is None:
            layer.scale_weight = checked_scale(scale, layer.weight.shape[0], name, source.name)
            layer.weight_format = SCALED_FP8
    check_loaded_weights(module, source.name, what)


def _float_layers_as_tensors(sd: dict, quantized: dict, keep: set[str]) -> tuple[dict, dict]:
    """Layers stored as plain float values (a GGUF file's F16 / F32 tensors) stay layers (cast per forward, never
    copied) where ``keep`` holds their weight; elsewhere (a non-Linear module, FSDP shards) they are tensors."""
    moved = {n: q for n, q in quantized.items()
             if f"{n}.weight" not in keep and q.format is not None and q.stored.dtype in FLOAT_DTYPES}
    if not moved:
        return sd, quantized
    sd = {**sd, **{f"{n}.weight": q.stored.reshape(q.shape) for n, q in moved.items()}}
    return sd, {n: q for n, q in quantized.items() if n not in moved}


def _set_quantized(layer: nn.Module, q) -> None:
    layer.weight = nn.Parameter(q.stored, requires_grad=False)
    for name, tensor in q.buffers.items():
        layer.register_buffer(name, tensor, persistent=False)
    layer.weight_format = q.format


def _check_keys(expected: set[str], found: set[str], source: Path, what: str) -> None:
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:4])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:4])})")
    raise CheckpointError(f"'{source.name}' does not match the {what} layout it looks like: {'; '.join(parts)} "
                          f"keys. The file may be incomplete or a different model.")


def _as_stored(key: str, t: torch.Tensor, dtype: torch.dtype, is_linear_weight: bool, scales) -> torch.Tensor:
    """fp8 Linear weights stay fp8 (scaled per layer at run time); everything else goes to the compute dtype."""
    if t.dtype in FP8_DTYPES:
        if is_linear_weight:
            return t
        scale = scales.pop(key.rsplit(".", 1)[0], None)
        t = t.float() * (scale.float() if scale is not None else 1.0)
    return t if t.dtype == dtype else t.to(dtype)


def _has_module(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
        return True
    except AttributeError:
        return False

"""Load a Wan DiT from any layout users have, without holding two copies of the weights.

The module is built on the meta device and the (memory-mapped) tensors are assigned to it; a tensor is copied
only when it must change dtype. Compact Linear weights stay compact and are dequantised per layer at run time:
fp8 and scaled fp8, comfy_quant layers (fp8, NVFP4) and GGUF blocks (``wan.quant``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..checks import json_value
from ..weights.checkpoint import find_weights_in_folder, is_gguf, read_state_dict, require_regular_file, wrong_kind_message
from ..errors import CheckpointError, InputError
from ..memory.offload import parse_offload_blocks, set_block_streaming
from ..quant.comfy_quant import format_counts, split_quantized_layers, with_header_markers
from ..variants import ROLES, VARIANTS, detect_variant
from ..weights.assign import build_with_weights, compute_dtype
from ..weights.ops import use_fp8_products
from .attention import describe
from .config import WanDiTConfig
from .islands import keep_float32_islands
from .keys import normalize_keys
from .model import WanDiT
from .animate import AnimateConfig, WanAnimateDiT, without_blur_kernels
from .s2v import S2VConfig, WanS2VDiT
from .vace import VaceConfig, WanVaceDiT

log = logging.getLogger("wan_experts")

EXPERT_FOLDERS = {"high": "high_noise_model", "low": "low_noise_model"}


def load_dit(path, dtype=None, device="cpu", role: str | None = None, num_heads: int | None = None,
             attention: str = "auto", offload_blocks=0, sharding=None, fp8_matmul: bool = False) -> WanDiT:
    """Load a DiT from a ``.safetensors``/``.pth`` file, a sharded index, or an official/diffusers folder.

    ``dtype``: compute dtype (None/"default": the file's own, bf16 for fp8 files). ``role``: "high", "low" or
    "single"; None guesses it from a ``high_noise``/``low_noise`` name hint. ``offload_blocks``: block streaming
    (``wan.memory.offload``): 0 = off, N = the last N blocks stay on the offload device and are streamed to the GPU as they
    run, "auto" (or -1) = N chosen from the free GPU memory when the model first runs. ``sharding``: a
    ``wan.distributed.fsdp.FsdpSharding`` to load only this rank's shard of every weight (FSDP; no block streaming). ``attention``: a backend of ``wan.dit.attention`` ("auto": the fastest
    exact one for the device and dtype of each call). ``fp8_matmul``: fp8 and scaled-fp8 Linear weights (comfy_quant
    fp8 too) multiply fp8-quantised activations (``wan.quant.fp8_product``) where the device has a kernel, instead of
    being dequantised; off by default (the product is then approximate, within the bound documented there).
    """
    path = Path(path)
    role = resolve_role(role, path)
    if parse_offload_blocks(offload_blocks) is not None and sharding is not None:  # bad values fail before reading
        raise InputError(f"offload_blocks {offload_blocks!r} (block streaming) cannot be combined with FSDP "
                         f"(--dit_fsdp): each process already holds only its share of the blocks; use one of them")
    source = expert_source(path, role)
    sd, scales, quantized, layout = read_dit_weights(source)
    shapes = {**sd, **{f"{name}.weight": q.placeholder() for name, q in quantized.items()}}  # real shapes
    if "head.modulation" not in sd:
        raise CheckpointError(wrong_kind_message(source, "a Wan DiT (diffusion model)", shapes.keys()))
    try:
        config = WanDiTConfig.from_state_dict(shapes, num_heads or heads_from_folder(source))
    except CheckpointError as exc:
        raise CheckpointError(f"'{source.name}': {exc}") from exc
    vace = VaceConfig.from_state_dict(shapes, config.num_layers, source)
    variant = detect_variant(in_dim=config.in_dim, dim=config.dim, has_clip=config.has_clip,
                             has_flf_pos=config.flf_pos_len is not None, role=role, name_hint=str(path),
                             has_vace=vace is not None)
    s2v = S2VConfig.from_state_dict(shapes, config.dim, config.num_layers, source)
    if s2v is not None:  # Wan 2.2 S2V-14B: the same blocks plus audio, reference, motion and pose modules
        variant = VARIANTS["wan22_s2v_14b"]
    animate = AnimateConfig.from_state_dict(shapes, config.num_layers)
    if animate is not None:  # Wan 2.2 Animate-14B: the I2V-14B layout plus pose, motion and face modules
        variant, sd = VARIANTS["wan22_animate_14b"], without_blur_kernels(sd)
    compute = resolve_dtype(dtype, shapes)
    if s2v is not None:
        factory = lambda: WanS2VDiT(config, s2v, variant, role, attention)  # noqa: E731
    elif vace is not None:  # VACE: the same blocks plus the VACE context branch (vace_blocks)
        factory = lambda: WanVaceDiT(config, vace, variant, role, attention)  # noqa: E731
    elif animate:
        factory = lambda: WanAnimateDiT(config, animate, variant, role, attention)  # noqa: E731
    else:
        factory = lambda: WanDiT(config, variant, role, attention)  # noqa: E731
    model = build_with_weights(factory, sd, scales, compute, source, "Wan DiT", quantized, sharding=sharding)
    if sharding is None:  # FSDP manages sharded parameters itself: they stay as assigned, cast per use
        keep_float32_islands(model, sd)
    model.compute_dtype = compute
    model.source, model.layout = str(path), layout
    set_block_streaming(model, offload_blocks)
    fp8_note = _fp8_products(model, fp8_matmul)
    if torch.device(device) != torch.device("cpu"):
        model.to(device)
    log.info("Loaded %s (%s, role %s) from %s [%s], compute %s, attention %s%s", variant.id, _size(config), role,
             path.name, layout, str(compute).replace("torch.", ""),
             describe(attention, torch.device(device).type, compute), _streaming(model) + fp8_note)
    return model


def read_dit_weights(source: Path) -> tuple[dict, dict, dict, str]:
    """(plain tensors, scaled-fp8 scales, quantised Linear layers, layout) of a DiT file, in official names."""
    if source.is_dir():
        source = find_weights_in_folder(source, "DiT file")
    if is_gguf(source):
        from .gguf import read_gguf_dit

        require_regular_file(source, "DiT file")
        sd, quantized, layout = read_gguf_dit(source)
        return sd, {}, quantized, layout
    sd = with_header_markers(read_state_dict(source, what="DiT file"), source)
    sd, scales, layout = normalize_keys(sd)
    sd, quantized = split_quantized_layers(sd, source)
    if quantized:
        layout += f", comfy_quant ({format_counts(quantized)})"
    return sd, scales, quantized, layout


def resolve_role(role: str | None, path: Path) -> str:
    if role in (None, "", "auto"):
        hint = str(path).lower()
        return "high" if "high_noise" in hint else "low" if "low_noise" in hint else "single"
    if role not in ROLES:
        raise InputError(f"role '{role}' is unknown; use one of {ROLES} (or None to guess from the file name)")
    return role


def resolve_dtype(dtype, sd: dict[str, torch.Tensor]) -> torch.dtype:
    """The compute dtype: as asked, else the file's own (read off the first attention weight; bf16 for fp8)."""
    stored = sd["blocks.0.self_attn.q.weight"].dtype if "blocks.0.self_attn.q.weight" in sd else torch.float32
    return compute_dtype(dtype, stored)


def expert_source(path: Path, role: str) -> Path:
    """An official Wan 2.2 A14B folder holds both experts; pick the one the role names."""
    if not (path.is_dir() and all((path / d).is_dir() for d in EXPERT_FOLDERS.values())):
        return path
    if role not in EXPERT_FOLDERS:
        raise InputError(f"'{path.name}' holds two experts ({', '.join(EXPERT_FOLDERS.values())}); "
                         f"load it with role='high' or role='low', or load both as a pair (load_moe)")
    return path / EXPERT_FOLDERS[role]


def heads_from_folder(source: Path) -> int | None:
    cfg_file = (source if source.is_dir() else source.parent) / "config.json"
    if not cfg_file.is_file():
        return None
    try:
        cfg = json_value(cfg_file.read_bytes(), f"'{cfg_file}'")
    except (OSError, ValueError):
        return None
    heads = cfg.get("num_heads") or cfg.get("num_attention_heads") if isinstance(cfg, dict) else None
    return heads if isinstance(heads, int) and not isinstance(heads, bool) and heads > 0 else None


def _fp8_products(model: WanDiT, on: bool) -> str:
    if not on:
        return ""
    count = use_fp8_products(model)
    if count == 0:
        log.info("fp8_matmul: '%s' has no fp8 Linear weights (fp8 products apply to fp8, scaled-fp8 and comfy_quant "
                 "fp8 files); the option does nothing", getattr(model, "source", "the model"))
    return f", fp8 products on {count} layers"


def _streaming(model: WanDiT) -> str:
    setting = getattr(model, "block_streaming", None)
    return "" if setting is None else f", offload_blocks {setting}"


def _size(config: WanDiTConfig) -> str:
    return f"dim {config.dim}, {config.num_layers} layers, {config.in_dim}->{config.out_dim} ch"

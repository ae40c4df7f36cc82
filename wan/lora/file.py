"""A LoRA file read into one form: per DiT parameter (official name), the pieces the file holds for it.

Nothing is scaled or combined here (``wan.lora.convert`` does that against a model); tensors stay the file's own
(memory-mapped for safetensors). Keys that name nothing in a Wan DiT are kept in ``unmatched`` for the log.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..weights.checkpoint import read_state_dict, wrong_kind_message
from ..errors import CheckpointError
from .keys import parameter_of, parse_key
from .metadata import AlphaDefaults, read_alpha_defaults

WEIGHT_PIECES = ("up", "down", "mid", "dora_scale", "diff", "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2",
                 "lokr_w2_a", "lokr_w2_b", "lokr_t2", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1",
                 "hada_t2")


@dataclass(frozen=True)
class LoraTarget:
    """What a LoRA holds for one DiT parameter, as stored: ``pieces`` by name (``up``/``down``/``mid``, ``diff``,
    ``dora_scale``, ``lokr_*``, ``hada_*``); ``alpha`` as written (None: none given); ``rank`` only for a PEFT
    ``lora_B.bias``, whose difference takes its module's ``alpha / rank``."""

    param: str
    pieces: dict[str, torch.Tensor]
    alpha: float | None = None
    rank: int | None = None
    keys: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        p = self.pieces
        kinds = [name for name, marker in (("low rank", "up"), ("LoKr", "lokr_w1"), ("LoKr", "lokr_w1_a"),
                                           ("LoHa", "hada_w1_a"), ("difference", "diff")) if marker in p]
        return " + ".join(kinds) + (" (DoRA)" if "dora_scale" in p else "")


@dataclass(frozen=True)
class LoraFile:
    """A loaded LoRA: its scheme (as detected), its targets by official parameter name, the keys it could not
    place."""

    path: Path
    scheme: str
    targets: dict[str, LoraTarget]
    unmatched: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def identity(self) -> str:
        """The patch-set key: the same file applied again replaces its earlier application."""
        return "lora:" + os.path.realpath(self.path)


def load_lora(path) -> LoraFile:
    """Read a LoRA file (``.safetensors``, or a weights-only ``.pth``/``.ckpt``) of any Wan key scheme."""
    path = Path(path)
    sd = read_state_dict(path, what="LoRA file")
    parsed = {k: parse_key(k) for k in sd}
    with_piece = [p for p in parsed.values() if p.piece is not None]
    if not with_piece:
        raise CheckpointError(wrong_kind_message(path, "a LoRA", sd.keys()) + " Wan LoRA takes LoRA files from "
                              "models/loras.")
    scheme = Counter(p.scheme for p in with_piece).most_common(1)[0][0]
    groups: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    unmatched = [k for k, p in parsed.items() if p.module is None]
    for key, p in parsed.items():
        if p.module is not None:
            if p.piece in groups.setdefault(p.module, {}):
                unmatched.append(key)  # a second spelling of a piece already read
            else:
                groups[p.module][p.piece] = (key, sd[key])
    defaults = read_alpha_defaults(path)
    targets: dict[str, LoraTarget] = {}
    for module, pieces in groups.items():
        found, rest = _targets_of(module, pieces, defaults, path)
        for t in found:
            if t.param in targets:  # e.g. both "blocks.0.diff_m" and "blocks.0.modulation.diff"
                rest += t.keys
            else:
                targets[t.param] = t
        unmatched += rest
    if not targets:
        sample = ", ".join(sorted(sd)[:3])
        raise CheckpointError(
            f"'{path.name}' names no layer of a Wan DiT: it looks like a {scheme} LoRA for another model (keys such "
            f"as {sample}). Use a LoRA made for Wan 2.1 / 2.2.")
    return LoraFile(path, scheme, targets, tuple(sorted(unmatched)))


def _targets_of(module: str, pieces: dict, defaults: AlphaDefaults, path: Path):
    """The targets one module's pieces make (weight, bias, modulation), and the keys that fit none."""
    alpha = _alpha(pieces.pop("alpha", None), path)
    down = pieces.get("down")
    rank = down[1].shape[0] if down is not None else None
    if alpha is None:
        alpha = defaults.alpha(module, rank)
    by_param: dict[str, dict] = {}
    rest = []
    for piece, (key, tensor) in pieces.items():
        param = parameter_of(module, piece)
        if param is None:
            rest.append(key)
            continue
        name = "diff" if piece in ("diff_b", "diff_m", "lora_bias") else piece
        by_param.setdefault(param, {})[name] = (key, tensor, piece)
    out = []
    for param, items in by_param.items():
        is_lora_bias = any(piece == "lora_bias" for _, _, piece in items.values())
        is_weight = any(piece in WEIGHT_PIECES for _, _, piece in items.values())
        out.append(LoraTarget(
            param, {name: t for name, (_, t, _) in items.items()},
            alpha=alpha if is_weight or is_lora_bias else None, rank=rank if is_lora_bias else None,
            keys=tuple(k for k, _, _ in items.values())))
    return out, rest


def _alpha(item, path: Path) -> float | None:
    if item is None:
        return None
    key, tensor = item
    if tensor.numel() != 1:
        raise CheckpointError(f"LoRA file '{path.name}': '{key}' should hold one number (the alpha) but has shape "
                              f"{tuple(tensor.shape)}. The file is damaged or not a LoRA.")
    return float(tensor.float().item())

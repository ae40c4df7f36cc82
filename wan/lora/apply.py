"""LoRAs on a ``WAN_MODEL`` (``wan.experts.ExpertSet``) or a bare WanDiT: per expert, each with its own strength.

Every call returns a new model and leaves the caller's untouched (``wan.weights.patching``): float Linear weights of the
patched layers are merged (extra memory for those layers only), fp8 and quantised ones are patched on the fly (no
extra memory); applying the same file again replaces its earlier application, strength 0 removes it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from ..errors import InputError
from ..experts import ExpertSet
from ..weights.patching import patched
from .convert import patch_set
from .file import LoraFile, load_lora

log = logging.getLogger("wan_experts")

EXPERTS = ("both", "high", "low")


@dataclass(frozen=True)
class LoraChoice:
    """One LoRA to apply: a file, its strength, the expert(s) it goes to."""

    path: Path
    strength: float = 1.0
    expert: str = "both"


def apply_lora(model, lora, strength: float = 1.0, expert: str = "both", merge: bool = True):
    """``model`` (ExpertSet or WanDiT) with ``lora`` (a path or a LoraFile) at ``strength`` on ``expert`` ("both",
    "high" or "low": the Wan 2.2 A14B experts). ``merge=False`` keeps float weights unmerged (patched on the fly)."""
    lora = lora if isinstance(lora, LoraFile) else load_lora(lora)
    strength = _strength(strength, lora)
    if isinstance(model, ExpertSet):
        roles = _roles(model, expert)
        sets = {role: patch_set(lora, getattr(model, role), strength) for role in roles}  # every check first
        sets[roles[0]][1].log(lora)
        new = {role: patched(getattr(model, role), sets[role][0], merge) if role in sets else getattr(model, role)
               for role in ("high", "low")}
        what = " and ".join(f"{r}-noise expert" for r in roles) if model.is_moe else "model"
        _log_applied(lora, strength, what, len(sets[roles[0]][0].patches))
        return dataclasses.replace(model, high=new["high"], low=new["low"])
    if isinstance(model, nn.Module) and hasattr(model, "config"):
        if expert != "both":
            raise InputError(f"expert '{expert}' names one expert of a Wan 2.2 A14B pair; a single DiT takes 'both'")
        pset, report = patch_set(lora, model, strength)
        report.log(lora)
        _log_applied(lora, strength, "model", len(pset.patches))
        return patched(model, pset, merge)
    raise InputError(f"a LoRA applies to a Wan model (WAN_MODEL / WanDiT), not to a {type(model).__name__}")


def apply_choices(model, choices, merge: bool = True):
    """``model`` with every ``LoraChoice`` applied in order."""
    for choice in choices:
        model = apply_lora(model, choice.path, choice.strength, choice.expert, merge)
    return model


def _roles(model: ExpertSet, expert: str) -> tuple[str, ...]:
    if expert not in EXPERTS:
        raise InputError(f"expert '{expert}' is unknown; use one of {', '.join(EXPERTS)}")
    if not model.is_moe:
        if expert != "both":
            raise InputError(f"expert '{expert}' names one expert of a Wan 2.2 A14B pair, but this model is a single "
                             f"DiT ({model.high.variant}); use 'both'")
        return ("high",)
    return ("high", "low") if expert == "both" else (expert,)


def _strength(value, lora: LoraFile) -> float:
    try:
        strength = float(value)
    except (TypeError, ValueError):
        strength = math.nan
    if not math.isfinite(strength):
        raise InputError(f"the strength of LoRA '{lora.name}' must be a number, got {value!r}")
    return strength


def _log_applied(lora: LoraFile, strength: float, what: str, count: int) -> None:
    log.info("Wan LoRA '%s' (%s): %d parameters at strength %g on the %s", lora.name, lora.scheme, count,
             strength, what)

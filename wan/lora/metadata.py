"""Alphas that a LoRA keeps outside its tensors: diffusers writes its PEFT settings into the safetensors header
(``lora_adapter_metadata``: ``lora_alpha``, ``r``, ``alpha_pattern``, ``use_rslora``), PEFT into an
``adapter_config.json`` beside ``adapter_model.safetensors``. Without either, a LoRA without ``.alpha`` keys has
``alpha / rank = 1`` (the diffusers / PEFT convention too)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..checks import json_value
from ..errors import CheckpointError
from .keys import official_module

log = logging.getLogger("wan_experts")

HEADER_KEY = "lora_adapter_metadata"


@dataclass(frozen=True)
class AlphaDefaults:
    """PEFT settings: ``lora_alpha`` for every module, ``pattern`` per official module name, rsLoRA scaling."""

    lora_alpha: float | None = None
    pattern: dict[str, float] = field(default_factory=dict)
    use_rslora: bool = False

    def alpha(self, module: str, rank: int | None) -> float | None:
        """The alpha of ``module`` in our rule's terms (scale = alpha / rank), or None when none is set."""
        if self.lora_alpha is None or rank is None:
            return None
        alpha = next((a for name, a in self.pattern.items() if module == name or module.endswith("." + name)),
                     self.lora_alpha)
        return alpha * math.sqrt(rank) if self.use_rslora else alpha  # rsLoRA: scale = alpha / sqrt(rank)


def read_alpha_defaults(path: Path) -> AlphaDefaults:
    config = _header_config(path) or _adapter_config(path)
    if not config or config.get("lora_alpha") is None:
        return AlphaDefaults()
    patterns = config.get("alpha_pattern") or {}
    if not isinstance(patterns, dict):
        raise _bad(path, "alpha_pattern", patterns, "a table of layer name -> alpha")
    pattern = {}
    for name, value in patterns.items():
        module = official_module(name)
        if module is None:
            log.warning("LoRA '%s': alpha_pattern entry '%s' names no Wan DiT layer; ignored", path.name, name)
        else:
            pattern[module] = _alpha(value, path, f"alpha_pattern['{name}']")
    rslora = config.get("use_rslora", False)
    if rslora not in (True, False, None):  # 0 / 1 count as False / True
        raise _bad(path, "use_rslora", rslora, "true or false")
    return AlphaDefaults(_alpha(config["lora_alpha"], path, "lora_alpha"), pattern, bool(rslora))


def _alpha(value, path: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _bad(path, key, value, "a positive finite number")
    return float(value)


def _bad(path: Path, key: str, value, wanted: str) -> CheckpointError:
    return CheckpointError(f"LoRA '{path.name}': its PEFT setting {key} is {str(value)[:60]!r} "
                           f"({type(value).__name__}), not {wanted}. Fix the file's {HEADER_KEY} or "
                           f"adapter_config.json, or convert the LoRA again.")


def _header_config(path: Path) -> dict | None:
    """diffusers' metadata: keys prefixed with the component (``transformer.lora_alpha``) or bare."""
    if not path.name.lower().endswith(".safetensors"):
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(HEADER_KEY)
    if not raw:
        return None
    try:
        meta = json_value(raw, f"LoRA '{path.name}': {HEADER_KEY}", ValueError)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        log.warning("LoRA '%s': unreadable %s in the file header; ignored", path.name, HEADER_KEY)
        return None
    prefixed = {k[len("transformer."):]: v for k, v in meta.items() if k.startswith("transformer.")}
    return prefixed or meta


def _adapter_config(path: Path) -> dict | None:
    config = path.parent / "adapter_config.json"
    if not path.name.startswith("adapter_model") or not config.is_file():
        return None
    try:
        found = json_value(config.read_bytes(), f"LoRA '{path.name}': {config.name}", ValueError)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        log.warning("LoRA '%s': unreadable %s; ignored", path.name, config.name)
        return None
    return found

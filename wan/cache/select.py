"""Choosing a coefficient set or curve for the model a run uses: auto by variant, by name, or from a file.

A set made for another variant is an error unless the user allowed a fallback; then it is used with a warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .tables import base_variant, pick_key

log = logging.getLogger("wan_experts")


@dataclass(frozen=True)
class Choice:
    """Which entry of a table a run uses: an exact key, or a variant whose sub-set is picked at the first call."""

    table: dict
    variant: str  # the variant whose data is used
    key: str | None  # exact key when the user named one, else None (sub-set picked from the inputs)
    fallback: bool  # the data was made for another variant than the model's

    def resolve(self, area: int | None, with_image: bool | None) -> str:
        return self.key or pick_key(self.table, self.variant, area, with_image)


def is_file_request(requested: str) -> bool:
    return requested.lower().endswith(".json") or Path(requested).is_file()


def choose(table: dict, requested: str, model_variant: str | None, allow_fallback: bool, nearest: dict,
           what: str, advice: str) -> Choice:
    """``requested``: "auto" or a key of ``table``. ``what`` names the data ("TeaCache coefficients")."""
    if requested == "auto":
        return _choose_auto(table, model_variant, allow_fallback, nearest, what, advice)
    if requested in table:
        key, data_variant = requested, base_variant(requested)
    elif any(base_variant(k) == requested for k in table):
        key, data_variant = None, requested
    else:
        raise InputError(f"{what} '{requested}' do not exist; choose 'auto' or one of {sorted(table)}")
    fallback = model_variant is not None and data_variant != model_variant
    if fallback:
        _refuse_or_warn(allow_fallback, f"{what} '{requested}' were made for {data_variant}, but the model is "
                                        f"{model_variant}", advice)
    return Choice(table, data_variant, key, fallback)


def choose_for_model(experts, requested: str, published: dict, load_file, allow_fallback: bool, nearest: dict,
                     what: str, advice: str) -> Choice:
    """``choose`` for the model of a run; ``requested`` may also be a JSON file made by the calibration."""
    variant = experts.variant.id if experts is not None and experts.variant else None
    if is_file_request(requested):
        table = load_file(requested)
        requested = "auto" if variant and pick_key(table, variant) else sorted(table)[0]
    else:
        table = published
    return choose(table, requested, variant, allow_fallback, nearest, what, advice)


def _choose_auto(table, model_variant, allow_fallback, nearest, what, advice) -> Choice:
    if model_variant is None:
        raise InputError(f"{what}: the model's variant is unknown, so 'auto' cannot choose; name a set "
                         f"({sorted(table)}) or {advice}")
    if pick_key(table, model_variant) is not None:
        return Choice(table, model_variant, None, False)
    near = nearest.get(model_variant)
    if near is None or pick_key(table, near) is None:
        raise InputError(f"there are no published {what} for {model_variant} and no near set to fall back to; "
                         f"{advice}")
    _refuse_or_warn(allow_fallback, f"there are no published {what} for {model_variant}; the nearest published "
                                    f"set is '{near}'", advice)
    return Choice(table, near, None, True)


def _refuse_or_warn(allow_fallback: bool, problem: str, advice: str) -> None:
    if not allow_fallback:
        raise InputError(f"{problem}. Either {advice}, or turn on allow_fallback to use that set anyway "
                         f"(the skip pattern is then only approximately right for this model).")
    log.warning("%s; using it because allow_fallback is on (quality/speed trade-off may differ).", problem)


def input_facts(model, x, t, y) -> tuple[int, bool]:
    """(output pixel area, whether a start image conditions the run), read off one model call's inputs."""
    stride = 16 if model.config.in_dim == 48 else 8  # TI2V-5B uses the 2.2 VAE (16x spatial compression)
    area = int(x.shape[-1] * x.shape[-2] * stride * stride)
    if y is not None:
        return area, True
    t = t if hasattr(t, "dim") else None
    per_token_image = t is not None and t.dim() == 2 and bool((t != t.amax(dim=1, keepdim=True)).any())
    return area, per_token_image

"""A loaded LoRA -> the patches for one model (a ``wan.weights.patching.PatchSet``), checked against the model's shapes.

The scale rule, stated once (``lora_scale``): ``W' = W + strength · (alpha / rank) · (up @ down)``, ``rank`` = the
rows of ``down``, no alpha -> ``alpha / rank = 1``. LoKr and LoHa take ``alpha / rank`` of their decomposed factor
the same way (``rank`` = rows of ``w2_b``, else ``w1_b``; both factors whole -> 1). Full differences
(``diff``, ``diff_b``, ``diff_m``): ``W' = W + strength · diff``. DoRA: the low-rank ``ΔW`` at strength 1, rescaled to
``dora_scale``, blended by the strength (``wan.weights.patches.Decomposed``).

What does not fit the model:
- targets of the Wan 2.1 image branch (``k_img``, ``v_img``, ``norm_k_img``, ``img_emb``) on a model without one
  (T2V, Wan 2.2): skipped, one warning names them, the rest applies;
- a LoRA for another model width (e.g. 1.3B on 14B): refused, naming both widths;
- other targets the model lacks, or outside the blocks with another shape (e.g. ``patch_embedding`` of a T2V
  LoRA on an I2V model): skipped, listed in the log (first few and the count);
- nothing at all fits: refused, naming the scheme the file looked like.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..errors import CheckpointError, InputError
from ..weights.ops import Linear
from ..weights.patches import Decomposed, Full, Hadamard, Kronecker, LowRank, Patch
from ..weights.patching import PatchSet
from .file import LoraFile, LoraTarget
from .keys import IMAGE_BRANCH

log = logging.getLogger("wan_experts")

SHOWN = 4  # keys named in a log line before "... and N more"
UNSUPPORTED = {"mid": "a Tucker-decomposed LoCon (lora_mid)", "lokr_t2": "a Tucker-decomposed LoKr (lokr_t2)",
               "hada_t1": "a Tucker-decomposed LoHa (hada_t1)", "hada_t2": "a Tucker-decomposed LoHa (hada_t2)"}
WIDTHS = {1536: "Wan 2.1 1.3B", 3072: "Wan 2.2 TI2V-5B", 5120: "Wan 14B / A14B"}
_WIDTH_PROBE = re.compile(r"blocks\.\d+\.(self_attn|cross_attn)\.[qkvo]\.weight|blocks\.\d+\.ffn\.0\.weight")


def lora_scale(strength: float, alpha: float | None, rank: int | None) -> float:
    """THE scale rule: ``strength · alpha / rank``; without an alpha (or a rank), ``alpha / rank`` is 1."""
    return strength * (alpha / rank if alpha is not None and rank else 1.0)


@dataclass
class Report:
    """What a conversion left out, for one log entry per application."""

    image_branch: list[str] = field(default_factory=list)
    other_shape: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)

    def log(self, lora: LoraFile) -> None:
        if self.image_branch:
            log.warning("Wan LoRA '%s': this model has no Wan 2.1 image branch, so %s for k_img / v_img / norm_k_img / "
                        "img_emb were skipped; the rest applies", lora.name, _listed(self.image_branch, "targets"))
        if self.other_shape:
            log.warning("Wan LoRA '%s': %s have another shape in this model and were skipped", lora.name,
                        _listed(self.other_shape, "targets"))
        if self.absent:
            log.warning("Wan LoRA '%s': %s name nothing in this model and were skipped", lora.name,
                        _listed(self.absent, "targets"))
        if lora.unmatched:
            log.warning("Wan LoRA '%s': %s are not LoRA weights for a Wan DiT and were not applied", lora.name,
                        _listed(list(lora.unmatched), "keys"))


def patch_set(lora: LoraFile, model: nn.Module, strength: float = 1.0) -> tuple[PatchSet, Report]:
    """The patches of ``lora`` at ``strength`` for ``model`` (a WanDiT), keyed by the file's identity; at strength 0
    an empty set (which removes an earlier application of the same file)."""
    check_width(lora, model)
    report, patches = Report(), {}
    for param, target in lora.targets.items():
        shape = parameter_shape(model, param)
        built = target_patches(target, strength, lora)  # a broken target is an error even where it would not fit
        if shape is None:
            (report.image_branch if IMAGE_BRANCH.match(param) else report.absent).append(param)
        elif not fits(target, shape):
            if param.startswith("blocks."):
                raise InputError(f"Wan LoRA '{lora.name}' does not fit this model: its {target.kind} for '{param}' "
                                 f"has the shape {_delta_text(target)}, the model's parameter {tuple(shape)}. Use a "
                                 f"LoRA made for this model ({_model_text(model)}, width {model.config.dim}).")
            report.other_shape.append(param)
        else:
            patches[param] = built
    if not patches:
        raise InputError(
            f"nothing in '{lora.name}' fits this model ({_model_text(model)}): it looks like a {lora.scheme} LoRA "
            f"whose {len(lora.targets)} targets (e.g. {', '.join(sorted(lora.targets)[:3])}) this model does not have.")
    label = f"{lora.name} @ {strength:g}"
    return PatchSet(lora.identity, patches if strength != 0 else {}, label), report


def target_patches(t: LoraTarget, strength: float, lora: LoraFile) -> tuple[Patch, ...]:
    """The patches one target makes, in order: the adapter's ``ΔW`` (DoRA-rescaled if it has a ``dora_scale``), then
    a full difference."""
    p = t.pieces
    for piece, what in UNSUPPORTED.items():
        if piece in p:
            raise InputError(f"Wan LoRA '{lora.name}': '{t.param}' is {what}, which is not supported (no Wan layer "
                             f"needs one). Use a plain LoRA / LoKr / LoHa file.")
    out: list[Patch] = []
    dora = "dora_scale" in p
    adapter = _adapter(t, 1.0 if dora else strength, lora)
    if adapter is not None:
        out.append(Decomposed(adapter, p["dora_scale"], strength) if dora else adapter)
    elif dora:
        _broken(lora, t, "a dora_scale without low-rank weights")
    if "diff" in p:
        out.append(Full(p["diff"], lora_scale(strength, t.alpha, t.rank) if t.rank else strength))
    return tuple(out)


def _adapter(t: LoraTarget, strength: float, lora: LoraFile) -> Patch | None:
    p = t.pieces
    if "up" in p or "down" in p:
        if "up" not in p or "down" not in p:
            _broken(lora, t, "only one half of a low-rank pair (up/down, lora_B/lora_A)")
        up, down = p["up"], p["down"]
        if up.reshape(up.shape[0], -1).shape[1] != down.shape[0]:
            _broken(lora, t, f"up {tuple(up.shape)} and down {tuple(down.shape)} of different ranks")
        return LowRank(up, down, lora_scale(strength, t.alpha, down.shape[0]))
    if any(k.startswith("lokr_") for k in p):
        w1, w2 = _lokr_factor(t, "1", lora), _lokr_factor(t, "2", lora)
        rank = p["lokr_w2_b"].shape[0] if w2[0] is None else p["lokr_w1_b"].shape[0] if w1[0] is None else None
        return Kronecker(*w1, *w2, lora_scale(strength, t.alpha, rank))
    if any(k.startswith("hada_") for k in p):
        names = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
        if not all(n in p for n in names):
            _broken(lora, t, "an incomplete LoHa (hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b)")
        return Hadamard(*(p[n] for n in names), lora_scale(strength, t.alpha, p["hada_w1_b"].shape[0]))
    return None


def _lokr_factor(t: LoraTarget, i: str, lora: LoraFile) -> tuple:
    """(whole, a, b) of LoKr factor ``i``: whole, or a low-rank pair."""
    p = t.pieces
    whole, a, b = p.get(f"lokr_w{i}"), p.get(f"lokr_w{i}_a"), p.get(f"lokr_w{i}_b")
    if whole is None and (a is None or b is None):
        _broken(lora, t, f"an incomplete LoKr (no lokr_w{i}, nor lokr_w{i}_a with lokr_w{i}_b)")
    return (whole, None, None) if whole is not None else (None, a, b)


def _broken(lora: LoraFile, t: LoraTarget, what: str):
    raise CheckpointError(f"LoRA file '{lora.name}' holds {what} for '{t.param}' (keys {', '.join(t.keys)}). The "
                          f"file is damaged or incomplete: download it again.")


# -- shapes ---------------------------------------------------------------------------------------------------------
def parameter_shape(model: nn.Module, name: str) -> torch.Size | None:
    """The real shape of a parameter (a quantised Linear weight may be stored in another shape), None if absent."""
    owner_name, _, attr = name.rpartition(".")
    try:
        owner = model.get_submodule(owner_name)
    except AttributeError:
        return None
    if owner._parameters.get(attr) is None:
        return None
    if isinstance(owner, Linear) and attr == "weight":
        return torch.Size(owner.weight_shape)
    return owner._parameters[attr].shape


def delta_matrix(t: LoraTarget) -> tuple[int, int] | None:
    """(rows, columns) of the adapter's ``ΔW`` (a conv kernel counts in the columns), None for a plain difference."""
    p = t.pieces
    if "up" in p and "down" in p:
        return p["up"].shape[0], p["down"][0].numel()
    if "hada_w1_a" in p and "hada_w1_b" in p:
        return p["hada_w1_a"].shape[0], p["hada_w1_b"][0].numel()
    if any(k.startswith("lokr_") for k in p):
        dims = [_lokr_dims(p, i) for i in "12"]
        if None not in dims:
            return dims[0][0] * dims[1][0], dims[0][1] * dims[1][1]
    return None


def _lokr_dims(p: dict, i: str) -> tuple[int, int] | None:
    whole, a, b = p.get(f"lokr_w{i}"), p.get(f"lokr_w{i}_a"), p.get(f"lokr_w{i}_b")
    if whole is not None:
        return whole.shape[0], whole[0].numel()
    return (a.shape[0], b[0].numel()) if a is not None and b is not None else None


def fits(t: LoraTarget, shape: torch.Size) -> bool:
    numel, rows = math.prod(shape), shape[0] if len(shape) else 1
    matrix = delta_matrix(t)
    if matrix is not None and (len(shape) < 2 or matrix != (rows, numel // rows)):
        return False
    if "diff" in t.pieces and t.pieces["diff"].numel() != numel:
        return False
    m = t.pieces.get("dora_scale")
    return m is None or (len(shape) >= 2 and m.numel() in (rows, numel // rows))


def lora_width(lora: LoraFile) -> int | None:
    """The model width a LoRA was made for, read off an attention or FFN input (or a block modulation)."""
    for param, t in lora.targets.items():
        matrix = delta_matrix(t)
        if _WIDTH_PROBE.fullmatch(param) and matrix is not None:
            return matrix[1]
        if _WIDTH_PROBE.fullmatch(param) and "diff" in t.pieces and t.pieces["diff"].dim() == 2:
            return t.pieces["diff"].shape[1]
    for param, t in lora.targets.items():
        if re.fullmatch(r"blocks\.\d+\.modulation", param) and "diff" in t.pieces:
            return t.pieces["diff"].shape[-1]
    return None


def check_width(lora: LoraFile, model: nn.Module) -> None:
    width, dim = lora_width(lora), model.config.dim
    if width is not None and width != dim:
        raise InputError(
            f"Wan LoRA '{lora.name}' was made for a model of width {width} ({WIDTHS.get(width, 'another Wan model')}), "
            f"but this model has width {dim} ({_model_text(model)}). Use a LoRA trained for this model.")


def _model_text(model: nn.Module) -> str:
    variant = getattr(model, "variant_info", None)
    return variant.id if variant else "a Wan DiT"


def _delta_text(t: LoraTarget) -> str:
    matrix = delta_matrix(t)
    return str(matrix) if matrix is not None else str(tuple(t.pieces["diff"].shape))


def _listed(items: list[str], noun: str) -> str:
    shown = ", ".join(items[:SHOWN])
    more = f", ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return f"{len(items)} {noun} ({shown}{more})"

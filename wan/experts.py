"""A single DiT or a Wan 2.2 pair of experts: the high-noise expert for ``t >= boundary * 1000``, else the low."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .dit.compile import CompileOptions
from .dit.loader import expert_source, load_dit, resolve_role
from .dit.model import WanDiT
from .checks import finite_number
from .errors import InputError
from .variants import Variant, default_boundary

WAN22_MARKS = ("wan2_2", "wan22", "high_noise", "low_noise")  # in a lower-cased path, '-' and '.' read as '_'
OTHER_WIDTHS = {1536: "Wan 2.1 T2V-1.3B", 3072: "Wan 2.2 TI2V-5B"}  # widths of models that are never A14B experts


@dataclass
class ExpertSet:
    """What a ``WAN_MODEL`` carries: ``high`` is the only model when ``low`` is None (a single DiT)."""

    high: WanDiT
    low: WanDiT | None = None
    boundary: float | None = None
    compile: CompileOptions | None = None  # compiled transformer blocks while sampling (wan.dit.compile)

    def __post_init__(self):
        if self.low is None:
            self.boundary = None
            return
        check_pair(self.high, self.low)
        if self.boundary is None or self.boundary == "auto":
            self.boundary = default_boundary(self.high.config.in_dim)
        self.boundary = finite_number(self.boundary, "boundary", 0.0, 1.0, low_open=True, high_open=True,
                                      hint="a fraction of the 1000 timesteps (0.875 T2V, 0.9 I2V)")

    @property
    def is_moe(self) -> bool:
        return self.low is not None

    @property
    def variant(self) -> Variant | None:
        return self.high.variant_info

    @property
    def config(self):
        return self.high.config

    @property
    def models(self) -> list[WanDiT]:
        return [self.high] if self.low is None else [self.high, self.low]

    def expert_for(self, timestep: float) -> tuple[str, WanDiT]:
        """("high"|"low"|"single", model) for a timestep in 0..1000 (official rule: t >= boundary * 1000)."""
        if self.low is None:
            return "single", self.high
        return ("high", self.high) if timestep >= self.boundary * 1000 else ("low", self.low)


def check_pair(high: WanDiT, low: WanDiT) -> None:
    """Two different Wan 2.2 A14B experts of one task: same architecture, both A14B-shaped, not the same weights."""
    if high is low:
        raise InputError("the same model was given as both the high-noise and the low-noise expert; a Wan 2.2 A14B "
                         "model has two different experts: load both (wan.load_moe / Load Wan 2.2 MoE)")
    a, b = high.config, low.config
    if a != b:
        diffs = [f"{k}: {getattr(a, k)} vs {getattr(b, k)}" for k in a.to_dict() if getattr(a, k) != getattr(b, k)]
        raise InputError(
            f"the high-noise expert ({high.variant}) and the low-noise expert ({low.variant}) are not a pair: "
            f"{'; '.join(diffs[:4])}. Load the two experts of one Wan 2.2 A14B model (both T2V or both I2V).")
    for model in (high, low):
        _check_a14b(model)
    if _same_weights(high, low):
        raise InputError(f"the high-noise and the low-noise expert hold the same weights ('{_name(high)}' and "
                         f"'{_name(low)}'): the same expert was given twice. Pick the high_noise file for the "
                         f"high-noise input and the low_noise file for the low-noise input")


def check_pair_files(high: Path, low: Path) -> None:
    """Before loading: two different files whose names (if they say so) put them in the right places."""
    if _same_file(high, low):
        raise InputError(f"the same file '{high.name}' was given as both experts; a Wan 2.2 A14B model has two "
                         f"files: its high_noise file for the high-noise input, its low_noise file for the other")
    h, lo = resolve_role(None, high), resolve_role(None, low)
    if h == lo and h != "single":
        other = "low" if h == "high" else "high"
        raise InputError(f"both files are {h}-noise experts by their names ('{high.name}', '{low.name}'); the "
                         f"{other}-noise input needs the {other}_noise file of the same model")
    if h == "low" and lo == "high":
        raise InputError(f"the experts look swapped: '{high.name}' was given as the high-noise expert and "
                         f"'{low.name}' as the low-noise one, but their names say the opposite.")
    for path, given, hint in ((high, "high", h), (low, "low", lo)):
        if hint not in ("single", given):
            raise InputError(f"'{path.name}' was given as the {given}-noise expert, but its name says it is the "
                             f"{hint}-noise one; connect it to the {hint}-noise input")


def check_wan22_file(model: WanDiT, source: Path) -> None:
    """A 16-channel expert has the layout of Wan 2.1 T2V-14B; only its name can tell the two apart."""
    if model.config.in_dim != 16:
        return  # 36 channels without CLIP exist only as the Wan 2.2 I2V-A14B experts
    hint = str(source).lower().replace("-", "_").replace(".", "_")
    if not any(mark in hint for mark in WAN22_MARKS):
        raise InputError(f"'{source.name}' does not look like a Wan 2.2 A14B expert: its name has none of "
                         f"'wan2.2', 'high_noise', 'low_noise', and a Wan 2.1 T2V-14B file has the same layout. A "
                         f"Wan 2.1 model is a single model: load it with Load Wan DiT (wan.load_dit). If the file "
                         f"is a Wan 2.2 expert, keep 'high_noise' / 'low_noise' in its name")


def load_moe(high_path, low_path, dtype=None, device="cpu", boundary="auto", attention: str = "auto",
             offload_blocks=0, sharding=None, fp8_matmul: bool = False) -> ExpertSet:
    """Load the two Wan 2.2 A14B experts (files, or the same official folder twice) as one ExpertSet;
    ``offload_blocks`` (block streaming), ``sharding`` (FSDP) and ``fp8_matmul`` apply to each expert (see
    ``load_dit``)."""
    sources = expert_source(Path(high_path), "high"), expert_source(Path(low_path), "low")
    check_pair_files(*sources)
    high = load_dit(high_path, dtype=dtype, device=device, role="high", attention=attention,
                    offload_blocks=offload_blocks, sharding=sharding, fp8_matmul=fp8_matmul)
    low = load_dit(low_path, dtype=dtype, device=device, role="low", attention=attention,
                   offload_blocks=offload_blocks, sharding=sharding, fp8_matmul=fp8_matmul)
    check_pair(high, low)
    for model, source in zip((high, low), sources):
        check_wan22_file(model, source)
    return ExpertSet(high, low, None if boundary in (None, "auto") else float(boundary))


def _check_a14b(model: WanDiT) -> None:
    variant = model.variant_info
    other = OTHER_WIDTHS.get(model.config.dim)
    if other is not None or (variant is not None and not variant.moe):
        raise InputError(f"'{_name(model)}' is {other or variant.id}, not a Wan 2.2 A14B expert; an expert pair is "
                         f"the high_noise and low_noise files of Wan 2.2 T2V-A14B or I2V-A14B")


def _same_weights(a: WanDiT, b: WanDiT) -> bool:
    """Two loads of one file share their small tensors exactly; two experts never do."""
    probes = [(a.head.modulation, b.head.modulation)] + [(x.modulation, y.modulation)
                                                         for x, y in zip(a.blocks[:1], b.blocks[:1])]
    probes = [(x, y) for x, y in probes if "meta" not in (x.device.type, y.device.type)
              and not hasattr(x, "to_local") and not hasattr(y, "to_local")]  # sharded (FSDP): the file check did
    return bool(probes) and all(torch.equal(x.detach().cpu(), y.detach().cpu()) for x, y in probes)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return a == b


def _name(model: WanDiT) -> str:
    return Path(getattr(model, "source", "") or model.variant).name


def as_expert_set(model) -> ExpertSet:
    """An ExpertSet as it is, or one WanDiT wrapped as a single-model set."""
    if isinstance(model, ExpertSet):
        return model
    if isinstance(model, WanDiT):
        return ExpertSet(model)
    raise InputError(f"the model must be a Wan DiT (wan.load_dit) or an ExpertSet (wan.load_moe, or the WAN_MODEL of "
                     f"a loader node); got {type(model).__name__}")

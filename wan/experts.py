"""A single DiT or a Wan 2.2 pair of experts: the high-noise expert for ``t >= boundary * 1000``, else the low."""
from __future__ import annotations

from dataclasses import dataclass

from .dit.model import WanDiT
from .errors import InputError
from .variants import Variant, default_boundary


@dataclass
class ExpertSet:
    """What a ``WAN_MODEL`` carries: ``high`` is the only model when ``low`` is None (a single DiT)."""

    high: WanDiT
    low: WanDiT | None = None
    boundary: float | None = None

    def __post_init__(self):
        if self.low is None:
            self.boundary = None
            return
        check_pair(self.high, self.low)
        if self.boundary is None or self.boundary == "auto":
            self.boundary = default_boundary(self.high.config.in_dim)
        if not 0.0 < float(self.boundary) < 1.0:
            raise InputError(f"boundary {self.boundary} must lie between 0 and 1 (fraction of 1000 timesteps)")
        self.boundary = float(self.boundary)

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
    """High and low experts must be the same architecture (e.g. not a 5B with a 14B, or T2V with I2V)."""
    a, b = high.config, low.config
    if a != b:
        diffs = [f"{k}: {getattr(a, k)} vs {getattr(b, k)}" for k in a.to_dict() if getattr(a, k) != getattr(b, k)]
        raise InputError(
            f"the high-noise expert ({high.variant}) and the low-noise expert ({low.variant}) are not a pair: "
            f"{'; '.join(diffs[:4])}. Load the two experts of one Wan 2.2 A14B model (both T2V or both I2V).")


def load_moe(high_path, low_path, dtype=None, device="cpu", boundary="auto", attention: str = "sdpa",
             offload_blocks=0, sharding=None) -> ExpertSet:
    """Load the two Wan 2.2 A14B experts (files, or the same official folder twice) as one ExpertSet;
    ``offload_blocks`` (block streaming) and ``sharding`` (FSDP) apply to each expert (see ``load_dit``)."""
    from .dit.loader import load_dit, resolve_role
    from pathlib import Path

    if resolve_role(None, Path(high_path)) == "low" or resolve_role(None, Path(low_path)) == "high":
        raise InputError(f"the experts look swapped: '{Path(high_path).name}' was given as the high-noise expert "
                         f"and '{Path(low_path).name}' as the low-noise one, but their names say the opposite.")
    high = load_dit(high_path, dtype=dtype, device=device, role="high", attention=attention,
                    offload_blocks=offload_blocks, sharding=sharding)
    low = load_dit(low_path, dtype=dtype, device=device, role="low", attention=attention,
                   offload_blocks=offload_blocks, sharding=sharding)
    return ExpertSet(high, low, None if boundary in (None, "auto") else float(boundary))

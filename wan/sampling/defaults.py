""""Auto" sampler settings: the official defaults of the detected variant (steps, shift, guidance per expert)."""
from __future__ import annotations

from dataclasses import dataclass

from ..experts import ExpertSet
from ..variants import VARIANTS

FALLBACK = VARIANTS["wan21_t2v_14b"]  # models of unknown variant: the common 2.1 defaults


@dataclass(frozen=True)
class AutoSettings:
    steps: int
    shift: float
    cfg_high: float
    cfg_low: float
    resolved: tuple[str, ...]  # names of the settings that came from the variant's defaults
    variant: str

    def describe(self) -> str:
        auto = ", ".join(self.resolved) if self.resolved else "nothing"
        return (f"{self.variant}: steps {self.steps}, shift {self.shift:g}, cfg high {self.cfg_high:g} / low "
                f"{self.cfg_low:g} (auto: {auto})")


def resolve_auto(experts: ExpertSet, steps: int = 0, shift: float = 0.0, cfg_high: float = 0.0,
                 cfg_low: float = 0.0) -> AutoSettings:
    """Fill every setting given as 0 from the official defaults of the model's variant (WAN_REFERENCE §6)."""
    variant = experts.variant or FALLBACK
    low, high = variant.guidance
    chosen = {"steps": (steps, variant.steps), "shift": (shift, variant.shift), "cfg_high": (cfg_high, high),
              "cfg_low": (cfg_low, low)}
    values = {k: (default if given in (0, None) else given) for k, (given, default) in chosen.items()}
    resolved = tuple(k for k, (given, _) in chosen.items() if given in (0, None))
    return AutoSettings(int(values["steps"]), float(values["shift"]), float(values["cfg_high"]),
                        float(values["cfg_low"]), resolved, variant.id)

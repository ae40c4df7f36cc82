"""MagCache for Wan (after MagCache4Wan2.1 / MagCache4Wan2.2, Zehong-Ma/MagCache).

A calibrated curve gives, per step and CFG branch, the ratio of the residual's magnitude to the previous step's.
Per branch, while skipping, the ratios multiply up; the skip error ``|1 − product|`` is summed over the skipped
steps. A call reuses the cached residual while the summed error stays below the threshold and at most K calls in a
row were skipped; otherwise it computes and the accumulators restart. The first calls are always computed (the
retention ratio R), counted in the published codes' interleaved call order (cond, uncond, cond, ...):

- one model: calls ``c < int(2·steps·R)``;
- Wan 2.2 T2V-A14B: the first R of the high-noise expert's calls, and the low-noise expert's calls
  ``split <= c <= (2·steps − split)·R + split`` (split = 2 × high-noise steps);
- Wan 2.2 I2V-A14B: every high-noise call and the first R of the low-noise expert's calls.

Other step counts use the curve resampled by nearest index (cond and uncond separately). For the two-expert
curves each expert's part of the curve is resampled to that expert's steps, so the ratios stay on the right side
of the switch; at the published step count and shift this is the curve itself. At the switch the new expert
always computes first and the accumulators restart (the published code keeps them across the switch).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..checks import finite_number, whole_number
from ..variants import VARIANTS
from .base import BranchState, Call, StepCache, check_threshold
from .select import choose_for_model, input_facts
from .tables import MAGCACHE_NEAREST, MagCurve, load_curves, nearest_interp, published_curves

log = logging.getLogger("wan_experts")

MAX_THRESHOLD = 1.0
MAX_K = 20
ADVICE = ("choose the curve published for this model (or 'auto'), or calibrate one with "
          "`python -m wan.cache.calibrate` and pass its JSON file")


@dataclass
class MagState(BranchState):
    ratio: float = 1.0
    skipped: int = 0
    error: float = 0.0


class MagCache(StepCache):
    name = "MagCache"

    def __init__(self, threshold: float = 0.12, K: int = 2, retention_ratio: float = 0.2, curve: str = "auto",
                 allow_fallback: bool = False):
        super().__init__()
        self.threshold = check_threshold(threshold, "MagCache", MAX_THRESHOLD)
        self.K = whole_number(K, "MagCache K", 0, MAX_K, hint="the most steps in a row that may reuse the cache; "
                                                               "the authors use 2")
        self.retention_ratio = finite_number(retention_ratio, "MagCache retention_ratio", 0.0, 1.0, high_open=True,
                                             hint="the fraction of first steps always computed; authors: 0.1-0.4")
        self.curve, self.allow_fallback = str(curve), bool(allow_fallback)
        self.data: MagCurve | None = None
        self._choice = None
        self._ratios: tuple[np.ndarray, np.ndarray] | None = None
        self._split: int | None = None  # high-noise steps of this run (two experts), else None
        self._rule = "single"

    def describe(self) -> str:
        name = self.data.name if self.data else self.curve
        return (f"MagCache(threshold {self.threshold:g}, K {self.K}, retention {self.retention_ratio:g}, "
                f"curve {name})")

    def _setup(self, experts) -> None:
        self._choice = choose_for_model(experts, self.curve, published_curves(), load_curves, self.allow_fallback,
                                        MAGCACHE_NEAREST, "MagCache curves", ADVICE)
        self.data, self._ratios, self._split, self._rule = None, None, None, "single"
        if experts is not None and experts.is_moe:
            self._split = sum(1 for t in self.timesteps if t >= experts.boundary * 1000)
            task = experts.variant.task if experts.variant else "t2v"
            self._rule = "moe_i2v" if task == "i2v" else "moe_t2v"

    def _on_first_call(self, model, x, t, y) -> None:
        self.data = self._choice.table[self._choice.resolve(*input_facts(model, x, t, y))]
        self._ratios = run_ratios(self.data, len(self.timesteps), self._split)
        self._report.policy = self.describe()

    def _on_expert_switch(self, step: int, expert: str) -> None:
        """The loop may switch at another step than ``t >= boundary`` predicts (a manual switch step)."""
        if self._split is not None and expert == "low" and step != self._split:
            log.info("MagCache: the low-noise expert starts at step %d, not %d as the boundary predicts; "
                     "re-mapping the curve", step, self._split)
            self._split = step
            self._ratios = run_ratios(self.data, len(self.timesteps), self._split)

    def _new_state(self) -> MagState:
        return MagState()

    def _decide(self, state, call: Call, st: MagState) -> bool:
        if call.first_in_expert or self.retained(call.index):
            return True
        st.ratio *= float(self._ratios[0 if call.branch == "cond" else 1][call.step])
        st.skipped += 1
        st.error += abs(1.0 - st.ratio)
        return not (st.error < self.threshold and st.skipped <= self.K)

    def _refreshed(self, st: MagState) -> None:
        st.ratio, st.skipped, st.error = 1.0, 0, 0.0

    def retained(self, c: int) -> bool:
        """Whether call ``c`` (interleaved cond/uncond order) is in the always-computed part of the run."""
        calls, r = 2 * len(self.timesteps), self.retention_ratio
        if self._rule == "single":
            return c < int(calls * r)
        split = 2 * self._split
        if self._rule == "moe_i2v":
            return c < int(split + (calls - split) * r)
        return c < int(split * r) or split <= c <= (calls - split) * r + split


def run_ratios(curve: MagCurve, steps: int, split: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The (cond, uncond) ratios for a run of ``steps`` steps, ``split`` of them on the high-noise expert."""
    cal_split = calibration_switch_step(curve)
    if split is None or cal_split is None:
        return nearest_interp(curve.cond, steps), nearest_interp(curve.uncond, steps)

    def two_parts(values):
        return np.concatenate([nearest_interp(values[:cal_split], split),
                               nearest_interp(values[cal_split:], steps - split)])

    return two_parts(curve.cond), two_parts(curve.uncond)


def calibration_switch_step(curve: MagCurve) -> int | None:
    """High-noise steps in the run a two-expert curve was calibrated on, None for one-model curves.

    Our calibration files record it; for the published curves it is derived: the authors calibrate with the variant's official shift and step count, on their ``get_timesteps`` schedule:
    sigmas linspace(1, 0.01, steps + 1)[:-1], shifted, as float32, timesteps = int(sigma · 1000).
    """
    if curve.switch_step is not None:
        return curve.switch_step
    variant = VARIANTS.get(curve.variant)
    if variant is None or not variant.moe:
        return None
    sigmas = np.linspace(1.0, 0.01, curve.steps + 1)[:-1]
    sigmas = (variant.shift * sigmas / (1 + (variant.shift - 1) * sigmas)).astype(np.float32)
    timesteps = (sigmas * 1000).astype(np.int64)
    return int((timesteps >= 1000 * variant.boundary).sum())

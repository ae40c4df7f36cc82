"""Calibrate TeaCache coefficients and a MagCache curve for a model from normal (uncached) runs.

A ``CalibrationRecorder`` is a step cache that computes every call and records, per CFG branch and step, how much
the signals (``e``, ``e0``) and the blocks' residual changed since the previous step. TeaCache's polynomial is then
fitted the way its authors did: ``numpy.polyfit(rel_L1(signal change), rel_L1(residual change), 4)``, over every
pair of consecutive steps of one expert (both branches, all runs). The MagCache curve is the mean over tokens of
``|residual| / |previous residual|`` per step and branch, averaged over runs (the authors' calibration).

The result is one JSON file with a ``coefficients`` table (TeaCache) and a ``curves`` table (MagCache), so either
policy can load it. From Python: ``calibrate(experts, run)`` with ``run(step_cache)`` doing one normal sampling run
(e.g. ``lambda c: wan.sampling.sample(..., step_cache=c)``); from a shell: ``python -m wan.cache.calibrate``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import InputError
from .base import BranchState, Call, StepCache
from .teacache import relative_l1

log = logging.getLogger("wan_experts")
POLY_ORDER = 4


@dataclass
class StepChange:
    """How one branch's call differed from the same branch's previous call (None where there was none)."""

    step: int
    branch: str
    expert: str
    e_change: float | None
    e0_change: float | None
    residual_change: float | None  # relative L1 of the residual, same expert only
    magnitude_ratio: float | None  # mean over tokens of |residual| / |previous residual| (also across a switch)


@dataclass
class RecState(BranchState):
    pending: tuple | None = None


class CalibrationRecorder(StepCache):
    """Computes every call of every run and records the step-to-step changes TeaCache and MagCache rely on."""

    name = "calibration"

    def __init__(self):
        super().__init__()
        self.runs: list[list[StepChange]] = []
        self.run_steps: list[int] = []
        self.switch_steps: list[int | None] = []
        self.variant: str | None = None
        self._last: dict[str, tuple] = {}

    def _setup(self, experts) -> None:
        self.variant = experts.variant.id if experts is not None and experts.variant else self.variant
        self.runs.append([])
        self.run_steps.append(len(self.timesteps))
        self.switch_steps.append(None)
        self._last = {}

    def _on_expert_switch(self, step: int, expert: str) -> None:
        self.switch_steps[-1] = step

    def _new_state(self) -> RecState:
        return RecState()

    def _decide(self, state, call: Call, st: RecState) -> bool:
        st.pending = (call.step, call.branch, call.expert, state.e[call.rows], state.e0[call.rows])
        return True

    def _refreshed(self, st: RecState) -> None:
        step, branch, expert, e, e0 = st.pending
        residual = st.residual
        last = self._last.get(branch)
        same = last is not None and last[0] == expert
        change = StepChange(
            step, branch, expert,
            e_change=relative_l1(e, last[1]) if same else None,
            e0_change=relative_l1(e0, last[2]) if same else None,
            residual_change=relative_l1(residual, last[3]) if same else None,
            magnitude_ratio=(residual.norm(dim=-1) / last[3].norm(dim=-1)).mean().item() if last else None,
        )
        self.runs[-1].append(change)
        self._last[branch] = (expert, e, e0, residual)

    def result(self, name: str | None = None) -> "Calibration":
        if not self.runs or not any(self.runs):
            raise InputError("calibration recorded no model calls; run at least one sampling run through it")
        if len(set(self.run_steps)) != 1:
            raise InputError(f"calibration runs must all have the same step count; got {sorted(set(self.run_steps))}")
        switches = {s for s in self.switch_steps}
        if len(switches) != 1:
            raise InputError(f"calibration runs switched experts at different steps: {sorted(map(str, switches))}")
        changes = [c for run in self.runs for c in run]
        return Calibration(name or self.variant or "custom", self.variant, self.run_steps[0], switches.pop(),
                           len(self.runs), changes)


@dataclass
class Calibration:
    name: str
    variant: str | None
    steps: int
    switch_step: int | None
    runs: int
    changes: list[StepChange] = field(repr=False)

    def teacache_coefficients(self) -> dict[str, list[float]]:
        out = {}
        for mode, attr in (("e", "e_change"), ("e0", "e0_change")):
            pairs = [(getattr(c, attr), c.residual_change) for c in self.changes if c.residual_change is not None]
            if len(pairs) <= POLY_ORDER:
                raise InputError(f"calibration has {len(pairs)} step pairs; a degree-{POLY_ORDER} fit needs more "
                                 f"(use more steps or runs)")
            x, y = np.array(pairs, dtype=np.float64).T
            out[mode] = [float(c) for c in np.polyfit(x, y, POLY_ORDER)]
        return out

    def magcache_ratios(self) -> list[float]:
        """Interleaved cond/uncond ratios from step 1, averaged over runs (1.0 where a branch never ran)."""
        out = []
        for step in range(1, self.steps):
            for branch in ("cond", "uncond"):
                values = [c.magnitude_ratio for c in self.changes
                          if c.step == step and c.branch == branch and c.magnitude_ratio is not None]
                out.append(round(float(np.mean(values)), 5) if values else 1.0)
        return out

    def to_json(self) -> dict:
        curve = {"steps": self.steps, "ratios": self.magcache_ratios()}
        if self.switch_step is not None:
            curve["switch_step"] = self.switch_step
        return {
            "_about": (f"Calibrated with wan.cache.calibrate on {self.runs} run(s) of {self.steps} steps "
                       f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC). TeaCache: numpy.polyfit(rel-L1 of the "
                       f"signal change, rel-L1 of the residual change, {POLY_ORDER}), highest power first. "
                       f"MagCache: mean token-wise residual magnitude ratio per call, cond/uncond interleaved."),
            "variant": self.variant,
            "coefficients": {self.name: self.teacache_coefficients()},
            "curves": {self.name: curve},
        }


def calibrate(experts, run: Callable[[StepCache], object], runs: int = 1, name: str | None = None) -> Calibration:
    """Record ``runs`` normal sampling runs (``run(step_cache)`` does one) and fit the step-cache data."""
    recorder = CalibrationRecorder()
    recorder.variant = experts.variant.id if experts.variant else None
    for _ in range(int(runs)):
        run(recorder)
    return recorder.result(name)


def write_calibration(calibration: Calibration, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration.to_json(), indent=1))
    log.info("Wrote step-cache calibration '%s' (%s, %d steps) to %s", calibration.name, calibration.variant,
             calibration.steps, path)
    return path


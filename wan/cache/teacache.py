"""TeaCache for Wan (after TeaCache4Wan2.1, ali-vilab/TeaCache).

The signal is the timestep embedding: ``e`` (mode "e") or its projection ``e0`` (mode "e0", the authors'
"ret_steps" variant). Per CFG branch, each call adds ``poly(rel_L1(signal, previous signal))`` to an accumulator;
while the sum stays below the threshold the blocks are skipped and the branch's cached residual is reused, else
they are computed and the sum restarts at 0. The previous signal is updated on every call, skipped or not.

Steps outside ``[start_step, end_step)`` are always computed. Defaults follow the authors: mode "e" computes the
first and the last step (start 1, end steps − 1); mode "e0" computes the first five (start 5, end steps).
A threshold of 0 turns skipping off (the published polynomials can be negative for tiny changes, so the bare
rule "sum < 0" could still skip).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..checks import whole_number
from ..errors import InputError
from .base import BranchState, Call, StepCache, check_threshold
from .select import choose_for_model, input_facts
from .tables import TEACACHE_MODES, TEACACHE_NEAREST, CoefficientSet, load_coefficients, published_coefficients

MAX_THRESHOLD = 1.0
ADVICE = ("calibrate a set for this model with `python -m wan.cache.calibrate` and pass its JSON file, "
          "or use MagCache")


@dataclass
class TeaState(BranchState):
    accumulated: float = 0.0
    previous: torch.Tensor | None = None


def relative_l1(current: torch.Tensor, previous: torch.Tensor, mean=torch.mean) -> float:
    """mean|current - previous| / mean|previous|; ``mean`` averages over the whole sequence (``DiTState.token_mean``
    when each rank holds a slice of the tokens, so that every rank makes the same decision)."""
    return (mean((current - previous).abs()) / mean(previous.abs())).item()


class TeaCache(StepCache):
    name = "TeaCache"

    def __init__(self, threshold: float, mode: str = "e", start_step: int | None = None,
                 end_step: int | None = None, coefficients: str = "auto", allow_fallback: bool = False):
        super().__init__()
        self.threshold = check_threshold(threshold, "TeaCache", MAX_THRESHOLD)
        if mode not in TEACACHE_MODES:
            raise InputError(f"TeaCache mode '{mode}' is unknown; use 'e' (time embedding) or 'e0' "
                             f"(time projection, first 5 steps always computed)")
        start_step, end_step = (None if v is None else whole_number(v, f"TeaCache {name}", 0, hint="None: the mode's "
                                                                                                      "default")
                                for name, v in (("start_step", start_step), ("end_step", end_step)))
        self.mode, self.start_step, self.end_step = mode, start_step, end_step
        self.coefficients, self.allow_fallback = str(coefficients), bool(allow_fallback)
        self.set: CoefficientSet | None = None
        self._choice = None
        self._poly = None
        self._window = (0, 0)

    def describe(self) -> str:
        name = self.set.name if self.set else self.coefficients
        return (f"TeaCache(mode {self.mode}, threshold {self.threshold:g}, coefficients {name}, "
                f"steps {self._window[0]}..{self._window[1] - 1} may skip)")

    def _setup(self, experts) -> None:
        self._choice = choose_for_model(experts, self.coefficients, published_coefficients(), load_coefficients,
                                        self.allow_fallback, TEACACHE_NEAREST, "TeaCache coefficients", ADVICE)
        self.set, self._poly = None, None
        n = len(self.timesteps)
        default_start, default_end = (1, n - 1) if self.mode == "e" else (5, n)
        start = default_start if self.start_step is None else int(self.start_step)
        end = default_end if self.end_step is None else min(int(self.end_step), n)
        user_window = self.start_step is not None or self.end_step is not None
        if end <= start and self.threshold > 0 and user_window:  # a short run with the defaults just computes all
            raise InputError(f"TeaCache: end_step {end} must be after start_step {start} for this {n}-step run "
                             f"(steps before start_step and from end_step on are always computed)")
        self._window = (start, end)

    def _on_first_call(self, model, x, t, y) -> None:
        key = self._choice.resolve(*input_facts(model, x, t, y))
        self.set = self._choice.table[key]
        self._poly = np.poly1d(self.set.for_mode(self.mode))
        self._report.policy = self.describe()

    def _new_state(self) -> TeaState:
        return TeaState()

    def _decide(self, state, call: Call, st: TeaState) -> bool:
        signal = (state.e if self.mode == "e" else state.e0)[call.rows]
        start, end = self._window
        if st.previous is None or not start <= call.step < end or self.threshold == 0:
            compute = True
        else:
            st.accumulated += float(self._poly(relative_l1(signal, st.previous, state.token_mean)))
            compute = st.accumulated >= self.threshold
        st.previous = signal
        return compute

    def _refreshed(self, st: TeaState) -> None:
        st.accumulated = 0.0


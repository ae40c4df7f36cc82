"""The step-cache protocol the denoise loop talks to, and the machinery TeaCache and MagCache share.

The loop calls ``begin(timesteps, experts)`` once, then ``forward(model, x, t, context, ..., step, branch, expert)``
instead of ``model(x, t, context, ...)`` for every model call, then ``end()`` for a report.

A cache never changes the model's numerics: when it computes, ``forward`` returns exactly
``model.finish(model.run_blocks(state), state)``; when it reuses, it adds the residual the blocks produced the last
time this CFG branch was computed (blocks output − blocks input) to the tokens and still runs the head.

``branch`` is "cond", "uncond", or "cond+uncond" for CFG batched in one call (the batch is the cond samples
followed by the uncond samples, in equal halves). Decisions are always made per branch, exactly as for separate
calls; in a batched call only the rows of the branches that must be computed go through the blocks.

State is kept per branch and never crosses a Wan 2.2 expert switch: the first call of a branch in a new expert
always computes.

A run is what one ``begin`` covers, and step-indexed data (MagCache curves, TeaCache windows) is laid over its
steps. A sampler that runs only part of a schedule (chained samplers) therefore maps the whole curve onto its part;
use one sampler over the whole schedule (both experts) to follow the published algorithms.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..checks import finite_number
from ..errors import InputError

BRANCHES = ("cond", "uncond")
BATCHED = "cond+uncond"
EXPERTS = ("single", "high", "low")


@dataclass
class BranchState:
    """What a policy remembers for one CFG branch; policies subclass it with their accumulators."""

    expert: str | None = None
    residual: torch.Tensor | None = None


@dataclass
class Call:
    """One branch of one model call, as the policy sees it when deciding."""

    step: int
    branch: str
    expert: str
    rows: slice  # the rows of this branch in the call's batch
    first_in_expert: bool  # no residual of this expert yet: must compute

    @property
    def index(self) -> int:
        """Position of this call in the published codes' interleaved order (cond, uncond, cond, ...)."""
        return 2 * self.step + BRANCHES.index(self.branch)


@dataclass
class CacheReport:
    """What a run did: per branch, the steps whose blocks were computed and the steps that reused a residual."""

    policy: str
    steps: int
    computed: dict[str, list[int]] = field(default_factory=dict)
    reused: dict[str, list[int]] = field(default_factory=dict)

    @property
    def model_calls(self) -> int:
        """Branch evaluations asked for (a batched cond+uncond call counts two)."""
        return self.computed_calls + sum(len(v) for v in self.reused.values())

    @property
    def computed_calls(self) -> int:
        return sum(len(v) for v in self.computed.values())

    @property
    def reused_fraction(self) -> float:
        return 1.0 - self.computed_calls / self.model_calls if self.model_calls else 0.0

    @property
    def speedup(self) -> float:
        """Estimated speed-up of the blocks: model calls / computed calls (the head and embeddings still run)."""
        return self.model_calls / self.computed_calls if self.computed_calls else 1.0

    def summary(self) -> str:
        lines = [f"{self.policy}: {self.computed_calls}/{self.model_calls} branch calls computed, "
                 f"{100 * self.reused_fraction:.0f}% reused, estimated speed-up {self.speedup:.2f}x"]
        for branch in sorted(set(self.computed) | set(self.reused)):
            lines.append(f"  {branch}: reused steps {self.reused.get(branch, [])}")
        return "\n".join(lines)


class StepCache:
    """Base class of the step-cache policies. Subclasses implement ``_new_state`` and ``_decide``."""

    name = "StepCache"

    def __init__(self):
        self.timesteps: list[float] = []
        self.experts = None
        self._states: dict[str, BranchState] = {}
        self._started = False
        self._expert: str | None = None
        self._report = CacheReport(self.name, 0)

    # -- the protocol ------------------------------------------------------------------------------------
    def begin(self, timesteps, experts) -> None:
        """Start a run: forget everything from the last one and check this policy fits ``experts``."""
        self.timesteps = [float(t) for t in timesteps]
        if not self.timesteps:
            raise InputError("step cache: the run has no timesteps; pass one timestep (0..1000) per step")
        self.experts = experts
        self._states = {}
        self._started = False
        self._expert = None
        self._setup(experts)
        self._report = CacheReport(self.describe(), len(self.timesteps))

    def forward(self, model, x, t, context, clip_fea=None, y=None, step: int = 0, branch: str = "cond",
                expert: str = "single", **extra) -> torch.Tensor:
        """Run ``model`` on one call of the loop, computing its blocks or reusing a cached residual. ``extra``: the
        model's own inputs (the VACE context), passed to ``prepare``; the cached residual covers what the blocks do
        with them (VACE hints included)."""
        branches = self._check_call(model, x, step, branch, expert)
        if not self._started:
            self._on_first_call(model, x, t, y)
            self._started = True
        if expert != self._expert:
            if self._expert is not None:
                self._on_expert_switch(step, expert)
            self._expert = expert
        state = model.prepare(x, t, context, clip_fea, y, **extra)
        calls = [self._call(step, b, expert, rows) for b, rows in branches]
        compute = [self._decide(state, c, self._states[c.branch]) or c.first_in_expert for c in calls]
        tokens = self._run(model, state, calls, compute)
        for c, computed in zip(calls, compute):
            (self._report.computed if computed else self._report.reused).setdefault(c.branch, []).append(step)
        return model.finish(tokens, state)

    def end(self) -> CacheReport:
        """The report of the run that just finished (the caller shows it: with context windows one report holds
        every window's copy)."""
        report = self._report
        self._states = {}
        return report

    # -- hooks for the policies --------------------------------------------------------------------------
    def describe(self) -> str:
        return self.name

    def _setup(self, experts) -> None:
        """Validate against the model and precompute per-run tables (called by ``begin``)."""

    def _on_first_call(self, model, x, t, y) -> None:
        """Choices that need the inputs (e.g. the 480p or 720p set by output area), made once per run."""

    def _on_expert_switch(self, step: int, expert: str) -> None:
        """The run moved to another expert at ``step`` (branch states restart on their own)."""

    def _new_state(self) -> BranchState:
        return BranchState()

    def _decide(self, state, call: Call, branch_state: BranchState) -> bool:
        """True to compute the blocks for this branch, False to reuse its residual."""
        return True

    def _refreshed(self, branch_state: BranchState) -> None:
        """Called after a branch's residual was recomputed; policies reset their accumulators here."""

    # -- internals ---------------------------------------------------------------------------------------
    def _call(self, step: int, branch: str, expert: str, rows: slice) -> Call:
        st = self._states.get(branch)
        if st is None or st.expert != expert:  # first call of this branch, or an expert switch: start afresh
            st = self._states[branch] = self._new_state()
            st.expert = expert
        return Call(step, branch, expert, rows, first_in_expert=st.residual is None)

    def _run(self, model, state, calls: list[Call], compute: list[bool]) -> torch.Tensor:
        todo = [c for c, flag in zip(calls, compute) if flag]
        if len(todo) == len(calls):
            out = model.run_blocks(state)
        else:
            out = state.x.clone()
            for c in calls:
                out[c.rows] = state.x[c.rows] + self._states[c.branch].residual
            if todo:
                rows = _rows_of(todo)
                out[rows] = model.run_blocks(_select_rows(state, rows))
        for c in todo:
            st = self._states[c.branch]
            st.residual = out[c.rows] - state.x[c.rows]
            self._refreshed(st)
        return out

    def _check_call(self, model, x, step, branch, expert) -> list[tuple[str, slice]]:
        if not self.timesteps:
            raise InputError("step cache: call begin(timesteps, experts) before the first forward")
        if not all(hasattr(model, name) for name in ("prepare", "run_blocks", "finish")):
            raise InputError(f"step cache: the model ({type(model).__name__}) is not a Wan Experts DiT; step caches "
                             f"need its prepare / run_blocks / finish stages")
        if not 0 <= step < len(self.timesteps):
            raise InputError(f"step cache: step {step} is outside this run of {len(self.timesteps)} steps")
        if expert not in EXPERTS:
            raise InputError(f"step cache: expert '{expert}' is unknown; use one of {EXPERTS}")
        if branch in BRANCHES:
            return [(branch, slice(None))]
        if branch != BATCHED:
            raise InputError(f"step cache: branch '{branch}' is unknown; use 'cond', 'uncond' or '{BATCHED}' "
                             f"(cond rows first, then uncond rows, in one batch)")
        b = x.shape[0]
        if b % 2:
            raise InputError(f"step cache: a '{BATCHED}' call needs an even batch (cond rows, then uncond rows); "
                             f"got batch {b}")
        return [("cond", slice(0, b // 2)), ("uncond", slice(b // 2, b))]


def check_threshold(value, what: str, maximum: float) -> float:
    return finite_number(value, f"{what} threshold", 0.0, maximum,
                         hint="0 = no skipping; higher skips more steps and costs quality")


def _rows_of(calls: list[Call]) -> slice:
    """The rows of the branches to compute; in a two-branch batch a single branch is one contiguous half."""
    if len(calls) != 1:
        raise AssertionError("only a single branch of a batch can be computed alone")
    return calls[0].rows


def _select_rows(state, rows: slice):
    """The DiT state of some rows of the batch (per-sample tensors sliced, shared tables kept)."""
    return state.rows(rows)

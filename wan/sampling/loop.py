"""The denoise loop: classifier-free guidance with one scale per expert, the expert chosen per step by
``t >= boundary * 1000`` (or a manual switch step), partial ranges for chained samplers, ``denoise`` < 1, an
optional step cache and a per-step callback. Latents here are in the DiT's normalised space.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..budget.check import check_sampling
from ..checks import finite_number, whole_number
from ..conditioning import ImageCond, TextEmbeds
from ..errors import InputError
from ..dit.compile import compiled_models
from ..experts import ExpertSet, as_expert_set
from ..finite import check_input, check_output
from .interrupt import interruptible
from .inputs import ModelInputs
from .placement import ExpertPlacement
from .schedules import Schedule, make_schedule, partial_schedule
from .solvers import SOLVERS, make_solver
from .validate import check_sampling_inputs
from .vace import check_vace_run
from .windowed import plan_windows

log = logging.getLogger("wan_experts")

MAX_STEPS, MAX_SHIFT, MAX_CFG = 1000, 100.0, 100.0


@dataclass
class SamplerSettings:
    steps: int
    shift: float
    solver: str = "unipc"
    cfg_high: float = 5.0  # single model, or the high-noise expert
    cfg_low: float = 5.0  # the low-noise expert
    boundary: float | None = None  # None: the ExpertSet's own
    switch_step: int | None = None  # schedule step where the low-noise expert takes over (overrides boundary)
    start_step: int = 0
    end_step: int | None = None  # None: run to the end
    add_noise: bool = True
    return_with_leftover_noise: bool = False
    denoise: float = 1.0
    schedule: str = "official"  # or "diffusers" (the sigma grid of diffusers' flow scheduler for the solver)
    keep_both_resident: bool = False
    context: Any = None  # ContextWindows (sampling/windows.py): denoise a long video in overlapping windows


@dataclass
class SolverState:
    """Solver history after a partial run, so that the next sampler in a chain continues it exactly."""

    solver: str
    sigmas: torch.Tensor
    next_step: int
    data: dict = field(default_factory=dict)

    def to(self, device) -> "SolverState":
        return SolverState(self.solver, self.sigmas, self.next_step, _move(self.data, device))


@dataclass
class StepInfo:
    index: int  # 0-based step of this run
    total: int  # steps in this run
    schedule_step: int
    timestep: float
    sigma: float
    expert: str
    x: torch.Tensor  # latents after the step
    x0: torch.Tensor  # the model's estimate of the clean latents at this step (for previews)


@dataclass
class SampleResult:
    latents: torch.Tensor
    experts: list[str]  # expert of each step run
    schedule: Schedule
    cache_report: Any = None
    solver_state: SolverState | None = None


@torch.no_grad()
def sample(experts: ExpertSet, latents: torch.Tensor, text: TextEmbeds, settings: SamplerSettings, *,
           noise: torch.Tensor | None = None, image_cond: ImageCond | None = None, step_cache=None,
           callback: Callable[[StepInfo], None] | None = None, device=None, offload_device=None,
           solver_state: SolverState | None = None, cfg_parallel=None,
           interrupt: Callable[[], None] | None = None, s2v=None, vace=None, animate=None) -> SampleResult:
    """Denoise ``latents`` [B, C, T, h, w] (normalised) with ``experts`` (an ExpertSet, or one WanDiT). With
    ``add_noise`` and start 0 the run starts from ``noise`` alone, like the official scripts; a later start mixes
    noise in at that step's sigma.

    ``step_cache`` (optional) gets ``begin(timesteps=[...], experts=...)``, then ``forward(model, x, t, context,
    clip_fea=, y=, step=, branch="cond"|"uncond", expert=)`` for every model call (``step`` indexes the timesteps
    given to ``begin``), and ``end()``, whose report is returned in the result.

    ``cfg_parallel`` (a ``wan.distributed.CfgParallel``, optional): this rank computes only its guidance branch and
    gets the other one from its partner rank.

    ``interrupt`` (optional) is called before every transformer block and may raise to cancel the run. Before the
    first step the run is checked against the memory budget; after the first step and at the end the latents must
    be finite (``NonFiniteError`` names the likely cause).

    ``s2v`` (a ``wan.dit.s2v.S2VInputs``, S2V models): the clip's audio, reference, motion and pose conditioning;
    the unconditional branch gets it with the audio zeroed (official). ``animate`` (a
    ``wan.dit.animate.AnimateInputs``, Animate models): the clip's pose latents and face crops; the unconditional
    branch gets black face crops (official).

    ``vace`` (a ``wan.dit.vace.VaceInputs``, VACE models): the VACE context, the same for both branches (official);
    ``latents`` then hold its reference frames in front (``wan.sampling.vace.drop_reference_frames`` cuts them from
    the result). A VACE model without it runs as text-to-video."""
    s = settings
    experts = as_expert_set(experts)
    device = torch.device(device) if device is not None else getattr(latents, "device", torch.device("cpu"))
    run = _plan_run(experts, latents, text, s, noise, image_cond, device, vace)
    run.cfg_parallel = cfg_parallel
    if s2v is not None:
        if run.windows is not None:
            raise InputError("context windows do not apply to speech-to-video: it already makes long videos clip by "
                             "clip; disconnect Wan Context Windows")
        run.inputs.branch_kwargs = {"cond": {"s2v": s2v}, "uncond": {"s2v": s2v.without_audio()}}
    if animate is not None:
        if run.windows is not None:
            raise InputError("context windows do not apply to character animation: it already makes long videos "
                             "clip by clip; disconnect Wan Context Windows")
        run.inputs.branch_kwargs = {"cond": {"animate": animate}, "uncond": {"animate": animate.unconditional()}}
    check_sampling(run.experts, latents.shape, device, step_cache is not None, s.keep_both_resident, s.context)
    if run.windows is not None:
        noise, step_cache = run.windows.prepare(noise, step_cache)
    _restore(run.solver, solver_state, s, run.schedule, run.start, device, latents.shape)
    x = run.inputs.impose(_initial(latents, noise, run.schedule, run.start, s.add_noise, device))
    placement = ExpertPlacement(experts.models, device, offload_device or device, s.keep_both_resident)
    if step_cache is not None:
        step_cache.begin(timesteps=[run.schedule.timestep(i) for i in run.steps], experts=run.experts)
    try:
        with interruptible(experts.models, interrupt), compiled_models(experts.models, experts.compile, device):
            for n, i in enumerate(run.steps):
                x = _step(run, placement, n, i, x, s, step_cache, callback)
                if n == 0:
                    _check_finite(run, x, "the first sampling step")
    finally:
        placement.release()
    _check_finite(run, x, "sampling")
    report = step_cache.end() if step_cache is not None else None
    state = None
    if run.end < run.schedule.steps and not run.full_denoise:
        state = SolverState(s.solver, run.schedule.sigmas, run.end, run.solver.state())
    return SampleResult(x, run.plan, run.schedule, report, state)


@dataclass
class _Run:
    schedule: Schedule
    start: int
    end: int
    experts: ExpertSet  # with the run's boundary
    plan: list[str]
    inputs: ModelInputs
    solver: Any
    full_denoise: bool  # the last step returns the clean estimate (stopping early without leftover noise)
    windows: Any = None  # WindowedSampling, with context windows
    cfg_parallel: Any = None

    @property
    def steps(self) -> range:
        return range(self.start, self.end)


def _plan_run(experts, latents, text, s: SamplerSettings, noise, image_cond, device, vace=None) -> _Run:
    """Validate everything, then fix the schedule, the step range and the expert of each step."""
    _check_settings(s, experts)
    check_sampling_inputs(experts, latents, text, image_cond, needs_negative=_uses_cfg(s, experts))
    check_vace_run(experts, vace, latents)
    if s.add_noise and (not torch.is_tensor(noise) or noise.shape != latents.shape):
        raise InputError(f"add_noise needs noise of the latent's shape {tuple(latents.shape)}")
    check_input(noise if s.add_noise else None, "noise", "make it with wan.make_noise")
    schedule, first = partial_schedule(lambda n: make_schedule(s.solver, n, s.shift, s.schedule), s.steps, s.denoise)
    start, end = _step_range(s, schedule, first)
    if experts.is_moe and s.boundary is not None:
        experts = dataclasses.replace(experts, boundary=s.boundary)
    plan = expert_plan(experts, schedule, range(start, end), s.switch_step)
    inputs = ModelInputs.build(experts, text, image_cond, latents.shape, device)
    if vace is not None:
        inputs.vace = dataclasses.replace(vace, latents=vace.latents.to(device=device, dtype=torch.float32))
    full_denoise = end < schedule.steps and not s.return_with_leftover_noise
    windows = plan_windows(s.context, experts, latents.shape, inputs, device)
    return _Run(schedule, start, end, experts, plan, inputs, make_solver(s.solver, schedule), full_denoise, windows)


def _step(run: _Run, placement: ExpertPlacement, n: int, i: int, x, s: SamplerSettings, step_cache, callback):
    """One step: the expert of the step on the device, guided velocity, solver update (image frame re-imposed)."""
    expert = run.plan[n]
    model = placement.activate(run.experts.low if expert == "low" else run.experts.high)
    t = run.schedule.timestep(i)

    def guide(x_, inputs: ModelInputs, cache):
        return _guided(model, x_, inputs.timesteps(t), inputs, _cfg(s, expert), cache, n, expert, run.cfg_parallel)

    v = guide(x, run.inputs, step_cache) if run.windows is None else run.windows.velocity(guide, x, i, step_cache)
    v = run.inputs.hold(v, x, run.schedule.sigma(i))
    x0 = run.inputs.impose(run.solver.x0(i, v, x))
    x = x0 if run.full_denoise and i == run.end - 1 else run.inputs.impose(run.solver.step(i, v, x))
    if callback is not None:
        callback(StepInfo(n, run.end - run.start, i, t, run.schedule.sigma(i), expert, x, x0))
    return x


def _check_finite(run: _Run, x: torch.Tensor, stage: str) -> None:
    model = run.experts.high
    check_output(x, stage, run.experts.models, model.compute_dtype, getattr(model, "attention", None))


def expert_plan(experts: ExpertSet, schedule: Schedule, steps: range, switch_step: int | None = None) -> list[str]:
    """"single", or "high"/"low" per step: by ``t >= boundary * 1000`` (ExpertSet) unless a switch step is set."""
    if not experts.is_moe:
        return ["single"] * len(steps)
    if switch_step is not None:
        return ["high" if i < switch_step else "low" for i in steps]
    return [experts.expert_for(schedule.timestep(i))[0] for i in steps]


def _guided(model, x, t, inputs: ModelInputs, scale: float, step_cache, step: int, expert: str,
            cfg_parallel=None) -> torch.Tensor:
    """v = v_u + g (v_c - v_u): the conditional forward first, then the unconditional one (skipped at g = 1);
    with ``cfg_parallel`` each rank runs one of them."""
    def forward(context, branch):
        kwargs = inputs.model_kwargs(branch)
        if step_cache is None:
            return model(x, t, context, **kwargs)
        return step_cache.forward(model, x, t, context, step=step, branch=branch, expert=expert, **kwargs)

    if scale != 1.0 and cfg_parallel is not None:
        return cfg_parallel.guided(forward, inputs.positive, inputs.negative, scale)
    v_cond = forward(inputs.positive, "cond")
    if scale == 1.0:
        return v_cond
    v_uncond = forward(inputs.negative, "uncond")
    return v_uncond + scale * (v_cond - v_uncond)


def _cfg(s: SamplerSettings, expert: str) -> float:
    return s.cfg_low if expert == "low" else s.cfg_high


def _uses_cfg(s: SamplerSettings, experts: ExpertSet) -> bool:
    return s.cfg_high != 1.0 or (experts.is_moe and s.cfg_low != 1.0)


def _step_range(s: SamplerSettings, schedule: Schedule, first: int) -> tuple[int, int]:
    start = first + s.start_step
    end = schedule.steps if s.end_step is None else min(schedule.steps, first + s.end_step)
    if start >= end:
        raise InputError(f"start step {s.start_step} must be before the end step "
                         f"{s.end_step if s.end_step is not None else s.steps} (of {s.steps} steps)")
    return start, end


def _initial(latents, noise, schedule: Schedule, start: int, add_noise: bool, device) -> torch.Tensor:
    latents = latents.to(device=device, dtype=torch.float32)
    if not add_noise:
        return latents
    noise = noise.to(device=device, dtype=torch.float32)
    if start == 0:
        return noise
    sigma = schedule.sigma(start)
    return sigma * noise + (1.0 - sigma) * latents


def _move(data, device):
    if torch.is_tensor(data):
        return data.to(device)
    if isinstance(data, dict):
        return {k: _move(v, device) for k, v in data.items()}
    if isinstance(data, list):
        return [_move(v, device) for v in data]
    return data


def _tensors(data) -> list[torch.Tensor]:
    if torch.is_tensor(data):
        return [data]
    values = data.values() if isinstance(data, dict) else data if isinstance(data, list) else []
    return [t for v in values for t in _tensors(v)]


def _restore(solver, state: SolverState | None, s: SamplerSettings, schedule: Schedule, start: int, device,
             shape) -> None:
    if state is None or s.add_noise:
        return
    same_run = state.solver == s.solver and state.next_step == start and torch.equal(state.sigmas, schedule.sigmas)
    if same_run and all(t.shape == shape for t in _tensors(state.data)):
        solver.load_state(_move(state.data, device))
    else:
        log.info("Wan sampler: the incoming latent was made with another schedule or solver; starting the solver "
                 "history afresh at step %d", start)


def _check_settings(s: SamplerSettings, experts: ExpertSet) -> None:
    if not isinstance(s, SamplerSettings):
        raise InputError(f"settings must be a SamplerSettings; got {type(s).__name__}")
    if s.solver not in SOLVERS:
        raise InputError(f"solver '{s.solver}' is unknown; use one of {SOLVERS}")
    _check_numbers(s)
    if s.start_step < 0 or (s.end_step is not None and s.end_step < 0):
        raise InputError(f"start step ({s.start_step}) and end step ({s.end_step}) cannot be negative")
    if (s.boundary is not None or s.switch_step is not None) and not experts.is_moe:
        log.info("Wan sampler: boundary / switch step apply to a Wan 2.2 expert pair only; ignored for one model")


def _check_numbers(s: SamplerSettings) -> None:
    """Every number finite and in range (a NaN guidance or shift would otherwise give a black video)."""
    whole_number(s.steps, "steps", 1, MAX_STEPS)
    finite_number(s.shift, "shift", 0.0, MAX_SHIFT, low_open=True, hint="the official values are 3 to 17")
    for name in ("cfg_high", "cfg_low"):
        finite_number(getattr(s, name), name, 0.0, MAX_CFG, hint="1 turns guidance off; the official values are 3-5")
    if s.boundary is not None:
        finite_number(s.boundary, "boundary", 0.0, 1.0, low_open=True, high_open=True,
                      hint="a fraction of the 1000 timesteps (0.875 T2V, 0.9 I2V)")
    finite_number(s.denoise, "denoise", 0.0, 1.0, low_open=True, hint="1 for text/image-to-video")
    for name in ("start_step", "end_step", "switch_step"):
        if getattr(s, name) is not None:
            whole_number(getattr(s, name), name)

"""Flow-matching noise schedules of the official Wan code (and diffusers' variant), with the shift.

A ``Schedule`` holds the sigmas of the steps plus a final 0 (float32, like the official schedulers) and the
timesteps the model sees: ``int64(sigma * 1000)`` (truncated), exactly as the official code computes them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..checks import finite_number, whole_number
from ..errors import InputError

NUM_TRAIN_TIMESTEPS = 1000
SCHEDULES = ("official", "diffusers")
# The official UniPC scheduler starts from its training grid's largest sigma, float32(1 - 1/1000).
_UNIPC_SIGMA_MAX = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))
_DIFFUSERS_EPS = 1e-6


@dataclass(frozen=True)
class Schedule:
    sigmas: torch.Tensor  # float32 [N + 1], last entry 0
    timesteps: torch.Tensor  # int64 [N]

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])

    def sigma(self, i: int) -> float:
        return float(self.sigmas[i])

    def timestep(self, i: int) -> float:
        return float(self.timesteps[i])


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """Wan's time shift: sigma' = shift * sigma / (1 + (shift - 1) * sigma)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def unipc_sigmas(steps: int, shift: float) -> np.ndarray:
    """Official ``FlowUniPCMultistepScheduler.set_timesteps``: linspace(0.999, 0, N + 1)[:-1], shifted."""
    return shift_sigmas(np.linspace(_UNIPC_SIGMA_MAX, 0.0, steps + 1)[:-1], shift)


def dpm_sigmas(steps: int, shift: float) -> np.ndarray:
    """Official ``get_sampling_sigmas`` (DPM++): linspace(1, 0, N + 1)[:N], shifted."""
    return shift_sigmas(np.linspace(1.0, 0.0, steps + 1)[:steps], shift)


def diffusers_flow_sigmas(steps: int, shift: float) -> np.ndarray:
    """diffusers ``UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=shift)``: linspace(1, 1/1000, N + 1)
    [:-1], shifted, with a first sigma of exactly 1 lowered by 1e-6 (its guard against log(0))."""
    sigmas = shift_sigmas(np.linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, steps + 1)[:-1], shift)
    if abs(sigmas[0] - 1.0) < _DIFFUSERS_EPS:
        sigmas[0] -= _DIFFUSERS_EPS
    return sigmas


def diffusers_dpm_sigmas(steps: int, shift: float) -> np.ndarray:
    """diffusers ``DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=shift)``: 1 - linspace(1, 1/1000,
    N + 1), shifted, reversed, without its final 0 (the official UniPC grid, computed in diffusers' order)."""
    sigmas = 1.0 - np.linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, steps + 1)
    return np.flip(shift_sigmas(sigmas, shift))[:-1].copy()


def schedule_from_sigmas(sigmas: np.ndarray) -> Schedule:
    """Timesteps = int64(sigma * 1000) (truncation, from the float64 sigmas); sigmas stored as float32 + final 0."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    timesteps = torch.from_numpy(sigmas * NUM_TRAIN_TIMESTEPS).to(torch.int64)
    full = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
    return Schedule(full, timesteps)


def make_schedule(solver: str, steps: int, shift: float, kind: str = "official") -> Schedule:
    """The schedule the official generation scripts use with ``solver`` ("unipc": the UniPC grid; "dpm++" and
    "euler": the DPM++ grid starting at sigma 1). ``kind="diffusers"`` gives the grid of diffusers' flow scheduler
    for the solver (flow-UniPC; flow DPM-Solver++ for "dpm++")."""
    steps = whole_number(steps, "steps", 1)
    shift = finite_number(shift, "shift", 0.0, low_open=True, hint="shift must be positive")
    if kind == "diffusers":
        grid = diffusers_dpm_sigmas if solver == "dpm++" else diffusers_flow_sigmas
        return schedule_from_sigmas(grid(steps, shift))
    if kind != "official":
        raise InputError(f"schedule '{kind}' is unknown; use one of {SCHEDULES}")
    return schedule_from_sigmas(unipc_sigmas(steps, shift) if solver == "unipc" else dpm_sigmas(steps, shift))


def partial_schedule(schedule_for, steps: int, denoise: float) -> tuple[Schedule, int]:
    """For ``denoise`` < 1 (video-to-video): build the schedule of int(steps / denoise) steps and start at the
    step that leaves ``steps`` to run (as ComfyUI does). Returns (schedule, first step)."""
    denoise = finite_number(denoise, "denoise", 0.0, 1.0, low_open=True, hint="denoise must be in (0, 1]")
    if denoise >= 1.0:
        return schedule_for(steps), 0
    total = int(steps / denoise)
    return schedule_for(total), total - steps

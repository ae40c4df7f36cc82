"""Flow-matching ODE solvers over a ``Schedule``: Euler, DPM++ 2M (midpoint) and UniPC (bh2, order 2).

Each solver advances ``x`` at step ``i`` (sigma_i) to sigma_{i+1} from the velocity ``v`` the model predicts
(``x0 = x - sigma * v``). The multistep solvers keep a short history; ``state()`` / ``load_state()`` carry it
across chained samplers so that a run split into ranges equals one run. The update rules follow the official
``FlowDPMSolverMultistepScheduler`` and ``FlowUniPCMultistepScheduler`` (lower-order first and final steps).
"""
from __future__ import annotations

import math

import torch

from ..errors import InputError
from .schedules import Schedule

SOLVERS = ("unipc", "dpm++", "euler")


def log_snr(sigma: float) -> float:
    """lambda = log(alpha / sigma) with alpha = 1 - sigma; -inf at sigma 1, +inf at sigma 0."""
    if sigma <= 0.0:
        return math.inf
    if sigma >= 1.0:
        return -math.inf
    return math.log(1.0 - sigma) - math.log(sigma)


class Solver:
    """Base: ``step(i, v, x)`` returns x at sigma_{i+1}. Subclasses keep their history in plain attributes."""

    name = ""

    def __init__(self, schedule: Schedule):
        self.sigmas = [float(s) for s in schedule.sigmas]
        self.steps = schedule.steps

    def x0(self, i: int, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x - self.sigmas[i] * v

    def step(self, i: int, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


class Euler(Solver):
    name = "euler"

    def step(self, i, v, x):
        return x + (self.sigmas[i + 1] - self.sigmas[i]) * v


class DPMPP2M(Solver):
    """DPM-Solver++ 2M, midpoint, data prediction; first order on the first and the final step."""

    name = "dpm++"

    def __init__(self, schedule: Schedule):
        super().__init__(schedule)
        self.prev_x0: torch.Tensor | None = None

    def step(self, i, v, x):
        x = x.float()
        m0 = self.x0(i, v, x)
        s, t = self.sigmas[i], self.sigmas[i + 1]
        h = log_snr(t) - log_snr(s)
        c = (1.0 - t) * math.expm1(-h)  # alpha_t * (e^-h - 1)
        out = (t / s) * x - c * m0
        if self.prev_x0 is not None and i < self.steps - 1:
            r0 = (log_snr(s) - log_snr(self.sigmas[i - 1])) / h
            out = out - (0.5 * c / r0) * (m0 - self.prev_x0)
        self.prev_x0 = m0
        return out

    def state(self):
        return {"prev_x0": self.prev_x0}

    def load_state(self, state):
        self.prev_x0 = state["prev_x0"]


class UniPC(Solver):
    """UniPC with B(h) = e^h - 1 (bh2), predicting x0, order 2, lower order on the final step.

    At step i the corrector (UniC) first refines x with the new model output, then the predictor (UniP) steps.
    """

    name = "unipc"

    def __init__(self, schedule: Schedule):
        super().__init__(schedule)
        self.history: list[torch.Tensor] = []  # x0 estimates of the previous steps, newest last (at most 2)
        self.last_sample: torch.Tensor | None = None
        self.last_order = 0

    def step(self, i, v, x):
        m = self.x0(i, v, x)
        if self.last_sample is not None:
            x = self._correct(i, m, x)
        order = min(2, self.steps - i, len(self.history) + 1)
        self.history = (self.history + [m])[-2:]
        self.last_sample, self.last_order = x, order
        return self._predict(i, x, order)

    def _coefficients(self, s0: float, t: float, s1: float | None, order: int) -> tuple[float, float, list[float]]:
        """(h_phi_1, B_h, b) of the UniPC update from sigma s0 to t; s1 is the sigma before s0 (order 2)."""
        hh = -(log_snr(t) - log_snr(s0))
        h_phi_1 = math.expm1(hh)
        b_h = h_phi_1
        h_phi_k = h_phi_1 / hh - 1.0
        b, factorial = [], 1
        for k in range(1, order + 1):
            b.append(h_phi_k * factorial / b_h)
            factorial *= k + 1
            h_phi_k = h_phi_k / hh - 1.0 / factorial
        return h_phi_1, b_h, b

    def _rk(self, s0: float, t: float, s1: float) -> float:
        return (log_snr(s1) - log_snr(s0)) / (log_snr(t) - log_snr(s0))

    def _predict(self, i: int, x: torch.Tensor, order: int) -> torch.Tensor:
        s0, t = self.sigmas[i], self.sigmas[i + 1]
        m0 = self.history[-1]
        h_phi_1, b_h, _ = self._coefficients(s0, t, None, order)
        out = (t / s0) * x - (1.0 - t) * h_phi_1 * m0
        if order == 2:
            rk = self._rk(s0, t, self.sigmas[i - 1])
            out = out - (1.0 - t) * b_h * 0.5 / rk * (self.history[-2] - m0)
        return out

    def _correct(self, i: int, m_new: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """UniC: recompute the last step from ``last_sample`` with the model output at the new point."""
        s0, t, order = self.sigmas[i - 1], self.sigmas[i], self.last_order
        m0 = self.history[-1]
        h_phi_1, b_h, b = self._coefficients(s0, t, None, order)
        out = (t / s0) * self.last_sample - (1.0 - t) * h_phi_1 * m0
        if order == 1:
            return out - (1.0 - t) * b_h * 0.5 * (m_new - m0)
        rk = self._rk(s0, t, self.sigmas[i - 2])
        rho0 = (b[0] - b[1]) / (1.0 - rk)
        rho1 = b[0] - rho0
        return out - (1.0 - t) * b_h * ((rho0 / rk) * (self.history[-2] - m0) + rho1 * (m_new - m0))

    def state(self):
        return {"history": list(self.history), "last_sample": self.last_sample, "last_order": self.last_order}

    def load_state(self, state):
        self.history = list(state["history"])
        self.last_sample, self.last_order = state["last_sample"], state["last_order"]


def make_solver(name: str, schedule: Schedule) -> Solver:
    classes = {"unipc": UniPC, "dpm++": DPMPP2M, "euler": Euler}
    if name not in classes:
        raise InputError(f"solver '{name}' is unknown; use one of {SOLVERS}")
    return classes[name](schedule)

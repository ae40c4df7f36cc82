"""Schedules and solvers against the official Wan schedulers (``wan22`` ``utils/fm_solvers*.py``) and diffusers'
flow UniPC, driven by the same synthetic velocity field. Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
import pytest
import torch

from test_sampling_models import assert_close, official_scheduler
from wan.errors import InputError
from wan.sampling.schedules import make_schedule, partial_schedule
from wan.sampling.solvers import make_solver


def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    """A smooth, nonlinear stand-in for a model: depends on x and t like a denoiser would."""
    return torch.tanh(x) * (0.5 + t / 1000.0) + 0.3 * torch.sin(3.0 * x) - 0.1 * t / 1000.0


def run_reference(sched, x):
    for t in sched.timesteps:
        x = sched.step(velocity(x, float(t)).unsqueeze(0), t, x.unsqueeze(0), return_dict=False)[0].squeeze(0)
    return x


def run_ours(solver, schedule, x, start=0, end=None):
    end = schedule.steps if end is None else end
    for i in range(start, end):
        x = solver.step(i, velocity(x, schedule.timestep(i)), x)
    return x


@pytest.mark.parametrize("solver,steps,shift", [("unipc", 6, 5.0), ("unipc", 12, 12.0), ("unipc", 1, 3.0),
                                                ("dpm++", 6, 5.0), ("dpm++", 20, 16.0), ("dpm++", 2, 1.0)])
def test_official_schedulers(solver, steps, shift):
    """Oracle: official FlowUniPCMultistepScheduler / FlowDPMSolverMultistepScheduler; timesteps exactly equal."""
    ref_sched = official_scheduler(solver, steps, shift)
    ours = make_schedule(solver, steps, shift)
    assert torch.equal(ours.timesteps, ref_sched.timesteps)
    assert torch.equal(ours.sigmas, ref_sched.sigmas.float())
    x = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(1))
    assert_close(run_ours(make_solver(solver, ours), ours, x.clone()), run_reference(ref_sched, x.clone()))


def test_diffusers_flow_unipc():
    """Oracle: diffusers UniPCMultistepScheduler(flow_prediction, use_flow_sigmas) = our 'diffusers' schedule."""
    from diffusers import UniPCMultistepScheduler

    ref = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    ref.set_timesteps(8)
    ours = make_schedule("unipc", 8, 5.0, kind="diffusers")
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert torch.equal(ours.sigmas, ref.sigmas.float())
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(2))
    assert_close(run_ours(make_solver("unipc", ours), ours, x.clone()), run_reference(ref, x.clone()))


def test_euler_is_explicit_flow_step():
    """Oracle: the flow ODE Euler rule x += (sigma_next - sigma) * v written out by hand."""
    sched = make_schedule("euler", 4, 3.0)
    x = torch.randn(5)
    expected = x.clone()
    for i in range(4):
        step = float(sched.sigmas[i + 1]) - float(sched.sigmas[i])
        expected = expected + step * velocity(expected, sched.timestep(i))
    assert_close(run_ours(make_solver("euler", sched), sched, x), expected)
    assert float(sched.sigmas[0]) == 1.0 and float(sched.sigmas[-1]) == 0.0


@pytest.mark.parametrize("solver", ["unipc", "dpm++", "euler"])
def test_state_carries_across_split(solver):
    """Oracle: the official-parity single run above; a run split at step k with the state carried is identical."""
    sched = make_schedule(solver, 9, 5.0)
    x = torch.randn(3, 7, generator=torch.Generator().manual_seed(3))
    whole = run_ours(make_solver(solver, sched), sched, x.clone())
    first = make_solver(solver, sched)
    mid = run_ours(first, sched, x.clone(), 0, 4)
    second = make_solver(solver, sched)
    second.load_state(first.state())
    assert torch.equal(run_ours(second, sched, mid, 4), whole)


def test_denoise_uses_the_tail_of_a_longer_schedule():
    """Oracle: ComfyUI's rule — denoise d runs the last `steps` of a schedule of int(steps / d) steps."""
    sched, start = partial_schedule(lambda n: make_schedule("unipc", n, 5.0), 10, 0.5)
    assert sched.steps == 20 and start == 10
    with pytest.raises(InputError, match="denoise"):
        partial_schedule(lambda n: make_schedule("unipc", n, 5.0), 10, 0.0)


@pytest.mark.parametrize("kwargs,match", [({"solver": "heun"}, "solver"), ({"steps": 0}, "steps"),
                                          ({"shift": 0.0}, "shift"), ({"kind": "karras"}, "schedule")])
def test_bad_settings(kwargs, match):
    args = {"solver": "unipc", "steps": 4, "shift": 5.0, "kind": "official"} | kwargs
    with pytest.raises(InputError, match=match):
        make_solver(args["solver"], make_schedule(args["solver"], args["steps"], args["shift"], args["kind"]))

"""The denoise loop's own behaviour: expert plan for the official A14B settings, chaining, denoise < 1 against the
official scheduler's add_noise + stepping, the step-cache protocol, callbacks, placement, and bad inputs."""
import pytest
import torch

from test_sampling_models import assert_close, official_dit, official_scheduler, ours_from_official, prompts
from wan.conditioning import ImageCond
from wan.errors import InputError
from wan.experts import ExpertSet
from wan.sampling import SamplerSettings, expert_plan, make_noise, make_schedule, sample
from wan.memory.devices import module_device
from wan.sampling.placement import ExpertPlacement

SHAPE = (1, 16, 2, 4, 4)


@pytest.fixture(scope="module")
def t2v_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    return ExpertSet(ours_from_official(official_dit("t2v", 1), d / "h.safetensors", "high"),
                     ours_from_official(official_dit("t2v", 2), d / "l.safetensors", "low"), boundary=0.875)


@pytest.fixture(scope="module")
def i2v_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("i2v")
    return ExpertSet(ours_from_official(official_dit("i2v", 3), d / "h.safetensors", "high"),
                     ours_from_official(official_dit("i2v", 4), d / "l.safetensors", "low"))


def run(experts, settings, latents=None, **kw):
    _, _, text = prompts()
    latents = torch.zeros(SHAPE) if latents is None else latents
    noise = make_noise(SHAPE, 3) if settings.add_noise else None
    return sample(experts, latents, text, settings, noise=noise, **kw)


def test_official_a14b_expert_plan(t2v_pair, i2v_pair):
    """Oracle: WAN_REFERENCE §6 — T2V-A14B, 40 steps, shift 12, boundary 0.875 -> 26 high + 14 low; I2V-A14B,
    40 steps, shift 5, boundary 0.9 -> 15 + 25 (timesteps equal to the official UniPC scheduler's)."""
    for experts, shift, high in ((t2v_pair, 12.0, 26), (i2v_pair, 5.0, 15)):
        schedule = make_schedule("unipc", 40, shift)
        assert torch.equal(schedule.timesteps, official_scheduler("unipc", 40, shift).timesteps)
        plan = expert_plan(experts, schedule, range(40))
        print(f"boundary {experts.boundary}, shift {shift}: " +
              " ".join(f"{int(t)}{p[0]}" for t, p in zip(schedule.timesteps, plan)))
        assert plan == ["high"] * high + ["low"] * (40 - high)
    assert expert_plan(t2v_pair, make_schedule("unipc", 40, 12.0), range(40), switch_step=10).count("high") == 10


@pytest.mark.parametrize("solver", ["unipc", "dpm++", "euler"])
def test_chained_samplers_equal_one_run(t2v_pair, solver):
    """Oracle: one run over 0 -> N (itself pinned to the official loop in test_sampling_parity_official)."""
    whole = run(t2v_pair, SamplerSettings(6, 12.0, solver, 4.0, 3.0))
    first = run(t2v_pair, SamplerSettings(6, 12.0, solver, 4.0, 3.0, end_step=3, return_with_leftover_noise=True))
    assert first.solver_state is not None and first.experts == whole.experts[:3]
    second = run(t2v_pair, SamplerSettings(6, 12.0, solver, 4.0, 3.0, start_step=3, add_noise=False),
                 latents=first.latents, solver_state=first.solver_state)
    assert second.experts == whole.experts[3:]
    assert_close(second.latents, whole.latents, rel=1e-6, abs_=1e-6)


def test_end_step_without_leftover_noise_returns_the_clean_estimate(t2v_pair):
    """Oracle: the x0 estimate the callback reports at the last step run (x - sigma * v)."""
    seen = []
    result = run(t2v_pair, SamplerSettings(6, 12.0, end_step=2), callback=seen.append)
    assert len(seen) == 2 and result.solver_state is None
    assert torch.equal(result.latents, seen[-1].x0)


def test_denoise_below_one_matches_official_add_noise(t2v_pair):
    """Oracle: official FlowUniPCMultistepScheduler over 2N steps, begin index N, add_noise at timesteps[N], then
    its step() with the same guided model outputs (we share the models: this pins schedule, noising and solver)."""
    _, _, text = prompts()
    source = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    noise = make_noise(SHAPE, 3)
    ours = sample(t2v_pair, source, text, SamplerSettings(3, 5.0, cfg_high=4.0, cfg_low=3.0, denoise=0.5),
                  noise=noise)
    sched = official_scheduler("unipc", 6, 5.0)
    sched.set_begin_index(3)
    x = sched.add_noise(source, noise, sched.timesteps[3:4])
    for t in sched.timesteps[3:]:
        role, model = t2v_pair.expert_for(float(t))
        tt = torch.tensor([float(t)])
        with torch.no_grad():
            vc, vu = model(x, tt, text.positive), model(x, tt, text.negative)
        g = 4.0 if role == "high" else 3.0
        x = sched.step(vu + g * (vc - vu), t, x, return_dict=False)[0]
    assert_close(ours.latents, x)


class RecordingCache:
    """Implements the step-cache protocol by forwarding every call; records what the loop passes."""

    def __init__(self):
        self.calls, self.begun = [], None

    def begin(self, timesteps, experts):
        self.begun = (timesteps, experts)

    def forward(self, model, x, t, context, clip_fea=None, y=None, step=0, branch="cond", expert="single"):
        self.calls.append((step, branch, expert))
        return model(x, t, context, clip_fea=clip_fea, y=y)

    def end(self):
        return {"calls": len(self.calls)}


def test_step_cache_protocol(t2v_pair):
    """Oracle: the protocol in the sampling brief; a pass-through cache leaves the result unchanged."""
    cache = RecordingCache()
    settings = SamplerSettings(6, 12.0, cfg_high=4.0, cfg_low=1.0)
    with_cache = run(t2v_pair, settings, step_cache=cache)
    timesteps, experts = cache.begun
    assert timesteps == [float(t) for t in make_schedule("unipc", 6, 12.0).timesteps] and experts is t2v_pair
    assert all(isinstance(t, float) for t in timesteps)
    assert cache.calls == [(i, b, "high") for i in range(4) for b in ("cond", "uncond")] + \
        [(4, "cond", "low"), (5, "cond", "low")]  # cfg_low 1: no unconditional pass
    assert with_cache.cache_report == {"calls": 10}
    assert torch.equal(with_cache.latents, run(t2v_pair, settings).latents)


def test_callback_interrupts_and_releases(t2v_pair):
    class Stop(Exception):
        pass

    def callback(info):
        assert info.total == 6 and info.x0.shape == SHAPE
        if info.index == 1:
            raise Stop

    with pytest.raises(Stop):
        run(t2v_pair, SamplerSettings(6, 12.0), callback=callback)


class Movable(torch.nn.Linear):
    """A module that can also leave the meta device (its values do not matter here, only where it is)."""

    def to(self, device):
        return self.to_empty(device=device)


def test_placement_moves_only_the_active_expert():
    """The meta device stands in for the GPU: the active expert there, the idle one on the offload device."""
    a, b = Movable(2, 2), Movable(2, 2)
    placement = ExpertPlacement([a, b], "meta", "cpu")
    placement.activate(a)
    assert (module_device(a).type, module_device(b).type) == ("meta", "cpu")
    placement.activate(b)
    assert (module_device(a).type, module_device(b).type) == ("cpu", "meta")
    placement.release()
    assert module_device(b).type == "cpu"
    both = ExpertPlacement([a, b], "meta", "cpu", keep_both=True)
    both.activate(a), both.activate(b)
    assert (module_device(a).type, module_device(b).type) == ("meta", "meta")


# -- bad inputs ---------------------------------------------------------------------------------------------------
def test_image_cond_for_t2v_model(t2v_pair):
    cond = ImageCond("i2v", y=torch.zeros(1, 20, 2, 4, 4))
    with pytest.raises(InputError, match="text-to-video"):
        run(t2v_pair, SamplerSettings(2, 5.0), image_cond=cond)


def test_i2v_model_without_image_cond(i2v_pair):
    with pytest.raises(InputError, match="needs the start image"):
        run(i2v_pair, SamplerSettings(2, 5.0))


def test_48_channel_latent_for_16_channel_model(t2v_pair):
    _, _, text = prompts()
    shape = (1, 48, 2, 4, 4)
    with pytest.raises(InputError, match="48 channels.*16-channel"):
        sample(t2v_pair, torch.zeros(shape), text, SamplerSettings(2, 5.0), noise=torch.zeros(shape))


def test_mismatched_experts(tmp_path):
    high = ours_from_official(official_dit("t2v", 1), tmp_path / "h.safetensors", "high")
    low = ours_from_official(official_dit("i2v", 2), tmp_path / "l.safetensors", "low")
    with pytest.raises(InputError, match="not a pair"):
        ExpertSet(high, low)


def test_conditioning_size_mismatch(i2v_pair):
    cond = ImageCond("i2v", y=torch.zeros(1, 20, 3, 4, 4))
    with pytest.raises(InputError, match="does not match the latent"):
        run(i2v_pair, SamplerSettings(2, 5.0), image_cond=cond)


@pytest.mark.parametrize("kwargs,match", [({"start_step": 4, "end_step": 2}, "before the end"),
                                          ({"denoise": 1.5}, "denoise"), ({"solver": "lms"}, "solver"),
                                          ({"boundary": 1.5}, "boundary"), ({"cfg_high": -1.0}, "negative")])
def test_bad_settings(t2v_pair, kwargs, match):
    with pytest.raises(InputError, match=match):
        run(t2v_pair, SamplerSettings(6, 5.0, **kwargs))


def test_missing_negative_with_cfg(t2v_pair):
    _, _, text = prompts()
    text.negative = None
    with pytest.raises(InputError, match="negative"):
        sample(t2v_pair, torch.zeros(SHAPE), text, SamplerSettings(2, 5.0), noise=torch.zeros(SHAPE))
    sample(t2v_pair, torch.zeros(SHAPE), text, SamplerSettings(1, 5.0, cfg_high=1.0, cfg_low=1.0),
           noise=torch.zeros(SHAPE))


def test_solver_state_of_another_run_is_ignored(t2v_pair, caplog):
    """A LATENT carrying the history of another schedule (here another solver) continues without it."""
    first = run(t2v_pair, SamplerSettings(6, 12.0, "dpm++", end_step=3, return_with_leftover_noise=True))
    settings = SamplerSettings(6, 12.0, "unipc", start_step=3, add_noise=False)
    with caplog.at_level("INFO", logger="wan_experts"):
        carried = run(t2v_pair, settings, latents=first.latents, solver_state=first.solver_state)
    assert "afresh" in caplog.text
    assert torch.equal(carried.latents, run(t2v_pair, settings, latents=first.latents).latents)


def test_boundary_override_and_switch_step(t2v_pair):
    """The run's boundary replaces the pair's (0.95 -> fewer high-noise steps); a switch step overrides both."""
    default = run(t2v_pair, SamplerSettings(6, 12.0, end_step=6))
    assert default.experts == ["high"] * 4 + ["low"] * 2
    assert run(t2v_pair, SamplerSettings(6, 12.0, boundary=0.95)).experts == ["high"] * 3 + ["low"] * 3
    assert run(t2v_pair, SamplerSettings(6, 12.0, boundary=0.95, switch_step=1)).experts == ["high"] + ["low"] * 5
    assert t2v_pair.boundary == 0.875

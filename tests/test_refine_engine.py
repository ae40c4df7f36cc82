"""Video to video (wan/sampling/refine.py) against diffusers' ``WanVideoToVideoPipeline``: the same tiny random
transformer and VAE (float32, CPU), the same noise, ``output_type="latent"``. Oracle: diffusers 0.42's pipeline with
its flow UniPC scheduler and its flow DPM-Solver++ scheduler (our solvers "unipc" and "dpm++" on schedule
"diffusers", the grid each diffusers scheduler uses). Tolerance: max|ours - ref| <= 1e-5 (absolute).

Also: strength 1 is text-to-video from the same noise, strength 0 returns the input, the strength rule itself, and
with a Wan 2.2 A14B pair a strength below the boundary runs no high-noise forward (counted)."""
import pytest
import torch

from test_sampling_models import ours_from_diffusers, prompts
from test_sampling_parity_diffusers import DiffusersVAE, transformer, vae
from wan.errors import InputError
from wan.experts import ExpertSet
from wan.latents import normalize
from wan.sampling import SamplerSettings, make_noise, sample
from wan.sampling.refine import kept_experts, refine, start_step

SEED, STEPS, SHIFT, SIZE, FRAMES = 7, 5, 3.0, 32, 5


def diffusers_scheduler(solver):
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    cls = UniPCMultistepScheduler if solver == "unipc" else DPMSolverMultistepScheduler
    return cls(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=SHIFT, num_train_timesteps=1000)


def pixels():
    return torch.rand(1, FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))  # [B, F, C, H, W] 0..1


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    model, v = transformer(16, 16, 1), vae()
    ours = ExpertSet(ours_from_diffusers(model, tmp_path_factory.mktemp("v2v") / "dit"))
    return model, v, ours


def clean_latents(v):
    video = pixels().permute(0, 2, 1, 3, 4) * 2 - 1
    return normalize(DiffusersVAE(v).encode(video))


def run_refine(ours, latents, strength, solver, **kwargs):
    _, _, text = prompts()
    settings = SamplerSettings(steps=STEPS, shift=SHIFT, solver=solver, cfg_high=5.0, cfg_low=5.0,
                               schedule="diffusers")
    return refine(ours, latents, text, settings, strength, noise=make_noise(latents.shape, SEED), **kwargs)


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
@pytest.mark.parametrize("strength", [0.2, 0.5, 0.8])
def test_matches_diffusers_video_to_video(parts, strength, solver):
    from diffusers import WanVideoToVideoPipeline

    model, v, ours = parts
    _, _, text = prompts()
    pipe = WanVideoToVideoPipeline(tokenizer=None, text_encoder=None, transformer=model, vae=v,
                                   scheduler=diffusers_scheduler(solver))
    ref = pipe(video=pixels(), prompt_embeds=text.positive, negative_prompt_embeds=text.negative, height=SIZE,
               width=SIZE, num_inference_steps=STEPS, guidance_scale=5.0, strength=strength,
               generator=torch.Generator().manual_seed(SEED), output_type="latent").frames
    result = run_refine(ours, clean_latents(v), strength, solver)
    assert len(result.experts) == min(int(STEPS * strength), STEPS)
    err = (result.latents - ref).abs().max().item()
    assert err <= 1e-5, err


def test_strength_one_is_text_to_video_and_zero_keeps_the_input(parts):
    _, v, ours = parts
    _, _, text = prompts()
    latents = clean_latents(v)
    settings = SamplerSettings(steps=STEPS, shift=SHIFT, cfg_high=5.0, cfg_low=5.0)
    t2v = sample(ours, torch.zeros_like(latents), text, settings, noise=make_noise(latents.shape, SEED))
    full = refine(ours, latents, text, settings, 1.0, noise=make_noise(latents.shape, SEED))
    assert torch.equal(full.latents, t2v.latents)
    kept = refine(ours, latents, text, settings, 0.0, noise=make_noise(latents.shape, SEED))
    assert kept.latents is latents and kept.experts == []


def test_strength_rule_and_bad_strengths():
    """diffusers' get_timesteps: init = min(int(steps * strength), steps), start = max(steps - init, 0)."""
    assert [start_step(10, s) for s in (0.0, 0.09, 0.1, 0.35, 0.99, 1.0)] == [10, 10, 9, 7, 1, 0]
    assert start_step(40, 0.3) == 28
    for bad in (float("nan"), -0.1, 1.5, float("inf"), "0.5"):
        with pytest.raises(InputError, match="strength"):
            start_step(10, bad)


def test_a14b_low_strength_runs_only_the_low_noise_expert(tmp_path):
    """T2V-A14B boundary 0.875, shift 12, 40 steps: the first 26 steps are high-noise ones; strength 0.3 keeps
    steps 28-39, all below the boundary: every forward is the low-noise expert's (counted with forward hooks)."""
    high = ours_from_diffusers(transformer(16, 16, 2), tmp_path / "high", "high")
    low = ours_from_diffusers(transformer(16, 16, 3), tmp_path / "low", "low")
    experts = ExpertSet(high, low, boundary=0.875)
    calls = {"high": 0, "low": 0}
    for name, model in (("high", high), ("low", low)):
        model.register_forward_pre_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    _, _, text = prompts()
    settings = SamplerSettings(steps=40, shift=12.0, cfg_high=4.0, cfg_low=3.0)
    assert kept_experts(experts, settings, 0.3) == ["low"] * 12
    assert kept_experts(experts, settings, 0.8).count("high") == 26 - 8
    latents = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    result = refine(experts, latents, text, settings, 0.3, noise=make_noise(latents.shape, SEED))
    assert result.experts == ["low"] * 12 and calls == {"high": 0, "low": 24}
    calls.update(high=0, low=0)
    forced = refine(experts, latents, text, settings, 0.1, noise=make_noise(latents.shape, SEED), expert="high")
    assert forced.experts == ["high"] * 4 and calls == {"high": 8, "low": 0}
    with pytest.raises(InputError, match="expert 'low' picks one expert"):
        refine(ExpertSet(low), latents, text, settings, 0.3, noise=latents, expert="low")


def test_i2v_keeps_the_first_frame_and_ti2v_imposes_it(tmp_path):
    """A 36-channel I2V model: the refined video's first latent frame is the input's (held by the loop); TI2V-5B:
    the start image's latent is imposed. The image is the input video's first frame."""
    from wan.sampling import image_condition

    _, _, text = prompts()
    for in_dim, z, size, seed in ((36, 16, 32, 4), (48, 48, 64, 6)):
        v = vae(z)
        model = ExpertSet(ours_from_diffusers(transformer(in_dim, 16 if z == 16 else 48, seed), tmp_path / str(z)))
        video = torch.rand(1, 3, FRAMES, size, size, generator=torch.Generator().manual_seed(2)) * 2 - 1
        latents = normalize(DiffusersVAE(v).encode(video))
        cond = image_condition(DiffusersVAE(v), video[:, :, 0], size, size, FRAMES)
        settings = SamplerSettings(steps=STEPS, shift=SHIFT, cfg_high=5.0, cfg_low=5.0)
        out = refine(model, latents, text, settings, 0.6, noise=make_noise(latents.shape, SEED), image_cond=cond)
        kept = latents[:, :, :1] if cond.kind == "i2v" else cond.first_latent  # the causal VAE's first frame
        assert (out.latents[:, :, :1] - kept).abs().max().item() <= 1e-4
        assert (out.latents[:, :, 1:] - latents[:, :, 1:]).abs().max().item() > 1e-2  # the rest was re-painted


def test_step_cache_and_context_windows_start_at_the_first_kept_step(parts):
    """TeaCache sees only the kept steps (its always-computed first step is the first kept one); context windows
    split a refine run like any other."""
    from wan.cache import TeaCache
    from wan.sampling.windows import ContextWindows

    _, _, ours = parts
    _, _, text = prompts()
    latents = torch.randn(1, 16, 4, 4, 4, generator=torch.Generator().manual_seed(5))
    settings = SamplerSettings(steps=10, shift=SHIFT, cfg_high=5.0, cfg_low=5.0)
    cache = TeaCache(1.0, allow_fallback=True)  # the highest threshold: it skips all it may
    out = refine(ours, latents, text, settings, 0.6, noise=make_noise(latents.shape, SEED), step_cache=cache)
    report = out.cache_report
    assert report.steps == 6 and report.computed["cond"] == [0, 5]  # first and last kept steps (mode "e")
    windows = SamplerSettings(steps=10, shift=SHIFT, cfg_high=5.0, cfg_low=5.0,
                              context=ContextWindows(context_frames=5, context_overlap=4))
    windowed = refine(ours, latents, text, windows, 0.6, noise=make_noise(latents.shape, SEED))
    assert len(windowed.experts) == 6 and torch.isfinite(windowed.latents).all()
    assert not torch.equal(windowed.latents, out.latents)

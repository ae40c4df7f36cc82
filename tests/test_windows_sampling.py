"""The denoise loop with context windows (wan/sampling/windowed.py) on tiny random DiTs.

Oracles: the loop without windows. A window covering the whole video must give bit-equal latents (all kinds of
model: Wan 2.1 T2V, the A14B pairs with the expert switch, 36-channel I2V, TI2V-5B with its start frame); windows
without overlap must equal independent runs on the slices (bit-equal), also with a step cache (each window its
own state: identical decisions and latents to an independent cached run per slice) and with per-window prompts.
"""
import pytest
import torch

from test_cache_tools import one_thread  # noqa: F401  (autouse fixture)
from test_cache_tools import TEXT_DIM, tiny_experts
from wan.cache import MagCache, TeaCache
from wan.conditioning import ImageCond, TextEmbeds
from wan.errors import InputError
from wan.sampling import SamplerSettings, make_noise, sample
from wan.sampling.inputs import ModelInputs
from wan.sampling.windowed import WindowedSampling
from wan.sampling.windows import ContextWindows

FRAMES = 4  # latent frames: 13 pixel frames
H = W = 4
MODELS = {"t2v": ("wan21_t2v_1.3b", 16), "t2v_a14b": ("wan22_t2v_a14b", 16), "i2v_a14b": ("wan22_i2v_a14b", 36),
          "ti2v": ("wan22_ti2v_5b", 48)}


@pytest.fixture(scope="module")
def models():
    return {k: tiny_experts(v, in_dim=d) for k, (v, d) in MODELS.items()}


def text(seed=5, prompts=1):
    g = torch.Generator().manual_seed(seed)
    return TextEmbeds(torch.randn(prompts, 9, TEXT_DIM, generator=g), torch.randn(1, 9, TEXT_DIM, generator=g))


def condition(kind: str, frames=FRAMES):
    g = torch.Generator().manual_seed(9)
    if kind == "i2v_a14b":
        mask = torch.zeros(1, 4, frames, H, W)
        mask[:, :, 0] = 1
        return ImageCond("i2v", y=torch.cat([mask, torch.randn(1, 16, frames, H, W, generator=g)], dim=1))
    if kind == "ti2v":
        return ImageCond("ti2v", first_latent=torch.randn(1, 48, 1, H, W, generator=g))
    return None


def settings(context=None, steps=4):
    return SamplerSettings(steps, 5.0, cfg_high=4.0, cfg_low=3.0, context=context)


def run(experts, kind, context=None, frames=FRAMES, noise=None, cond="auto", embeds=None, cache=None, steps=4):
    c = experts.config.out_dim
    shape = (1, c, frames, H, W)
    noise = make_noise(shape, 3) if noise is None else noise
    cond = condition(kind, frames) if cond == "auto" else cond
    return sample(experts, torch.zeros(shape), embeds or text(), settings(context, steps), noise=noise,
                  image_cond=cond, step_cache=cache)


@pytest.mark.parametrize("kind", list(MODELS))
def test_one_window_over_the_whole_video_is_plain_sampling(models, kind):
    """Oracle: the same run without context windows; bit-equal."""
    plain = run(models[kind], kind)
    for schedule in ("static", "uniform_standard", "uniform_looped"):
        windowed = run(models[kind], kind, ContextWindows(4 * FRAMES + 1, 4, schedule))
        assert torch.equal(windowed.latents, plain.latents), schedule
    assert windowed.experts == plain.experts


@pytest.mark.parametrize("kind", ["t2v", "t2v_a14b", "i2v_a14b"])
def test_windows_without_overlap_are_independent_runs(models, kind):
    """Oracle: two plain runs on frames 0-1 and 2-3 (their noise and conditioning slices); bit-equal."""
    noise = make_noise((1, 16, FRAMES, H, W), 3)
    context = ContextWindows(5, 0, "static", freenoise=False)
    windowed = run(models[kind], kind, context, noise=noise)
    cond = condition(kind)
    parts = []
    for lo, hi in ((0, 2), (2, 4)):
        part = None if cond is None else ImageCond("i2v", y=cond.y[:, :, lo:hi])
        parts.append(run(models[kind], kind, frames=2, noise=noise[:, :, lo:hi], cond=part).latents)
    assert torch.equal(windowed.latents, torch.cat(parts, dim=2))


@pytest.mark.parametrize("kind,policy", [("t2v", lambda: TeaCache(0.3)),
                                         ("t2v_a14b", lambda: MagCache(0.5, K=2, retention_ratio=0.2))])
def test_step_cache_keeps_one_state_per_window(models, kind, policy):
    """Oracle: independent cached runs on the two slices (a fresh policy each): identical reuse decisions per
    window and bit-equal latents. The A14B pair switches experts within the run."""
    noise = make_noise((1, 16, FRAMES, H, W), 3)
    context = ContextWindows(5, 0, "static", freenoise=False)
    windowed = run(models[kind], kind, context, noise=noise, cache=policy(), steps=10)
    report = windowed.cache_report
    assert report.model_calls == 2 * 2 * 10  # windows x branches x steps
    parts = []
    for k, (lo, hi) in enumerate(((0, 2), (2, 4))):
        alone = run(models[kind], kind, frames=2, noise=noise[:, :, lo:hi], cache=policy(), steps=10)
        parts.append(alone.latents)
        for branch in ("cond", "uncond"):
            assert report.reused.get(f"window {k} {branch}", []) == alone.cache_report.reused.get(branch, [])
    assert report.reused_fraction > 0, report.summary()
    assert torch.equal(windowed.latents, torch.cat(parts, dim=2))
    print(report.summary())


def test_overlapping_windows_with_a_cache_and_an_expert_pair_run(models):
    """Three overlapping static windows on the A14B pair with TeaCache: every window decides for itself."""
    context = ContextWindows(9, 4, "static")
    result = run(models["t2v_a14b"], "t2v_a14b", context, frames=6, cache=TeaCache(0.3, allow_fallback=True),
                 steps=8)
    branches = set(result.cache_report.computed) | set(result.cache_report.reused)
    assert branches == {f"window {k} {b}" for k in range(3) for b in ("cond", "uncond")}
    assert "high" in result.experts and "low" in result.experts
    assert torch.isfinite(result.latents).all()


def test_moving_windows_refuse_a_step_cache(models):
    with pytest.raises(InputError, match="static"):
        run(models["t2v"], "t2v", ContextWindows(5, 2, "uniform_standard"), cache=TeaCache(0.3))


def test_window_prompts_go_to_their_windows(models):
    """Oracle: independent runs on the slices, each with its own positive prompt (the negative is shared)."""
    noise = make_noise((1, 16, FRAMES, H, W), 3)
    prompts = text(7, prompts=2)
    context = ContextWindows(5, 0, "static", freenoise=False, prompts=prompts.positive)
    windowed = run(models["t2v"], "t2v", context, noise=noise)
    parts = [run(models["t2v"], "t2v", frames=2, noise=noise[:, :, lo:hi],
                 embeds=TextEmbeds(prompts.positive[k:k + 1], text().negative)).latents
             for k, (lo, hi) in enumerate(((0, 2), (2, 4)))]
    assert torch.equal(windowed.latents, torch.cat(parts, dim=2))
    with pytest.raises(InputError, match="window prompts"):
        run(models["t2v"], "t2v", ContextWindows(5, 0, prompts=torch.zeros(2, 9, TEXT_DIM + 1)))


def _window_inputs(cond_kind, image_cond, model_kind, models):
    experts = models[model_kind]
    shape = (1, experts.config.out_dim, FRAMES, H, W)
    inputs = ModelInputs.build(experts, text(), condition(cond_kind), shape, "cpu")
    run = WindowedSampling(ContextWindows(5, 0, image_cond=image_cond), FRAMES, inputs, "cpu")
    windows = run.windows(0)
    return inputs, [run.window_inputs(w, torch.zeros(shape)) for w in windows]


def test_i2v_image_goes_to_the_first_window_only_by_default(models):
    """The second window sees mask 0 and the grey latent (the slice); with "all" its first frame is conditioned."""
    inputs, ((_, first, _), (_, second, _)) = _window_inputs("i2v_a14b", "first", "i2v_a14b", models)
    assert torch.equal(first.y, inputs.y[:, :, 0:2]) and torch.equal(second.y, inputs.y[:, :, 2:4])
    assert second.y[:, :4].abs().sum() == 0
    _, (_, (_, second_all, _)) = _window_inputs("i2v_a14b", "all", "i2v_a14b", models)
    assert torch.equal(second_all.y[:, :, 0], inputs.y[:, :, 0])  # mask 1 + the image latent at its start
    assert torch.equal(second_all.y[:, :, 1], inputs.y[:, :, 3])


def test_ti2v_start_frame_per_window(models):
    """TI2V-5B: timestep 0 only on the start frame's tokens of the first window; with "all" the start latent is put
    in front of the other windows as a clean extra frame."""
    inputs, ((x1, first, e1), (x2, second, e2)) = _window_inputs("ti2v", "first", "ti2v", models)
    tokens = H * W // 4
    assert first.token_mask[0, :tokens].sum() == 0 and first.token_mask[0, tokens:].min() == 1
    assert second.token_mask.min() == 1 and e1 == e2 == 0
    _, (_, (x_all, second_all, extra)) = _window_inputs("ti2v", "all", "ti2v", models)
    assert extra == 1 and x_all.shape[2] == 3
    assert torch.equal(x_all[:, :, 0], inputs.first_latent[:, :, 0])
    assert second_all.token_mask[0, :tokens].sum() == 0 and second_all.token_mask.shape[1] == 3 * tokens


@pytest.mark.parametrize("image_cond", ["first", "all"])
def test_image_models_sample_long_videos_in_windows(models, image_cond):
    for kind in ("i2v_a14b", "ti2v"):
        plain_first = condition(kind, 7)
        result = run(models[kind], kind, ContextWindows(9, 4, "uniform_looped", image_cond=image_cond), frames=7,
                     cond=plain_first)
        assert torch.isfinite(result.latents).all()
        if kind == "ti2v":
            assert torch.equal(result.latents[:, :, :1], plain_first.first_latent)

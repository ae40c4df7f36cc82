"""Whole VACE runs vs the official ``WanVace.generate`` loop (Wan 2.1 ``wan/vace.py``, reproduced in
``oracles/vace_encode.generate_latents`` with the official CPU scheduler of the ``wan22`` wheel), for one seed, with
and without reference images, with a mask; and the Wan 2.2 VACE-Fun expert pair with the official A14B switch.
Same tiny random weights on both sides (official VACE DiT structure of ``oracles/vace_model.py``, official
``WanVAE_``), float32. Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5. Also: step caches, context windows
(reference frames in every window) and the checks before sampling."""
import pytest
import torch

from oracles import vace_encode as official
from test_sampling_models import official_scheduler, prompts
from test_vae_tiny import official_vae, save_pth
from tiny_dit import assert_close, save_safetensors, state_dict_of
from tiny_vace import official_vace
import wan
from wan.errors import InputError
from wan.experts import ExpertSet
from wan.sampling import SamplerSettings, make_noise, sample
from wan.sampling.vace import drop_reference_frames, vace_context, vace_latent_shape
from wan.vae import load_vae

W, H, FRAMES, SEED, STEPS = 48, 32, 5, 42, 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("vace_loop")
    vae_module = official_vae("2.1", seed=3)
    ref = official_vace(seed=1, std=0.05)
    ours = wan.load_dit(save_safetensors(state_dict_of(ref), root / "wan2.1_vace.safetensors"))
    return ref, ours, official.OfficialVAE(vae_module), load_vae(save_pth(vae_module, root / "Wan2.1_VAE.pth"))


def _sources(case, seed=0, frames=FRAMES):
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(3, frames, H, W, generator=g) * 2 - 1 if "video" in case else None
    mask = (torch.rand(frames, H, W, generator=g) > 0.4).float() if "mask" in case else None
    refs = torch.rand(2, 3, 24, 40, generator=g) * 2 - 1 if "refs" in case else None
    return video, mask, refs


def _official_inputs(video, mask, refs):
    video = torch.zeros(3, FRAMES, H, W) if video is None else video
    mask = torch.ones(1, FRAMES, H, W) if mask is None else mask[None]
    ref_list = None if refs is None else [[official.fit_reference(r[:, None], (H, W)) for r in refs]]
    return [video], [mask], ref_list


def _ours(experts, vae, video, mask, refs, settings, strength=1.0, frames=FRAMES, **kw):
    cond = vace_context(vae, W, H, frames, video, mask, refs, strength)
    shape = vace_latent_shape(vae, W, H, frames, 1, cond.ref_frames)
    _, _, text = prompts()
    result = sample(experts, torch.zeros(shape), text, settings, noise=make_noise(shape, SEED), vace=cond, **kw)
    return result, cond


@pytest.mark.parametrize("case,strength", [("video+mask", 1.0), ("refs", 1.0), ("video+mask+refs", 0.7)])
def test_loop_matches_official(setup, case, strength):
    ref, ours, oracle_vae, vae = setup
    video, mask, refs = _sources(case, seed=len(case))
    pos, neg, _ = prompts()
    expected = official.generate_latents(ref, oracle_vae, [pos], [neg], *_official_inputs(video, mask, refs),
                                         official_scheduler("unipc", STEPS, 16.0), guide_scale=5.0,
                                         context_scale=strength, seed=SEED)
    result, cond = _ours(ours, vae, video, mask, refs, SamplerSettings(steps=STEPS, shift=16.0, cfg_high=5.0),
                         strength)
    assert result.latents.shape[2] == 2 + cond.ref_frames
    assert_close(result.latents[0], expected)
    n = 0 if refs is None else len(refs)
    assert torch.equal(drop_reference_frames(result.latents, cond), result.latents[:, :, n:])


def test_vace_fun_expert_pair_matches_official(setup, tmp_path):
    """Two VACE experts (Wan 2.2 VACE-Fun A14B layout) switched at boundary 0.875 with guidance (low 3, high 4)."""
    _, _, oracle_vae, vae = setup
    high, low = official_vace(seed=5, std=0.05), official_vace(seed=6, std=0.05)
    experts = ExpertSet(wan.load_dit(save_safetensors(state_dict_of(high), tmp_path / "vace_fun_high_noise.safetensors")),
                        wan.load_dit(save_safetensors(state_dict_of(low), tmp_path / "vace_fun_low_noise.safetensors")),
                        boundary=0.875)
    assert experts.high.variant == "wan22_vace_a14b" and experts.high.role == "high"
    video, mask, refs = _sources("video+mask+refs", seed=9)
    pos, neg, _ = prompts()
    expected = official.generate_latents(None, oracle_vae, [pos], [neg], *_official_inputs(video, mask, refs),
                                         official_scheduler("unipc", STEPS, 12.0), seed=SEED,
                                         models={"high": high, "low": low}, boundary=0.875, guides=(3.0, 4.0))
    result, _ = _ours(experts, vae, video, mask, refs, SamplerSettings(steps=STEPS, shift=12.0, cfg_high=4.0,
                                                                       cfg_low=3.0))
    assert result.experts == ["high"] * 3 + ["low"]
    assert_close(result.latents[0], expected)


def test_step_cache_covers_the_hints(setup):
    """TeaCache at threshold 0 computes every step: the same latents as without a cache; at a high threshold it
    reuses steps, and a reused step adds the residual of the blocks with the VACE hints (so a stronger context
    still changes the result)."""
    from wan.cache import TeaCache

    _, ours, _, vae = setup
    video, mask, refs = _sources("video+mask+refs", seed=3)
    settings = SamplerSettings(steps=4, shift=16.0, cfg_high=5.0)
    plain, _ = _ours(ours, vae, video, mask, refs, settings)
    same, _ = _ours(ours, vae, video, mask, refs, settings, step_cache=TeaCache(0.0, mode="e", allow_fallback=True))
    assert_close(same.latents, plain.latents, rel=1e-6)
    cached, _ = _ours(ours, vae, video, mask, refs, settings, step_cache=TeaCache(1.0, mode="e", allow_fallback=True))
    assert sum(len(v) for v in cached.cache_report.reused.values()) > 0
    weaker, _ = _ours(ours, vae, video, mask, refs, settings, strength=0.2, step_cache=TeaCache(1.0, mode="e", allow_fallback=True))
    assert (weaker.latents - cached.latents).abs().max() > 1e-3


def test_context_windows_keep_the_references(setup, monkeypatch):
    """Windows over the video frames; every window gets the reference frames in front with their context slice.
    A window covering the whole video gives the plain run."""
    from wan.sampling.windows import ContextWindows

    _, ours, _, vae = setup
    video, mask, refs = _sources("video+mask+refs", seed=4, frames=9)
    settings = SamplerSettings(steps=2, shift=16.0, cfg_high=5.0)
    plain, _ = _ours(ours, vae, video, mask, refs, settings, frames=9)
    whole = SamplerSettings(steps=2, shift=16.0, cfg_high=5.0,
                            context=ContextWindows(context_frames=9, context_overlap=0, freenoise=False))
    same, _ = _ours(ours, vae, video, mask, refs, whole, frames=9)
    assert_close(same.latents, plain.latents, rel=1e-6)
    seen = []
    forward = type(ours).forward

    def spy(self, x, t, context, clip_fea=None, y=None, vace=None):
        seen.append((x.shape[2], vace.latents[:, :16, :2].clone(), vace.latents.shape[2]))
        return forward(self, x, t, context, clip_fea, y, vace)

    monkeypatch.setattr(type(ours), "forward", spy)
    windowed = SamplerSettings(steps=2, shift=16.0, cfg_high=5.0,
                               context=ContextWindows(context_frames=5, context_overlap=4))
    result, cond = _ours(ours, vae, video, mask, refs, windowed, frames=9)
    assert result.latents.shape[2] == 5 and len(seen) == 2 * 2 * 2  # steps x windows x branches
    for frames, ref_part, ctx_frames in seen:
        assert frames == ctx_frames == 4  # 2 reference frames + a window of 2 latent frames
        assert torch.equal(ref_part, cond.latents[:, :16, :2])
    assert torch.isfinite(result.latents).all()


def test_checks_before_sampling(setup, tmp_path):
    _, ours, _, vae = setup
    video, mask, refs = _sources("refs")
    cond = vace_context(vae, W, H, FRAMES, None, None, refs)
    _, _, text = prompts()
    settings = SamplerSettings(steps=2, shift=16.0)
    shape = vace_latent_shape(vae, W, H, FRAMES, 1, cond.ref_frames)
    plain = wan.load_dit(save_safetensors(state_dict_of(__import__("tiny_dit").official_dit("t2v")),
                                          tmp_path / "t2v.safetensors"))
    with pytest.raises(InputError, match="has no VACE blocks"):
        sample(plain, torch.zeros(shape), text, settings, noise=make_noise(shape, 0), vace=cond)
    short = (1, 16, 2, H // 8, W // 8)
    with pytest.raises(InputError, match="lacks the 2 reference frame"):
        sample(ours, torch.zeros(short), text, settings, noise=make_noise(short, 0), vace=cond)
    # a VACE model without a context runs as text-to-video
    result = sample(ours, torch.zeros(short), text, settings, noise=make_noise(short, 0))
    assert torch.isfinite(result.latents).all()

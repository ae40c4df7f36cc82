"""The sampling nodes called as ComfyUI calls them (files under $WAN_EXPERTS_MODELS, objects made by nodes).
Node results are checked against the engine runs that the parity tests pin to the official loops."""
import logging

import pytest
import torch
from safetensors.torch import save_file

from oracles import official
from oracles.randomize import randomize_
from test_sampling_models import official_dit, prompts

STEPS = 4


@pytest.fixture(autouse=True)
def _submodules(pack):
    """Import the modules these tests reach through the pack (nodes.sampling may not be registered yet)."""
    import importlib

    for name in ("nodes.sampling", "nodes.dit", "nodes.vae", "wan.sampling", "wan.latents", "wan.conditioning"):
        importlib.import_module(f"{pack.__name__}.{name}")


def write_dit(models_dir, name, kind="t2v", seed=1):
    model = official_dit(kind, seed)
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()},
              str(models_dir / "diffusion_models" / name))
    return name


def write_vae(models_dir, version="2.1"):
    common = dict(dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True])
    if version == "2.1":
        module = official.load("modules.vae2_1").WanVAE_(dim=8, z_dim=16, **common)
    else:
        module = official.load("modules.vae2_2").WanVAE_(dim=8, dec_dim=12, z_dim=48, **common)
    randomize_(module.eval(), std=0.05, seed=3)
    name = f"wan{version}_vae.pth"
    torch.save({k: v.detach().clone() for k, v in module.state_dict().items()}, str(models_dir / "vae" / name))
    return name


def pack_text(pack):
    _, _, text = prompts()
    return pack.wan.conditioning.TextEmbeds(text.positive, text.negative)


@pytest.fixture
def moe(pack, models_dir):
    high = write_dit(models_dir, "wan2.2_t2v_high_noise_14B.safetensors", "t2v", 1)
    low = write_dit(models_dir, "wan2.2_t2v_low_noise_14B.safetensors", "t2v", 2)
    return pack.nodes.dit.WanExpertsLoadMoE().load(high, low)[0]


def sampler(pack, model, latent, **kw):
    args = dict(seed=5, steps=STEPS, cfg_high=0.0, cfg_low=0.0, shift=12.0, solver="unipc") | kw
    return pack.nodes.sampling.WanExpertsSampler().run(model, pack_text(pack), latent, **args)[0]


def test_empty_latent_shapes(pack, models_dir):
    node = pack.nodes.sampling.WanExpertsEmptyLatent()
    assert node.make(832, 480, 81)[0]["samples"].shape == (1, 16, 21, 60, 104)
    five_b = pack.nodes.dit.WanExpertsLoadDiT().load(write_dit(models_dir, "ti2v_5B.safetensors", "ti2v"))[0]
    assert node.make(1280, 704, 121, 2, model=five_b)[0]["samples"].shape == (2, 48, 31, 44, 80)


@pytest.mark.parametrize("size,match", [((840, 480, 81), "width 840 is not a multiple of 16"),
                                        ((832, 470, 81), "height 470"), ((832, 480, 80), "4n\\+1")])
def test_empty_latent_bad_sizes(pack, size, match):
    with pytest.raises(ValueError, match=match):
        pack.nodes.sampling.WanExpertsEmptyLatent().make(*size)


def test_5b_sizes_need_multiples_of_32(pack, models_dir):
    five_b = pack.nodes.dit.WanExpertsLoadDiT().load(write_dit(models_dir, "ti2v_5B.safetensors", "ti2v"))[0]
    with pytest.raises(ValueError, match="multiple of 32"):
        pack.nodes.sampling.WanExpertsEmptyLatent().make(1280, 720, 121, model=five_b)


def test_vae_and_model_channels_disagree(pack, models_dir):
    vae = pack.nodes.vae.WanExpertsLoadVAE().load(write_vae(models_dir, "2.1"))[0]
    five_b = pack.nodes.dit.WanExpertsLoadDiT().load(write_dit(models_dir, "ti2v_5B.safetensors", "ti2v"))[0]
    with pytest.raises(ValueError, match="16-channel latents but the model works on 48"):
        pack.nodes.sampling.WanExpertsEmptyLatent().make(64, 64, 5, vae=vae, model=five_b)


def test_sampler_auto_defaults_and_engine_equality(pack, moe, caplog):
    """Auto guidance resolves to the official T2V-A14B pair (high 4.0, low 3.0); the node's raw output equals the
    engine run (normalise -> sample -> denormalise) with those values."""
    latent = pack.nodes.sampling.WanExpertsEmptyLatent().make(32, 32, 5)[0]
    with caplog.at_level(logging.INFO, logger="wan_experts"):
        out = sampler(pack, moe, latent)
    assert "wan22_t2v_a14b" in caplog.text and "cfg high 4 / low 3" in caplog.text
    assert "auto: cfg_high, cfg_low" in caplog.text
    s = pack.wan.sampling
    ref = s.sample(moe, pack.wan.latents.normalize(latent["samples"]), pack_text(pack),
                   s.SamplerSettings(STEPS, 12.0, cfg_high=4.0, cfg_low=3.0),
                   noise=s.make_noise(latent["samples"].shape, 5))
    assert torch.equal(out["samples"], pack.wan.latents.denormalize(ref.latents))
    assert "wan_solver_state" not in out


def test_chained_sampler_nodes_equal_one_run(pack, moe):
    """Oracle: one sampler node over all steps. High-noise sampler 0->2 with leftover noise, then low-noise
    sampler 2->4 without added noise (the usual two-sampler A14B graph)."""
    latent = pack.nodes.sampling.WanExpertsEmptyLatent().make(32, 32, 5)[0]
    whole = sampler(pack, moe, latent)
    first = sampler(pack, moe, latent, end_step=2, return_with_leftover_noise=True)
    assert "wan_solver_state" in first
    second = sampler(pack, moe, first, start_step=2, add_noise=False)
    err = (second["samples"] - whole["samples"]).abs().max().item()
    assert err <= 1e-5 * whole["samples"].abs().max().item() + 1e-6, err


@pytest.mark.parametrize("version,frames,kind", [("2.1", 5, "i2v"), ("2.2", 5, "ti2v")])
def test_image_to_video_node(pack, models_dir, version, frames, kind):
    vae = pack.nodes.vae.WanExpertsLoadVAE().load(write_vae(models_dir, version))[0]
    size = 32 if version == "2.1" else 64
    image = torch.rand(1, 40, 48, 3)  # other aspect: centre-cropped and resized
    cond, latent = pack.nodes.sampling.WanExpertsImageToVideo().make(vae, image, size, size, frames)
    assert cond.kind == kind and latent["samples"].shape == (1, vae.z_dim, 2, 4, 4)
    if kind == "i2v":
        assert cond.y.shape == (1, 20, 2, 4, 4)
        assert torch.equal(cond.y[0, :4, 0], torch.ones(4, 4, 4)) and not cond.y[0, :4, 1].any()
        end = pack.nodes.sampling.WanExpertsImageToVideo().make(vae, image, size, size, 9, end_image=image)[0]
        # 9 frames -> 3 latent frames; the last pixel frame is the 4th mask channel of the last latent frame
        assert end.kind == "flf2v" and end.y.shape == (1, 20, 3, 4, 4)
        assert end.y[0, 3, -1].all() and not end.y[0, :3, -1].any() and not end.y[0, :4, 1].any()
    else:
        assert cond.first_latent.shape == (1, 48, 1, 4, 4)


def test_i2v_sampler_node_runs(pack, models_dir):
    vae = pack.nodes.vae.WanExpertsLoadVAE().load(write_vae(models_dir, "2.1"))[0]
    name = write_dit(models_dir, "wan2.2_i2v_high_noise.safetensors", "i2v")
    model = pack.nodes.dit.WanExpertsLoadDiT().load(name)[0]
    cond, latent = pack.nodes.sampling.WanExpertsImageToVideo().make(vae, torch.rand(1, 32, 32, 3), 32, 32, 5)
    out = sampler(pack, model, latent, image_cond=cond, steps=2)
    assert out["samples"].shape == latent["samples"].shape and torch.isfinite(out["samples"]).all()
    with pytest.raises(ValueError, match="needs the start image"):
        sampler(pack, model, latent, steps=2)


def test_image_cond_for_t2v_model_node(pack, models_dir, moe):
    vae = pack.nodes.vae.WanExpertsLoadVAE().load(write_vae(models_dir, "2.1"))[0]
    cond, latent = pack.nodes.sampling.WanExpertsImageToVideo().make(vae, torch.rand(1, 32, 32, 3), 32, 32, 5)
    with pytest.raises(ValueError, match="text-to-video and cannot use it"):
        sampler(pack, moe, latent, image_cond=cond)


def test_48_channel_latent_for_14b_node(pack, moe):
    latent = {"samples": torch.zeros(1, 48, 2, 4, 4)}
    with pytest.raises(ValueError, match="48 channels"):
        sampler(pack, moe, latent)


def test_image_to_video_bad_inputs(pack, models_dir):
    vae = pack.nodes.vae.WanExpertsLoadVAE().load(write_vae(models_dir, "2.1"))[0]
    node = pack.nodes.sampling.WanExpertsImageToVideo()
    with pytest.raises(ValueError, match="4n\\+1"):
        node.make(vae, torch.rand(1, 32, 32, 3), 32, 32, 6)
    with pytest.raises(ValueError, match="multiple of 16"):
        node.make(vae, torch.rand(1, 32, 32, 3), 40, 32, 5)


def test_every_input_has_a_tooltip(pack):
    for cls in pack.nodes.sampling.NODES.values():
        spec = cls.INPUT_TYPES()
        for group in spec.values():
            for name, (_, *opts) in group.items():
                assert opts and opts[0].get("tooltip"), (cls.__name__, name)
        assert cls.DESCRIPTION and cls.DISPLAY_NAME and len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)


def test_sampler_node_progress_and_interruption(pack, moe, monkeypatch):
    """The host's cancel check runs before every transformer block (and at each step's progress tick): an
    interruption stops the run within one block."""
    host = pack.nodes.host
    calls = []

    def interrupted():
        calls.append(1)
        if len(calls) == 3:  # one check before the run, then one per block: stops at the second block
            raise KeyboardInterrupt("cancelled")

    monkeypatch.setattr(host, "check_interrupted", interrupted)
    latent = pack.nodes.sampling.WanExpertsEmptyLatent().make(32, 32, 5)[0]
    with pytest.raises(KeyboardInterrupt):
        sampler(pack, moe, latent)
    assert len(calls) == 3


def test_basic_sampler_equals_advanced_with_one_cfg(pack, moe):
    """Wan Sampler (basic) is Wan Sampler (Advanced) with cfg for both experts and every other setting at its
    default: same output, bit for bit (0 = the official pair, 4.0 high / 3.0 low, in both)."""
    latent = pack.nodes.sampling.WanExpertsEmptyLatent().make(32, 32, 5)[0]
    basic = pack.nodes.sampling.WanExpertsSamplerBasic()
    for cfg in (0.0, 2.5):
        out = basic.run(moe, pack_text(pack), latent, seed=5, steps=STEPS, cfg=cfg, shift=12.0)[0]
        ref = sampler(pack, moe, latent, cfg_high=cfg, cfg_low=cfg)
        assert torch.equal(out["samples"], ref["samples"])


def test_advanced_sampler_keeps_its_saved_widget_layout(pack):
    """Saved UI workflows store widget values by position: the Advanced sampler (id WanExpertsSampler) must keep the
    layout of the single sampler it replaces (new widgets may only be appended)."""
    from workflow_check import widget_slots

    layout = [(s.input, s.kind) for s in widget_slots(pack.nodes.sampling.WanExpertsSampler.INPUT_TYPES())]
    before = ["seed", "seed:control", "steps", "cfg_high", "cfg_low", "shift", "solver", "boundary", "switch_step",
              "start_step", "end_step", "add_noise", "return_with_leftover_noise", "denoise", "schedule",
              "keep_both_experts_on_device"]
    assert [f"{n}:{k}" if k != "value" else n for n, k in layout][:len(before)] == before


def test_batch_item_k_equals_a_single_run_with_seed_plus_k(pack, moe):
    """A batch of 2 made with seed 5: video k equals a batch-of-1 run with seed 5 + k (noise exactly; the sampled
    latents up to float32 batching differences, max error <= 1e-5 x max|ref| + 1e-6)."""
    node = pack.nodes.sampling.WanExpertsSamplerBasic()
    empty = pack.nodes.sampling.WanExpertsEmptyLatent()
    both = node.run(moe, pack_text(pack), empty.make(32, 32, 5, 2)[0], seed=5, steps=2, shift=12.0)[0]["samples"]
    for k in range(2):
        alone = node.run(moe, pack_text(pack), empty.make(32, 32, 5, 1)[0], seed=5 + k, steps=2, shift=12.0)
        ref = alone[0]["samples"][0]
        err = (both[k] - ref).abs().max().item()
        assert err <= 1e-5 * ref.abs().max().item() + 1e-6, (k, err)
    assert not torch.allclose(both[0], both[1])


@pytest.mark.parametrize("windows", [False, True], ids=["whole", "context_windows"])
def test_step_cache_report_is_logged_once(pack, moe, caplog, windows):
    """The sampler node shows the step cache's report once per run (the engine returns it; with context windows
    one report holds every window's copy)."""
    import importlib

    nodes = {m: importlib.import_module(f"{pack.__name__}.nodes.{m}") for m in ("cache", "long_video")}
    latent = pack.nodes.sampling.WanExpertsEmptyLatent().make(32, 32, 13 if windows else 5)[0]
    cache = nodes["cache"].WanExpertsMagCache().make(0.05)[0]
    context = nodes["long_video"].WanExpertsContextWindows().make(5, 4)[0] if windows else None
    with caplog.at_level(logging.INFO, logger="wan_experts"):
        sampler(pack, moe, latent, step_cache=cache, context=context)
    reports = [r for r in caplog.records if "branch calls computed" in r.getMessage()]
    assert len(reports) == 1, [r.getMessage() for r in reports]
    assert ("one state per context window" in reports[0].getMessage()) == windows

"""Tiny random-weight models for the sampling tests, from the independent implementations (official ``wan22``
WanModel and VAEs, diffusers WanTransformer3DModel), plus the official generation loops written out step by step
(``wan/text2video.py``, ``image2video.py``, ``textimage2video.py`` of ``wan22``) around the official schedulers."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from oracles import official
from oracles.randomize import randomize_
from wan.conditioning import TextEmbeds
from wan.dit.loader import load_dit
from wan.experts import ExpertSet

DIM, FFN, HEADS, LAYERS, TEXT_DIM, TEXT_LEN, FREQ_DIM = 256, 256, 2, 1, 32, 512, 256
KINDS = {"t2v": ("t2v", 16, 16), "i2v": ("i2v", 36, 16), "ti2v": ("ti2v", 48, 48)}


def official_dit(kind: str, seed: int):
    model_type, in_dim, out_dim = KINDS[kind]
    model = official.load("modules.model").WanModel(
        model_type=model_type, in_dim=in_dim, out_dim=out_dim, dim=DIM, ffn_dim=FFN, num_heads=HEADS,
        num_layers=LAYERS, text_dim=TEXT_DIM, freq_dim=FREQ_DIM, text_len=TEXT_LEN)
    return randomize_(model.eval(), std=0.05, seed=seed)


def ours_from_official(model, path, role="single"):
    """Save with official keys (as the released files) and load through our loader."""
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(path))
    return load_dit(path, role=role)


def ours_from_diffusers(model, folder, role="single"):
    model.save_pretrained(folder, safe_serialization=True)
    return load_dit(folder, role=role)


def official_vae21(seed=5):
    vae = official.load("modules.vae2_1").WanVAE_(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                                                   temperal_downsample=[False, True, True])
    return randomize_(vae.eval(), std=0.05, seed=seed)


def official_vae22(seed=6):
    vae = official.load("modules.vae2_2").WanVAE_(dim=8, dec_dim=8, z_dim=48, dim_mult=[1, 2, 4, 4],
                                                   num_res_blocks=1, temperal_downsample=[False, True, True])
    return randomize_(vae.eval(), std=0.05, seed=seed)


class RawVAE:
    """The engine's VAE interface around an official VAE module: raw (unnormalised) latents of mu."""

    def __init__(self, module, z_dim, stride):
        self.module, self.z_dim, self.stride = module, z_dim, stride

    @torch.no_grad()
    def encode(self, video):
        return self.module.encode(video.float(), scale=[0.0, 1.0])


def prompts(tokens=(7, 11), seed=3):
    """Two prompt embeddings as the official T5 wrapper returns them ([n, text_dim]) and as TextEmbeds."""
    g = torch.Generator().manual_seed(seed)
    pos, neg = (torch.randn(n, TEXT_DIM, generator=g) for n in tokens)
    pad = lambda e: torch.cat([e, e.new_zeros(TEXT_LEN - e.shape[0], TEXT_DIM)])[None]  # noqa: E731
    return pos, neg, TextEmbeds(pad(pos), pad(neg))


def official_scheduler(solver: str, steps: int, shift: float):
    """The scheduler construction of the official generate() methods."""
    if solver == "unipc":
        sched = official.load("utils.fm_solvers_unipc").FlowUniPCMultistepScheduler(
            num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
        sched.set_timesteps(steps, device="cpu", shift=shift)
        return sched
    mod = official.load("utils.fm_solvers")
    sched = mod.FlowDPMSolverMultistepScheduler(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
    mod.retrieve_timesteps(sched, device="cpu", sigmas=mod.get_sampling_sigmas(steps, shift))
    return sched


@torch.no_grad()
def official_loop(models, noise, pos, neg, steps, shift, solver="unipc", guide=(5.0, 5.0), boundary=None,
                  y=None, first_latent=None, per_token=False):
    """text2video / image2video / textimage2video ``generate`` loops. ``models``: {"high", "low"} or {"single"};
    ``guide`` = (low, high) as the official tuple; ``first_latent`` = TI2V z (i2v mode)."""
    sched = official_scheduler(solver, steps, shift)
    c, f, h, w = noise.shape
    seq_len = math.ceil(f * h * w / 4)
    latent = noise
    mask2 = torch.ones_like(noise)
    if first_latent is not None:
        mask2[:, 0] = 0
        latent = (1.0 - mask2) * first_latent + mask2 * latent
    for t in sched.timesteps:
        if boundary is None:
            model, scale = models["single"], guide[1]
        else:
            high = t.item() >= boundary * 1000
            model, scale = models["high" if high else "low"], guide[1] if high else guide[0]
        timestep = torch.stack([t])
        if per_token:
            timestep = (mask2[0][:, ::2, ::2] * timestep).flatten().unsqueeze(0)
        extra = {} if y is None else {"y": [y]}
        cond = model([latent], t=timestep, context=[pos], seq_len=seq_len, **extra)[0]
        uncond = model([latent], t=timestep, context=[neg], seq_len=seq_len, **extra)[0]
        pred = uncond + scale * (cond - uncond)
        latent = sched.step(pred.unsqueeze(0), t, latent.unsqueeze(0), return_dict=False)[0].squeeze(0)
        if first_latent is not None:
            latent = (1.0 - mask2) * first_latent + mask2 * latent
    return latent


@torch.no_grad()
def official_i2v_y(vae_module, image, frames):
    """image2video.generate: mask over latent frames + normalised latent of [image, zeros(F - 1)]."""
    mean = torch.tensor(official_stats(16)[0])
    std = torch.tensor(official_stats(16)[1])
    _, hh, ww = image.shape
    video = torch.cat([image[:, None], torch.zeros(3, frames - 1, hh, ww)], dim=1)
    z = vae_module.encode(video[None], scale=[mean, 1.0 / std])[0]
    lat_h, lat_w = z.shape[-2:]
    msk = torch.ones(1, frames, lat_h, lat_w)
    msk[:, 1:] = 0
    msk = torch.concat([torch.repeat_interleave(msk[:, 0:1], repeats=4, dim=1), msk[:, 1:]], dim=1)
    msk = msk.view(1, msk.shape[1] // 4, 4, lat_h, lat_w).transpose(1, 2)[0]
    return torch.concat([msk, z])


def official_stats(z_dim):
    """Latent mean/std lists of the official VAE wrappers (read from the official classes' source)."""
    import inspect
    import re

    cls = official.load("modules.vae2_1").Wan2_1_VAE if z_dim == 16 else official.load("modules.vae2_2").Wan2_2_VAE
    src = inspect.getsource(cls.__init__)
    lists = re.findall(r"(?:mean|std) = (?:torch\.tensor\(\s*)?\[(.*?)\]", src, flags=re.S)
    return [[float(v) for v in block.replace("\n", " ").split(",") if v.strip()] for block in lists[:2]]


def assert_close(ours, ref, rel=1e-4, abs_=1e-5):
    """The project's parity bar: max|ours - ref| <= rel * max|ref| + abs."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    err = (ours.float() - ref.float()).abs().max().item()
    bound = rel * ref.abs().max().item() + abs_
    assert err <= bound, f"max error {err:.3e} > {bound:.3e}"
    return err


def test_official_stats_match_ours():
    """Oracle: the official VAE wrappers' mean/std lists equal wan.latents' tables."""
    from wan.latents import STATS

    for z in (16, 48):
        mean, std = official_stats(z)
        assert mean == list(STATS[z][0]) and std == list(STATS[z][1])


def test_loaded_experts_pair(tmp_path):
    """Two official-key files load as an ExpertSet with the official I2V boundary."""
    high = ours_from_official(official_dit("i2v", 1), tmp_path / "h.safetensors", "high")
    low = ours_from_official(official_dit("i2v", 2), tmp_path / "l.safetensors", "low")
    experts = ExpertSet(high, low)
    assert experts.boundary == pytest.approx(0.9)

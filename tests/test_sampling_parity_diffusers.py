"""End-to-end sampling parity with diffusers' ``WanPipeline`` / ``WanImageToVideoPipeline`` driven with tiny
random components (float32, CPU, ``output_type="latent"`` = normalised latents): two experts through
``transformer_2`` + ``boundary_ratio``, TI2V-5B through ``expand_timesteps=True``, 2.1 I2V / FLF2V with CLIP
image embeddings. diffusers' flow UniPC starts from a slightly different sigma grid than the official scheduler
(linspace(1, 1/1000) with the first sigma lowered by 1e-6, instead of linspace(0.999, 0)); our sampler reproduces
it as the named schedule ``"diffusers"``, which these tests select. The weights are saved as diffusers folders and
loaded through ``wan.dit.loader.load_dit``. Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
import pytest
import torch

from oracles.randomize import randomize_
from test_sampling_models import (DIM, FFN, HEADS, LAYERS, TEXT_DIM, assert_close, official_stats, ours_from_diffusers,
                                  prompts)
from wan.experts import ExpertSet
from wan.sampling import SamplerSettings, image_condition, make_noise, sample

SEED, STEPS = 7, 4


def transformer(in_ch, out_ch, seed, image_dim=None, pos_len=None):
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=DIM // HEADS, in_channels=in_ch,
        out_channels=out_ch, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=FFN, num_layers=LAYERS, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=image_dim, added_kv_proj_dim=DIM if image_dim else None,
        rope_max_seq_len=1024, pos_embed_seq_len=pos_len)
    return randomize_(model.eval(), std=0.05, seed=seed)


def vae(z_dim=16):
    from diffusers import AutoencoderKLWan

    if z_dim == 16:
        model = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True, True])
    else:
        mean, std = official_stats(48)
        model = AutoencoderKLWan(base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True, True], is_residual=True, patch_size=2,
                                 in_channels=12, out_channels=12,
                                 scale_factor_spatial=16, latents_mean=mean, latents_std=std)
    return randomize_(model.eval(), std=0.05, seed=11)


class DiffusersVAE:
    """The engine's VAE interface around diffusers' AutoencoderKLWan (raw latents = the posterior's mode)."""

    def __init__(self, module):
        self.module, self.z_dim = module, module.config.z_dim
        self.stride = (4, module.config.scale_factor_spatial, module.config.scale_factor_spatial)

    @torch.no_grad()
    def encode(self, video):
        return self.module.encode(video).latent_dist.mode()


def scheduler(shift):
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                                   num_train_timesteps=1000)


def run_pipeline(cls, shift, size, **kwargs):
    _, _, text = prompts()
    pipe = cls(tokenizer=None, text_encoder=None, scheduler=scheduler(shift), **kwargs.pop("parts"))
    if "image_embeds" in kwargs:  # its check_inputs refuses image + image_embeds, yet both are needed (VAE + CLIP)
        pipe.check_inputs = lambda *args, **kw: None
    g = torch.Generator().manual_seed(SEED)
    return pipe(prompt_embeds=text.positive, negative_prompt_embeds=text.negative, height=size, width=size,
                num_frames=5, num_inference_steps=STEPS, generator=g, output_type="latent", **kwargs).frames


def run_ours(experts, shape, shift, cfg_high, cfg_low=None, cond=None):
    _, _, text = prompts()
    settings = SamplerSettings(steps=STEPS, shift=shift, cfg_high=cfg_high, cfg_low=cfg_low or cfg_high,
                               schedule="diffusers")
    return sample(experts, torch.zeros(shape), text, settings, noise=make_noise(shape, SEED), image_cond=cond)


def image(size, seed=4):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_wan_pipeline_two_experts(tmp_path):
    """Oracle: diffusers WanPipeline, transformer (high, guidance 4) + transformer_2 (low, guidance 3), boundary
    0.875, shift 12."""
    from diffusers import WanPipeline

    high, low = transformer(16, 16, 1), transformer(16, 16, 2)
    ref = run_pipeline(WanPipeline, 12.0, 32, guidance_scale=4.0, guidance_scale_2=3.0,
                       parts=dict(vae=vae(), transformer=high, transformer_2=low, boundary_ratio=0.875))
    experts = ExpertSet(ours_from_diffusers(high, tmp_path / "high", "high"),
                        ours_from_diffusers(low, tmp_path / "low", "low"), boundary=0.875)
    ours = run_ours(experts, (1, 16, 2, 4, 4), 12.0, 4.0, 3.0)
    assert "high" in ours.experts and "low" in ours.experts
    assert_close(ours.latents, ref)


def test_i2v_pipeline_two_experts(tmp_path):
    """Oracle: diffusers WanImageToVideoPipeline (Wan 2.2 I2V-A14B: no CLIP), two experts, boundary 0.9."""
    from diffusers import WanImageToVideoPipeline

    high, low, v = transformer(36, 16, 3), transformer(36, 16, 4), vae()
    start = image(32)
    ref = run_pipeline(WanImageToVideoPipeline, 5.0, 32, image=start, guidance_scale=3.5, guidance_scale_2=2.5,
                       parts=dict(vae=v, transformer=high, transformer_2=low, boundary_ratio=0.9))
    experts = ExpertSet(ours_from_diffusers(high, tmp_path / "high", "high"),
                        ours_from_diffusers(low, tmp_path / "low", "low"), boundary=0.9)
    cond = image_condition(DiffusersVAE(v), start * 2 - 1, 32, 32, 5)
    ours = run_ours(experts, (1, 16, 2, 4, 4), 5.0, 3.5, 2.5, cond)
    assert_close(ours.latents, ref)


@pytest.mark.parametrize("flf", [False, True], ids=["i2v", "flf2v"])
def test_wan21_i2v_and_flf2v_with_clip(tmp_path, flf):
    """Oracle: diffusers WanImageToVideoPipeline with a 2.1 image branch (image_embeds given; FLF2V: last_image,
    514 CLIP tokens and emb_pos)."""
    from diffusers import WanImageToVideoPipeline

    model = transformer(36, 16, 5, image_dim=TEXT_DIM, pos_len=514 if flf else None)
    v = vae()
    start, end = image(32), image(32, seed=6) if flf else None
    clip = torch.randn(1, 514 if flf else 257, TEXT_DIM, generator=torch.Generator().manual_seed(2))
    extra = {"last_image": end} if flf else {}
    # diffusers takes the FLF2V CLIP features per image ([2, 257, D], start then end) and joins them to [1, 514, D]
    ref_clip = clip.view(-1, 257, TEXT_DIM)
    ref = run_pipeline(WanImageToVideoPipeline, 5.0, 32, image=start, image_embeds=ref_clip, guidance_scale=5.0,
                       parts=dict(vae=v, transformer=model), **extra)
    experts = ExpertSet(ours_from_diffusers(model, tmp_path / "dit"))
    cond = image_condition(DiffusersVAE(v), start * 2 - 1, 32, 32, 5, end=None if end is None else end * 2 - 1,
                           clip=clip)
    assert cond.kind == ("flf2v" if flf else "i2v")
    assert_close(run_ours(experts, (1, 16, 2, 4, 4), 5.0, 5.0, cond=cond).latents, ref)


@pytest.mark.parametrize("mode", ["t2v", "i2v"])
def test_ti2v_expand_timesteps(tmp_path, mode):
    """Oracle: diffusers WanPipeline / WanImageToVideoPipeline with expand_timesteps=True (TI2V-5B)."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    model, v = transformer(48, 48, 6), vae(48)
    parts = dict(vae=v, transformer=model, expand_timesteps=True)
    if mode == "t2v":
        ref = run_pipeline(WanPipeline, 5.0, 64, guidance_scale=5.0, parts=parts)
        cond = None
    else:
        start = image(64)
        ref = run_pipeline(WanImageToVideoPipeline, 5.0, 64, image=start, guidance_scale=5.0, parts=parts)
        cond = image_condition(DiffusersVAE(v), start * 2 - 1, 64, 64, 5)
    experts = ExpertSet(ours_from_diffusers(model, tmp_path / "dit"))
    assert_close(run_ours(experts, (1, 48, 2, 4, 4), 5.0, 5.0, cond=cond).latents, ref)

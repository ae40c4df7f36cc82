"""DiT parity with two independent implementations, float32, tiny random weights (every parameter randomised).

Oracles: the official Wan code (PyPI ``wan22``, ``WanModel``: T2V, 2.2 I2V concat, TI2V per-token timesteps) and
diffusers ``WanTransformer3DModel`` (all of those plus the 2.1 CLIP image branch and FLF2V ``pos_embed``).
Weights are saved in each implementation's own layout and loaded through ``wan.load_dit``.
Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5.
"""
import pytest
import torch

import wan
from tiny_dit import (assert_close, diffusers_dit, inputs, official_dit, save_safetensors, state_dict_of, TEXT_DIM)


def _official_forward(ref, x, t, ctx, y=None):
    seq_len = x.shape[2] * (x.shape[3] // 2) * (x.shape[4] // 2)
    if t.dim() == 1:  # the official forward expands [B] -> [B, L] correctly only for B == 1
        t = t[:, None].expand(-1, seq_len)
    with torch.no_grad():
        out = ref(list(x), t=t, context=list(ctx), seq_len=seq_len, y=None if y is None else list(y))
    return torch.stack(out)


@pytest.mark.parametrize("kind,in_dim,y_dim,variant", [
    ("t2v", 16, 0, "wan21_t2v_14b"),
    ("i2v22", 16, 20, "wan22_i2v_a14b"),
    ("ti2v", 48, 0, "wan22_ti2v_5b"),
])
def test_matches_official(tmp_path, kind, in_dim, y_dim, variant):
    ref = official_dit(kind)
    ours = wan.load_dit(save_safetensors(state_dict_of(ref), tmp_path / "dit.safetensors"))
    assert ours.variant == variant
    x, t, ctx, y = inputs(in_dim, y_dim)
    with torch.no_grad():
        out = ours(x, t, ctx, y=y)
    assert_close(out, _official_forward(ref, x, t, ctx, y))


def test_matches_official_with_short_context(tmp_path):
    """The official model zero-pads text to 512 tokens before the text projection; so do we."""
    ref = official_dit("t2v")
    ours = wan.load_dit(save_safetensors(state_dict_of(ref), tmp_path / "dit.safetensors"))
    x, t, ctx, _ = inputs(16, text_tokens=7)
    with torch.no_grad():
        assert_close(ours(x, t, ctx), _official_forward(ref, x, t, ctx))


def test_ti2v_per_token_timesteps_match_official(tmp_path):
    """TI2V-5B: timestep per token [B, L] (0 on the first latent frame's tokens, t elsewhere)."""
    ref = official_dit("ti2v")
    ours = wan.load_dit(save_safetensors(state_dict_of(ref), tmp_path / "dit.safetensors"))
    x, _, ctx, _ = inputs(48)
    tokens_per_frame, n = (8 // 2) * (12 // 2), 3 * (8 // 2) * (12 // 2)
    t = torch.tensor([[0.0] * tokens_per_frame + [737.0] * (n - tokens_per_frame),
                      [0.0] * tokens_per_frame + [95.0] * (n - tokens_per_frame)])
    with torch.no_grad():
        out = ours(x, t, ctx)
    assert_close(out, _official_forward(ref, x, t, ctx))


def _diffusers_forward(ref, x, t, ctx, y=None, clip=None):
    hidden = x if y is None else torch.cat([x, y], dim=1)
    with torch.no_grad():
        return ref(hidden, timestep=t, encoder_hidden_states=ctx, encoder_hidden_states_image=clip,
                   return_dict=False)[0]


@pytest.mark.parametrize("in_ch,out_ch,y_dim,variant", [
    (16, 16, 0, "wan21_t2v_14b"), (36, 16, 20, "wan22_i2v_a14b"), (48, 48, 0, "wan22_ti2v_5b"),
])
def test_matches_diffusers(tmp_path, in_ch, out_ch, y_dim, variant):
    ref = diffusers_dit(in_ch, out_ch)
    ref.save_pretrained(tmp_path / "transformer", safe_serialization=True)
    ours = wan.load_dit(tmp_path / "transformer")
    assert ours.variant == variant and ours.layout == "diffusers"
    x, t, ctx, y = inputs(out_ch if y_dim else in_ch, y_dim)
    with torch.no_grad():
        out = ours(x, t, ctx, y=y)
    assert_close(out, _diffusers_forward(ref, x, t, ctx, y))


def test_ti2v_per_token_timesteps_match_diffusers(tmp_path):
    ref = diffusers_dit(48, 48)
    ref.save_pretrained(tmp_path / "transformer")
    ours = wan.load_dit(tmp_path / "transformer")
    x, _, ctx, _ = inputs(48)
    t = torch.rand(2, 3 * 4 * 6, generator=torch.Generator().manual_seed(3)) * 1000
    with torch.no_grad():
        assert_close(ours(x, t, ctx), _diffusers_forward(ref, x, t, ctx))


CLIP_DIM, CLIP_TOKENS = 48, 5  # stand-ins for 1280 and 257


def test_wan21_i2v_clip_branch_matches_diffusers(tmp_path):
    """2.1 I2V: image tokens projected by img_emb, a second (image) attention in every cross-attention."""
    ref = diffusers_dit(36, 16, image_dim=CLIP_DIM)
    ref.save_pretrained(tmp_path / "transformer")
    ours = wan.load_dit(tmp_path / "transformer")
    assert ours.variant == "wan21_i2v_14b" and ours.config.clip_dim == CLIP_DIM
    x, t, ctx, y = inputs(16, 20)
    clip = torch.randn(2, CLIP_TOKENS, CLIP_DIM)
    with torch.no_grad():
        out = ours(x, t, ctx, clip_fea=clip, y=y)
    assert_close(out, _diffusers_forward(ref, x, t, ctx, y, clip))


def test_flf2v_matches_diffusers(tmp_path):
    """FLF2V: CLIP tokens of the first and last frame, a learned position per token (emb_pos) before img_emb."""
    ref = diffusers_dit(36, 16, image_dim=CLIP_DIM, pos_embed_seq_len=2 * CLIP_TOKENS)
    ref.save_pretrained(tmp_path / "transformer")
    ours = wan.load_dit(tmp_path / "transformer")
    assert ours.variant == "wan21_flf2v_14b" and ours.config.flf_pos_len == 2 * CLIP_TOKENS
    x, t, ctx, y = inputs(16, 20, batch=1)
    first_last = torch.randn(2, CLIP_TOKENS, CLIP_DIM)  # diffusers takes [first; last] and joins them itself
    with torch.no_grad():
        out = ours(x, t[:1], ctx, clip_fea=first_last.reshape(1, 2 * CLIP_TOKENS, CLIP_DIM), y=y)
    assert_close(out, _diffusers_forward(ref, x, t[:1], ctx, y, first_last))


def test_bf16_compute_stays_close_to_fp32(tmp_path):
    """bf16 weights and attention with float32 residual stream: close to the float32 result (bf16 precision)."""
    path = save_safetensors(state_dict_of(official_dit("t2v")), tmp_path / "dit.safetensors")
    x, t, ctx, _ = inputs(16)
    with torch.no_grad():
        ref = wan.load_dit(path)(x, t, ctx)
        model = wan.load_dit(path, dtype="bf16")
        out = model(x, t, ctx)
    assert model.blocks[0].self_attn.q.weight.dtype == torch.bfloat16 and out.dtype == torch.float32
    rel = (out - ref).abs().max() / ref.abs().max()
    assert 0 < rel < 3e-2, rel

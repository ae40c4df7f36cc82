"""Tiny random-weight Wan Animate DiTs from the official code (``wan22``: ``WanAnimateModel``) and diffusers
(``WanAnimateTransformer3DModel``), and their inputs.

The official model builds its motion encoder for 512 x 512 faces; the tiny one gets the official ``Generator`` for
8 x 8 faces instead (same code, its own channel table: 512 wide), which keeps a CPU forward fast. Ten blocks: the
official face adapter follows every 5th block (two adapter blocks here)."""
from __future__ import annotations

import torch

from oracles import official
from oracles.randomize import randomize_
from tiny_dit import DIM, FFN, FREQ_DIM, HEADS, TEXT_DIM, TEXT_LEN

LAYERS, FACE, CLIP_TOKENS, CLIP_DIM = 10, 8, 257, 1280


def official_animate(seed: int = 0, std: float = 0.1, layers: int = LAYERS, face: int = FACE):
    model_mod = official.load("modules.animate.model_animate")
    Generator = model_mod.Generator
    model_mod.Generator = lambda size, **kw: Generator(size=face, **kw)  # a small one, built in its place
    try:
        model = model_mod.WanAnimateModel(in_dim=36, dim=DIM, ffn_dim=FFN, freq_dim=FREQ_DIM, text_dim=TEXT_DIM,
                                          out_dim=16, num_heads=HEADS, num_layers=layers, text_len=TEXT_LEN)
    finally:
        model_mod.Generator = Generator
    randomize_(model.eval(), std=std, seed=seed)
    randomize_(model.motion_encoder, std=1.0, seed=seed + 1)  # the official init of its weights: randn
    return model


def official_face_attention():
    """The official face blocks call flash_attn_func (CUDA only): an SDPA stand-in with its [B, L, H, D] layout.
    Returns the module and the previous value, to put back."""
    fb = official.load("modules.animate.face_blocks")

    def sdpa(q, k, v):
        out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)

    previous, fb.flash_attn_func = fb.flash_attn_func, sdpa
    return fb, previous


def diffusers_animate(official_model):
    """diffusers' model with the official weights, converted by diffusers' own single-file converter."""
    from diffusers import WanAnimateTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    model = WanAnimateTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=DIM // HEADS, in_channels=36,
        latent_channels=16, out_channels=16, text_dim=TEXT_DIM, freq_dim=FREQ_DIM, ffn_dim=FFN, num_layers=LAYERS,
        image_dim=CLIP_DIM, added_kv_proj_dim=DIM, motion_encoder_size=FACE, face_encoder_hidden_dim=1024,
        face_encoder_num_heads=4, inject_face_latents_blocks=5)
    sd = {k: v.clone() for k, v in official_model.state_dict().items() if not k.endswith(".kernel")}
    sd = convert_wan_transformer_to_diffusers(sd)
    last = f"motion_encoder.enc.net_app.convs.{len(official_model.motion_encoder.enc.net_app.convs) - 1}.weight"
    sd["motion_encoder.conv_out.weight"] = sd.pop(last)  # the converter knows the 512 x 512 encoder's index only
    model.load_state_dict(sd, strict=True)
    return model.eval()


def animate_inputs(latent_frames: int = 3, h: int = 8, w: int = 12, seed: int = 1, text_tokens: int = 9):
    """One clip's latents (reference frame first) and conditioning, batch 1 like the official pipeline."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, latent_frames, h, w, generator=g)
    y = torch.randn(1, 20, latent_frames, h, w, generator=g)
    ctx = torch.randn(1, text_tokens, TEXT_DIM, generator=g)
    clip = torch.randn(1, CLIP_TOKENS, CLIP_DIM, generator=g)
    pose = torch.randn(1, 16, latent_frames - 1, h, w, generator=g)
    face = torch.rand(1, 3, 4 * (latent_frames - 2) + 1, FACE, FACE, generator=g) * 2 - 1
    return x, y, ctx, clip, pose, face


def official_animate_forward(model, x, t, y, ctx, clip, pose, face):
    seq_len = x.shape[2] * (x.shape[3] // 2) * (x.shape[4] // 2)
    fb, previous = official_face_attention()
    try:
        with torch.no_grad():
            out = model(list(x), t=torch.as_tensor([t], dtype=torch.float32), clip_fea=clip, context=list(ctx),
                        seq_len=seq_len, y=list(y), pose_latents=pose, face_pixel_values=face)
    finally:
        fb.flash_attn_func = previous
    return torch.stack(out)

"""Tiny random-weight Wan VACE DiTs from the independent implementations (the official ``VaceWanModel`` rebuilt in
``oracles/vace_model.py`` on the ``wan22`` classes; diffusers ``WanVACETransformer3DModel``), and their inputs."""
from __future__ import annotations

import torch

from oracles import vace_model
from oracles.randomize import randomize_
from tiny_dit import DIM, FFN, FREQ_DIM, HEADS, TEXT_DIM, TEXT_LEN

LAYERS, VACE_LAYERS, VACE_IN = 4, (0, 2), 96


def official_vace(seed: int = 0, std: float = 0.1, layers: int = LAYERS, vace_layers=VACE_LAYERS):
    model = vace_model.build(list(vace_layers), VACE_IN, in_dim=16, dim=DIM, ffn_dim=FFN, freq_dim=FREQ_DIM,
                             text_dim=TEXT_DIM, out_dim=16, num_heads=HEADS, num_layers=layers, text_len=TEXT_LEN)
    return randomize_(model.eval(), std=std, seed=seed)


def diffusers_vace(seed: int = 0, std: float = 0.1, layers: int = LAYERS, vace_layers=VACE_LAYERS):
    from diffusers import WanVACETransformer3DModel

    model = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=DIM // HEADS, in_channels=16,
        out_channels=16, text_dim=TEXT_DIM, freq_dim=FREQ_DIM, ffn_dim=FFN, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024, vace_layers=list(vace_layers),
        vace_in_channels=VACE_IN)
    return randomize_(model.eval(), std=std, seed=seed)


def vace_inputs(frames: int = 3, h: int = 8, w: int = 12, batch: int = 1, seed: int = 1, text_tokens: int = 9):
    """Latents, text context and a VACE context [B, 96, T, h, w] for a forward pass."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, frames, h, w, generator=g)
    ctx = torch.randn(batch, text_tokens, TEXT_DIM, generator=g)
    vace = torch.randn(batch, VACE_IN, frames, h, w, generator=g)
    return x, ctx, vace


def official_vace_forward(model, x, t: float, ctx, vace, scale: float = 1.0) -> torch.Tensor:
    seq_len = x.shape[2] * (x.shape[3] // 2) * (x.shape[4] // 2)
    with torch.no_grad():
        out = model(list(x), t=torch.full((x.shape[0],), t), vace_context=list(vace), context=list(ctx),
                    seq_len=seq_len, vace_context_scale=scale)
    return torch.stack(out)


def diffusers_vace_forward(model, x, t: float, ctx, vace, scale: float = 1.0) -> torch.Tensor:
    scales = torch.full((len(model.config.vace_layers),), scale)
    with torch.no_grad():
        return model(x, torch.full((x.shape[0],), t), ctx, control_hidden_states=vace,
                     control_hidden_states_scale=scales, return_dict=False)[0]

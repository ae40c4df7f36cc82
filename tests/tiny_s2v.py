"""Tiny random-weight Wan S2V DiTs from the official code (``wan22``: ``WanModel_S2V`` with the S2V-14B switches:
AdaIN "attn_norm", frame-pack motion, zero timestep, pose input), and their inputs."""
from __future__ import annotations

import torch

from oracles import official
from oracles.randomize import randomize_
from tiny_dit import DIM, FFN, FREQ_DIM, HEADS, TEXT_DIM, TEXT_LEN

AUDIO_DIM, LAYERS, INJECT = 32, 2, [0, 1]


def official_s2v(seed: int = 0, std: float = 0.1, layers: int = LAYERS, inject=INJECT, audio_dim: int = AUDIO_DIM):
    WanModel_S2V = official.load("modules.s2v.model_s2v").WanModel_S2V
    model = WanModel_S2V(
        cond_dim=16, audio_dim=audio_dim, num_audio_token=4, enable_adain=True, adain_mode="attn_norm",
        audio_inject_layers=list(inject), zero_init=True, zero_timestep=True, enable_motioner=False,
        add_last_motion=True, enable_framepack=True, framepack_drop_mode="padd", in_dim=16, dim=DIM, ffn_dim=FFN,
        freq_dim=FREQ_DIM, text_dim=TEXT_DIM, out_dim=16, num_heads=HEADS, num_layers=layers, text_len=TEXT_LEN)
    return randomize_(model.eval(), std=std, seed=seed)


def s2v_inputs(frames: int = 3, h: int = 8, w: int = 16, motion_frames: int = 5, seed: int = 1,
               text_tokens: int = 9):
    """One clip's latents and conditioning (batch 1, like the official pipeline)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, frames, h, w, generator=g)
    ctx = torch.randn(1, text_tokens, TEXT_DIM, generator=g)
    ref = torch.randn(1, 16, 1, h, w, generator=g)
    motion = torch.randn(1, 16, motion_frames, h, w, generator=g)
    pose = torch.randn(1, 16, frames, h, w, generator=g)
    audio = torch.randn(1, 25, AUDIO_DIM, 4 * frames, generator=g)
    return x, ctx, ref, motion, pose, audio


def official_s2v_forward(model, x, t, ctx, ref, motion, pose, audio, drop_motion: bool):
    """The official forward for batch 1 (its zero-timestep code assumes one video); pose None = zeros (as the
    official pipeline passes without a pose video)."""
    pose = torch.zeros_like(x) if pose is None else pose
    seq_len = x.shape[2] * (x.shape[3] // 2) * (x.shape[4] // 2)
    with torch.no_grad():
        out = model(list(x), t=torch.as_tensor([t], dtype=torch.float32), context=list(ctx), seq_len=seq_len,
                    ref_latents=list(ref), motion_latents=list(motion), cond_states=list(pose), audio_input=audio,
                    motion_frames=[73, 19], drop_motion_frames=drop_motion)
    return torch.stack(out)

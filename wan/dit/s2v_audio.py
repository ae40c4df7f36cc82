"""The audio side of the S2V DiT: the causal audio encoder (wav2vec2 features -> per-latent-frame audio tokens and
a global vector) and the audio injection after chosen blocks (AdaIN "attn_norm" then cross-attention to the tokens
of the same latent frame). Parameter names follow the official ``WanModel_S2V`` (``casual_audio_encoder.*``,
``audio_injector.*``), which the Comfy-Org repacks keep.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..weights.ops import Linear, layer_norm
from .attention import AttentionFn
from .model import CrossAttention

NORM_EPS = 1e-6  # the encoder's LayerNorms
ADAIN_EPS = 1e-5  # the AdaIN LayerNorm (torch's default)
WAV2VEC2_STATES = 25  # hidden states of wav2vec2-large: the feature projection plus 24 layers


class CausalConv1d(nn.Module):
    """Conv1d with all its temporal padding in the past (replicating the first step)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.pad = kernel - 1
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, T] float32 -> [B, C_out, T'] float32 (the official encoder runs in float32)."""
        x = F.pad(x, (self.pad, 0), mode="replicate")
        bias = None if self.conv.bias is None else self.conv.bias.float()
        return F.conv1d(x, self.conv.weight.float(), bias, stride=self.conv.stride)


class MotionEncoder(nn.Module):
    """Three causal convolutions (stride 1, 2, 2: a latent frame per 4 video frames) with LayerNorm + SiLU after
    each; a local branch of ``num_tokens`` tokens per frame (plus a learned padding token) and a global one."""

    def __init__(self, in_dim: int, hidden: int, num_tokens: int, need_global: bool = True):
        super().__init__()
        self.num_tokens = num_tokens
        self.conv1_local = CausalConv1d(in_dim, hidden // 4 * num_tokens, 3)
        if need_global:
            self.conv1_global = CausalConv1d(in_dim, hidden // 4, 3)
            self.final_linear = Linear(hidden, hidden)
        self.conv2 = CausalConv1d(hidden // 4, hidden // 2, 3, stride=2)
        self.conv3 = CausalConv1d(hidden // 2, hidden, 3, stride=2)
        self.padding_tokens = nn.Parameter(torch.zeros(1, 1, 1, hidden))

    def _tail(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C/4, T] after conv1 -> [N, T/4, C] through norm1, conv2, norm2, conv3, norm3 (each with SiLU)."""
        x = F.silu(layer_norm(x.transpose(1, 2), eps=NORM_EPS)).transpose(1, 2)
        x = F.silu(layer_norm(self.conv2(x).transpose(1, 2), eps=NORM_EPS)).transpose(1, 2)
        return F.silu(layer_norm(self.conv3(x).transpose(1, 2), eps=NORM_EPS))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """x [B, T, C_in] float32 -> (global [B, T', 1, C] or None, local [B, T', num_tokens + 1, C])."""
        b, n = x.shape[0], self.num_tokens
        x = x.transpose(1, 2)
        local = self.conv1_local(x)  # [B, n * C/4, T]
        local = local.view(b, n, -1, local.shape[-1]).flatten(0, 1)  # [(B n), C/4, T]
        local = self._tail(local)
        local = local.view(b, n, *local.shape[1:]).transpose(1, 2)  # [B, T', n, C]
        padding = self.padding_tokens.float().expand(b, local.shape[1], 1, -1)
        local = torch.cat([local, padding], dim=2)
        if not hasattr(self, "conv1_global"):
            return None, local
        glob = self.final_linear(self._tail(self.conv1_global(x)))
        return glob.unsqueeze(2), local


class CausalAudioEncoder(nn.Module):
    """wav2vec2 hidden states [B, 25, C_a, T] -> a learned softmax-free weighted mean over the states (SiLU weights,
    normalised) -> ``MotionEncoder``. Runs in float32, as the official code does."""

    def __init__(self, audio_dim: int, dim: int, num_tokens: int, need_global: bool):
        super().__init__()
        self.encoder = MotionEncoder(audio_dim, dim, num_tokens, need_global)
        self.weights = nn.Parameter(torch.full((1, WAV2VEC2_STATES, 1, 1), 0.01))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        w = F.silu(self.weights.float())
        mixed = (features.float() * w / w.sum(dim=1, keepdim=True)).sum(dim=1)  # [B, C_a, T]
        return self.encoder(mixed.transpose(1, 2))


class AdaIN(nn.Module):
    """``AdaLayerNorm`` of the official injector: LayerNorm(x) * (1 + scale) + shift, with (shift, scale) =
    Linear(SiLU(v))."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = Linear(dim, 2 * dim)

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.linear(F.silu(vec)).unsqueeze(1).float().chunk(2, dim=-1)
        return (layer_norm(x, eps=ADAIN_EPS) * (1 + scale) + shift).to(x.dtype)


class AudioInjector(nn.Module):
    """Cross-attention from the video tokens of each latent frame to that frame's audio tokens, after the blocks
    ``layers``; with AdaIN the video tokens are first modulated by the frame's global audio vector."""

    def __init__(self, dim: int, num_heads: int, eps: float, layers: tuple[int, ...], adain: bool):
        super().__init__()
        self.slot = {layer: i for i, layer in enumerate(layers)}
        self.injector = nn.ModuleList(CrossAttention(dim, num_heads, eps, image_branch=False) for _ in layers)
        if adain:
            self.injector_adain_layers = nn.ModuleList(AdaIN(dim) for _ in layers)

    def injects_after(self, block: int) -> bool:
        return block in self.slot

    def forward(self, x: torch.Tensor, block: int, audio: torch.Tensor, audio_global: torch.Tensor | None,
                n_video: int, dtype: torch.dtype, attn: AttentionFn) -> torch.Tensor:
        """x: float32 [B, L, C] (video tokens first); audio [B, T, n, C], audio_global [B, T, 1, C]."""
        i = self.slot.get(block)
        if i is None:
            return x
        b, frames = x.shape[0], audio.shape[1]
        video = x[:, :n_video].reshape(b * frames, n_video // frames, x.shape[-1]).to(dtype)
        if hasattr(self, "injector_adain_layers"):
            h = self.injector_adain_layers[i](video, audio_global.flatten(0, 1)[:, 0].to(dtype))
        else:
            h = layer_norm(video, eps=NORM_EPS).to(dtype)
        out = self.injector[i](h, audio.flatten(0, 1).to(dtype), 0, attn)
        x = x.clone()
        x[:, :n_video] += out.reshape(b, n_video, -1).float()
        return x

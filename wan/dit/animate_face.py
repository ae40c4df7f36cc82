"""Face conditioning of the Animate DiT: the face encoder (official ``face_encoder.*``) and the face adapter blocks
(``face_adapter.fuser_blocks.N.*``).

The face encoder turns the motion vectors of a clip's frames [B, T, 512] into tokens per latent frame: a causal
temporal conv (replicate padding) to ``heads`` x ``hidden`` channels, split into ``heads`` streams, then two causal
convs of stride 2 (so 4k + 1 frames become k + 1), each followed by a LayerNorm without parameters and SiLU, and a
projection to the DiT width; a learned padding token is appended: [B, k + 1, heads + 1, dim].

A face adapter block lets the video tokens of latent frame f attend to the face tokens of frame f only
(LayerNorm-ed, q/k RMSNorm per head); its output is added to the residual stream after every ``every``-th DiT block.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..weights.ops import Linear, RMSNorm, layer_norm, widened
from .attention import AttentionFn

EPS = 1e-6


class CausalConv1d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.conv.kernel_size[0]
        x = F.pad(x, (k - 1, 0), mode="replicate")
        return widened(F.conv1d, x, self.conv.weight.to(x.dtype), self.conv.bias.to(x.dtype), stride=self.conv.stride)


class FaceEncoder(nn.Module):
    def __init__(self, in_dim: int, dim: int, hidden: int = 1024, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.conv1_local = CausalConv1d(in_dim, hidden * heads)
        self.conv2 = CausalConv1d(hidden, hidden, stride=2)
        self.conv3 = CausalConv1d(hidden, hidden, stride=2)
        self.out_proj = Linear(hidden, dim)
        self.padding_tokens = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, motion: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """motion [B, T, in_dim] -> face tokens [B, T', heads + 1, dim] (compute dtype)."""
        b = motion.shape[0]
        x = self.conv1_local(motion.to(dtype).transpose(1, 2))  # [B, heads * hidden, T]
        x = x.unflatten(1, (self.heads, -1)).flatten(0, 1)  # [B * heads, hidden, T]
        for conv in (None, self.conv2, self.conv3):
            if conv is not None:
                x = conv(x)
            x = F.silu(layer_norm(x.transpose(1, 2), eps=EPS).to(dtype)).transpose(1, 2)
        x = self.out_proj(x.transpose(1, 2))  # [B * heads, T', dim]
        x = x.unflatten(0, (b, self.heads)).transpose(1, 2)  # [B, T', heads, dim]
        pad = self.padding_tokens.to(x.dtype).expand(b, x.shape[1], 1, -1)
        return torch.cat([x, pad], dim=2)


class FaceBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.linear1_kv = Linear(dim, 2 * dim)
        self.linear1_q = Linear(dim, dim)
        self.linear2 = Linear(dim, dim)
        self.q_norm = RMSNorm(dim // num_heads, EPS)
        self.k_norm = RMSNorm(dim // num_heads, EPS)

    def forward(self, x: torch.Tensor, face: torch.Tensor, attn: AttentionFn, shard=None) -> torch.Tensor:
        """x float32 [B, T * S, dim] (S tokens per latent frame), face [B, T, N, dim] -> the residual [B, T * S, dim].
        ``shard`` (sequence parallel, a ``TokenShard``): x holds this rank's slice of the tokens; the queries of all
        ranks are gathered for the attention and this rank's slice of its output is kept."""
        b, t, n, dim = face.shape
        h, dtype = self.num_heads, face.dtype
        kv = self.linear1_kv(layer_norm(face, eps=EPS).to(dtype))  # [B, T, N, 2 dim]
        k, v = kv.view(b, t, n, 2, h, dim // h).unbind(3)
        q = self.linear1_q(layer_norm(x, eps=EPS).to(dtype)).view(b, x.shape[1], h, dim // h)
        q = self.q_norm(q).to(v.dtype)
        if shard is not None:
            q = shard.gather(q)  # [B, T * S, h, dim / h]
        q = q.reshape(b * t, -1, h, dim // h)  # each latent frame attends to its own face
        k = self.k_norm(k).to(v.dtype).reshape(b * t, n, h, dim // h)
        out = attn(q, k, v.reshape(b * t, n, h, dim // h)).reshape(b, -1, dim)  # [B, T * S, dim]
        return self.linear2(out if shard is None else shard.split(out, dim=1))


class FaceAdapter(nn.Module):
    def __init__(self, dim: int, num_heads: int, count: int):
        super().__init__()
        self.fuser_blocks = nn.ModuleList(FaceBlock(dim, num_heads) for _ in range(count))

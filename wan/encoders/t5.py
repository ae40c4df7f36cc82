"""The UMT5 encoder (Wan uses UMT5-XXL): pre-norm blocks, unscaled attention with a relative-position bias learnt
in every block, gated tanh-GELU feed-forward, RMS norms without bias.

Parameter names are those of the official Wan checkpoint (``models_t5_umt5-xxl-enc-bf16.pth``); other layouts are
renamed to them in ``t5_keys.py``. Numerics follow the official code: norms in float32, softmax in float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError
from ..weights.ops import Linear


@dataclass(frozen=True)
class UMT5Config:
    vocab: int = 256384
    dim: int = 4096
    dim_attn: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "UMT5Config":
        """Read every size off the weights (official names); heads come from the relative-bias table."""
        try:
            vocab, dim = sd["token_embedding.weight"].shape
            buckets, heads = sd["blocks.0.pos_embedding.embedding.weight"].shape
            return cls(vocab=vocab, dim=dim, dim_attn=sd["blocks.0.attn.q.weight"].shape[0],
                       dim_ffn=sd["blocks.0.ffn.fc1.weight"].shape[0], num_heads=heads,
                       num_layers=_count_blocks(sd), num_buckets=buckets)
        except KeyError as exc:
            raise CheckpointError(f"the UMT5 weights lack {exc}; the file is incomplete or not a UMT5 encoder") from exc


def _count_blocks(sd) -> int:
    return len({k.split(".")[1] for k in sd if k.startswith("blocks.")})


class RMSNorm(nn.Module):
    """T5 norm: scale by the float32 root mean square, cast to a half-precision weight's dtype, multiply."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.type_as(self.weight)
        return self.weight * x


class RelativePositionBias(nn.Module):
    """Bidirectional bucketed relative-position bias, one scalar per head: [1, heads, L, L]."""

    def __init__(self, num_buckets: int, num_heads: int, max_distance: int):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, length: int) -> torch.Tensor:
        pos = torch.arange(length, device=self.embedding.weight.device)
        buckets = relative_buckets(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)


def relative_buckets(rel: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bucket of each key-minus-query offset: exact below a quarter of the buckets, log-spaced up to max_distance."""
    half = num_buckets // 2
    side = (rel > 0).long() * half
    rel = rel.abs()
    exact = half // 2
    log_ratio = torch.log(rel.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return side + torch.where(rel < exact, rel, far)


class Attention(nn.Module):
    def __init__(self, dim: int, dim_attn: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v = (Linear(dim, dim_attn, bias=False) for _ in range(3))
        self.o = Linear(dim_attn, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n = x.shape[0], self.num_heads
        q, k, v = (f(x).view(b, x.shape[1], n, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)  # T5: no scaling
        return self.o(out.transpose(1, 2).reshape(b, x.shape[1], -1))


class GatedFeedForward(nn.Module):
    def __init__(self, dim: int, dim_ffn: int):
        super().__init__()
        self.gate = nn.Sequential(Linear(dim, dim_ffn, bias=False), nn.GELU(approximate="tanh"))
        self.fc1 = Linear(dim, dim_ffn, bias=False)
        self.fc2 = Linear(dim_ffn, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x) * self.gate(x))


class Block(nn.Module):
    def __init__(self, cfg: UMT5Config):
        super().__init__()
        self.norm1 = RMSNorm(cfg.dim, cfg.eps)
        self.attn = Attention(cfg.dim, cfg.dim_attn, cfg.num_heads)
        self.norm2 = RMSNorm(cfg.dim, cfg.eps)
        self.ffn = GatedFeedForward(cfg.dim, cfg.dim_ffn)
        self.pos_embedding = RelativePositionBias(cfg.num_buckets, cfg.num_heads, cfg.max_distance)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        bias = self.pos_embedding(x.shape[1]).to(x.dtype)
        bias = bias.masked_fill(~key_mask[:, None, None, :], torch.finfo(x.dtype).min)
        x = _clamp_fp16(x + self.attn(self.norm1(x), bias))
        return _clamp_fp16(x + self.ffn(self.norm2(x)))


def _clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    """fp16 overflow guard of the official code: clamp only when an inf appeared."""
    if x.dtype == torch.float16 and torch.isinf(x).any():
        limit = torch.finfo(x.dtype).max - 1000
        x = x.clamp(-limit, limit)
    return x


class UMT5Encoder(nn.Module):
    def __init__(self, cfg: UMT5Config):
        super().__init__()
        self.config = cfg
        self.token_embedding = nn.Embedding(cfg.vocab, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.dim, cfg.eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask: [B, L] (mask 1 for real tokens); returns the final states [B, L, dim]."""
        x = self.token_embedding(ids)
        key_mask = mask.bool()
        for block in self.blocks:
            x = block(x, key_mask)
        return self.norm(x)

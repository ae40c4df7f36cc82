"""The CLIP ViT vision tower Wan 2.1 I2V/FLF2V uses (open-clip xlm-roberta-large ViT-H/14), up to its penultimate
block: class token + patch tokens, pre-norm, pre-LN transformer blocks; no post-norm, no projection.

Parameter names follow the official Wan checkpoint's ``visual.*`` module (with q/k/v kept separate so both the
fused official and the split Hugging Face weights map onto it without a copy); see ``clip_keys.py``.
The last block is never built: Wan reads the tokens after block 31 of 32 (HF ``hidden_states[-2]``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checks import json_value
from ..errors import CheckpointError
from ..weights.ops import Linear, layer_norm, widened

@dataclass(frozen=True)
class ClipVisionConfig:
    image_size: int = 224
    patch_size: int = 14
    dim: int = 1280
    mlp_dim: int = 5120
    num_heads: int = 16
    num_layers: int = 32  # in the checkpoint; the module builds num_layers - 1
    activation: str = "gelu"
    eps: float = 1e-5

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], extra: dict | None = None) -> "ClipVisionConfig":
        """Sizes from the weights (own names); ``extra``: heads / activation / eps from a config.json."""
        try:
            dim, _, patch, _ = sd["patch_embedding.weight"].shape
            tokens = sd["pos_embedding"].shape[1]
            layers = len({k.split(".")[1] for k in sd if k.startswith("transformer.")})
            mlp = sd["transformer.0.mlp.0.weight"].shape[0]
        except KeyError as exc:
            raise CheckpointError(f"the CLIP vision weights lack {exc}; the file is incomplete") from exc
        side = round((tokens - 1) ** 0.5)
        return cls(image_size=side * patch, patch_size=patch, dim=dim, mlp_dim=mlp, num_layers=layers, **(extra or {}))


def hf_config_extras(folder: Path) -> dict:
    """Heads, activation and eps from a transformers ``config.json`` next to the weights (when there is one)."""
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        return {}
    try:
        cfg = json_value(cfg_file.read_bytes(), f"'{cfg_file}'")
    except (OSError, ValueError):
        return {}
    cfg = cfg.get("vision_config", cfg) if isinstance(cfg, dict) else None
    if not isinstance(cfg, dict):
        return {}
    out = {"num_heads": cfg.get("num_attention_heads"), "activation": cfg.get("hidden_act"),
           "eps": cfg.get("layer_norm_eps")}
    return {k: v for k, v in out.items() if v is not None}


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32, returned in the input's dtype (official)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps).to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.proj = (Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = (f(x).view(b, s, self.num_heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, -1))


class Block(nn.Module):
    def __init__(self, cfg: ClipVisionConfig):
        super().__init__()
        if cfg.activation not in ("gelu", "quick_gelu"):
            raise CheckpointError(f"CLIP activation '{cfg.activation}' is not supported (gelu or quick_gelu)")
        act = nn.GELU() if cfg.activation == "gelu" else QuickGELU()
        self.norm1 = LayerNorm(cfg.dim, eps=cfg.eps)
        self.attn = SelfAttention(cfg.dim, cfg.num_heads)
        self.norm2 = LayerNorm(cfg.dim, eps=cfg.eps)
        self.mlp = nn.Sequential(Linear(cfg.dim, cfg.mlp_dim), act, Linear(cfg.mlp_dim, cfg.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ClipVisionTower(nn.Module):
    def __init__(self, cfg: ClipVisionConfig):
        super().__init__()
        self.config = cfg
        self.patch_embedding = nn.Conv2d(3, cfg.dim, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.cls_embedding = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.dim))
        self.pre_norm = LayerNorm(cfg.dim, eps=cfg.eps)
        self.transformer = nn.Sequential(*(Block(cfg) for _ in range(cfg.num_layers - 1)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: [B, 3, S, S] normalised; returns the penultimate-block tokens [B, 1 + patches, dim]."""
        conv = self.patch_embedding
        x = widened(F.conv2d, pixels, conv.weight, None, stride=conv.stride).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_embedding.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return self.transformer(self.pre_norm(x + self.pos_embedding.to(x.dtype)))

"""The shape of a Wan DiT, read off its (official-key) state dict."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch

from ..errors import CheckpointError

HEAD_DIM = 128  # every released Wan DiT


@dataclass(frozen=True)
class WanDiTConfig:
    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    text_len: int = 512
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    clip_dim: int | None = None  # 1280 for the 2.1 I2V/FLF2V image branch (img_emb), None otherwise
    flf_pos_len: int | None = None  # 514 for FLF2V (img_emb.emb_pos), None otherwise

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def has_clip(self) -> bool:
        return self.clip_dim is not None

    @property
    def per_token_time(self) -> bool:
        """TI2V-5B (48 latent channels) uses a timestep per token."""
        return self.in_dim == 48

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], num_heads: int | None = None) -> "WanDiTConfig":
        """Read the config from official-key weights. ``num_heads`` defaults to width / 128 (all releases)."""
        try:
            dim = sd["head.modulation"].shape[-1]
            patch = tuple(int(s) for s in sd["patch_embedding.weight"].shape[2:])
            in_dim = sd["patch_embedding.weight"].shape[1]
            out_dim = sd["head.head.weight"].shape[0] // (patch[0] * patch[1] * patch[2])
            ffn_dim = sd["blocks.0.ffn.0.weight"].shape[0]
            text_dim = sd["text_embedding.0.weight"].shape[1]
            freq_dim = sd["time_embedding.0.weight"].shape[1]
        except KeyError as exc:
            raise CheckpointError(f"the weights lack {exc}, which every Wan DiT has") from exc
        layers = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
        heads = num_heads or max(1, dim // HEAD_DIM)
        if dim % heads or (dim // heads) % 2:
            raise CheckpointError(f"width {dim} cannot be split into {heads} attention heads of even size")
        clip = sd.get("img_emb.proj.0.weight")
        pos = sd.get("img_emb.emb_pos")
        return cls(
            dim=dim, ffn_dim=ffn_dim, num_heads=heads, num_layers=len(layers), in_dim=in_dim, out_dim=out_dim,
            text_dim=text_dim, freq_dim=freq_dim, patch_size=patch,  # type: ignore[arg-type]
            clip_dim=None if clip is None else clip.shape[0],
            flf_pos_len=None if pos is None else pos.shape[1],
        )

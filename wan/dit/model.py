"""The Wan diffusion transformer: one module for every released variant (2.1 T2V/I2V/FLF2V, 2.2 A14B, TI2V-5B).

Parameter names follow the official checkpoints. Numerics follow the official code: the residual stream,
modulation, norms, time embedding and head run in float32; attention and feed-forward in the compute dtype.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ..errors import InputError
from ..memory.offload import streamed
from ..weights.ops import LayerNorm, Linear, RMSNorm, layer_norm, linear
from ..variants import Variant
from .attention import AttentionFn, get_attention
from .compile import run_blocks
from .config import WanDiTConfig
from .rope import apply_rope, grid_freqs

if TYPE_CHECKING:
    from ..distributed.ulysses import SequenceParallel, TokenShard

IMAGE_EMBED_EPS = 1e-5  # the image projection uses torch's default LayerNorm eps


def sinusoid(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Timestep embedding, cos half first, computed in float64 (official)."""
    half = dim // 2
    t = t.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = t.unsqueeze(-1) * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def patchify(x: torch.Tensor, conv: nn.Conv3d) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """The patch-embedding Conv3d (kernel == stride) as one matmul over non-overlapping patches.

    x [B, C, F, H, W] -> tokens [B, f*h*w, dim] in row-major (f, h, w) order, and the grid (f, h, w).
    """
    b, c, frames, height, width = x.shape
    pt, ph, pw = conv.kernel_size
    f, h, w = frames // pt, height // ph, width // pw
    patches = x.view(b, c, f, pt, h, ph, w, pw).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, f * h * w, -1)
    weight = conv.weight.to(device=x.device, dtype=x.dtype).reshape(conv.out_channels, -1)
    bias = None if conv.bias is None else conv.bias.to(device=x.device, dtype=x.dtype)
    return linear(patches, weight, bias), (f, h, w)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor, attn: AttentionFn) -> torch.Tensor:
        b, n = x.shape[0], self.num_heads
        q = apply_rope(self.norm_q(self.q(x)).view(b, -1, n, x.shape[-1] // n), freqs)
        k = apply_rope(self.norm_k(self.k(x)).view(b, -1, n, x.shape[-1] // n), freqs)
        v = self.v(x).view(b, -1, n, x.shape[-1] // n)
        return self.o(attn(q, k, v))


class CrossAttention(nn.Module):
    """Attention to the text tokens; with a CLIP branch also to the image tokens (first ``n_img`` of context)."""

    def __init__(self, dim: int, num_heads: int, eps: float, image_branch: bool):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)
        if image_branch:
            self.k_img, self.v_img = Linear(dim, dim), Linear(dim, dim)
            self.norm_k_img = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor, n_img: int, attn: AttentionFn) -> torch.Tensor:
        b, n, d = x.shape[0], self.num_heads, x.shape[-1] // self.num_heads
        q = self.norm_q(self.q(x)).view(b, -1, n, d)
        text = context[:, n_img:]
        out = attn(q, self.norm_k(self.k(text)).view(b, -1, n, d), self.v(text).view(b, -1, n, d))
        if n_img:
            image = context[:, :n_img]
            k_img = self.norm_k_img(self.k_img(image)).view(b, -1, n, d)
            out = out + attn(q, k_img, self.v_img(image).view(b, -1, n, d))
        return self.o(out)


class Block(nn.Module):
    def __init__(self, cfg: WanDiTConfig):
        super().__init__()
        self.eps = cfg.eps
        self.self_attn = SelfAttention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm3 = LayerNorm(cfg.dim, cfg.eps, affine=True)
        self.cross_attn = CrossAttention(cfg.dim, cfg.num_heads, cfg.eps, cfg.has_clip)
        self.ffn = nn.Sequential(Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), Linear(cfg.ffn_dim, cfg.dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, cfg.dim))

    def forward(self, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor, n_img: int,
                freqs: torch.Tensor, attn: AttentionFn, self_attn: AttentionFn | None = None) -> torch.Tensor:
        """x: float32 [B, L, C]; e0: float32 [B, L or 1, 6, C]; context in the compute dtype. ``self_attn``:
        the self-attention function when it differs from ``attn`` (sequence parallel)."""
        dtype = context.dtype
        shift_msa, scale_msa, gate_msa, shift_ffn, scale_ffn, gate_ffn = (self.modulation.float() + e0).unbind(2)
        h = layer_norm(x, eps=self.eps) * (1 + scale_msa) + shift_msa
        x = x + self.self_attn(h.to(dtype), freqs, self_attn or attn).float() * gate_msa
        x = x + self.cross_attn(self.norm3(x).to(dtype), context, n_img, attn).float()
        h = layer_norm(x, eps=self.eps) * (1 + scale_ffn) + shift_ffn
        return x + self.ffn(h.to(dtype)).float() * gate_ffn


class Head(nn.Module):
    def __init__(self, cfg: WanDiTConfig):
        super().__init__()
        self.eps = cfg.eps
        self.head = Linear(cfg.dim, cfg.out_dim * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2])
        self.modulation = nn.Parameter(torch.zeros(1, 2, cfg.dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation.float() + e.unsqueeze(2)).unbind(2)
        return self.head(layer_norm(x, eps=self.eps) * (1 + scale) + shift)  # float32, as official


class ImageProjection(nn.Module):
    """CLIP tokens -> DiT width (2.1 I2V/FLF2V ``img_emb``); FLF2V adds a learned position per token."""

    def __init__(self, clip_dim: int, dim: int, pos_len: int | None):
        super().__init__()
        self.proj = nn.Sequential(
            LayerNorm(clip_dim, IMAGE_EMBED_EPS, affine=True), Linear(clip_dim, clip_dim), nn.GELU(),
            Linear(clip_dim, dim), LayerNorm(dim, IMAGE_EMBED_EPS, affine=True),
        )
        self.emb_pos = nn.Parameter(torch.zeros(1, pos_len, clip_dim)) if pos_len else None

    def forward(self, clip_fea: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        x = clip_fea.float()
        if self.emb_pos is not None:
            x = x + self.emb_pos.float()
        x = self.proj[0](x).to(dtype)
        x = self.proj[3](self.proj[2](self.proj[1](x)))
        return self.proj[4](x).to(dtype)


@dataclass
class DiTState:
    """Everything the blocks need, computed once per forward by ``WanDiT.prepare``."""

    x: torch.Tensor  # float32 tokens [B, L, C]
    e: torch.Tensor  # float32 time embedding [B, L or 1, C]
    e0: torch.Tensor  # float32 modulation input [B, L or 1, 6, C]
    context: torch.Tensor  # [B, n_img + text_len, C] in the compute dtype
    n_img: int
    freqs: torch.Tensor
    grid: tuple[int, int, int]
    shard: TokenShard | None = None  # sequence parallel: the slice of the tokens this rank holds

    def token_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of a per-token tensor over the whole sequence, also when this rank holds only a slice of it."""
        return x.mean() if self.shard is None else self.shard.mean(x)

    def rows(self, rows: slice) -> "DiTState":
        """The state of some rows of the batch (per-sample tensors sliced, shared tables kept); step caches compute
        one guidance branch of a batched call this way."""
        return dataclasses.replace(self, x=self.x[rows], e=self.e[rows], e0=self.e0[rows], context=self.context[rows])


class WanDiT(nn.Module):
    def __init__(self, config: WanDiTConfig, variant: Variant | None = None, role: str = "single",
                 attention: str = "auto"):
        super().__init__()
        cfg = self.config = config
        self.variant_info = variant
        self.role = role
        self.compute_dtype = torch.float32
        self.sequence_parallel: SequenceParallel | None = None  # set by wan.distributed
        self.set_attention(attention)
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"),
                                            Linear(cfg.dim, cfg.dim))
        self.time_embedding = nn.Sequential(Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), Linear(cfg.dim, cfg.dim * 6))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        if cfg.has_clip:
            self.img_emb = ImageProjection(cfg.clip_dim, cfg.dim, cfg.flf_pos_len)

    @property
    def variant(self) -> str:
        return self.variant_info.id if self.variant_info else "unknown"

    def set_attention(self, name: str) -> None:
        self.attention = name
        self._attn = get_attention(name)

    # -- forward -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                clip_fea: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, F, H, W] latents, t [B] or [B, L] in 0..1000, context [B, L_txt, text_dim] -> [B, out, F, H, W]."""
        state = self.prepare(x, t, context, clip_fea, y)
        return self.finish(self.run_blocks(state), state)

    def prepare(self, x, t, context, clip_fea=None, y=None, *, shard_tokens: bool = True) -> DiTState:
        """``shard_tokens`` False: the whole sequence even under sequence parallel (a subclass that appends tokens
        splits the longer sequence itself)."""
        t = self._check_inputs(x, t, context, clip_fea, y)
        cfg, dtype = self.config, self.compute_dtype
        if y is not None:
            x = torch.cat([x, y.to(x.dtype)], dim=1)
        tokens, grid = patchify(x.to(dtype), self.patch_embedding)
        tokens = tokens.float()
        freqs, shard = grid_freqs(*grid, cfg.head_dim, tokens.device), None
        if self.sequence_parallel is not None and shard_tokens:  # this rank's tokens, timesteps and rotations
            tokens, t, freqs, shard = self.sequence_parallel.split(tokens, t, freqs)
        e = self.time_embedding(sinusoid(cfg.freq_dim, t).float())
        e0 = self.time_projection(e).unflatten(-1, (6, cfg.dim))
        if context.shape[1] < cfg.text_len:  # official: text tokens zero-padded to text_len before the projection
            context = torch.cat([context, context.new_zeros(context.shape[0], cfg.text_len - context.shape[1],
                                                            context.shape[2])], dim=1)
        context = self.text_embedding(context.to(dtype))
        n_img = 0
        if cfg.has_clip:
            image_tokens = self.img_emb(clip_fea, dtype)
            n_img = image_tokens.shape[1]
            context = torch.cat([image_tokens, context], dim=1)
        return DiTState(tokens, e, e0, context, n_img, freqs, grid, shard)  # type: ignore[arg-type]

    def run_blocks(self, s: DiTState) -> torch.Tensor:
        x, self_attn = s.x, (None if s.shard is None else s.shard.attention(self._attn))
        # self.blocks; with block streaming (wan.memory.offload) each arrives just in time; compiled during a run
        # with compile options (wan.dit.compile)
        return run_blocks(self, streamed(self, x), x, s.e0, s.context, s.n_img, s.freqs, self._attn, self_attn)

    def finish(self, x: torch.Tensor, s: DiTState) -> torch.Tensor:
        out = self.head(x, s.e)
        if s.shard is not None:
            out = s.shard.gather(out)  # every rank gets the whole sequence back
        (f, h, w), (pt, ph, pw), c = s.grid, self.config.patch_size, self.config.out_dim
        out = out.view(out.shape[0], f, h, w, pt, ph, pw, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.reshape(out.shape[0], c, f * pt, h * ph, w * pw).float()

    # -- validation --------------------------------------------------------------------------------------
    def _check_inputs(self, x, t, context, clip_fea, y) -> torch.Tensor:
        """Validate shapes before any heavy work; returns t as [B, 1] or [B, L]."""
        cfg, name = self.config, self.variant
        if not torch.is_tensor(x) or x.dim() != 5:
            raise InputError(f"x must be latents [B, C, F, H, W]; got {_shape(x)}")
        b, c, f, h, w = x.shape
        pt, ph, pw = cfg.patch_size
        if f % pt or h % ph or w % pw:
            raise InputError(
                f"latent size {f}x{h}x{w} (frames x height x width) is not divisible by the patch {pt}x{ph}x{pw}; "
                f"choose a width and height divisible by {8 * ph if cfg.in_dim != 48 else 16 * ph} pixels")
        c_y = 0 if y is None else y.shape[1]
        if y is not None and (y.dim() != 5 or y.shape[0] != b or tuple(y.shape[2:]) != (f, h, w)):
            raise InputError(f"y {_shape(y)} must match x {_shape(x)} in batch, frames, height and width")
        if c + c_y != cfg.in_dim:
            if y is None and c < cfg.in_dim:
                raise InputError(
                    f"this {name} model takes {cfg.in_dim} input channels ({c} latent + {cfg.in_dim - c} image "
                    f"conditioning): pass y, the image conditioning made from the start image")
            if y is not None and c == cfg.in_dim:
                raise InputError(f"this {name} model is text-to-video ({cfg.in_dim} channels) and takes no y")
            raise InputError(f"this {name} model takes {cfg.in_dim} input channels; got {c} in x + {c_y} in y")
        if not torch.is_tensor(context) or context.dim() != 3 or context.shape[-1] != cfg.text_dim:
            raise InputError(f"context must be text embeddings [B, L, {cfg.text_dim}]; got {_shape(context)}")
        if context.shape[0] != b or context.shape[1] > cfg.text_len:
            raise InputError(f"context {_shape(context)} must have batch {b} and at most {cfg.text_len} tokens")
        self._check_clip(clip_fea, b)
        return self._check_timesteps(t, b, (f // pt) * (h // ph) * (w // pw), x.device)

    def _check_clip(self, clip_fea, b: int) -> None:
        cfg, name = self.config, self.variant
        if not cfg.has_clip:
            if clip_fea is not None:
                raise InputError(f"this {name} model has no CLIP image branch; do not pass clip_fea")
            return
        if clip_fea is None:
            raise InputError(f"this {name} model needs clip_fea, the CLIP vision features of the start image "
                             f"[B, {cfg.flf_pos_len or 257}, {cfg.clip_dim}]")
        if clip_fea.dim() != 3 or clip_fea.shape[0] != b or clip_fea.shape[2] != cfg.clip_dim:
            raise InputError(f"clip_fea must be [{b}, tokens, {cfg.clip_dim}]; got {_shape(clip_fea)}")
        if cfg.flf_pos_len and clip_fea.shape[1] != cfg.flf_pos_len:
            raise InputError(f"this first-last-frame model needs CLIP features of both the start and the end "
                             f"image ({cfg.flf_pos_len} tokens); got {clip_fea.shape[1]}")

    @staticmethod
    def _check_timesteps(t, b: int, n_tokens: int, device) -> torch.Tensor:
        t = torch.as_tensor(t, device=device)
        if t.dim() == 0:
            t = t.expand(b)
        if t.dim() == 1 and t.shape[0] == b:
            return t.unsqueeze(1)
        if t.dim() == 2 and t.shape == (b, n_tokens):
            return t
        raise InputError(f"t must be [{b}] or per token [{b}, {n_tokens}]; got {_shape(t)}")


def _shape(v) -> str:
    return str(tuple(v.shape)) if torch.is_tensor(v) else type(v).__name__

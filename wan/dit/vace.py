"""The Wan VACE diffusion transformer (Wan 2.1 VACE 1.3B / 14B, Wan 2.2 VACE-Fun A14B experts): the Wan DiT plus
a context branch that turns a 96-channel VACE context into hints added to some of the blocks' outputs.

Semantics of the official ``VaceWanModel``: the context (16 inactive + 16 reactive latent channels and 64 mask
channels, see ``wan.sampling.vace``) is patchified by ``vace_patch_embedding``; VACE block 0 adds its
``before_proj`` of it to the video tokens; every VACE block is a normal Wan block (same timestep, text and rotary
positions as the video tokens) followed by ``after_proj``, whose output is the hint of one base block: base block
``vace_layers[k]`` adds ``hint_k * strength`` to its output.

VACE block k depends only on VACE block k - 1 (and block 0 on the video tokens before the first block), so it runs
just before base block ``vace_layers[k]`` needs its hint, and only one hint is alive at a time (the official code
computes all of them first and keeps them all). Without a context the model runs as the plain text-to-video model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, InputError
from ..memory.offload import streamed
from ..weights.ops import Linear
from .compile import call_block
from .config import WanDiTConfig
from .model import Block, DiTState, WanDiT, patchify

VACE_IN_DIM = 96  # 16 inactive + 16 reactive latent channels + 64 mask channels (8 x 8 pixels per latent pixel)


@dataclass(frozen=True)
class VaceConfig:
    layers: tuple[int, ...]  # the base block each VACE block feeds, in order (official ``vace_layers``)
    in_dim: int = VACE_IN_DIM

    @classmethod
    def from_state_dict(cls, sd: dict, num_layers: int, source: Path | None = None) -> "VaceConfig | None":
        """None unless the weights are a VACE DiT (``vace_patch_embedding`` in official names)."""
        embed = sd.get("vace_patch_embedding.weight")
        if embed is None:
            return None
        count = len({int(k.split(".")[1]) for k in sd if k.startswith("vace_blocks.")})
        return cls(vace_layers(count, num_layers, source), int(embed.shape[1]))


def vace_layers(count: int, num_layers: int, source: Path | None) -> tuple[int, ...]:
    """The base blocks the VACE blocks feed: ``vace_layers`` of the folder's config.json when it lists ``count`` of
    them, else every ``num_layers // count``-th block from 0 (files carry no list; the released models are spread
    evenly: 1.3B 15 of 30, 14B and VACE-Fun A14B 8 of 40)."""
    listed = _config_layers(source)
    if listed is not None and len(listed) == count and all(0 <= i < num_layers for i in listed) and 0 in listed:
        return listed
    if not 1 <= count <= num_layers:
        raise CheckpointError(f"the VACE DiT has {count} VACE blocks for {num_layers} blocks; expected 1 to "
                              f"{num_layers} (Wan 2.1 VACE 1.3B: 15 of 30, 14B: 8 of 40)")
    return tuple(range(0, num_layers, num_layers // count))[:count]


def _config_layers(source: Path | None) -> tuple[int, ...] | None:
    folder = source if source is not None and source.is_dir() else getattr(source, "parent", None)
    cfg_file = folder / "config.json" if folder is not None else None
    if cfg_file is None or not cfg_file.is_file():
        return None
    try:
        layers = json.loads(cfg_file.read_text()).get("vace_layers")
        return tuple(int(i) for i in layers) if isinstance(layers, list) and layers else None
    except (ValueError, TypeError, AttributeError, OSError):
        return None


@dataclass
class VaceInputs:
    """A VACE context for one video: ``latents`` [1 or B, 96, T, h, w] (normalised inactive and reactive latents and
    the folded mask, reference frames first), ``strength`` (official ``context_scale``), ``ref_frames`` how many of
    the T latent frames are reference images (the sampler's latent has them too; they are cut before decoding)."""

    latents: torch.Tensor
    strength: float = 1.0
    ref_frames: int = 0

    def frames(self, index: torch.Tensor) -> "VaceInputs":
        """The context of some latent frames (context windows)."""
        return replace(self, latents=self.latents.index_select(2, index.to(self.latents.device)))


class VaceBlock(Block):
    """A Wan block on the VACE tokens; block 0 first adds ``before_proj`` of them to the video tokens; every one
    emits ``after_proj`` of its output as a hint."""

    def __init__(self, cfg: WanDiTConfig, first: bool):
        super().__init__(cfg)
        self.before_proj = Linear(cfg.dim, cfg.dim) if first else None
        self.after_proj = Linear(cfg.dim, cfg.dim)

    def forward(self, c, e0, context, n_img, freqs, attn, self_attn=None, x0=None):
        """(the VACE tokens after this block, its hint), both float32; ``x0`` the video tokens before block 0.
        Called as a module (``block(...)``), so FSDP gathers its weights like any block's."""
        dtype = context.dtype
        if self.before_proj is not None:
            c = self.before_proj(c.to(dtype)).float() + x0
        c = super().forward(c, e0, context, n_img, freqs, attn, self_attn)
        return c, self.after_proj(c.to(dtype)).float()


@dataclass
class VaceState(DiTState):
    vace: torch.Tensor | None = None  # float32 VACE tokens [B, L, C], None: no context (plain text-to-video)
    strength: float = 1.0

    def rows(self, rows: slice) -> "VaceState":
        return replace(super().rows(rows), vace=None if self.vace is None else self.vace[rows])


class WanVaceDiT(WanDiT):
    def __init__(self, config: WanDiTConfig, vace: VaceConfig, variant=None, role: str = "single",
                 attention: str = "auto"):
        super().__init__(config, variant, role, attention)
        self.vace_config = vace
        self.vace_blocks = nn.ModuleList(VaceBlock(config, first=k == 0) for k in range(len(vace.layers)))
        self.vace_patch_embedding = nn.Conv3d(vace.in_dim, config.dim, kernel_size=config.patch_size,
                                              stride=config.patch_size)

    def forward(self, x, t, context, clip_fea=None, y=None, vace: VaceInputs | None = None):
        """x [B, 16, T, h, w], t [B], context [B, L, text_dim], ``vace`` the VACE context (None: text-to-video)."""
        state = self.prepare(x, t, context, clip_fea, y, vace)
        return self.finish(self.run_blocks(state), state)

    def prepare(self, x, t, context, clip_fea=None, y=None, vace: VaceInputs | None = None) -> VaceState:
        base = super().prepare(x, t, context, clip_fea, y)
        state = VaceState(**{f: getattr(base, f) for f in base.__dataclass_fields__})
        if vace is None:
            return state
        self._check_vace(vace, x)
        c, _ = patchify(vace.latents.to(self.compute_dtype).expand(x.shape[0], -1, -1, -1, -1),
                        self.vace_patch_embedding)
        c = c.float()
        if base.shard is not None:  # sequence parallel: this rank's slice, like the video tokens
            c = base.shard.split(c, dim=1)
        state.vace, state.strength = c, float(vace.strength)
        return state

    def run_blocks(self, s: VaceState) -> torch.Tensor:
        if s.vace is None:
            return super().run_blocks(s)
        x, c, self_attn = s.x, s.vace, (None if s.shard is None else s.shard.attention(self._attn))
        feeds = {layer: k for k, layer in enumerate(self.vace_config.layers)}
        for i, block in enumerate(streamed(self, x)):
            k = feeds.get(i)
            if k is not None:  # VACE block k only needs VACE block k - 1: run it just before its hint is used
                c, hint = call_block(self, self.vace_blocks[k], c, s.e0, s.context, s.n_img, s.freqs, self._attn,
                                     self_attn, x0=s.x)
            x = call_block(self, block, x, s.e0, s.context, s.n_img, s.freqs, self._attn, self_attn)
            if k is not None:
                x = x + hint * s.strength
                del hint
        return x

    def _check_vace(self, vace: VaceInputs, x: torch.Tensor) -> None:
        if not isinstance(vace, VaceInputs):
            raise InputError(f"the VACE context must come from Wan VACE Conditioning (VaceInputs); got "
                             f"{type(vace).__name__}")
        b, _, f, h, w = x.shape
        lat, want = vace.latents, (self.vace_config.in_dim, f, h, w)
        if not torch.is_tensor(lat) or lat.dim() != 5 or lat.shape[0] not in (1, b) or tuple(lat.shape[1:]) != want:
            got = tuple(lat.shape) if torch.is_tensor(lat) else type(lat).__name__
            raise InputError(f"the VACE context {got} does not fit the latent {tuple(x.shape)}: expected [1 or {b}, "
                             f"{', '.join(map(str, want))}]. Make the latent and the context with the same Wan VACE "
                             f"Conditioning (its LATENT output already holds the reference frames)")

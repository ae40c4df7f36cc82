"""The official Wan 2.1 VACE DiT (``VaceWanModel``, ``wan/modules/vace_model.py`` of Wan-Video/Wan2.1, Apache-2.0)
rebuilt on the official Wan 2.2 block and model classes of the ``wan22`` wheel, as a test oracle.

The Wan 2.1 repository is not on PyPI, so its ``vace_model.py`` cannot be loaded here; this module follows its
structure line for line (``VaceWanAttentionBlock``: ``before_proj`` on block 0, ``after_proj`` on every block,
returning ``(c, c_skip)``; ``BaseWanAttentionBlock``: ``x + hints[block_id] * context_scale``; ``forward_vace``:
all hints first, then the base blocks). The only change is the base classes' signature: the wheel's
``WanAttentionBlock`` has no ``cross_attn_type`` argument (Wan 2.2 dropped the 2.1 image branch, which VACE never
used) and its blocks take the time embedding with a token axis (given here with length 1, as Wan 2.1 has one timestep
per video).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import official


def _classes():
    m = official.load("modules.model")
    return m.WanAttentionBlock, m.WanModel, m.sinusoidal_embedding_1d


def build(vace_layers, vace_in_dim=96, **model_kwargs):
    """A ``VaceWanModel`` with the given layers (keyword arguments of the official ``WanModel``)."""
    WanAttentionBlock, WanModel, sinusoidal_embedding_1d = _classes()

    class VaceWanAttentionBlock(WanAttentionBlock):
        def __init__(self, dim, ffn_dim, num_heads, window_size=(-1, -1), qk_norm=True, cross_attn_norm=False,
                     eps=1e-6, block_id=0):
            super().__init__(dim, ffn_dim, num_heads, window_size, qk_norm, cross_attn_norm, eps)
            self.block_id = block_id
            if block_id == 0:
                self.before_proj = nn.Linear(self.dim, self.dim)
            self.after_proj = nn.Linear(self.dim, self.dim)

        def forward(self, c, x, **kwargs):
            if self.block_id == 0:
                c = self.before_proj(c) + x
            c = super().forward(c, **kwargs)
            c_skip = self.after_proj(c)
            return c, c_skip

    class BaseWanAttentionBlock(WanAttentionBlock):
        def __init__(self, dim, ffn_dim, num_heads, window_size=(-1, -1), qk_norm=True, cross_attn_norm=False,
                     eps=1e-6, block_id=None):
            super().__init__(dim, ffn_dim, num_heads, window_size, qk_norm, cross_attn_norm, eps)
            self.block_id = block_id

        def forward(self, x, hints, context_scale=1.0, **kwargs):
            x = super().forward(x, **kwargs)
            if self.block_id is not None:
                x = x + hints[self.block_id] * context_scale
            return x

    class VaceWanModel(WanModel):
        def __init__(self, vace_layers, vace_in_dim, **kw):
            super().__init__(model_type="t2v", **kw)
            self.vace_layers = list(vace_layers)
            self.vace_in_dim = vace_in_dim
            assert 0 in self.vace_layers
            self.vace_layers_mapping = {i: n for n, i in enumerate(self.vace_layers)}
            args = (self.dim, self.ffn_dim, self.num_heads, self.window_size, self.qk_norm, self.cross_attn_norm,
                    self.eps)
            self.blocks = nn.ModuleList([
                BaseWanAttentionBlock(*args, block_id=self.vace_layers_mapping.get(i))
                for i in range(self.num_layers)])
            self.vace_blocks = nn.ModuleList([VaceWanAttentionBlock(*args, block_id=i) for i in self.vace_layers])
            self.vace_patch_embedding = nn.Conv3d(self.vace_in_dim, self.dim, kernel_size=self.patch_size,
                                                  stride=self.patch_size)

        def forward_vace(self, x, vace_context, seq_len, kwargs):
            c = [self.vace_patch_embedding(u.unsqueeze(0)) for u in vace_context]
            c = [u.flatten(2).transpose(1, 2) for u in c]
            c = torch.cat([torch.cat([u, u.new_zeros(1, seq_len - u.size(1), u.size(2))], dim=1) for u in c])
            new_kwargs = dict(x=x)
            new_kwargs.update(kwargs)
            hints = []
            for block in self.vace_blocks:
                c, c_skip = block(c, **new_kwargs)
                hints.append(c_skip)
            return hints

        def forward(self, x, t, vace_context, context, seq_len, vace_context_scale=1.0):
            x = [self.patch_embedding(u.unsqueeze(0)) for u in x]
            grid_sizes = torch.stack([torch.tensor(u.shape[2:], dtype=torch.long) for u in x])
            x = [u.flatten(2).transpose(1, 2) for u in x]
            seq_lens = torch.tensor([u.size(1) for u in x], dtype=torch.long)
            x = torch.cat([torch.cat([u, u.new_zeros(1, seq_len - u.size(1), u.size(2))], dim=1) for u in x])
            # Wan 2.1: one timestep per video, e [B, C]; the wheel's blocks take it as [B, 1, ...]
            e = self.time_embedding(sinusoidal_embedding_1d(self.freq_dim, t).float()).unsqueeze(1)
            e0 = self.time_projection(e).unflatten(2, (6, self.dim))
            context = self.text_embedding(torch.stack([
                torch.cat([u, u.new_zeros(self.text_len - u.size(0), u.size(1))]) for u in context]))
            kwargs = dict(e=e0, seq_lens=seq_lens, grid_sizes=grid_sizes, freqs=self.freqs, context=context,
                          context_lens=None)
            hints = self.forward_vace(x, vace_context, seq_len, kwargs)
            kwargs["hints"] = hints
            kwargs["context_scale"] = vace_context_scale
            for block in self.blocks:
                x = block(x, **kwargs)
            x = self.head(x, e)
            return [u.float() for u in self.unpatchify(x, grid_sizes)]

    return VaceWanModel(vace_layers, vace_in_dim, **model_kwargs)

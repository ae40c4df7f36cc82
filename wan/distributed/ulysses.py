"""Ulysses sequence parallelism for the Wan DiT (after DeepSpeed-Ulysses, arXiv 2309.14509).

The ranks of one group split the video tokens: each holds a contiguous slice of the (padded) sequence, with its
timesteps and RoPE rotations, through every block. Self-attention is the only place where tokens meet: one
``all_to_all`` turns "my tokens, all heads" into "all tokens, my heads" for q, k and v, attention runs over the
whole sequence on H/p heads, and a second ``all_to_all`` turns the output back. Cross-attention needs no exchange
(every rank holds the whole text context). After the head the tokens are gathered, so every rank returns the
whole velocity and the solver runs identically everywhere.

The sequence is padded at its end to a multiple of the group size; padded tokens are never attended to (keys and
values are cut to the real length after the exchange) and are dropped when the tokens are gathered.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from ..dit.attention import AttentionFn


def all_to_all(x: torch.Tensor, scatter_dim: int, gather_dim: int, group) -> torch.Tensor:
    """Cut ``x`` into group-size chunks along ``scatter_dim``, send chunk i to rank i, and join the chunks
    received (in rank order) along ``gather_dim``."""
    size = dist.get_world_size(group)
    send = torch.stack(x.chunk(size, dim=scatter_dim))
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)
    return torch.cat(received.unbind(0), dim=gather_dim)


def all_gather(x: torch.Tensor, group) -> torch.Tensor:
    """[group size, *x.shape]: every rank's ``x``, in rank order."""
    size = dist.get_world_size(group)
    out = x.new_empty((size * x.shape[0], *x.shape[1:]))
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # the older name
    gather(out, x.contiguous(), group=group)
    return out.view(size, *x.shape)


class SequenceParallel:
    """The sequence-parallel setting of a DiT (``WanDiT.sequence_parallel``): which ranks share its tokens."""

    def __init__(self, group):
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def split(self, tokens: torch.Tensor, t: torch.Tensor, freqs: torch.Tensor):
        """This rank's part of one forward: (tokens [B, L/p, C], t [B, 1] or [B, L/p], freqs [L/p, 1, D/2],
        the ``TokenShard`` that gathers them back)."""
        shard = self.shard(tokens.shape[1])
        t = t if t.shape[1] == 1 else shard.split(t, dim=1)
        return shard.split(tokens, dim=1), t, shard.split(freqs, dim=0), shard

    def shard(self, length: int) -> "TokenShard":
        """This rank's slice of a sequence of ``length`` tokens."""
        return TokenShard(self, length)


class TokenShard:
    """This rank's slice of one forward's ``length`` tokens (padded to ``padded``, a multiple of the group size)."""

    def __init__(self, sp: SequenceParallel, length: int):
        self.sp, self.length = sp, length
        self.local = -(-length // sp.size)
        self.padded = self.local * sp.size
        self.start = sp.rank * self.local
        self.real = max(0, min(length - self.start, self.local))  # tokens of this slice that are not padding

    def split(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """The slice of ``x`` (``length`` entries along ``dim``) this rank holds, zero-padded at the end."""
        part = x.narrow(dim, min(self.start, self.length), self.real)
        if self.real == self.local:
            return part
        pad = list(part.shape)
        pad[dim] = self.local - self.real
        return torch.cat([part, part.new_zeros(pad)], dim=dim)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L/p, ...] slices of every rank -> the whole [B, L, ...] on every rank."""
        return all_gather(x, self.sp.group).movedim(0, 1).flatten(1, 2)[:, :self.length]

    def attention(self, attn: AttentionFn) -> AttentionFn:
        """Self-attention over the whole sequence for q, k, v that hold this rank's tokens [B, L/p, H, D]."""
        def ulysses(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            heads, head_dim = q.shape[2], q.shape[3]
            q, k, v = all_to_all(torch.stack([q, k, v]), scatter_dim=3, gather_dim=2, group=self.sp.group)
            out = attn(q, k[:, :self.length], v[:, :self.length])  # [B, L_padded, H/p * D]
            out = all_to_all(out.unflatten(-1, (heads // self.sp.size, head_dim)), scatter_dim=1, gather_dim=2,
                             group=self.sp.group)
            return out.flatten(2)

        return ulysses

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of a per-token tensor [B, L/p, ...] over the whole sequence (padding excluded), the same on
        every rank; a tensor shared by all tokens ([B, 1, ...]) is its own mean."""
        if x.shape[1] == 1:
            return x.mean()
        total = x[:, :self.real].sum(dtype=torch.float64).reshape(1)
        dist.all_reduce(total, group=self.sp.group)
        return (total / (x[:, :1].numel() * self.length)).to(x.dtype)[0]

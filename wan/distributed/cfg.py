"""Classifier-free guidance in parallel: the conditional and the unconditional forward of a step run at the same
time on two groups of ranks; one ``all_gather`` gives every rank both velocities, combined as in one process."""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from .ulysses import all_gather

BRANCHES = ("cond", "uncond")


class CfgParallel:
    """Rank 0 of ``group`` computes the conditional branch, rank 1 the unconditional one."""

    def __init__(self, group):
        if dist.get_world_size(group) != 2:
            raise ValueError("classifier-free guidance in parallel needs groups of two ranks (cond, uncond)")
        self.group = group
        self.branch = BRANCHES[dist.get_rank(group)]

    def guided(self, forward: Callable[[torch.Tensor, str], torch.Tensor], positive: torch.Tensor,
               negative: torch.Tensor, scale: float) -> torch.Tensor:
        """``v_u + scale * (v_c - v_u)`` where ``forward(context, branch)`` runs this rank's branch only."""
        mine = forward(positive, "cond") if self.branch == "cond" else forward(negative, "uncond")
        v_cond, v_uncond = all_gather(mine, self.group).unbind(0)
        return v_uncond + scale * (v_cond - v_uncond)

"""How a multi-process run is laid out, and the process groups that carry it.

Ranks form a grid ``cfg × replica × ulysses`` (rank = (c · replicas + r) · ulysses_size + u):

- the ``ulysses_size`` ranks of a row share the tokens of every forward (sequence parallel);
- with ``--cfg_parallel`` the first half of the ranks computes the conditional branch, the second half the
  unconditional one; rank i of one half pairs with rank i of the other to combine them;
- the remaining factor (replicas) repeats the same work, as the official scripts do without sequence parallelism.

FSDP shards the DiT over all ranks of one guidance branch (they run the same blocks at the same moments, also
when a step cache skips), and the text encoder over all ranks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from .cfg import CfgParallel
from .fsdp import FsdpSharding, dit_sharding, t5_sharding
from .options import ParallelOptions, check_heads
from .ulysses import SequenceParallel


@dataclass
class Parallel:
    """The process groups of one run (see the module docstring for the layout)."""

    options: ParallelOptions
    device: torch.device
    sequence: SequenceParallel | None
    cfg: CfgParallel | None
    dit_mesh: object | None  # the ranks of this guidance branch (FSDP of the DiT)
    t5_mesh: object | None  # all ranks (FSDP of the text encoder)

    @classmethod
    def build(cls, options: ParallelOptions, device) -> "Parallel":
        """Create the groups (every rank must call this, in the same order)."""
        from torch.distributed.device_mesh import init_device_mesh

        device = torch.device(device)
        world, u, branches = dist.get_world_size(), options.ulysses_size, options.branches
        grid = init_device_mesh(device.type, (branches, world // (branches * u), u),
                                mesh_dim_names=("cfg", "replica", "ulysses"))
        dit_mesh = None
        if options.dit_fsdp:
            dit_mesh = init_device_mesh(device.type, (branches, world // branches),
                                        mesh_dim_names=("cfg", "branch"))["branch"]
        return cls(options, device,
                   SequenceParallel(grid.get_group("ulysses")) if u > 1 else None,
                   CfgParallel(grid.get_group("cfg")) if branches > 1 else None,
                   dit_mesh,
                   init_device_mesh(device.type, (world,)) if options.t5_fsdp else None)

    def dit_sharding(self, home) -> FsdpSharding | None:
        return None if self.dit_mesh is None else dit_sharding(self.dit_mesh, home)

    def t5_sharding(self) -> FsdpSharding | None:
        return None if self.t5_mesh is None else t5_sharding(self.t5_mesh, self.device)

    def attach(self, models) -> None:
        """Let every DiT of ``models`` split its tokens over this run's sequence-parallel group."""
        for model in models:
            check_heads(self.options.ulysses_size, model.config.num_heads, f"the {model.variant} model")
            model.sequence_parallel = self.sequence

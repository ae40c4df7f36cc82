"""Several processes for one video (torch.distributed).

    options.py   the multi-process options of a run, checked before any model loads
    plan.py      the process groups of a run: sequence parallel, CFG parallel, FSDP meshes
    ulysses.py   Ulysses sequence parallelism (what a DiT uses to split its tokens)
    cfg.py       the guidance branches on two groups of ranks
    fsdp.py      FSDP2 sharding applied while loading the DiT and the text encoder
    ranks.py     torchrun start-up, rank helpers (only rank 0 logs and writes)

Only ``options`` is imported here: FSDP and DTensor load when a multi-process run needs them.

May import: ``wan.dit`` (the blocks it shards), ``wan.weights``, ``wan.errors``; never the run or the nodes.
"""
from .options import ParallelOptions, check_options

__all__ = ["ParallelOptions", "check_options"]

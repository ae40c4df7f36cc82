"""Several processes for one video (torch.distributed): Ulysses sequence parallelism, guidance branches in
parallel, FSDP-sharded DiT and text encoder, and the rank helpers (only rank 0 logs and writes).

Public API (imported lazily: FSDP and DTensor load only when a multi-process run needs them):
    ParallelOptions, check_options   -- the options of a run, checked before any model loads
    Parallel                         -- the process groups of a run (sequence parallel, CFG parallel, FSDP meshes)
    SequenceParallel, CfgParallel    -- what a DiT and the sampler use to split the work
    FsdpSharding, resident_bytes     -- FSDP2 sharding applied while loading; bytes of parameters a rank holds
"""
from importlib import import_module

_EXPORTS = {
    "ParallelOptions": ".options",
    "check_options": ".options",
    "Parallel": ".plan",
    "SequenceParallel": ".ulysses",
    "CfgParallel": ".cfg",
    "FsdpSharding": ".fsdp",
    "resident_bytes": ".fsdp",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

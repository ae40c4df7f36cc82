"""The multi-process options of a run (the official flags plus --cfg_parallel), checked against the process count
and the model's head count before any model loads."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

LAUNCH = "start it with torchrun --nproc_per_node=N -m wan.generate ... (or call wan.run under an initialised " \
         "torch.distributed process group)"


@dataclass(frozen=True)
class ParallelOptions:
    ulysses_size: int = 1
    cfg_parallel: bool = False
    dit_fsdp: bool = False
    t5_fsdp: bool = False

    @property
    def requested(self) -> bool:
        return self.ulysses_size != 1 or self.cfg_parallel or self.dit_fsdp or self.t5_fsdp

    @property
    def branches(self) -> int:
        return 2 if self.cfg_parallel else 1


def check_options(options: ParallelOptions, world: int, heads: int | None, model: str, t5_cpu: bool = False) -> None:
    """Every multi-process option against the process count and the model's head count, before loading."""
    u = options.ulysses_size
    if u < 1:
        raise InputError(f"--ulysses_size {u} must be at least 1")
    if options.requested and world == 1:
        flags = [f for f, on in (("--ulysses_size", u > 1), ("--cfg_parallel", options.cfg_parallel),
                                 ("--dit_fsdp", options.dit_fsdp), ("--t5_fsdp", options.t5_fsdp)) if on]
        raise InputError(f"{', '.join(flags)} need{'s' if len(flags) == 1 else ''} several processes sharing a "
                         f"torch.distributed process group; this run has one: {LAUNCH}")
    if heads is not None:
        check_heads(u, heads, model)
    group = u * options.branches
    if world % group:
        what = f"--ulysses_size {u}" + (" × 2 (--cfg_parallel)" if options.cfg_parallel else "")
        raise InputError(f"{what} = {group} processes per sample must divide the {world} processes of this run: "
                         f"start torchrun with --nproc_per_node a multiple of {group}")
    if options.t5_fsdp and t5_cpu:
        raise InputError("--t5_fsdp shards the text encoder over the GPUs; it cannot be combined with --t5_cpu")


def check_heads(ulysses_size: int, heads: int, model: str) -> None:
    if heads % ulysses_size:
        raise InputError(f"--ulysses_size {ulysses_size} does not divide the {heads} attention heads of {model}: "
                         f"choose one of {[d for d in range(1, heads + 1) if heads % d == 0]}")

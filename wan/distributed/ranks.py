"""Process-group helpers: start torch.distributed from the variables torchrun sets, say who this rank is, and keep
logs, progress bars and file writing on rank 0."""
from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger("wan_experts")


def launched_with_several_processes() -> bool:
    """True under ``torchrun --nproc_per_node=N`` (N > 1), which sets WORLD_SIZE for every process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str) -> bool:
    """Join the process group torchrun describes (NCCL for CUDA, gloo for the CPU); True if this call started it.

    With CUDA each process uses the GPU of its LOCAL_RANK."""
    if dist.is_initialized() or not launched_with_several_processes():
        return False
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0, or the only process: the one that logs and writes files."""
    return rank() == 0


def rank_device(device: str) -> str:
    """The device of this rank: ``cuda`` means the GPU of LOCAL_RANK when several processes share a machine."""
    if device == "cuda" and world_size() > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', torch.cuda.current_device()))}"
    return device


def quiet_other_ranks() -> None:
    """Only rank 0 logs progress; the other ranks report warnings and errors only."""
    if not is_main():
        logging.getLogger("wan_experts").setLevel(logging.WARNING)


def leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def share_from_main(value):
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]

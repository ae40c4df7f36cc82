"""Which models are on the compute device, and the memory hand-off with the application around the engine.

A model waits on its offload device (usually memory-mapped from its file) and is *placed* on the compute device for
as long as it works: ``place`` swaps copies of its tensors in (``wan.memory.swap``), ``leave`` swaps the originals
back, which costs no copy and keeps the file mapping, or keeps the model on the device while idle.

The engine asks its ``MemoryHost`` for room before it puts anything on a device, and tells it about models that stay
there while idle, so that the host can take them off again when it needs the memory. The default host does nothing
(plain Python, the CLI); ``nodes/host.py`` installs one that talks to ComfyUI's memory manager.
"""
from __future__ import annotations

import logging
import weakref

import torch
import torch.nn as nn

from .devices import module_device, same_device
from .swap import TensorSwap, nbytes, slots_of, unique_tensors

log = logging.getLogger("wan_experts")

ATTR = "_wan_residency"
GiB = 1024 ** 3


class MemoryHost:
    """What the application does about device memory. This default does nothing."""

    def make_room(self, nbytes: int, device: torch.device) -> None:
        """Make ``nbytes`` free on ``device`` (for instance by unloading the application's own idle models)."""

    def keep_idle(self, resident: "Residency") -> None:
        """``resident`` stays on its device while idle; the host may call ``resident.evict()`` when it needs room."""


_host = MemoryHost()


def set_memory_host(host: MemoryHost | None) -> MemoryHost:
    """Install ``host`` (None: the default that does nothing); returns the previous one."""
    global _host
    previous, _host = _host, host or MemoryHost()
    return previous


def memory_host() -> MemoryHost:
    return _host


class Residency:
    """The part of one module that is on a device right now, as swapped-in copies of its tensors.

    ``swaps`` restore the module's own tensors when the module leaves; ``stream`` is the block-streaming state of a
    DiT (``wan.memory.offload``), dropped with it. ``in_use`` is True while the engine computes with the module: it is not
    evicted then.
    """

    def __init__(self, owner: nn.Module):
        self._owner = weakref.ref(owner)
        self.device: torch.device | None = None
        self.swaps: list[TensorSwap] = []
        self.stream = None  # wan.memory.offload.BlockStream, when the module streams blocks
        self.in_use = False
        self.host_handle = None  # the host's record of this module, if it keeps one

    @property
    def owner(self) -> nn.Module | None:
        return self._owner()

    @property
    def loaded(self) -> bool:
        return self.device is not None

    @property
    def device_bytes(self) -> int:
        """Bytes this module holds on the device: its swapped-in tensors and any block-streaming buffers."""
        return sum(s.nbytes for s in self.swaps) + (self.stream.device_bytes if self.stream is not None else 0)

    def load(self, device, exclude=()) -> int:
        """Copy the module's tensors (all but the subtrees in ``exclude``) to ``device`` and swap them in."""
        if self.loaded:
            raise RuntimeError("the module is already placed; unload it first")
        self.device = torch.device(device)
        return self.add(self.owner, exclude)

    def add(self, module: nn.Module, exclude=()) -> int:
        """Also put ``module`` (a part of the owner left out by ``load``) on the device; returns the bytes copied."""
        device = self.device
        swap = TensorSwap(slots_of(module, exclude), lambda t: t.to(device))
        self.swaps.append(swap)
        return swap.nbytes

    def unload(self) -> int:
        """Back to the originals: drop every device copy (no copy back, nothing written); returns the bytes freed."""
        freed = self.device_bytes
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        for swap in reversed(self.swaps):
            swap.restore()
        self.swaps = []
        self.device = None
        self.in_use = False
        return freed

    def evict(self) -> int:
        """The host wants the memory back: unload unless the engine is computing with the module (then 0)."""
        if self.in_use or not self.loaded:
            return 0
        owner = self.owner
        log.info("Unloading %s from %s to free memory", type(owner).__name__ if owner is not None else "a model",
                 self.device)
        return self.unload()


def residency(module: nn.Module) -> Residency:
    """The module's residency record (created on first use). Patched copies of a model (``wan.weights.patching``) start with
    a shallow copy of its attributes, so the record checks that it belongs to this very module."""
    r = module.__dict__.get(ATTR)
    if r is None or r.owner is not module:
        r = Residency(module)
        module.__dict__[ATTR] = r
    return r


def placed(module: nn.Module) -> bool:
    """True when ``module`` was put on a device by ``place`` and is still there."""
    r = module.__dict__.get(ATTR)
    return r is not None and r.owner is module and r.loaded


def place(module: nn.Module, device, exclude=(), what: str | None = None) -> Residency:
    """Put ``module`` (without the subtrees in ``exclude``) on ``device`` for use, after asking the host for room.

    Nothing is copied when it is placed there already, or when its own tensors live on ``device`` (then nothing is
    placed and ``leave`` does nothing)."""
    device = torch.device(device)
    r = residency(module)
    if r.loaded and not same_device(r.device, device):
        r.unload()
    if not r.loaded and not same_device(module_device(module), device):
        need = nbytes(unique_tensors(slots_of(module, exclude)))
        _host.make_room(need, device)
        r.load(device, exclude)
        log.info("Placed %s on %s (%.2f GiB)", what or type(module).__name__, device, need / GiB)
    r.in_use = r.loaded
    return r


def leave(module: nn.Module, stay: bool = False) -> bool:
    """The engine is done with ``module`` for now: back to its own tensors (True), or, with ``stay``, kept on the
    device while idle, where the host may evict it (False). Nothing happens to a module that was not placed."""
    if not placed(module):
        return False
    r = residency(module)
    r.in_use = False
    if stay:
        _host.keep_idle(r)
        return False
    r.unload()
    return True


def send_home(module: nn.Module) -> None:
    """Give a placed ``module`` its own tensors back now (before building on them, e.g. a patched copy)."""
    if placed(module):
        residency(module).unload()


def free_bytes(device) -> int | None:
    """Memory the next allocations on ``device`` can use: the driver's free memory plus what PyTorch's caching
    allocator holds unused. None where it cannot be measured (CPU, other backends)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)

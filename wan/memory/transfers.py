"""Copying one module's tensors into a preallocated device buffer, overlapped with compute where the device allows.

A *layout* packs a module's distinct tensors (any dtype: fp8 weights, float32 scales, LoRA factors) at aligned
offsets of one flat byte buffer, so a whole transformer block travels in one copy and comes out as views of it.

Block streaming keeps two such buffers (*slots*) on the device: the block that runs reads one while the next block is
copied into the other. On CUDA (``CudaTransfers``) each copy is packed into a pinned host buffer, sent on a side
stream with ``non_blocking``, and fenced with events: the compute stream waits for the copy before the block runs,
and the next copy into a slot waits until the compute stream has finished with the block that used it. Elsewhere
(``SyncTransfers``) the copy is a plain one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

ALIGN = 256  # bytes; keeps every view aligned for any dtype (and for fast kernels)


@dataclass
class Layout:
    """Where each tensor of a module sits in a flat byte buffer."""

    tensors: list[torch.Tensor]
    offsets: list[int]
    nbytes: int

    @classmethod
    def of(cls, tensors: list[torch.Tensor]) -> "Layout":
        offsets, end = [], 0
        for t in tensors:
            offsets.append(end)
            end += -(-t.numel() * t.element_size() // ALIGN) * ALIGN
        return cls(tensors, offsets, end)

    def pack(self, buffer: torch.Tensor) -> None:
        """Copy the tensors' bytes into ``buffer`` (uint8, at least ``nbytes`` long, on any device)."""
        for t, off in zip(self.tensors, self.offsets):
            raw = _bytes(t)
            buffer[off:off + raw.numel()].copy_(raw)

    def views(self, buffer: torch.Tensor) -> dict[int, torch.Tensor]:
        """Views of ``buffer`` with each tensor's dtype and shape, by ``id`` of the original tensor."""
        out = {}
        for t, off in zip(self.tensors, self.offsets):
            n = t.numel() * t.element_size()
            out[id(t)] = buffer[off:off + n].view(t.dtype).view(t.shape)
        return out


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


class SyncTransfers:
    """Plain copies into two device slots (CPU, or devices without streams)."""

    def __init__(self, device: torch.device, capacity: int):
        self.device = torch.device(device)
        self.slots = [torch.empty(capacity, dtype=torch.uint8, device=self.device) for _ in range(2)]

    @property
    def device_bytes(self) -> int:
        return sum(s.numel() for s in self.slots)

    def copy_in(self, slot: int, layout: Layout) -> torch.Tensor:
        """Start copying ``layout``'s tensors into ``slot``; returns the slot's buffer."""
        layout.pack(self.slots[slot])
        return self.slots[slot]

    def ready(self, slot: int) -> None:
        """Before computing with ``slot``: its copy must be complete."""

    def release(self, slot: int) -> None:
        """The compute that reads ``slot`` has been issued; the slot may be refilled after it."""

    def close(self) -> None:
        self.slots = []


class CudaApi:
    """The CUDA calls ``CudaTransfers`` makes (a stand-in records them in tests)."""

    @staticmethod
    def stream(device):
        return torch.cuda.Stream(device)

    @staticmethod
    def event():
        return torch.cuda.Event()

    @staticmethod
    def current_stream(device):
        return torch.cuda.current_stream(device)

    @staticmethod
    def use(stream):
        return torch.cuda.stream(stream)

    @staticmethod
    def pinned(nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)


class CudaTransfers:
    """Copies on a side stream from pinned staging buffers, ordered against the compute stream by events."""

    def __init__(self, device: torch.device, capacity: int, api=CudaApi):
        self.device, self.api = torch.device(device), api
        self.side = api.stream(self.device)
        self.slots = [torch.empty(capacity, dtype=torch.uint8, device=self.device) for _ in range(2)]
        self.staging = [api.pinned(capacity) for _ in range(2)]
        self.copied = [None, None]  # event after the last copy into the slot (also frees its staging buffer)
        self.freed = [None, None]  # event after the last compute that read the slot

    @property
    def device_bytes(self) -> int:
        return sum(s.numel() for s in self.slots)

    def copy_in(self, slot: int, layout: Layout) -> torch.Tensor:
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()  # the staging buffer's previous copy has left it
        layout.pack(self.staging[slot])  # host copy into pinned memory (overlaps the GPU's work)
        with self.api.use(self.side):
            if self.freed[slot] is not None:
                self.side.wait_event(self.freed[slot])  # the block that used this slot has been computed
            self.slots[slot][:layout.nbytes].copy_(self.staging[slot][:layout.nbytes], non_blocking=True)
            done = self.api.event()
            done.record(self.side)
        self.copied[slot] = done
        return self.slots[slot]

    def ready(self, slot: int) -> None:
        self.api.current_stream(self.device).wait_event(self.copied[slot])

    def release(self, slot: int) -> None:
        done = self.api.event()
        done.record(self.api.current_stream(self.device))
        self.freed[slot] = done

    def close(self) -> None:
        self.side.synchronize()  # no copy may still write into a buffer that is about to be freed
        self.slots, self.staging = [], []


def make_transfers(device, capacity: int):
    """CUDA transfers on a CUDA device, plain copies elsewhere."""
    device = torch.device(device)
    return CudaTransfers(device, capacity) if device.type == "cuda" else SyncTransfers(device, capacity)

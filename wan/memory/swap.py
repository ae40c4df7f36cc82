"""Put copies of a module's tensors on a device by swapping references, and swap the originals back.

Every parameter, buffer and ``Linear.weight_patches`` list (``wan.weights.ops``: the stored weight, the scale buffers of its
format and its LoRA patches) is a *slot*. A ``TensorSwap`` fills the slots with copies and keeps the original
objects; ``restore`` puts the originals back. The originals are never copied, moved or written, so memory-mapped
weights stay memory-mapped and going back costs no copy and no RAM (``module.to("cuda")`` followed by
``module.to("cpu")`` would instead leave an anonymous RAM copy of every weight behind).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn

Copy = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Slot:
    """One place that holds tensors: a parameter, a buffer, or a Linear's patch list."""

    owner: nn.Module
    kind: str  # "param", "buffer" or "patches"
    name: str

    def get(self):
        if self.kind == "param":
            return self.owner._parameters[self.name]
        if self.kind == "buffer":
            return self.owner._buffers[self.name]
        return self.owner.weight_patches

    def set(self, value) -> None:
        if self.kind == "param":
            self.owner._parameters[self.name] = value
        elif self.kind == "buffer":
            self.owner._buffers[self.name] = value
        else:
            self.owner.weight_patches = value

    def tensors(self) -> list[torch.Tensor]:
        value = self.get()
        if self.kind == "patches":
            return [t for patch in value for t in patch.tensors()]
        return [value]

    def replaced(self, copy: Copy):
        """The slot's value with every tensor replaced by ``copy(tensor)`` (the current value is not changed)."""
        value = self.get()
        if self.kind == "param":
            return nn.Parameter(copy(value).detach(), requires_grad=value.requires_grad)
        if self.kind == "buffer":
            return copy(value)
        return tuple(patch.moved(copy) for patch in value)


def slots_of(module: nn.Module, exclude: Iterable[nn.Module] = ()) -> list[Slot]:
    """Every slot of ``module``'s tree in a fixed order, leaving out the subtrees in ``exclude``."""
    seen = {id(m) for m in exclude}
    slots: list[Slot] = []

    def walk(m: nn.Module) -> None:
        if id(m) in seen:
            return
        seen.add(id(m))
        slots.extend(Slot(m, "param", n) for n, p in m._parameters.items() if p is not None)
        slots.extend(Slot(m, "buffer", n) for n, b in m._buffers.items() if b is not None)
        if getattr(m, "weight_patches", None):
            slots.append(Slot(m, "patches", "weight_patches"))
        for child in m._modules.values():
            if child is not None:
                walk(child)

    walk(module)
    return slots


def unique_tensors(slots: list[Slot]) -> list[torch.Tensor]:
    """The slots' tensors, each once (a tensor held by two slots is copied once), in slot order."""
    found: dict[int, torch.Tensor] = {}
    for slot in slots:
        for t in slot.tensors():
            found.setdefault(id(t), t)
    return list(found.values())


def nbytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class TensorSwap:
    """Fill ``slots`` with copies made by ``copy`` (one per distinct tensor); ``restore`` puts the originals back."""

    def __init__(self, slots: list[Slot], copy: Copy):
        copies: dict[int, torch.Tensor] = {}

        def once(t: torch.Tensor) -> torch.Tensor:
            if id(t) not in copies:
                copies[id(t)] = copy(t)
            return copies[id(t)]

        self.saved = [(slot, slot.get()) for slot in slots]
        new_values = [slot.replaced(once) for slot in slots]  # all copies made before any slot changes
        for slot, value in zip(slots, new_values):
            slot.set(value)
        self.nbytes = nbytes(copies.values())

    @property
    def active(self) -> bool:
        return bool(self.saved)

    def restore(self) -> None:
        """Put the original tensors back (idempotent); the copies are dropped."""
        for slot, value in self.saved:
            slot.set(value)
        self.saved = []
        self.nbytes = 0

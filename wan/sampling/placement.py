"""Where the experts live during sampling: only the active one on the compute device; the idle one waits on the
offload device and the two trade places at the switch. ``keep_both`` keeps both on the compute device.

Placing swaps device copies in and leaving swaps the model's own tensors back (``wan.memory.place``): the offload copy is
never written, so memory-mapped weights stay memory-mapped and an A14B pair costs its file size in RAM however often
the experts trade places. A model with block streaming (``wan.memory.offload``) is placed without its blocks; its first
forward places the resident ones and streams the others.
"""
from __future__ import annotations

import logging

import torch

from ..memory.devices import module_device, same_device
from ..memory.place import leave, place, placed
from ..memory.offload import held_back

log = logging.getLogger("wan_experts")


class ExpertPlacement:
    def __init__(self, models: list[torch.nn.Module], device, offload_device, keep_both: bool = False):
        self.models = models
        self.device = torch.device(device)
        self.offload = torch.device(offload_device)
        self.keep_both = keep_both

    def activate(self, model: torch.nn.Module) -> torch.nn.Module:
        """Put ``model`` on the compute device, first moving the others off it (unless keeping both)."""
        if same_device(self.device, self.offload):
            return model
        if not self.keep_both:
            for other in self.models:
                if other is not model:
                    self._put_away(other)
        if not same_device(module_device(model), self.device) or placed(model):
            place(model, self.device, exclude=held_back(model), what=f"{getattr(model, 'role', 'the')} expert")
        return model

    def release(self) -> None:
        """After sampling: everything back to the offload device; with ``keep_both`` the experts stay, idle (the host
        may still take them off when it needs the memory)."""
        if same_device(self.device, self.offload):
            return
        for model in self.models:
            self._put_away(model, stay=self.keep_both)

    def _put_away(self, model: torch.nn.Module, stay: bool = False) -> None:
        if placed(model):
            leave(model, stay)
        elif not stay and not same_device(module_device(model), self.offload):
            model.to(self.offload)  # put on the device by something else (e.g. loaded there): move it the old way

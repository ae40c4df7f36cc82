"""Where the experts live during sampling: only the active one on the compute device; the idle one waits on the
offload device and the two trade places at the switch. ``keep_both`` keeps both on the compute device."""
from __future__ import annotations

import logging

import torch

from ..devices import module_device, same_device

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
                if other is not model and not same_device(module_device(other), self.offload):
                    other.to(self.offload)
        if not same_device(module_device(model), self.device):
            log.info("Moving %s expert to %s", getattr(model, "role", "the"), self.device)
            model.to(self.device)
        return model

    def release(self) -> None:
        """After sampling: everything back to the offload device (unless both are kept resident)."""
        if self.keep_both or same_device(self.device, self.offload):
            return
        for model in self.models:
            if not same_device(module_device(model), self.offload):
                model.to(self.offload)

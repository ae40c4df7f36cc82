"""Where an encoder runs and where it waits: placed on the compute device for one call (``wan.memory.place``: device copies
swapped in, its memory-mapped weights untouched), then given back."""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn

from ..memory.devices import module_device
from ..memory.place import leave, place


@contextmanager
def running_on(module: nn.Module, device: torch.device | str | None, stay: bool):
    """Run the body with ``module`` on ``device`` (None: where it is); unless ``stay``, it goes back afterwards (with
    ``stay`` it remains there while idle, where the host may take it off when it needs the memory)."""
    target = module_device(module) if device is None else torch.device(device)
    place(module, target, what=type(module).__name__)
    try:
        yield target
    finally:
        if leave(module, stay) and target.type == "cuda":
            torch.cuda.empty_cache()

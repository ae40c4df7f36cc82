"""Where an encoder runs and where it waits: move it to the compute device for one call, then give the memory back."""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn

from ..devices import module_device, same_device


@contextmanager
def running_on(module: nn.Module, device: torch.device | str | None, stay: bool):
    """Run the body with ``module`` on ``device`` (None: where it is); unless ``stay``, move it back afterwards."""
    home = module_device(module)
    target = home if device is None else torch.device(device)
    moved = not same_device(target, home)
    if moved:
        module.to(target)
    try:
        yield target
    finally:
        if moved and not stay:
            module.to(home)
            if target.type == "cuda":
                torch.cuda.empty_cache()

"""Cancelling a long run quickly: an ``interrupt()`` callable (the host's cancel check) runs before every
transformer block, so a cancel takes effect within one block rather than one whole step.

It is attached as a forward pre-hook for the duration of a run, so the model code itself knows nothing about it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch


@contextmanager
def interruptible(models: list[torch.nn.Module], interrupt: Callable[[], None] | None):
    """Within the block, ``interrupt()`` is called before each transformer block of ``models`` (and before each
    forward of a model without blocks); exceptions it raises propagate and end the run."""
    if interrupt is None:
        yield
        return

    def hook(module, args):
        interrupt()

    units = [unit for model in models for unit in (getattr(model, "blocks", None) or [model])]
    handles = [unit.register_forward_pre_hook(hook) for unit in units]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()

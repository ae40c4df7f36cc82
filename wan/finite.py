"""NaN and infinity: found early, explained, never written to a video.

A run whose latents or frames stop being finite ends with an error that says why it most likely happened and what
to try, instead of an all-black video. Only when that happens are the weights scanned in full (a 14B model takes a
while to read from disk); loading checks the small tensors only (norms, biases, modulation, scales), which costs
almost nothing and catches the common damaged or badly converted file.
"""
from __future__ import annotations

from typing import Iterable

import torch

from .errors import CheckpointError, InputError

SMALL_TENSOR = 1 << 20  # elements: tensors up to this size are checked when a model loads
SCAN_CHUNK = 1 << 24  # elements converted to float32 at a time while scanning


class NonFiniteError(InputError):
    """Latents or frames hold NaN or infinite values."""


def is_finite(t: torch.Tensor) -> bool:
    """True when every element of ``t`` is finite (any dtype, scanned in chunks so fp8 needs no full copy). A
    sharded tensor (FSDP) is checked in this process's shard."""
    t = _local(t)
    if not t.is_floating_point():
        return True
    flat = t.detach().reshape(-1)
    return all(bool(torch.isfinite(flat[i:i + SCAN_CHUNK].float()).all()) for i in range(0, flat.numel(), SCAN_CHUNK))


def first_nonfinite(named: Iterable[tuple[str, torch.Tensor]], max_numel: int | None = None) -> str | None:
    """The name of the first tensor holding NaN/inf (tensors above ``max_numel`` elements skipped), else None."""
    for name, t in named:
        t = _local(t)
        if t.device.type == "meta" or (max_numel is not None and t.numel() > max_numel):
            continue
        if not is_finite(t):
            return name
    return None


def check_loaded_weights(module: torch.nn.Module, source, what: str) -> None:
    """At load: the small tensors of ``module`` must be finite (the large matrices are scanned only if a run goes
    non-finite, see ``check_output``)."""
    bad = first_nonfinite(_named_tensors(module), SMALL_TENSOR)
    if bad is not None:
        raise CheckpointError(f"{what} '{source}' is unusable: its tensor '{bad}' holds NaN or infinite values (in "
                              f"the file, or after conversion to the chosen dtype). Download the file again, or "
                              f"load it with dtype bf16 / fp32")


def check_input(t: torch.Tensor | None, name: str, fix: str) -> None:
    """An input tensor of a run must be finite."""
    if t is not None and torch.is_tensor(t) and not is_finite(t):
        raise NonFiniteError(f"NaN or infinite values in the {name}; {fix}")


def check_output(t: torch.Tensor, stage: str, models: list[torch.nn.Module], dtype: torch.dtype,
                 attention: str | None = None) -> None:
    """Stop a run whose ``stage`` produced NaN/inf, naming the likely cause: damaged weights (scanned now),
    float16 overflow, or the attention kernel."""
    if is_finite(t):
        return
    raise NonFiniteError(f"{stage} produced NaN or infinite values (the video would be black): "
                         f"{explain(models, dtype, attention)}")


def explain(models: list[torch.nn.Module], dtype: torch.dtype, attention: str | None) -> str:
    for model in models:
        bad = first_nonfinite(_named_tensors(model))
        if bad is not None:
            source = getattr(model, "source", "") or "the model file"
            return (f"the weights are damaged: tensor '{bad}' of '{source}' holds NaN or infinite values; "
                    f"download the file again or use another precision of it")
    if dtype == torch.float16:
        return ("float16 most likely overflowed; choose dtype bf16 (or fp32) in the loader; bf16 has the range "
                "of fp32")
    from .dit.attention import BUILTIN_BACKENDS  # here: wan.dit imports this module while it loads

    if attention is not None and attention not in BUILTIN_BACKENDS:
        return (f"the '{attention}' attention kernel most likely failed on these inputs; choose attention 'auto' "
                f"in the loader")
    return ("the weights are finite, so the computation overflowed; try dtype fp32 and attention 'auto', and "
            "check that the inputs (images, prompts, settings) are sensible")


def _local(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a distributed tensor (DTensor), or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def _named_tensors(module: torch.nn.Module):
    yield from module.named_parameters()
    yield from module.named_buffers()

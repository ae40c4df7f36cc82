"""The largest picture size that fits: a run whose frame count is fixed (a refine stage keeps its video's frames) is
refused with the largest width x height of the same aspect, in the model's size multiple, whose sampling estimate
fits the device and whose model calls stay within the token ceiling. As in ``check``, the memory host (ComfyUI) is
asked to make room before a run is refused."""
from __future__ import annotations

from ..memory.place import memory_host
from . import check
from .check import MAX_TOKENS, BudgetError
from .estimates import call_frames, estimate_sampling, gib, token_ranks


def latent_grid(experts, width: int, height: int, frames: int, batch: int = 1) -> tuple[int, int, int, int, int]:
    """[B, C, T, h, w] of a ``width`` x ``height`` x ``frames`` video for ``experts``' latent channels."""
    channels = experts.config.out_dim
    stride = 16 if channels == 48 else 8
    return batch, channels, (frames - 1) // 4 + 1, height // stride, width // stride


def fits(experts, width: int, height: int, frames: int, device, free: int | None, step_cache=False,
         keep_both=False, context=None, batch: int = 1) -> bool:
    shape = latent_grid(experts, width, height, frames, batch)
    pt, ph, pw = experts.config.patch_size
    tokens = -(-batch * call_frames(shape[2], context)[0] // pt * (shape[3] // ph) * (shape[4] // pw)
               // token_ranks(experts))
    if tokens > MAX_TOKENS:
        return False
    return free is None or estimate_sampling(experts, shape, device, step_cache, keep_both, context).total <= free


def largest_size(experts, width: int, height: int, frames: int, device, multiple: int, free: int | None,
                 **options) -> tuple[int, int] | None:
    """The largest (w, h) with w a multiple of ``multiple``, h the aspect's height rounded to the multiple, that
    ``fits``; None when not even the smallest does."""
    def size(k: int) -> tuple[int, int]:
        return k * multiple, max(multiple, int(k * multiple * height / width / multiple + 0.5) * multiple)

    lo, hi = 0, max(1, width // multiple)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(experts, *size(mid), frames, device, free, **options):
            lo = mid
        else:
            hi = mid - 1
    return size(lo) if lo else None


def check_size(experts, width: int, height: int, frames: int, device, multiple: int, what: str = "the run",
               step_cache=False, keep_both=False, context=None, batch: int = 1) -> None:
    """Refuse ``width`` x ``height`` x ``frames`` when its sampling does not fit ``device`` (ceiling or memory),
    naming the largest size of the same aspect that fits at this frame count."""
    from ..experts import as_expert_set

    experts = as_expert_set(experts)
    options = dict(step_cache=step_cache, keep_both=keep_both, context=context, batch=batch)
    free = check.available_bytes(device)
    if fits(experts, width, height, frames, device, free, **options):
        return
    estimate = estimate_sampling(experts, latent_grid(experts, width, height, frames, batch), device, step_cache,
                                 keep_both, context)
    if free is not None and estimate.total > free:  # the memory host (ComfyUI) may unload its own models first
        memory_host().make_room(estimate.total, estimate.device)
        free = check.available_bytes(device)
        if fits(experts, width, height, frames, device, free, **options):
            return
    best = largest_size(experts, width, height, frames, device, multiple, free, **options)
    room = f"only {gib(free)} GiB is free there" if free is not None else f"the ceiling is {MAX_TOKENS} tokens per call"
    fix = (f"the largest size of this aspect that fits at {frames} frames is {best[0]}x{best[1]}" if best else
           f"not even {multiple}x{multiple} fits at {frames} frames")
    raise BudgetError(f"{what} at {width}x{height}, {frames} frames needs {estimate.describe()}, but {room}: {fix}; "
                      f"or use context windows (fewer frames per model call), block streaming for the weights, "
                      f"or fewer frames")

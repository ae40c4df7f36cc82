"""The run a ``Settings`` asks for: a new video (``pipeline``), the continuation of one (``extend``) or a video
upscaled and refined (``refine``).

This is ``wan.run``: the one entry that ``python -m wan.generate`` and plain Python call. Each kind of run lives in
its own module and is chosen here, so that the kinds share the stages of ``pipeline`` without importing each other.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .pipeline import Settings, generate_video


def run(s: Settings) -> Path | None:
    """Text (and images) -> video file, or ``--extend_from``: a video continued from its last frames, or
    ``--refine_from``: a video upscaled and refined stage by stage.

    With several processes every rank must call this; rank 0 returns the file, the others None."""
    if s.refine_from is not None:
        _one_process("--refine_from")
        from .refine import run_refine

        return run_refine(s)
    if s.s2v is not None:
        from .s2v import run_s2v

        return run_s2v(s)
    if s.animate is not None:
        from .animate import run_animate

        return run_animate(s)
    if s.extend_from is not None:
        _one_process("--extend_from")
        from .extend import run_extension

        return run_extension(s)
    return generate_video(s)


def _one_process(what: str) -> None:
    from ..distributed.ranks import world_size

    if world_size() > 1:
        raise InputError(f"{what} runs in one process; start it without torchrun")

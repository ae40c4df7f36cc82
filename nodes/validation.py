"""Checks for ComfyUI's ``VALIDATE_INPUTS``: what needs no loaded model is refused while the graph is validated,
before any node runs (a NaN guidance, a device path, an impossible size fail at once, not after loading a 14B
model). The engine checks the same things again when it runs, for graphs and plain Python alike.

ComfyUI leaves an input named in ``VALIDATE_INPUTS`` to that function alone (it skips its own range and choice
checks), so numbers are checked against the range their ``INPUT_TYPES`` declares as well. Linked inputs arrive as
None and are checked when the node runs.
"""
from __future__ import annotations

from ..wan.budget.check import check_video_size
from ..wan.checks import finite_number, whole_number
from ..wan.errors import InputError
from .files import confined_file

LENIENT_STRIDE = 16 * 2  # pixels per DiT token with the Wan 2.2 VAE: the fewest tokens any model makes of a size


def verdict(*problems: str | None):
    """What ``VALIDATE_INPUTS`` returns: True, or the first problem."""
    return next((p for p in problems if p), True)


def number_problem(cls, **values) -> str | None:
    """Each named INT / FLOAT value whole or finite, and within its declared min / max."""
    declared = {**cls.INPUT_TYPES().get("required", {}), **cls.INPUT_TYPES().get("optional", {})}
    for name, value in values.items():
        if value is None:
            continue
        kind, options = declared[name][0], declared[name][1]
        check = whole_number if kind == "INT" else finite_number
        problem = _problem(lambda: check(value, name, options.get("min"), options.get("max")))
        if problem:
            return problem
    return None


def file_problem(kind: str, name, what: str, limit: int, unset: tuple = ("auto", "none", "")) -> str | None:
    """A file choice must be unset or a confined regular file (same message whether or not the path exists)."""
    if name is None or name in unset:
        return None
    return _problem(lambda: confined_file(kind, name, what, limit))


def size_problem(width, height, frames, batch) -> str | None:
    """The video ceiling for the most lenient VAE (the node's model decides the exact check when it runs)."""
    try:
        width, height, frames, batch = (int(v) for v in (width, height, frames, batch))
    except (TypeError, ValueError, OverflowError):  # linked (None) or not a number (number_problem says so)
        return None
    grid = ((frames - 1) // 4 + 1, height // LENIENT_STRIDE, width // LENIENT_STRIDE)
    return _problem(lambda: check_video_size(batch, grid, (width, height)))


def _problem(check) -> str | None:
    try:
        check()
    except InputError as exc:
        return str(exc)
    return None

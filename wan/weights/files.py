"""Reading small side files (tokenizers, step-cache data) so that no path can hang or exhaust the process.

A FIFO would block ``open`` until a writer appears and a device such as ``/dev/zero`` never ends, so a file is
opened non-blocking, must be a regular file (checked on the open descriptor, so swapping the path afterwards does
not help), and is read only up to a size limit.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import InputError

MiB = 1 << 20


def read_regular_file(path, limit: int, what: str) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``limit`` bytes."""
    path = Path(path)
    refusal = f"{what} '{path}' must be an existing regular file of at most {_size(limit)}"
    if not is_regular_file(path):
        raise InputError(f"{refusal}; check the path")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except (OSError, ValueError) as exc:
        raise InputError(f"{refusal}; it cannot be opened ({_reason(exc)})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            raise InputError(f"{refusal}; it is {'too large' if stat.S_ISREG(info.st_mode) else 'not a file'}")
        data = _read_up_to(fd, limit + 1)
    except OSError as exc:
        raise InputError(f"{refusal}; it cannot be read ({_reason(exc)})") from exc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputError(f"{refusal}; it is too large")
    return data


def is_regular_file(path) -> bool:
    """True for a regular file (after symlinks); False for folders, FIFOs, devices, sockets and bad names."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _read_up_to(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left > 0:
        chunk = os.read(fd, min(left, 4 * MiB))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _size(n: int) -> str:
    return f"{n / MiB:g} MB" if n >= MiB else f"{n} bytes"


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__

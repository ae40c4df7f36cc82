"""Side files (tokenizers, step-cache data) picked from the host's model folders, never from free-text paths.

A graph can come from anyone who reaches the server, so a file name from a graph must name a regular file, of
bounded size, inside one of the folders registered for its kind, after every symlink is resolved. Every refusal
reads the same whether or not the path exists, so errors reveal nothing about the server's files.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..wan.errors import InputError
from . import host

MAX_LISTED = 2000  # files a widget lists at most
MAX_FOLDERS = 2000  # folders searched at most (links may form cycles)


def list_files(kind: str, suffixes: tuple[str, ...], limit: int) -> list[str]:
    """Names (relative, "/"-separated) of the regular files ending in ``suffixes`` under ``kind``'s folders that
    ``confined_file`` would accept."""
    names: set[str] = set()
    walks = (((root, folder, files) for folder, _, files in os.walk(root, followlinks=True))
             for root in host.model_folders(kind))
    for seen, (root, folder, files) in enumerate(entry for walk in walks for entry in walk):
        candidates = (Path(folder, f).relative_to(root).as_posix() for f in files if f.lower().endswith(suffixes))
        names.update(n for n in candidates if _resolve(kind, n, limit) is not None)
        if seen >= MAX_FOLDERS or len(names) >= MAX_LISTED:
            break
    return sorted(names)


def confined_file(kind: str, name: str, what: str, limit: int) -> Path:
    """The real path of ``name`` in ``kind``'s folders; one and the same ``InputError`` for every failure."""
    path = _resolve(kind, name, limit)
    if path is None:
        folders = ", ".join(f"'{f}'" for f in host.model_folders(kind))
        raise InputError(f"{what} '{_printable(name)}' is not available: pick a file from the list; it must be a "
                         f"regular file of at most {limit >> 20} MB inside {folders} (links may not lead outside)")
    return path


def _resolve(kind: str, name, limit: int) -> Path | None:
    relative = _relative(name)
    if relative is None:
        return None
    roots = [r for r in (_real(f) for f in host.model_folders(kind)) if r is not None]
    for root in roots:
        real = _real(root / relative)
        if real is not None and any(r == real or r in real.parents for r in roots) and _small_file(real, limit):
            return real
    return None


def _relative(name) -> str | None:
    """``name`` as a path relative to a folder, or None (not text, empty, NUL, absolute, drive, '..')."""
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        return None
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
        return None
    return "/".join(p for p in parts if p not in ("", "."))


def _real(path: Path) -> Path | None:
    try:
        return Path(os.path.realpath(path, strict=True))
    except (OSError, ValueError):
        return None


def _small_file(path: Path, limit: int) -> bool:
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size <= limit


def _printable(name) -> str:
    text = name if isinstance(name, str) else repr(name)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 120 else text[:117] + "..."

"""Give a memory-mapped file's pages back once a loader has converted the tensors they hold.

Weights read through a file's memory map are views of it: a tensor the loader converts (to the compute dtype, to
a float32 island) reads its pages into this process, and they stay there, beside the converted copy, as long as
any other view keeps the map open (the same file's weights that need no conversion, the float32 islands of a
float32 file). Loading a float32 file for bf16 compute held the whole file and its bf16 copy (1.5x the file) at
the end of the load. ``MappedPages.release`` drops the whole pages inside a converted tensor's bytes from this
process (``madvise(MADV_DONTNEED)``), so a load holds the converted model plus one tensor's pages.

Only pages of a file mapping are dropped (never anonymous memory, whose contents that would erase). A dropped page
of a file mapping reads back from the file if it is touched again: nothing is lost as long as the mapped weights
are never written in place, which no code of the pack does (patches, casts and merges make new tensors). Linux
only; elsewhere a no-op.

``trim_heap`` gives back the free pages of the C heap itself, for a long series of allocations (a LoRA merge) that
leaves free chunks between the tensors it keeps.
"""
from __future__ import annotations

import ctypes
import mmap
import sys

import torch

MADV_DONTNEED = 4


class MappedPages:
    """One loader's releases; reads this process's file mappings once, at the first release."""

    def __init__(self):
        self._ranges: list[tuple[int, int]] | None = None
        self.released = 0  # bytes given back so far

    def release(self, tensor: torch.Tensor | None) -> int:
        """Drop the whole pages inside ``tensor``'s bytes where they lie in a file mapping; returns the bytes."""
        if tensor is None or tensor.device.type != "cpu" or not tensor.is_contiguous() or _madvise is None:
            return 0
        page = mmap.PAGESIZE
        begin = tensor.data_ptr()
        start, stop = -(-begin // page) * page, (begin + tensor.numel() * tensor.element_size()) // page * page
        if stop <= start or not any(lo <= start and stop <= hi for lo, hi in self._file_ranges()):
            return 0
        if _madvise(ctypes.c_void_p(start), ctypes.c_size_t(stop - start), MADV_DONTNEED) != 0:
            return 0
        self.released += stop - start
        return stop - start

    def _file_ranges(self) -> list[tuple[int, int]]:
        if self._ranges is None:
            self._ranges = file_mappings()
        return self._ranges


NOT_FILES = ("/dev/", "/memfd:", "/SYSV")  # devices (a private /dev/zero map is anonymous memory), shared memory


def file_mappings() -> list[tuple[int, int]]:
    """[start, end) of this process's mappings of regular files (``/proc/self/maps``: a path and an inode)."""
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/") \
                        and not fields[5].startswith(NOT_FILES):
                    lo, hi = fields[0].split("-")
                    ranges.append((int(lo, 16), int(hi, 16)))
    except OSError:
        return []
    return ranges


def _libc(name: str, argtypes: tuple, use_errno: bool = False):
    """The C library's function ``name`` with its argument types (returning int); None off Linux or where the
    library has none (``malloc_trim`` is glibc's)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=use_errno), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return fn


_madvise = _libc("madvise", (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int), use_errno=True)
_malloc_trim = _libc("malloc_trim", (ctypes.c_size_t,))


def trim_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; elsewhere nothing): the free chunks
    a long run of allocations leaves between live ones stay resident otherwise. Returns whether it could."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True

"""Available RAM: what the CPU can still allocate (``MemAvailable``), within the container's cgroup limit."""
from __future__ import annotations

import os


def host_available_bytes() -> int | None:
    """Available RAM (``MemAvailable``), lowered to the container's cgroup limit when there is one."""
    values = [v for v in (_meminfo_available(), _cgroup_room()) if v is not None]
    if not values:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return None
    return min(values)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """cgroup v2 ``memory.max`` minus the group's memory that is not reclaimable file cache; None without a
    limit."""
    root = "/sys/fs/cgroup/"
    try:
        with open(root + "memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(root + "memory.current") as f:
            used = int(f.read().strip())
        with open(root + "memory.stat") as f:
            stat = dict(line.split() for line in f if line.count(" ") == 1)
        return max(0, int(limit) - used + int(stat.get("file", 0)))
    except (OSError, ValueError):
        return None

"""Facts about the host every backend reports the same way (stdlib, psutil if present)."""

from __future__ import annotations

import os
import platform
from typing import Any


def rss_peak_mb() -> float:
    """Peak resident set size of this process (VmHWM), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def host_memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cpu_device(versions: dict[str, str], **extra: Any) -> dict[str, Any]:
    """The host CPU as a device record (see :meth:`perftune.backends.Backend.devices`)."""
    return {
        "kind": "cpu",
        "name": cpu_name(),
        "count": 1,
        "memory_bytes": host_memory_bytes(),
        "cores": usable_cores(),
        "versions": versions,
        **extra,
    }


__all__ = ["cpu_device", "cpu_name", "host_memory_bytes", "rss_peak_mb", "usable_cores"]

"""The process's own memory as Linux reports it (``/proc/self``): resident size, its high-water mark, and the
two knobs a benchmark needs to measure one pass's peak -- resetting the mark and returning glibc's free heap."""

from __future__ import annotations

import re
from pathlib import Path


def proc_kib(name: str, field: str) -> int | None:
    """A ``field: N kB`` line of ``/proc/self/<name>`` in KiB; None where there is none."""
    try:
        m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self", name).read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``, ...); None where there is none."""
    return proc_kib("status", field)


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (``/proc/self/clear_refs``); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def malloc_trim() -> bool:
    """Hand the heap's free pages back to the system (glibc), so the pass after a warm-up must fault in what
    it needs again and the high-water mark sees it; otherwise it reuses freed memory the RSS already counts."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False

"""Keep DSN's big feature maps on the heap during CPU inference (glibc ``mallopt``, applied at run time).

glibc serves every allocation above its mmap threshold with a fresh ``mmap`` and returns it with ``munmap`` on
``free``; the dynamic threshold stops growing at 32 MiB (64-bit). At 400×600 each 64-/128-channel feature map
is 61-123 MB, so every convolution output of a DSN pass is page-faulted in from the kernel (zeroed pages) and
unmapped again a few milliseconds later. :func:`reuse_heap` raises the mmap threshold to
:data:`MMAP_THRESHOLD` (128 MiB: the 128-channel maps of a 400×600 image are 117 MiB) and turns heap
trimming off, so freed maps stay mapped in the heap and are reused by the next allocation.

It is process-wide and sticky (glibc offers no way back to its dynamic threshold), so it is applied once,
by :meth:`bench.dsn.adapter.DSNMethod.prepare_inference` when DSN inference is set up on the CPU with the
fast path: by default when torch allocates big tensors on huge pages in this process (what ``bench``'s
entry point arranges, :mod:`bench.large_pages`), always with ``--set allocator=reuse_heap``, never with
``--set allocator=glibc``, for ``inference=plain`` or by training setup. Numerics are untouched: it only changes where malloc finds
memory (bit-identical, tested).

It works together with the huge pages that ``bench``'s entry point asks PyTorch for
(:mod:`bench.large_pages`). Alone it made ``ours`` 1.26x / 1.36x faster at 400×600 / 600×400 but let glibc
fragment the never-trimmed heap: 8.9 GB RSS after the 400×600 passes (glibc defaults: ≈1.0-1.7 GB), 16.8 GB
after the 600×400 ones that followed. With huge pages as well, the ≥ 2 MiB tensors are page-aligned and
the heap stayed at ≈2.5 GB over eleven images of nine different sizes (bench/dsn/NOTES.md). Maps above
the threshold (images above ≈262k pixels) are mmapped as before. Environment settings of the user
(``MALLOC_*_`` variables, ``GLIBC_TUNABLES`` with ``glibc.malloc``) win: then nothing is changed and the
reason is recorded.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import Any, Callable

__all__ = ["ALLOCATOR_CHOICES", "MMAP_THRESHOLD", "SETTINGS", "reuse_heap", "allocator_state", "mallopt_function"]

# glibc <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 2**20
#: (name, parameter, value) in the order they are applied
SETTINGS = (("M_MMAP_THRESHOLD", M_MMAP_THRESHOLD, MMAP_THRESHOLD),   # maps up to 128 MiB from the heap
            ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, -1))               # -1: never trim (man mallopt)
#: ``--set allocator=``: default = reuse_heap on the CPU fast path when torch's huge-page path is on
#: (bench/large_pages.py), else glibc's settings; reuse_heap = always there; glibc = never
ALLOCATOR_CHOICES = ("default", "reuse_heap", "glibc")
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TOP_PAD_")

_lock = threading.Lock()
_state: dict[str, Any] | None = None   # what reuse_heap() did in this process (it runs once)


def mallopt_function() -> tuple[Callable[[int, int], int] | None, str]:
    """``(mallopt, "glibc X.Y")`` when this process runs on glibc, else ``(None, reason)``."""
    if not sys.platform.startswith("linux"):
        return None, f"platform {sys.platform} (glibc mallopt only on Linux)"
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
        mallopt = libc.mallopt
    except (OSError, AttributeError) as e:
        return None, f"not glibc ({e})"
    version.restype = ctypes.c_char_p
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt, f"glibc {version().decode()}"


def _environment_override() -> str | None:
    have = [k for k in _ENV if k in os.environ]
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        have.append("GLIBC_TUNABLES")
    return ", ".join(have) or None


def reuse_heap() -> dict[str, Any]:
    """Apply :data:`SETTINGS` once per process (later calls return the first call's record).

    Returns ``{"mallopt": {name: value}, "libc": ..., "effect": ...}`` when applied, or
    ``{"unavailable": reason}`` / ``{"skipped": reason}`` when nothing was changed."""
    global _state
    with _lock:
        if _state is not None:
            return dict(_state)
        mallopt, libc = mallopt_function()
        env = _environment_override()
        if mallopt is None:
            _state = {"unavailable": libc}
        elif env:
            _state = {"skipped": f"the environment sets the allocator ({env}); left as it is", "libc": libc}
        else:
            applied: dict[str, int] = {}
            for name, param, value in SETTINGS:
                if mallopt(param, value) != 1:
                    _state = {"unavailable": f"{libc}: mallopt({name}, {value}) refused", "mallopt": applied}
                    break
                applied[name] = value
            else:
                _state = {"mallopt": applied, "libc": libc,
                          "effect": "process-wide from setup on: maps up to 128 MiB reused from a heap that is "
                                    "never trimmed (RSS keeps its high-water mark)"}
        return dict(_state)


def allocator_state() -> dict[str, Any]:
    """What :func:`reuse_heap` did in this process, or that it has not run (the allocator's defaults)."""
    with _lock:
        return dict(_state) if _state is not None else {"default": "glibc defaults (reuse_heap not applied)"}

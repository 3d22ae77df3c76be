"""Transparent huge pages for big CPU tensors, switched on when a ``bench`` process starts.

PyTorch's CPU allocator has its own switch, the environment variable ``THP_MEM_ALLOC_ENABLE``
(c10/core/alloc_cpu.cpp): when it is 1, every allocation of 2 MiB or more is page-aligned and
``madvise(MADV_HUGEPAGE)``-d, so the kernel backs it with 2 MiB pages instead of 4 KiB ones. DSN's
feature maps are 61-123 MB at 400×600; with 4 KiB pages each new map costs ~30,000 page faults and as many
TLB entries. Together with the heap reuse of :mod:`bench.dsn.allocator` it took ``bench run``'s DSN pass
to 88 % / 81-85 % of the measured convolution peak at 400×600 / 600×400 (a plain PyTorch process:
65-69 %; results/perf/dsn_cpu.md), and RSS stayed at ≈2.5 GB over eleven images of nine sizes where heap
reuse alone grew to 9-17 GB (bench/dsn/NOTES.md).

PyTorch reads the variable once, at the process's first CPU allocation, so it has to be in the
environment before torch allocates anything: :func:`enable_at_startup` is called by ``bench``'s entry
point before torch is imported, and :func:`child_environment` gives spawned workers the same setting.
It changes where memory comes from, never a value (bit-identical outputs, tested). The kernel only honours
it when ``/sys/kernel/mm/transparent_hugepage/enabled`` is ``always`` or ``madvise``. A user who sets
``THP_MEM_ALLOC_ENABLE`` (e.g. ``=0`` to measure without it) is left alone, and :func:`state` -- what
every run's environment record stores -- says who set it and whether torch's allocator really took its
huge-page path in this process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .memstat import proc_kib

__all__ = ["ENV", "enable_at_startup", "active", "state", "child_environment", "system_mode", "offered"]

ENV = "THP_MEM_ALLOC_ENABLE"
_SYSFS = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_PAGE = 4096
_decision: dict[str, Any] | None = None      # what enable_at_startup() found and did in this process
_checked: dict[str, Any] | None = None       # the alignment check (once per process)


def system_mode(path: Path = _SYSFS) -> str | None:
    """The kernel's THP mode (``always``, ``madvise`` or ``never``; the bracketed word), None if unknown."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def offered(mode: str | None = None) -> bool:
    """Whether the kernel honours ``MADV_HUGEPAGE`` (THP mode ``always`` or ``madvise``, on Linux)."""
    return sys.platform.startswith("linux") and (system_mode() if mode is None else mode) in ("always", "madvise")


def enable_at_startup() -> dict[str, Any]:
    """Put ``THP_MEM_ALLOC_ENABLE=1`` in this process's environment unless the user set it, the kernel
    does not offer THP, or torch was imported already (too late: the allocator has read it)."""
    global _decision
    if _decision is not None:
        return dict(_decision)
    mode = system_mode()
    if ENV in os.environ:
        _decision = {"set_by": "user", "value": os.environ[ENV]}
    elif not offered(mode):
        _decision = {"set_by": None, "reason": f"kernel THP mode {mode!r} on {sys.platform}: nothing to ask for"}
    elif "torch" in sys.modules:
        _decision = {"set_by": None, "reason": "torch was imported before bench's entry point ran (too late)"}
    else:
        os.environ[ENV] = "1"
        _decision = {"set_by": "bench", "value": "1"}
    _decision["kernel_mode"] = mode
    return dict(_decision)


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for a worker process that should allocate like a ``bench run`` process."""
    env = dict(os.environ if base is None else base)
    if ENV not in env and offered():
        env[ENV] = "1"
    return env


def active() -> bool:
    """Whether torch's allocator takes its huge-page path in this process (checked once)."""
    global _checked
    if _checked is None:
        import torch

        # fresh 4 MiB tensors: on the THP path c10 aligns them to a page before madvise-ing them; off it
        # their alignment is 64 bytes (mmapped chunks start 64 bytes into a page, heap chunks anywhere),
        # so four landing on page boundaries by chance has odds of at most 1 in 64^4
        probes = [torch.empty(2**20) for _ in range(4)]
        _checked = {"torch_huge_page_path": all(t.data_ptr() % _PAGE == 0 for t in probes)}
        del probes
    return bool(_checked["torch_huge_page_path"])


def state() -> dict[str, Any]:
    """For provenance: the variable, who set it, the kernel's mode, whether torch's allocator takes its
    huge-page path in this process, and the process's huge-page memory right now."""
    active()
    out = {"variable": ENV, "value": os.environ.get(ENV), **(_decision or {"set_by": "not asked for by this process"}),
           **_checked}
    out.setdefault("kernel_mode", system_mode())
    huge = proc_kib("smaps_rollup", "AnonHugePages")
    if huge is not None:
        out["anon_huge_pages_mib"] = round(huge / 1024, 1)
    return out

"""What a run records about the world it ran in (``env.json``)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import platform
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from . import __version__
from .large_pages import state as large_pages_state
from .paths import REPO_ROOT

if TYPE_CHECKING:  # torch is imported where a device is described, so `bench --help` stays fast
    import torch

_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-image", "pillow", "pandas", "pyiqa")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info(device: "torch.device") -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": str(device), "cpu": platform.processor() or platform.machine(),
                            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def environment(device: "torch.device") -> dict[str, Any]:
    return {
        "harness_version": __version__,
        "git": git_state(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "command": sys.argv,
        **device_info(device),
        **({"large_pages": large_pages_state()} if device.type == "cpu" else {}),
    }

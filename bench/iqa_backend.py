"""pyiqa as an optional second metric backend (the ``iqa`` extra).

Only pyiqa's classic, weight-free metrics are used here; its learned metrics download weights and
are therefore never called by the harness.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .errors import BenchError


def available() -> bool:
    try:
        import pyiqa  # noqa: F401
    except Exception:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _metric(name: str):
    try:
        import pyiqa
    except Exception as e:
        raise BenchError(f"pyiqa is not installed ({e}); install the iqa extra: pip install --no-deps pyiqa") from None
    return pyiqa.create_metric(name, device=torch.device("cpu"), as_loss=False)


def score(name: str, out: np.ndarray, ref: np.ndarray) -> float:
    from .imageio import to_tensor

    def t(a: np.ndarray) -> torch.Tensor:
        return to_tensor(a).double()

    with torch.no_grad():
        return float(_metric(name)(t(out), t(ref)).item())

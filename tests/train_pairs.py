"""Training examples for the tests: in-memory pairs, small synthetic PNG pairs on disk, and a crash mid-run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.methods.base import TrainPair


class ArrayPair:
    """A ``TrainPair`` stand-in holding arrays (samplers only call load_low/load_high)."""

    def __init__(self, pid, low, high):
        self.id, self._low, self._high = pid, low, high

    def load_low(self):
        return self._low

    def load_high(self):
        return self._high


def png_pairs(folder: Path, sizes, seed: int = 11) -> list[TrainPair]:
    """Dark noise (values < 70) and its brightened version 3·low + 10, written as PNGs under ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i, size in enumerate(sizes):
        low = (rng.random((*size, 3)) * 70).astype(np.uint8)
        high = np.clip(low.astype(int) * 3 + 10, 0, 255).astype(np.uint8)
        lp, hp = Path(folder) / f"low{i}.png", Path(folder) / f"high{i}.png"
        Image.fromarray(low).save(lp)
        Image.fromarray(high).save(hp)
        out.append(TrainPair(f"p{i}", lp, hp))
    return out


def crash_after(mp, iteration: int) -> None:
    """Make every Trainer raise ``RuntimeError("power cut")`` at the end of ``iteration`` (``mp``: a
    ``monkeypatch.context()``, so the crash ends with the block)."""
    from bench.training import Trainer

    def boom(self, it):
        if it == iteration:
            raise RuntimeError("power cut")
    mp.setattr(Trainer, "_on_iteration_end", boom)

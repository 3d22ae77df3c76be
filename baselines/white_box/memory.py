"""The trajectory pool of White-Box (official ``replay_memory.py``).

The pool holds ``pool_size`` (128) records (64×64 image, 11-value state). Training images enter with a zero state;
every generator step takes a batch of *unfinished* records out of the pool (finished ones met on the way are
dropped), applies one agent step and puts the results back (all of them while their step count is below
``maximum_trajectory_length``, else with probability ``over_length_keep_prob``); the pool is then topped up with
fresh inputs and truncated to ``pool_size``. The critic's fake samples are *finished* records of the pool
(``replay_fake_batch``: scanned in shuffled order, repeated if there are fewer than a batch).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from bench.errors import BenchError

from .data import FakeProvider
from .networks import N_STATE, STATE_STEP, STATE_STOPPED

__all__ = ["ImagePool"]


class ImagePool:
    def __init__(self, provider: FakeProvider, size: int, batch: int, rng: random.Random, device: torch.device,
                 max_trajectory_length: int = 7, over_length_keep_prob: float = 0.5):
        self.provider, self.size, self.batch, self.rng, self.device = provider, int(size), int(batch), rng, device
        self.max_len, self.keep_prob = int(max_trajectory_length), float(over_length_keep_prob)
        self.images: list[torch.Tensor] = []
        self.states: list[torch.Tensor] = []
        self.fill()

    def __len__(self) -> int:
        return len(self.images)

    def _shuffle(self) -> None:
        order = list(range(len(self.images)))
        self.rng.shuffle(order)
        self.images = [self.images[i] for i in order]
        self.states = [self.states[i] for i in order]

    def fill(self) -> None:
        while len(self.images) < self.size:
            batch = self.provider.next_batch(self.batch, self.device)
            for img in batch:
                self.images.append(img)
                self.states.append(torch.zeros(N_STATE, dtype=img.dtype))   # states live on the CPU
        self.images, self.states = self.images[: self.size], self.states[: self.size]

    def next_fake_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``get_next_fake_batch``: n unfinished records, removed from the pool."""
        self._shuffle()
        imgs, sts = [], []
        while len(imgs) < n:
            if not self.images:
                self.fill()
            img, st = self.images.pop(0), self.states.pop(0)
            if float(st[STATE_STOPPED]) != 1:
                imgs.append(img)
                sts.append(st)
        return torch.stack(imgs), torch.stack(sts).to(self.device)

    def replace(self, images: torch.Tensor, states: torch.Tensor) -> None:
        """``replace_memory``: put a generator step's outputs back, top up, shuffle."""
        self._shuffle()
        for img, st in zip(images, states.detach().cpu()):
            if float(st[STATE_STEP]) < self.max_len or self.rng.random() < self.keep_prob:
                self.images.append(img.detach())
                self.states.append(st)
        self.fill()
        self._shuffle()

    def replay_fake_batch(self, n: int) -> torch.Tensor:
        """``replay_fake_batch``: n finished images (repeated if fewer), the pool left in place."""
        self.fill()
        self._shuffle()
        out: list[torch.Tensor] = []
        for _ in range(n * 10):
            for img, st in zip(self.images, self.states):
                if float(st[STATE_STOPPED]) > 0:
                    out.append(img)
                    if len(out) >= n:
                        return torch.stack(out)
            if not out:
                break
        raise BenchError("white-box: no finished trajectories in the pool for the critic (give the first "
                         "iteration more generator steps: giters_first >= test_steps)")

    def state_dict(self) -> dict[str, Any]:
        st = self.rng.getstate()
        return {"images": torch.stack(self.images).cpu(), "states": torch.stack(self.states).cpu(),
                "rng": [st[0], list(st[1]), st[2]]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images = [t.to(self.device) for t in state["images"]]
        self.states = [t.clone() for t in state["states"]]
        r = state["rng"]
        self.rng.setstate((r[0], tuple(int(v) for v in r[1]), r[2]))

"""The Distort-and-Recover environment, the replay queue and the experience sampler that feeds ``Trainer``.

Environment (official ``main.py``: ``get_state``, ``act``, ``enqueue_samples``)
--------------------------------------------------------------------------------
* An episode runs on a batch of ``batch`` images resized to ``state_size``² (224 officially; PIL bilinear on
  uint8, what ``scipy.misc.imresize`` did), in float64 in [0, 1].
* **State** = deep features (``features.DeepFeatures``: VGG-16 fc6, 4,096) ‖ Lab 20³ histogram (8,000) ‖ action
  history (``seq_len`` × 12 = 600). Two history encodings:

  - ``"official"`` (default): what the released code does. ``act`` writes
    ``history[step_count * 12 + action] = 1`` but is never given ``step_count`` (it stays 0), so only the first
    12 slots are ever set: a flag per action "used at least once in this episode"; the other 588 stay 0.
  - ``"paper"``: a one-hot block per step (step ``t`` sets slot ``t·12 + action``), the encoding the paper
    describes; steps beyond ``seq_len`` are not recorded.
* **Score** ``-ΔE76/10`` against the target (``colour.lab_score``); **reward** = score after − score before;
  a transition is **terminal** when its reward ≤ 0 (the episode itself goes on).
* **Episodes** (``enqueue_samples``): the images are kept for a counter ``repeat`` that grows by 5 after a step
  where more than half of the batch was terminal and by 1 otherwise; a new batch of images is drawn once
  ``repeat > seq_len``. Images are drawn as ``batch`` consecutive entries of the training list starting at a
  uniform offset in ``[0, n - batch - 1]`` (``random.randint`` bounds: the last image of the list is never
  drawn, kept as in the original); with ``n <= batch`` images are drawn with replacement.
* **Exploration**: ε-greedy per image with ε = 1.0 / 0.8 / 0.6 / 0.4 / 0.2 / 0.1 before learning steps
  10k / 40k / 80k / 160k / 320k / after (``predict``).

Replay (``tf.RandomShuffleQueue(5000, min_after_dequeue=1000)`` with five producer threads)
-----------------------------------------------------------------------------------------------
Every transition is enqueued ``enqueue_repeat`` (3) times; a learning step *dequeues* ``batch`` entries drawn
uniformly at random (they leave the queue). In the original, five threads fill the queue while the learner
dequeues; the learner (a 70.9 M-parameter MLP step on 4 states) is much faster than the producers (VGG, Lab
conversions and NumPy histograms under the GIL), so the queue hovers at ``min_after_dequeue`` and each env step
(12 entries) feeds three learning steps. ``ReplayQueue`` + ``DQNSampler`` reproduce that regime
deterministically in one thread: before each dequeue, environment steps run until the queue holds at least
``min_after_dequeue + batch`` entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .actions import N_ACTIONS, apply_action
from .colour import lab_histogram_8k, lab_score, rgb_to_lab
from .features import DeepFeatures

__all__ = ["HISTORY_MODES", "StateBuilder", "Episode", "ReplayQueue", "DQNBatch", "DQNSampler", "epsilon_at",
           "resize_for_state"]

HISTORY_MODES = ("official", "paper")


def resize_for_state(img: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    """uint8 H×W×3 (or a float 1×3×H×W / 3×H×W tensor in [0,1], quantised first) -> uint8 size×size×3 with
    PIL bilinear, as ``scipy.misc.imresize(img, (size, size))`` (default ``interp='bilinear'``)."""
    from PIL import Image

    if isinstance(img, torch.Tensor):
        t = img.detach().float().cpu()
        if t.dim() == 4:
            t = t[0]
        img = (t.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    a = np.ascontiguousarray(img, dtype=np.uint8)
    if a.shape[:2] == (size, size):
        return a.copy()
    return np.asarray(Image.fromarray(a, "RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8).copy()


class StateBuilder:
    """Builds the state vector from an image batch and its history."""

    def __init__(self, features: DeepFeatures, history_mode: str = "official", seq_len: int = 50):
        if history_mode not in HISTORY_MODES:
            raise ValueError(f"history mode {history_mode!r}; choose one of {HISTORY_MODES}")
        self.features, self.history_mode, self.seq_len = features, history_mode, int(seq_len)
        self.history_len = self.seq_len * N_ACTIONS

    @property
    def state_len(self) -> int:
        return self.features.dim + 8000 + self.history_len

    def new_history(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(n, self.history_len, dtype=torch.float32, device=device)

    def record(self, history: torch.Tensor, actions: Sequence[int], step: int) -> None:
        """Mark the actions of one step in ``history`` (in place); -1 (stopped) marks nothing."""
        for i, a in enumerate(actions):
            if a < 0:
                continue
            if self.history_mode == "official":
                history[i, int(a)] = 1.0
            elif step < self.seq_len:
                history[i, step * N_ACTIONS + int(a)] = 1.0

    def state(self, images: torch.Tensor, lab: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        deep = self.features(images)
        return torch.cat([deep.to(history.device), lab_histogram_8k(lab).to(history.device), history], dim=1)


class Episode:
    """A batch of images being edited toward their targets (all float64 N×3×S×S in [0, 1])."""

    def __init__(self, builder: StateBuilder, images: torch.Tensor, targets: torch.Tensor | None):
        self.builder = builder
        self.images = images.to(torch.float64)
        self.target_lab = rgb_to_lab(targets.to(torch.float64)) if targets is not None else None
        self.history = builder.new_history(images.shape[0], images.device)
        self.steps = 0
        self._refresh()

    def _refresh(self) -> None:
        self.lab = rgb_to_lab(self.images)
        self.score = lab_score(self.lab, self.target_lab) if self.target_lab is not None else None
        self._state: torch.Tensor | None = None

    def state(self) -> torch.Tensor:
        if self._state is None:
            self._state = self.builder.state(self.images, self.lab, self.history)
        return self._state

    def step(self, actions: Sequence[int]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Apply one action per image; returns (reward, terminal) (None without targets)."""
        before = self.score
        self.images = apply_action(self.images, list(actions))
        self.history = self.history.clone()
        self.builder.record(self.history, actions, self.steps)
        self.steps += 1
        self._refresh()
        if before is None:
            return None, None
        reward = self.score - before
        return reward, reward <= 0


def epsilon_at(step: int, thresholds: Sequence[int], values: Sequence[float]) -> float:
    for t, v in zip(thresholds, values):
        if step < t:
            return float(v)
    return float(values[len(thresholds)])


class ReplayQueue:
    """A bounded store sampled uniformly *without* replacement, dequeued rows removed (RandomShuffleQueue)."""

    def __init__(self, capacity: int, state_len: int, device: torch.device):
        self.capacity, self.size = int(capacity), 0
        self.s = torch.zeros(self.capacity, state_len, dtype=torch.float32, device=device)
        self.s2 = torch.zeros_like(self.s)
        self.a = torch.zeros(self.capacity, dtype=torch.long, device=device)
        self.r = torch.zeros(self.capacity, dtype=torch.float32, device=device)
        self.term = torch.zeros(self.capacity, dtype=torch.float32, device=device)

    def __len__(self) -> int:
        return self.size

    def clear(self) -> None:
        self.size = 0

    def enqueue_many(self, s, s2, r, a, term) -> None:
        n = s.shape[0]
        if self.size + n > self.capacity:
            raise RuntimeError(f"replay queue overflow ({self.size} + {n} > {self.capacity})")
        sl = slice(self.size, self.size + n)
        self.s[sl], self.s2[sl] = s, s2
        self.r[sl], self.a[sl], self.term[sl] = r.float(), a.long(), term.float()
        self.size += n

    def dequeue(self, k: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if k > self.size:
            raise RuntimeError(f"cannot dequeue {k} of {self.size}")
        chosen = np.sort(rng.choice(self.size, size=k, replace=False))
        idx = torch.as_tensor(chosen, device=self.s.device)
        out = {"s": self.s[idx].clone(), "s2": self.s2[idx].clone(), "a": self.a[idx].clone(),
               "r": self.r[idx].clone(), "term": self.term[idx].clone()}
        tail_start = self.size - k
        holes = [int(i) for i in chosen if i < tail_start]
        movers = [i for i in range(tail_start, self.size) if i not in set(int(c) for c in chosen)]
        if holes:
            h = torch.as_tensor(holes, device=self.s.device)
            m = torch.as_tensor(movers, device=self.s.device)
            for t in (self.s, self.s2, self.a, self.r, self.term):
                t[h] = t[m]
        self.size -= k
        return out


@dataclass
class DQNBatch:
    s: torch.Tensor
    a: torch.Tensor
    r: torch.Tensor
    s2: torch.Tensor
    term: torch.Tensor
    iteration: int          # 0-based index of the learning step this batch is for
    epsilon: float


class DQNSampler:
    """Runs the environment with the online network and serves replayed transitions to ``Trainer``.

    ``lows``/``highs``: uint8 tensors N×3×S×S (the training inputs and targets at the state size).
    ``state_dict`` holds the environment RNG and counters; the queue and the episode in progress are not saved,
    so a resumed run refills the queue with fresh experience (the original kept neither across restarts).
    """

    def __init__(self, lows: torch.Tensor, highs: torch.Tensor, builder: StateBuilder, dqn, *, batch: int,
                 min_after_dequeue: int, capacity: int, enqueue_repeat: int, seq_len: int,
                 eps_steps: Sequence[int], eps_values: Sequence[float], seed: int, device: torch.device):
        self.lows, self.highs = lows, highs
        self.builder, self.dqn = builder, dqn
        self.batch, self.min_after_dequeue = int(batch), int(min_after_dequeue)
        self.enqueue_repeat, self.seq_len = int(enqueue_repeat), int(seq_len)
        self.eps_steps, self.eps_values = tuple(eps_steps), tuple(eps_values)
        self.device = device
        need = self.min_after_dequeue + self.batch + self.batch * self.enqueue_repeat
        self.queue = ReplayQueue(max(int(capacity), need), builder.state_len, device)
        self.rng = np.random.default_rng(seed)
        self.step = 0            # learning steps served
        self.env_steps = 0
        self.repeat = 0
        self.episode: Episode | None = None
        self.last_reward = float("nan")

    def __len__(self) -> int:
        return int(self.lows.shape[0])

    def describe(self) -> dict[str, Any]:
        return {"n_images": len(self), "state_size": int(self.lows.shape[-1]), "batch": self.batch,
                "min_after_dequeue": self.min_after_dequeue, "capacity": self.queue.capacity,
                "enqueue_repeat": self.enqueue_repeat, "state_len": self.builder.state_len}

    # ---- environment -------------------------------------------------------------------------
    def _draw_images(self) -> np.ndarray:
        n = len(self)
        if n > self.batch:
            off = int(self.rng.integers(0, n - self.batch))
            return np.arange(off, off + self.batch)
        return self.rng.integers(0, n, size=self.batch)

    def _new_episode(self) -> None:
        idx = torch.as_tensor(self._draw_images(), device=self.lows.device)
        lows = self.lows[idx].to(self.device, torch.float64) / 255.0
        highs = self.highs[idx].to(self.device, torch.float64) / 255.0
        self.episode = Episode(self.builder, lows, highs)
        self.repeat = 0

    def epsilon(self) -> float:
        return epsilon_at(self.step, self.eps_steps, self.eps_values)

    @torch.no_grad()
    def env_step(self) -> None:
        if self.episode is None or self.repeat > self.seq_len:
            self._new_episode()
        ep = self.episode
        assert ep is not None
        state = ep.state()
        q = self.dqn.online(state)
        greedy = q.argmax(dim=1).tolist()
        eps = self.epsilon()
        actions = []
        for i in range(self.batch):
            if self.rng.random() < eps:
                actions.append(int(self.rng.integers(0, N_ACTIONS)))
            else:
                actions.append(int(greedy[i]))
        reward, terminal = ep.step(actions)
        assert reward is not None and terminal is not None
        next_state = ep.state()
        self.repeat += 5 if int(terminal.sum()) > self.batch / 2 else 1
        a = torch.as_tensor(actions, device=self.device)
        for _ in range(self.enqueue_repeat):
            self.queue.enqueue_many(state, next_state, reward.float(), a, terminal)
        self.env_steps += 1
        self.last_reward = float(reward.mean())

    def next_batch(self) -> DQNBatch:
        need = self.min_after_dequeue + self.batch
        while len(self.queue) < need:
            self.env_step()
        d = self.queue.dequeue(self.batch, self.rng)
        out = DQNBatch(d["s"], d["a"], d["r"], d["s2"], d["term"], self.step, self.epsilon())
        self.step += 1
        return out

    # ---- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        st = self.rng.bit_generator.state
        return {"rng": {"state": str(st["state"]["state"]), "inc": str(st["state"]["inc"]),
                        "has_uint32": int(st["has_uint32"]), "uinteger": int(st["uinteger"])},
                "step": self.step, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        r = state["rng"]
        self.rng.bit_generator.state = {"bit_generator": "PCG64",
                                        "state": {"state": int(r["state"]), "inc": int(r["inc"])},
                                        "has_uint32": int(r["has_uint32"]), "uinteger": int(r["uinteger"])}
        self.step, self.env_steps = int(state["step"]), int(state["env_steps"])
        self.queue.clear()
        self.episode = None
        self.repeat = 0

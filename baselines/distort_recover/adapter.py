"""``distort-recover``: adapter for Distort-and-Recover (Park, Lee, Yoo & Kweon, CVPR 2018). See ``SOURCE.md``.

A double DQN picks one of 12 global colour actions at a time (``actions.py``) from a state of VGG-16 fc6
features, a Lab histogram and the action history (``env.py``, ``features.py``); the reward is the decrease of
the Lab distance to the target. At test time the agent acts greedily on the 224×224 image, stops when the best
Q-value is ≤ 0 (or after ``seq_len`` steps), and the chosen actions are replayed on the full-resolution image.

Training uses ``bench.training.Trainer`` with a ``DQNSampler`` in place of the crop sampler (it runs the
environment with the online network and serves dequeued replay transitions as the "batch"), the TD loss as
the step function, Adam with coupled L2 weight decay 1e-4 (= the official ``1e-4 · tf.nn.l2_loss`` on every
Q-network tensor), and the staircase ×0.96 / 5k-step learning-rate schedule as MultiStep milestones stopped
where the official floor (1e-8) would take over. The target network is synchronised at the start of every
``target_update``-th learning step (the official code copies it after step ``k·1000 − 1``).

The edit sequence of the last enhanced image is kept in ``self.last_edits`` and returned by ``image_record()``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from bench.errors import BenchError
from bench.fsutil import jsonable
from bench.methods.base import TrainPair, check_range
from bench.methods.torch_method import TF_WEIGHTS, TorchMethod
from bench.training import Trainer, TrainSettings, derive_seed, load_torch

from .actions import ACTIONS, N_ACTIONS, apply_action
from .env import HISTORY_MODES, DQNBatch, DQNSampler, Episode, StateBuilder, resize_for_state
from .features import DEEP_KINDS, DeepFeatures
from .qnet import DQN

__all__ = ["DistortRecoverConfig", "DistortRecover", "make_step_fn", "lr_milestones", "UNTRAINED_SEED"]

UNTRAINED_SEED = 0
DDQN_MODES = ("state", "next_state")


@dataclass
class DistortRecoverConfig:
    # --- state (official main.py / get_hist.py / model_vgg.py) ---
    state_size: int = 224                       # images are resized to state_size² for the state and the reward
    deep_features: str = "fc6"                  # fc6 (VGG-16, official) | none (histogram + history only)
    vgg_weights: str = ""                       # a torchvision vgg16-*.pth; "" = imported file or the substitute
    history: str = "official"                   # official (per-action "used" flags) | paper (one-hot per step)
    seq_len: int = 50                           # history length and the episode / test step limit
    hidden: tuple = (4096, 4096, 512)           # Q-network widths (official q_network)
    # --- training (official Agent.__init__) ---
    max_steps: int = 3_000_000                  # learning steps
    batch: int = 4                              # images per episode batch and transitions per learning step
    lr: float = 1e-5
    lr_decay: float = 0.96                      # staircase, every lr_decay_steps
    lr_decay_steps: int = 5000
    lr_min: float = 1e-8
    weight_decay: float = 1e-4                  # 1e-4 · l2_loss(w) on every Q tensor = coupled L2 1e-4
    discount: float = 0.95
    td_clip: float = 1.0                        # TD error clipped to [-td_clip, td_clip] before squaring
    memory_size: int = 5000                     # RandomShuffleQueue capacity
    min_after_dequeue: int = 1000
    enqueue_repeat: int = 3                     # each transition is enqueued this many times
    target_update: int = 1000
    eps_steps: tuple = (10000, 40000, 80000, 160000, 320000)
    eps_values: tuple = (1.0, 0.8, 0.6, 0.4, 0.2, 0.1)
    ddqn_argmax: str = "state"                  # state (official code) | next_state (double DQN as published)
    checkpoint_every: int = 10000
    # --- test ---
    test_steps: int = 0                         # 0 = seq_len (official)

    def validate(self) -> None:
        m = "distort-recover"
        check_range(m, "state_size", self.state_size, 32, 4096, integer=True)
        if self.deep_features not in DEEP_KINDS:
            raise BenchError(f"{m}: option deep_features={self.deep_features!r}; choose one of {', '.join(DEEP_KINDS)}")
        if self.history not in HISTORY_MODES:
            raise BenchError(f"{m}: option history={self.history!r}; choose one of {', '.join(HISTORY_MODES)}")
        if self.ddqn_argmax not in DDQN_MODES:
            raise BenchError(f"{m}: option ddqn_argmax={self.ddqn_argmax!r}; choose one of {', '.join(DDQN_MODES)}")
        check_range(m, "seq_len", self.seq_len, 1, 10_000, integer=True)
        if len(self.hidden) != 3:
            raise BenchError(f"{m}: option hidden needs three widths (fc1, fc2, fc3), got {self.hidden!r}")
        for h in self.hidden:
            check_range(m, "hidden", h, 1, 65536, integer=True)
        check_range(m, "max_steps", self.max_steps, 1, 10**9, integer=True)
        check_range(m, "batch", self.batch, 1, 4096, integer=True)
        check_range(m, "lr", self.lr, 0, 1, lo_open=True)
        check_range(m, "lr_decay", self.lr_decay, 0, 1, lo_open=True)
        check_range(m, "lr_decay_steps", self.lr_decay_steps, 1, 10**9, integer=True)
        check_range(m, "lr_min", self.lr_min, 0, 1)
        check_range(m, "weight_decay", self.weight_decay, 0, 1)
        check_range(m, "discount", self.discount, 0, 1)
        check_range(m, "td_clip", self.td_clip, 0, 1e6, lo_open=True)
        check_range(m, "memory_size", self.memory_size, 1, 10**7, integer=True)
        check_range(m, "min_after_dequeue", self.min_after_dequeue, 0, 10**7, integer=True)
        check_range(m, "enqueue_repeat", self.enqueue_repeat, 1, 100, integer=True)
        check_range(m, "target_update", self.target_update, 1, 10**9, integer=True)
        check_range(m, "checkpoint_every", self.checkpoint_every, 0, 10**9, integer=True)
        check_range(m, "test_steps", self.test_steps, 0, 10_000, integer=True)
        if len(self.eps_values) != len(self.eps_steps) + 1:
            raise BenchError(f"{m}: eps_values needs one more entry than eps_steps")
        for v in self.eps_values:
            check_range(m, "eps_values", v, 0, 1)
        if list(self.eps_steps) != sorted(self.eps_steps):
            raise BenchError(f"{m}: eps_steps must be increasing")


def lr_milestones(c: DistortRecoverConfig) -> list[int]:
    """Staircase decay points ``k·lr_decay_steps`` inside the run, up to where ``lr·decay^k`` would drop below
    ``lr_min`` (``max(lr_min, ...)`` in the original; from there the LR stays at ``lr·decay^K`` ≥ lr_min)."""
    if c.lr_min > 0:
        k_max = math.floor(math.log(c.lr_min / c.lr) / math.log(c.lr_decay) + 1e-9) if c.lr_min < c.lr else 0
    else:
        k_max = c.max_steps // c.lr_decay_steps
    return [k * c.lr_decay_steps for k in range(1, k_max + 1) if k * c.lr_decay_steps < c.max_steps]


def make_step_fn(dqn: DQN, c: DistortRecoverConfig):
    """TD step of ``q_learning_minibatch``: y = r + (1 - terminal)·γ·Q_target(s', argmax_a Q_online(·, a)),
    loss = mean(clip(y - Q_online(s, a), ±td_clip)²). ``ddqn_argmax="state"`` takes the argmax at ``s`` as the
    released code does (it feeds ``s_t``); ``"next_state"`` at ``s'`` (van Hasselt et al.'s double DQN)."""

    def step(b: DQNBatch) -> dict[str, Any]:
        if b.iteration > 0 and b.iteration % c.target_update == 0:
            dqn.sync()
        q = dqn.online(b.s)
        with torch.no_grad():
            q_next = dqn.target(b.s2)
            if c.ddqn_argmax == "state":
                a_star = q.detach().argmax(dim=1)
            else:
                a_star = dqn.online(b.s2).argmax(dim=1)
            y = (1.0 - b.term) * c.discount * q_next.gather(1, a_star[:, None])[:, 0] + b.r
        q_acted = q.gather(1, b.a[:, None])[:, 0]
        delta = y - q_acted
        loss = (delta.clamp(-c.td_clip, c.td_clip) ** 2).mean()
        return {"loss": loss, "q": float(q_acted.detach().mean()), "reward": float(b.r.mean()),
                "terminal": float(b.term.mean()), "epsilon": b.epsilon}

    return step


class DistortRecover(TorchMethod):
    name = "distort-recover"
    display_name = "Distort-and-Recover"
    family = "reinforcement"
    citation = ("J. Park, J.-Y. Lee, D. Yoo, and I. S. Kweon, \"Distort-and-Recover: Color Enhancement using Deep "
                "Reinforcement Learning,\" in Proc. IEEE/CVF Conference on Computer Vision and Pattern Recognition "
                "(CVPR), 2018.")
    bibkey = "park2018distort"
    version = 1
    trainable = True
    pad_multiple = 1          # global actions: any size
    uses_pairs = True         # the reward needs each input's own target
    Config = DistortRecoverConfig
    official_description = TF_WEIGHTS
    trained_meta_keys = ("seed", "schedule", "iterations", "n_train")
    profiles = {
        # a handful of learning steps on 32x32 states with a small Q-network: every code path
        "smoke": {"state_size": 32, "hidden": (64, 64, 32), "max_steps": 6, "batch": 4, "min_after_dequeue": 8,
                  "memory_size": 64, "target_update": 3, "lr": 1e-4, "lr_decay_steps": 2,
                  "eps_steps": (2, 4, 6, 8, 10), "checkpoint_every": 3, "test_steps": 4},
        # CPU-feasible on the demo set (~3-4 min on 2 shared cores): 64x64 states, a narrower Q-network, 200 steps
        "quick": {"state_size": 64, "hidden": (512, 512, 128), "max_steps": 200, "min_after_dequeue": 48,
                  "memory_size": 256, "target_update": 50, "lr": 1e-4, "lr_decay_steps": 100,
                  "eps_steps": (20, 40, 80, 120, 160), "checkpoint_every": 100},
        # the official recipe (main.py); DSN does not say how it trained D&R, so both datasets use it
        "paper": {},
        "paper@lol": {},
        "paper@fivek": {},
    }

    def __init__(self, config: DistortRecoverConfig | None = None):
        super().__init__(config)
        self.features: DeepFeatures | None = None
        self.builder: StateBuilder | None = None
        self._features_key: tuple | None = None
        self.last_edits: dict[str, Any] | None = None

    @classmethod
    def official_layout(cls):
        from .official import layout

        return layout()

    # ---- model ------------------------------------------------------------------------------
    def _build_features(self, device: torch.device) -> None:
        c = self.config
        key = (str(device), c.deep_features, c.vgg_weights)
        if self.features is None or self._features_key != key:   # the 420 MB fc6 is built once per adapter
            self.features = DeepFeatures(c.deep_features, device, c.vgg_weights)
            self._features_key = key
        self.builder = StateBuilder(self.features, c.history, c.seq_len)

    def _new_model(self, seed: int) -> DQN:
        assert self.builder is not None
        model = DQN(self.builder.state_len, self.config.hidden, N_ACTIONS).to(self.device)
        model.reset_parameters(seed)
        return model

    def begin_setup(self) -> None:
        super().begin_setup()
        self._build_features(self.device)

    def build_model(self) -> DQN:
        return self._new_model(UNTRAINED_SEED)

    def check_checkpoint_meta(self, path: Path, meta: Mapping[str, Any]) -> None:
        assert self.features is not None
        want = self.features.identity()
        if meta.get("features") is not None and meta.get("features") != want:
            raise BenchError(f"{path} was trained on other state features ({meta.get('features')}) than this "
                             f"configuration builds ({want}); use the same deep_features / VGG-16 weights")

    # ---- inference --------------------------------------------------------------------------
    def test_steps(self) -> int:
        return self.config.test_steps or self.config.seq_len

    @torch.no_grad()
    def enhance(self, low: torch.Tensor) -> torch.Tensor:
        if self.model is None or self.builder is None:
            raise RuntimeError("call setup() first")
        c = self.config
        was_training = self.model.training
        self.model.eval()
        try:
            small = torch.from_numpy(resize_for_state(low, c.state_size)).permute(2, 0, 1)[None]
            small = small.to(self.device, torch.float64) / 255.0
            full = low.to(self.device, torch.float64)
            episode = Episode(self.builder, small, None)
            edits: list[dict[str, Any]] = []
            stopped = "step_limit"
            for t in range(self.test_steps()):
                q = self.model.online(episode.state())[0]
                a = int(q.argmax())
                if float(q[a]) <= 0.0:
                    stopped = "max_q<=0"
                    break
                episode.step([a])
                full = apply_action(full, a)
                edits.append({"step": t, **ACTIONS[a].record(), "q": float(q[a])})
            self.last_edits = {"method": self.name, "edits": edits, "n_steps": len(edits), "stopped_by": stopped,
                               "state_size": c.state_size, "replayed_at": "full resolution",
                               "replay": "baselines.distort_recover.actions.replay(image, [e['index'] ...])"}
            return full.to(torch.float32).clamp(0.0, 1.0)
        finally:
            self.model.train(was_training)

    def image_record(self) -> dict[str, Any] | None:
        """The edit sequence chosen for the last image passed to ``enhance`` (JSON-serialisable)."""
        return None if self.last_edits is None else json_copy(self.last_edits)

    # ---- provenance -------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        c = self.config
        finfo = dict(self.features.info) if self.features is not None else {"deep_features": c.deep_features}
        subs = list(finfo.pop("substitutes", []))
        out: dict[str, Any] = {
            "implementation": "PyTorch rewrite of Jongchan/DISTORT-AND-RECOVER-CVPR18 (TF 0.11): double DQN, "
                              "12 global colour actions",
            "faithful": bool(finfo.get("faithful", False)) and c.deep_features == "fc6",
            "feature_source": finfo,
            "state": {"size": c.state_size, "deep": finfo.get("deep_features"), "lab_histogram": "20x20x20, L2",
                      "history": c.history, "length": self.builder.state_len if self.builder else None},
            "ddqn_argmax": c.ddqn_argmax,
            "inference": f"greedy, at most {self.test_steps()} steps, stop when max Q <= 0; actions replayed at "
                         "full resolution",
            **self.weights_provenance(),
        }
        if subs:
            out["substitutes"] = subs
        return out

    # ---- training ---------------------------------------------------------------------------
    def train(self, train_pairs: Sequence[TrainPair], val_pairs: Sequence[TrainPair], out_dir: Path, seed: int,
              progress: bool = True) -> Path:
        from tqdm import tqdm

        c = self.config
        if not train_pairs:
            raise BenchError("distort-recover: no training pairs")
        self._build_features(self.device)
        assert self.features is not None and self.builder is not None
        lows, highs = [], []
        for p in tqdm(train_pairs, desc="load train images", unit="img", disable=not progress, leave=False):
            high = p.load_high()
            if high is None:
                raise BenchError(f"training pair {p.id} has no reference image; distort-recover needs pairs")
            lows.append(resize_for_state(p.load_low(), c.state_size))
            highs.append(resize_for_state(high, c.state_size))
        store = self.device
        lows_t = torch.from_numpy(np.stack(lows)).permute(0, 3, 1, 2).contiguous().to(store)
        highs_t = torch.from_numpy(np.stack(highs)).permute(0, 3, 1, 2).contiguous().to(store)

        self.model = self._new_model(derive_seed(seed, "init"))
        sampler = DQNSampler(lows_t, highs_t, self.builder, self.model, batch=c.batch,
                             min_after_dequeue=c.min_after_dequeue, capacity=c.memory_size,
                             enqueue_repeat=c.enqueue_repeat, seq_len=c.seq_len, eps_steps=c.eps_steps,
                             eps_values=c.eps_values, seed=derive_seed(seed, "environment"), device=self.device)
        milestones = lr_milestones(c)
        schedule = (f"{c.max_steps} learning steps of {c.batch} transitions, Adam lr {c.lr:g} x{c.lr_decay:g} every "
                    f"{c.lr_decay_steps} steps ({len(milestones)} decays, floor {c.lr_min:g}), L2 {c.weight_decay:g}")
        meta = {"method": self.name, "version": self.version, "config": jsonable(dataclasses.asdict(c)),
                "seed": int(seed), "schedule": schedule, "iterations": c.max_steps, "n_train": len(train_pairs),
                "features": self.features.identity()}
        settings = TrainSettings(iterations=c.max_steps, lr=c.lr, betas=(0.9, 0.999), weight_decay=c.weight_decay,
                                 milestones=tuple(milestones), gamma=c.lr_decay, checkpoint_every=c.checkpoint_every)
        trainer = Trainer(self.model, [p for p in self.model.online.parameters()], sampler,
                          make_step_fn(self.model, c), Path(out_dir), settings, seed=seed, device=self.device,
                          enhance_fn=self.enhance, val_pairs=val_pairs, meta=meta, progress=progress,
                          desc="train distort-recover")
        final = trainer.run()
        obj = load_torch(final)
        self.model.load_state_dict(obj["model"], strict=True)
        self.model.eval()
        self.trained = {"seed": int(seed), "schedule": schedule, "iterations": int(obj.get("iteration", 0)),
                        "n_train": len(train_pairs)}
        return final


def json_copy(d: Any) -> Any:
    import json

    return json.loads(json.dumps(d))

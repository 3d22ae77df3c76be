"""``white-box``: adapter for White-Box / Exposure (Hu, He, Xu, Wang & Lin, TOG 2018). See ``SOURCE.md``.

An actor-critic agent edits a 64×64 preview of the (linearised) input with a sequence of ``test_steps`` (5)
global differentiable filters chosen from eight, trained unpaired against a WGAN-GP critic on target images;
the chosen filters and parameters are replayed on the full-resolution image. Training is ``train.WhiteBoxTraining``
(the official GAN/RL alternation). The edit sequence of the last enhanced image is kept in ``self.last_edits``
and returned by ``image_record()``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bench.errors import BenchError
from bench.fsutil import jsonable
from bench.methods.base import TrainPair, check_range
from bench.methods.torch_method import TF_WEIGHTS, TorchMethod
from bench.training import derive_seed, load_torch

from .data import linearize, preview
from .filters import FILTERS
from .networks import N_STATE, WhiteBoxNets
from .rl import RLConfig, agent_step
from .train import WhiteBoxTraining

__all__ = ["WhiteBoxConfig", "WhiteBox", "UNTRAINED_SEED"]

UNTRAINED_SEED = 0
TARGET_SPLITS = ("halves", "all")


@dataclass
class WhiteBoxConfig:
    # --- schedule (official config_example.py) ---
    iterations: int = 20000             # max_iter_step (the loop runs iterations + 1 times, as the original)
    batch: int = 64
    base_lr: float = 5e-5
    generator_lr_mul: float = 0.3
    value_lr_mul: float = 10.0
    critic_lr_mul: float = 1.0
    lr_decay: float = 0.1               # continuous: x lr_decay per 1/lr_segments of training
    lr_segments: int = 3
    betas: tuple = (0.5, 0.9)
    citers: int = 5                     # critic steps per iteration
    citers_init: int = 100              # ... while t < critic_initialization and when t % citers_burst_every == 0
    critic_initialization: int = 10
    citers_burst_every: int = 500
    giters: int = 1
    giters_first: int = 100             # generator steps of iteration 0 (learning rate 0: fills the pool)
    gradient_penalty: float = 10.0
    critic_logit_multiplier: float = 0.05
    # --- RL ---
    test_steps: int = 5                 # trajectory length (training and test)
    max_trajectory_length: int = 7
    over_length_keep_prob: float = 0.5
    pool_size: int = 128                # replay_memory_size
    discount: float = 1.0
    filter_usage_penalty: float = 1.0
    early_stop_penalty: float = 1.0
    exploration: float = 0.05
    exploration_penalty: float = 0.05
    use_td: bool = True
    # --- networks / data ---
    image_size: int = 64                # source_img_size (the preview)
    main_size: int = 80                 # stored training images before the 64x64 crops
    augmentation_factor: int = 4
    dropout_keep: float = 0.5
    test_dropout: bool = True           # tf.nn.dropout is active at test time in the official graph
    input_gamma: float = 2.2            # sRGB inputs linearised as x^2.2 / (2 max), as the official eval does
    target_split: str = "halves"        # halves: inputs from the first half of train, targets from the second
    checkpoint_every: int = 500

    def validate(self) -> None:
        m = "white-box"
        ints = {"iterations": (1, 10**8), "batch": (1, 4096), "lr_segments": (1, 1000), "citers": (0, 10**4),
                "citers_init": (0, 10**4), "critic_initialization": (0, 10**8), "citers_burst_every": (1, 10**8),
                "giters": (1, 10**4), "giters_first": (1, 10**5), "test_steps": (1, 100),
                "max_trajectory_length": (1, 1000), "pool_size": (1, 10**6), "main_size": (64, 4096),
                "augmentation_factor": (1, 100), "checkpoint_every": (0, 10**8)}
        for name, (lo, hi) in ints.items():
            check_range(m, name, getattr(self, name), lo, hi, integer=True)
        if self.image_size != 64:
            raise BenchError(f"{m}: image_size must be 64 (the official networks end at 4x4 from a 64x64 preview)")
        if self.main_size < self.image_size:
            raise BenchError(f"{m}: main_size must be at least image_size")
        for name in ("base_lr", "generator_lr_mul", "value_lr_mul", "critic_lr_mul", "lr_decay"):
            check_range(m, name, getattr(self, name), 0, 1e3, lo_open=True)
        if len(self.betas) != 2:
            raise BenchError(f"{m}: betas needs two values")
        for b in self.betas:
            check_range(m, "betas", b, 0, 1)
        for name in ("gradient_penalty", "critic_logit_multiplier", "filter_usage_penalty", "early_stop_penalty",
                     "exploration_penalty"):
            check_range(m, name, getattr(self, name), 0, 1e6)
        for name in ("over_length_keep_prob", "discount", "exploration"):
            check_range(m, name, getattr(self, name), 0, 1)
        check_range(m, "dropout_keep", self.dropout_keep, 0, 1, lo_open=True)
        check_range(m, "input_gamma", self.input_gamma, 0, 10, lo_open=True)
        if self.target_split not in TARGET_SPLITS:
            raise BenchError(f"{m}: option target_split={self.target_split!r}; choose one of {', '.join(TARGET_SPLITS)}")
        for name in ("use_td", "test_dropout"):
            if not isinstance(getattr(self, name), bool):
                raise BenchError(f"{m}: option {name} must be true or false")

    def rl(self) -> RLConfig:
        return RLConfig(test_steps=self.test_steps, max_trajectory_length=self.max_trajectory_length,
                        exploration_penalty=self.exploration_penalty, filter_usage_penalty=self.filter_usage_penalty,
                        early_stop_penalty=self.early_stop_penalty, critic_logit_multiplier=self.critic_logit_multiplier,
                        discount=self.discount, use_td=self.use_td, gradient_penalty=self.gradient_penalty)


class WhiteBox(TorchMethod):
    name = "white-box"
    display_name = "White-Box"
    family = "reinforcement"
    citation = ("Y. Hu, H. He, C. Xu, B. Wang, and S. Lin, \"Exposure: A White-Box Photo Post-Processing Framework,\" "
                "ACM Transactions on Graphics (TOG), vol. 37, no. 2, 2018.")
    bibkey = "hu2018exposure"
    version = 1
    trainable = True
    pad_multiple = 1          # global filters replayed at any size
    uses_pairs = True         # needs the reference images, but only as an unpaired target set (see SOURCE.md)
    Config = WhiteBoxConfig
    official_description = TF_WEIGHTS
    trained_meta_keys = ("seed", "schedule", "iterations", "n_inputs", "n_targets")
    profiles = {
        # a few iterations on 4-image batches with 2-step trajectories: every code path. The pool holds one batch
        # and each iteration runs 2 generator steps, so every critic step finds finished trajectories
        "smoke": {"iterations": 2, "batch": 4, "pool_size": 4, "citers": 1, "citers_init": 2,
                  "critic_initialization": 1, "giters": 2, "giters_first": 2, "test_steps": 2,
                  "checkpoint_every": 2, "augmentation_factor": 1},
        # CPU-feasible on the demo set (~3-4 min on 2 shared cores): batch 16 with a pool of 64 (smaller batches
        # leave the critic without finished trajectories too often, as the official assert would), 21 iterations
        "quick": {"iterations": 20, "batch": 16, "pool_size": 64, "citers": 2, "citers_init": 5,
                  "critic_initialization": 2, "giters_first": 15, "checkpoint_every": 10},
        # the official recipe (config_example.py); DSN does not say how it trained White-Box
        "paper": {},
        "paper@lol": {},
        "paper@fivek": {},
    }

    def __init__(self, config: WhiteBoxConfig | None = None):
        super().__init__(config)
        self.last_edits: dict[str, Any] | None = None

    @classmethod
    def official_layout(cls):
        from .official import layout

        return layout()

    def _new_model(self, seed: int) -> WhiteBoxNets:
        c = self.config
        nets = WhiteBoxNets(image_size=c.image_size, exploration=c.exploration, dropout_keep=c.dropout_keep)
        nets.reset_parameters(seed)
        return nets.to(self.device)

    def build_model(self) -> WhiteBoxNets:
        return self._new_model(UNTRAINED_SEED)

    # ---- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def enhance(self, low: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("call setup() first")
        c = self.config
        agent = self.model.agent
        was_training = self.model.training
        self.model.eval()
        try:
            full = linearize(low.to(self.device, torch.float32), c.input_gamma)
            small = preview(full, c.image_size)
            states = torch.zeros(1, N_STATE, device=self.device)
            gen = None
            if c.test_dropout:   # tf.nn.dropout stays on at test time; the mask comes from the seeded global RNG
                gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
            edits: list[dict[str, Any]] = []
            rl = c.rl()
            for t in range(c.test_steps):
                res = agent_step(agent, small, states, rl, is_train=False, progress=0.0, generator=gen,
                                 use_dropout=c.test_dropout)
                k = int(res.selected[0])
                f = FILTERS[k]
                small = res.output
                full = f.process(full, res.params[k])
                states = res.new_states
                edits.append({"step": t, "filter": f.name, "short": f.short, "params": f.record(res.params[k][0]),
                              "pdf": [float(p) for p in res.pdf[0]]})
                if float(states[0, 1]) > 0:
                    break
            self.last_edits = {"method": self.name, "edits": edits, "n_steps": len(edits),
                               "input": f"linearised: x^{c.input_gamma:g} / (2 max)", "preview": c.image_size,
                               "replayed_at": "full resolution",
                               "replay": "baselines.white_box.filters.replay(linearize(image), edits)"}
            return full.clamp(0.0, 1.0)
        finally:
            self.model.train(was_training)

    def image_record(self) -> dict[str, Any] | None:
        """The edit sequence chosen for the last image passed to ``enhance`` (JSON-serialisable)."""
        import json

        return None if self.last_edits is None else json.loads(json.dumps(self.last_edits))

    # ---- provenance -------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        c = self.config
        out: dict[str, Any] = {
            "implementation": "PyTorch rewrite of yuanming-hu/exposure (TF 1.x): actor-critic over 8 differentiable "
                              "filters, WGAN-GP critic, unpaired",
            "faithful": True,
            "mode": "unpaired (cfg.supervised = False)",
            "input_linearisation": f"x^{c.input_gamma:g} / (2 max), the official eval path for sRGB files; "
                                   "the original trains on linear 16-bit RAW",
            "targets": ("unpaired: inputs from the first half of the training list, targets (reference images) from "
                        "the second half" if c.target_split == "halves" else
                        "unpaired: every training image's reference is in the target set (shuffled independently)"),
            "inference": f"{c.test_steps} filter steps on a {c.image_size}x{c.image_size} preview of the centre "
                         f"square, argmax filter choice, dropout {'on (official)' if c.test_dropout else 'off'}; "
                         "filters replayed at full resolution",
            **self.weights_provenance(),
        }
        return out

    # ---- training ---------------------------------------------------------------------------
    def train(self, train_pairs: Sequence[TrainPair], val_pairs: Sequence[TrainPair], out_dir: Path, seed: int,
              progress: bool = True) -> Path:
        c = self.config
        pairs = sorted(train_pairs, key=lambda p: p.id)
        if not pairs:
            raise BenchError("white-box: no training images")
        if c.target_split == "halves" and len(pairs) >= 2:
            cut = (len(pairs) + 1) // 2
            input_pairs, target_pairs = pairs[:cut], pairs[cut:]
        else:
            input_pairs, target_pairs = pairs, pairs
        inputs = [linearize(p.load_low().astype(np.float32) / 255.0, c.input_gamma) for p in input_pairs]
        targets = []
        for p in target_pairs:
            high = p.load_high()
            if high is None:
                raise BenchError(f"white-box: training image {p.id} has no reference image; the critic needs targets")
            targets.append(high.astype(np.float32) / 255.0)
        self.model = self._new_model(derive_seed(seed, "init"))
        schedule = (f"{c.iterations + 1} iterations (batch {c.batch}): {c.giters} actor/value + {c.citers} critic "
                    f"steps each ({c.citers_init} critic steps for t < {c.critic_initialization} and every "
                    f"{c.citers_burst_every}); Adam betas {tuple(c.betas)}, lr {c.base_lr:g} x{c.lr_decay:g} per 1/"
                    f"{c.lr_segments} of training (actor x{c.generator_lr_mul:g}, value x{c.value_lr_mul:g})")
        meta = {"method": self.name, "version": self.version, "config": jsonable(dataclasses.asdict(c)),
                "seed": int(seed), "schedule": schedule, "iterations": c.iterations + 1,
                "n_inputs": len(input_pairs), "n_targets": len(target_pairs)}
        loop = WhiteBoxTraining(self.model, inputs, targets, c, c.rl(), Path(out_dir), seed, self.device, meta,
                                progress)
        final = loop.run()
        obj = load_torch(final)
        self.model.load_state_dict(obj["model"], strict=True)
        self.model.eval()
        self.trained = {k: meta[k] for k in ("seed", "schedule", "iterations", "n_inputs", "n_targets")}
        return final

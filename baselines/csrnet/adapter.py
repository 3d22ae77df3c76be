"""``csrnet``: adapter for CSRNet (He, Liu, Qiao, Dong, ECCV 2020). See ``SOURCE.md``.

Defaults are the official ``train_Enhance.yml`` recipe (BasicSR ``SRModel``): PyTorch's default initialisation,
L1 loss (mean over pixels), Adam lr 1e-4 with betas (0.9, 0.99), no weight decay, no gradient clipping, batch 1
of *whole* image pairs (no crop, no flip: the condition network must see the full image), reshuffled every
epoch, 600k iterations with the learning rate halved at 100k/200k/300k/400k/500k, the last weights kept.

``crop`` > 0 switches to random crops of that size (the shared ``CropSampler``, no augmentation unless
``augment``): only for smoke tests or batches > 1; it is not the official recipe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from bench.errors import BenchError, unknown_name
from bench.methods.base import TrainPair, check_betas, check_range
from bench.methods.torch_method import TorchMethod
from bench.training import Batch, CropSampler, TrainSettings, WholeImageSampler, iterations_per_epoch

from .model import MIN_SIZE, CSRNet

log = logging.getLogger("bench.csrnet")

__all__ = ["CSRNetMethod", "CSRNetConfig", "WholePairSampler", "LOSSES"]

NAME = "csrnet"
LOSSES = ("l1", "l2")
_MILESTONES = (100_000, 200_000, 300_000, 400_000, 500_000)


@dataclass
class CSRNetConfig:
    # --- network (train_Enhance.yml network_G) ---
    base_nf: int = 64
    cond_nf: int = 32
    # --- loss / optimiser ---
    loss: str = "l1"                # l1 (official pixel_criterion) | l2
    lr: float = 1e-4
    betas: tuple = (0.9, 0.99)
    weight_decay: float = 0.0
    grad_clip: float = 0.0          # total gradient norm; 0 = off (official)
    # --- data ---
    batch: int = 1
    crop: int = 0                   # 0 = whole images (official); > 0 = random crops (not official)
    augment: bool = False           # flips/transpose, only with crop > 0 (the official loader has none)
    # --- schedule (iterations, lr × gamma after each milestone) ---
    iterations: int = 600_000
    milestones: tuple = _MILESTONES
    gamma: float = 0.5
    # --- bookkeeping ---
    checkpoint_every: int = 5000    # official save_checkpoint_freq
    val_every: int = 5000           # official val_freq; validation PSNR is logged only

    def validate(self) -> None:
        m = NAME
        if self.loss not in LOSSES:
            raise unknown_name("loss of csrnet", self.loss, list(LOSSES))
        check_range(m, "base_nf", self.base_nf, 1, 4096, integer=True)
        check_range(m, "cond_nf", self.cond_nf, 1, 4096, integer=True)
        check_range(m, "lr", self.lr, 0, 1, lo_open=True)
        check_range(m, "gamma", self.gamma, 0, 1, lo_open=True)
        for name in ("weight_decay", "grad_clip"):
            check_range(m, name, getattr(self, name), 0, 1e6)
        self.betas = check_betas(m, self.betas)
        check_range(m, "batch", self.batch, 1, 4096, integer=True)
        check_range(m, "crop", self.crop, 0, 16384, integer=True)
        if 0 < self.crop < MIN_SIZE:
            raise BenchError(f"{m}: crop={self.crop} is below the condition network's minimum of {MIN_SIZE}")
        if self.augment and self.crop == 0:
            raise BenchError(f"{m}: augment=true needs crop > 0 (the official whole-image loader has no augmentation)")
        check_range(m, "iterations", self.iterations, 1, 10**9, integer=True)
        for name in ("checkpoint_every", "val_every"):
            check_range(m, name, getattr(self, name), 0, 10**9, integer=True)
        self.milestones = tuple(sorted(int(v) for v in self.milestones))


class WholePairSampler(WholeImageSampler):
    """Whole (low, high) pairs, in successive random permutations, ``batch`` per step (the official BasicSR
    loader: ``shuffle=True``, ``drop_last=True``, no crop, no augmentation). A batch > 1 needs images of one
    size. The order comes from a ``torch.Generator`` seeded from the run seed and saved in checkpoints."""

    def __init__(self, pairs: Sequence[TrainPair], batch: int, seed: int, device: torch.device | str = "cpu",
                 progress: bool = False):
        super().__init__(pairs, batch, seed, min_side=MIN_SIZE, method=NAME, device=device, progress=progress)


class CSRNetMethod(TorchMethod):
    name = NAME
    display_name = "CSRNet"
    family = "supervised"
    citation = ("J. He, Y. Liu, Y. Qiao, and C. Dong, \"Conditional Sequential Modulation for Efficient Global "
                "Image Retouching,\" in Proc. ECCV, 2020, pp. 679-695.")
    bibkey = "he2020conditional"
    version = 1
    trainable = True
    pad_multiple = 1
    uses_pairs = True
    Config = CSRNetConfig
    official_key_suffix = "cond_scale1.weight"
    official_description = "an official CSRNet state dict (cond_net.*, cond_scale*, cond_shift*, conv1-3)"
    profiles = {
        # three steps on whole demo images (cheap: the network is per-pixel plus a small strided condition net)
        "smoke": {"iterations": 3, "milestones": (), "checkpoint_every": 2, "val_every": 0},
        # CPU-feasible on the demo set: 200 whole-image steps (40 epochs of 5 images; ~0.2 s each on an idle core,
        # ~0.9 s on a loaded 2-core machine), lr 5e-4 halved at 150 (the official 1e-4 needs far more steps)
        "quick": {"iterations": 200, "milestones": (150,), "lr": 5e-4, "checkpoint_every": 100, "val_every": 100},
        # the official train_Enhance.yml (written for FiveK; DSN gives no other schedule for LOL)
        "paper": {"iterations": 600_000, "milestones": _MILESTONES, "lr": 1e-4, "batch": 1, "crop": 0},
        "paper@lol": {"iterations": 600_000, "milestones": _MILESTONES},
        "paper@fivek": {"iterations": 600_000, "milestones": _MILESTONES},
    }

    @classmethod
    def official_layout(cls):
        from .official import layout

        return layout()

    # ---- model ------------------------------------------------------------------------------
    def build_model(self) -> CSRNet:
        return CSRNet(3, 3, self.config.base_nf, self.config.cond_nf)

    def forward_enhance(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if min(h, w) < MIN_SIZE:
            raise BenchError(f"csrnet: the input is {w}×{h}; the condition network needs at least {MIN_SIZE} "
                             "pixels on each side")
        return self.model(x)  # type: ignore[misc]

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(out, target) if self.config.loss == "l1" else F.mse_loss(out, target)

    # ---- provenance -------------------------------------------------------------------------
    def schedule_description(self) -> str:
        c = self.config
        ms = [m for m in c.milestones if m < c.iterations]
        return f"{c.iterations} iterations, lr {c.lr:g} x{c.gamma:g} after {ms}"

    def provenance(self) -> dict[str, Any]:
        c = self.config
        return {
            "implementation": "PyTorch re-implementation of the official CSRNet code (CSRNet_arch.py, train_Enhance.yml)",
            "faithful": True,
            "loss": c.loss,
            "optimizer": (f"Adam lr {c.lr:g} betas {tuple(c.betas)}, weight decay {c.weight_decay:g}, "
                          f"grad clip {c.grad_clip:g}"),
            "schedule": self.schedule_description(),
            "training_input": ("whole images, batch %d, no augmentation" % c.batch) if c.crop == 0 else
                              (f"random {c.crop}x{c.crop} crops, batch {c.batch}, augment {c.augment} "
                               "(not the official whole-image recipe)"),
            "inference": "full image, output clamped to [0,1]",
            **self.weights_info,
        }

    # ---- training ---------------------------------------------------------------------------
    def train(self, train_pairs: Sequence[TrainPair], val_pairs: Sequence[TrainPair], out_dir: Path, seed: int,
              progress: bool = True) -> Path:
        c = self.config
        c.validate()
        device = self.device
        model = self.fresh_model(seed)
        if c.crop > 0:
            sampler: Any = CropSampler(train_pairs, c.crop, c.batch, seed, use_high=True, augment=c.augment,
                                       device=device, progress=progress)
            per_epoch = iterations_per_epoch(len(sampler), c.batch)
        else:
            sampler = WholePairSampler(train_pairs, c.batch, seed, device=device, progress=progress)
            per_epoch = sampler.iterations_per_epoch
        milestones = tuple(m for m in c.milestones if m < c.iterations)
        settings = TrainSettings(iterations=c.iterations, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay,
                                 grad_clip=c.grad_clip, milestones=milestones, gamma=c.gamma,
                                 checkpoint_every=c.checkpoint_every, val_every=c.val_every, select="last")

        def step(batch: Batch) -> dict[str, torch.Tensor]:
            return {"loss": self.loss(model(batch.low), batch.high)}

        meta = self.checkpoint_meta(seed, schedule={"iterations": c.iterations, "milestones": list(milestones),
                                                    "n_train": len(sampler), "iterations_per_epoch": per_epoch,
                                                    "description": self.schedule_description()})
        log.info("training csrnet for %d iterations on %d pairs", c.iterations, len(sampler))
        return self.run_trainer(sampler, step, out_dir, settings, seed=seed, meta=meta, val_pairs=val_pairs,
                                progress=progress)

"""``drbn``: adapter for DRBN stage 1 (Yang, Wang, Fang, Wang & Liu, CVPR 2020). See ``SOURCE.md``.

Defaults are the official stage-1 recipe (``DRBL-stage1/src/option.py``, ``trainer.py``, EDSR-style data
pipeline): PyTorch-0.4.1 default initialisation, loss = -SSIM at full, 1/2 and 1/4 scale (weights 1), Adam
(0.9, 0.999, eps 1e-8), lr 1e-4 halved every 200 epochs, 300 epochs, batch 4, random 256x256 crops at the same
position in low and high with flips and transposition, inputs scaled to [0, 1]. An "epoch" is the EDSR one:
each image is repeated ``test_every // (n_train // batch)`` times (1,000 batches per epoch for LOL's 400 pairs),
so the paper profile is 300 x 1,000 = 300k iterations on LOL. Test: the whole image (padded to a multiple of 4
here), the full-resolution band output clamped to [0, 1].

Stage 2 (band recomposition with a perceptual-quality-driven adversarial loss and ImageNet VGG features) is
not implemented: the paper's and DSN's objective comparisons use stage 1 only (official README).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from bench.errors import BenchError
from bench.methods.base import TrainPair, check_betas, check_range
from bench.methods.torch_method import TorchMethod
from bench.training import Batch, CropSampler, TrainSettings, derive_seed

from .losses import drbn_loss
from .model import MULTIPLE, DRBNNet, init_like_torch041, pad_to_multiple

log = logging.getLogger("bench.drbn")

__all__ = ["DRBNConfig", "DRBN", "edsr_epoch_iterations", "drbn_schedule", "INITS"]

NAME = "drbn"
INITS = ("torch041", "default")


@dataclass
class DRBNConfig:
    # --- schedule (official option.py; an epoch is the EDSR one, see edsr_epoch_iterations) ---
    epochs: int = 300
    iterations: int = 0               # > 0: this many iterations instead of epochs (smoke / quick)
    lr: float = 1e-4
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_step_epochs: int = 200         # official --lr_decay (StepLR every N epochs)
    gamma: float = 0.5                # official --gamma
    test_every: int = 1000            # official --test_every: batches per EDSR epoch (sets the image repeat)
    # --- data ---
    batch: int = 4                    # official --batch_size
    crop: int = 256                   # official --patch_size
    augment: bool = True              # flips + transpose (EDSR common.augment); official unless --no_augment
    small_images: str = "reflect"     # images smaller than the crop (bench/training.py)
    # --- loss: weights of -SSIM at full, 1/2 and 1/4 scale (official: 1, 1, 1) ---
    w_s1: float = 1.0
    w_s2: float = 1.0
    w_s4: float = 1.0
    # --- network ---
    init: str = "torch041"            # torch041 (official PyTorch 0.4.1 default init) | default (current torch)
    # --- bookkeeping ---
    checkpoint_every: int = 1000
    val_every: int = 0                # validation PSNR every N iterations (logged only; never selects)

    def validate(self) -> None:
        m = NAME
        for name in ("epochs", "iterations", "lr_step_epochs", "checkpoint_every", "val_every"):
            check_range(m, name, getattr(self, name), 0, 10**9, integer=True)
        if self.iterations == 0 and self.epochs < 1:
            raise BenchError("drbn: epochs must be at least 1 (or set iterations > 0)")
        check_range(m, "test_every", self.test_every, 1, 10**9, integer=True)
        check_range(m, "lr", self.lr, 0, 1, lo_open=True)
        check_range(m, "gamma", self.gamma, 0, 1, lo_open=True)
        check_range(m, "weight_decay", self.weight_decay, 0, 1e6)
        self.betas = check_betas(m, self.betas)
        check_range(m, "batch", self.batch, 1, 4096, integer=True)
        check_range(m, "crop", self.crop, MULTIPLE, 16384, integer=True)
        if self.crop % MULTIPLE:
            raise BenchError(f"{m}: crop={self.crop} must be a multiple of {MULTIPLE} (two stride-2 levels)")
        if not isinstance(self.augment, bool):
            raise BenchError(f"{m}: augment must be true or false")
        if self.small_images not in ("reflect", "clip"):
            raise BenchError(f"{m}: option small_images={self.small_images!r}; choose reflect or clip")
        for name in ("w_s1", "w_s2", "w_s4"):
            check_range(m, name, getattr(self, name), 0, 1e6)
        if self.init not in INITS:
            raise BenchError(f"{m}: option init={self.init!r}; choose one of {', '.join(INITS)}")


def edsr_epoch_iterations(n_train: int, batch: int, test_every: int = 1000) -> tuple[int, int]:
    """(iterations per epoch, image repeat) of the official EDSR-style loader.

    ``SRData`` repeats the image list ``test_every // (n // batch)`` times and the loader (shuffle, no
    ``drop_last``) yields ``ceil(n * repeat / batch)`` batches: LOL-400 at batch 4 -> repeat 10, 1,000 batches.
    Two guards the official code lacks: ``n // batch`` of 0 (fewer images than a batch) counts as 1, and a
    repeat of 0 (more than ``test_every * batch`` images, e.g. FiveK's 4,500, which would give the official
    loader an empty epoch) counts as 1, as later EDSR versions do."""
    if n_train < 1:
        raise BenchError("no training images")
    repeat = max(1, test_every // max(1, n_train // batch))
    return math.ceil(n_train * repeat / batch), repeat


def drbn_schedule(config: DRBNConfig, n_train: int) -> tuple[int, list[int], str]:
    """(iterations, LR milestones, description): ``epochs`` EDSR epochs, the LR x ``gamma`` after every
    ``lr_step_epochs`` epochs (StepLR stepped once per epoch before training it, as the EDSR trainer does).
    With fixed ``iterations`` the drops fall at the same fractions of the run."""
    c = config
    if c.iterations > 0:
        total = c.iterations
        step = total * c.lr_step_epochs // c.epochs if c.epochs > 0 and c.lr_step_epochs > 0 else 0
        milestones = [k * step for k in range(1, total // step + 1)] if step > 0 else []
        desc = f"fixed: {total} iterations, lr {c.lr:g} x{c.gamma:g} every {step or 'never'}"
    else:
        per, repeat = edsr_epoch_iterations(n_train, c.batch, c.test_every)
        total = c.epochs * per
        milestones = [k * c.lr_step_epochs * per for k in range(1, c.epochs // max(1, c.lr_step_epochs) + 1)] \
            if c.lr_step_epochs > 0 else []
        desc = (f"epochs: {c.epochs} x {per} iterations (EDSR epoch: {n_train} images x {repeat} repeats / batch "
                f"{c.batch}), lr {c.lr:g} x{c.gamma:g} every {c.lr_step_epochs} epochs")
    return total, [m for m in milestones if 0 < m < total], desc


class DRBN(TorchMethod):
    name = NAME
    display_name = "DRBN"
    family = "supervised"
    citation = ("W. Yang, S. Wang, Y. Fang, Y. Wang, and J. Liu, \"From Fidelity to Perceptual Quality: A "
                "Semi-Supervised Approach for Low-Light Image Enhancement,\" in Proc. IEEE/CVF CVPR, 2020, "
                "pp. 3063-3072.")
    bibkey = "yang2020fidelity"
    version = 1
    trainable = True
    pad_multiple = 1           # enhance pads to a multiple of 4 itself (mirror), so any size works
    uses_pairs = True
    Config = DRBNConfig
    # an official stage-1 state dict (e.g. DRBL-stage1 pretrain/model_s1.pt), maybe with a wrapper prefix
    official_key_suffix = "recur1.SFENet1.weight"
    official_description = "an official DRBN stage-1 state dict (recur1.* ... recur4.*)"
    profiles = {
        # three steps on tiny crops: every code path (loss at three scales, checkpoints, weights file)
        "smoke": {"iterations": 3, "batch": 2, "crop": 32, "checkpoint_every": 2, "val_every": 0},
        # CPU-feasible on the demo set (~1 s per batch-4 64x64 step on one core): the official lr, betas and
        # loss, smaller crops, 150 iterations with no LR drop (the official drop comes at 2/3 of the run)
        "quick": {"iterations": 150, "epochs": 300, "lr_step_epochs": 0, "batch": 4, "crop": 64,
                  "checkpoint_every": 50, "val_every": 150},
        # the official stage-1 recipe (one recipe in the code; LOL-400 -> 300k iterations, drop at 200k)
        "paper": {"epochs": 300, "iterations": 0, "batch": 4, "crop": 256, "lr": 1e-4, "lr_step_epochs": 200,
                  "gamma": 0.5, "val_every": 1000, "checkpoint_every": 5000},
        "paper@lol": {"epochs": 300},
        "paper@fivek": {"epochs": 300},
    }

    @classmethod
    def official_layout(cls):
        from .official import layout

        return layout()

    # ---- model ------------------------------------------------------------------------------
    def build_model(self) -> DRBNNet:
        model = DRBNNet()
        if self.config.init == "torch041":
            init_like_torch041(model)
        return model

    def convert_official_state_dict(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        return {k.removeprefix("model."): v for k, v in state_dict.items()}   # the EDSR Model wrapper

    def checkpoint_loaded(self, checkpoint: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.trained = meta.get("schedule") or self.trained

    def forward_padded(self, low: torch.Tensor) -> torch.Tensor:
        """The full-resolution band output for any H x W (mirror-padded to a multiple of 4, cropped back)."""
        x, h, w = pad_to_multiple(low)
        return self.model(x)[0][..., :h, :w]  # type: ignore[misc]

    forward_enhance = forward_padded

    def loss(self, outputs, target: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        return drbn_loss(outputs, target, (c.w_s1, c.w_s2, c.w_s4))

    # ---- provenance -------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        c = self.config
        official_loss = (c.w_s1, c.w_s2, c.w_s4) == (1.0, 1.0, 1.0)
        out = {
            "implementation": "PyTorch re-implementation of the official DRBN stage-1 code "
                              "(DRBL-stage1/src/model/drbn.py, trainer.py, option.py)",
            "stage": "stage 1 (recursive band learning) only; stage 2 (adversarial band recomposition) not "
                     "implemented: the objective comparisons (paper Table 1, DSN Table 1) use stage 1",
            "faithful": bool(official_loss and c.augment),
            "loss": f"-SSIM x ({c.w_s1:g}, {c.w_s2:g}, {c.w_s4:g}) at scales 1, 1/2, 1/4 (11x11 Gaussian, "
                    "sigma 1.5, zero padding)",
            "optimizer": f"Adam lr {c.lr:g} betas {tuple(c.betas)}, weight decay {c.weight_decay:g}",
            "training_input": f"random {c.crop}x{c.crop} crops, batch {c.batch}, augment {c.augment}",
            "init": c.init,
            "inference": "whole image mirror-padded to a multiple of 4, full-resolution band output clamped "
                         "to [0,1]",
            **self.weights_info,
        }
        if self.trained:
            out["schedule"] = self.trained.get("description")
        return out

    # ---- training ---------------------------------------------------------------------------
    def train(self, train_pairs: Sequence[TrainPair], val_pairs: Sequence[TrainPair], out_dir: Path, seed: int,
              progress: bool = True) -> Path:
        c = self.config
        c.validate()
        device = self.device
        model = self.fresh_model(derive_seed(seed, "init"))
        sampler = CropSampler(train_pairs, c.crop, c.batch, seed, use_high=True, augment=c.augment,
                              small=c.small_images, device=device, progress=progress)
        if sampler.crop % MULTIPLE:
            raise BenchError(f"drbn: the training crop became {sampler.crop} (small_images=clip and a small "
                             f"image); it must be a multiple of {MULTIPLE}")
        total, milestones, desc = drbn_schedule(c, len(sampler))
        settings = TrainSettings(iterations=total, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay,
                                 milestones=tuple(milestones), gamma=c.gamma, checkpoint_every=c.checkpoint_every,
                                 val_every=c.val_every, select="last")

        def step(batch: Batch) -> dict[str, torch.Tensor]:
            return self.loss(model(batch.low), batch.high)

        self.trained = {"iterations": total, "milestones": list(milestones), "n_train": len(sampler),
                        "description": desc}
        meta = self.checkpoint_meta(seed, schedule=self.trained)
        log.info("training drbn for %d iterations on %d pairs (%s)", total, len(sampler), desc)
        return self.run_trainer(sampler, step, out_dir, settings, seed=seed, meta=meta, val_pairs=val_pairs,
                                progress=progress)

"""``dpe``: adapter for the paired (supervised) Deep Photo Enhancer generator (Chen, Wang, Kao & Chuang, CVPR
2018), trained with MSE as in DSN's Table 1. See ``SOURCE.md``.

Training follows the official supervised code (experiment 604, ``DATA.py`` + the training script), with the
loss DSN's Table 1 used:

* data: every pair resized to a 512-pixel long side (PIL Lanczos, the official preprocessing), each image
  repeated 8 times per epoch, once per dihedral mode (``data_augmentation_size = 8``: left-right flip for odd
  numbers, then ``number // 2`` quarter turns), the list truncated to whole batches, shuffled every epoch,
  symmetric-padded onto the 512 x 512 canvas at the top-left (``data_use_random_pad = False``), batch 3;
* loss on the image rectangle only (the padding never enters it), per image, averaged over the batch:
  ``loss="mse"`` (default; the maintainer's "we used MSE loss for paired", DSN's setting) or ``loss="psnr"``
  (mean over images of log10(MSE), i.e. -PSNR/10 + const, the ``loss_source_data_term = 'PSNR'`` of the
  released supervised script);
* Adam (TF defaults 0.9 / 0.999 / 1e-8), lr 1e-5 for 26 epochs, then lowered by 1e-5 / 25 after every epoch
  (``netG_base_learning_decay(_epoch) = 25``), 50 epochs; no weight decay (regularisation weight 0), gradient
  clipping by value at 1e8 (a no-op, omitted); the last weights are used.

``gan=true`` (the paper's 2-way GAN with WGAN-GP and adaptive weighting) is not implemented and is refused.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from bench.errors import BenchError
from bench.methods.base import TrainPair, check_betas, check_range
from bench.methods.torch_method import TF_WEIGHTS, TorchMethod
from bench.training import Batch, SeededSampler, TrainSettings, derive_seed, load_training_images

from .canvas import RESAMPLERS, dihedral, resize_uint8, run_on_canvas, to_canvas
from .model import CANVAS, DPEGenerator, init_variance_scaling

log = logging.getLogger("bench.dpe")

__all__ = ["DPEConfig", "DPE", "CanvasBatch", "CanvasSampler", "canvas_loss", "dpe_lr_factor", "LOSSES"]

NAME = "dpe"
LOSSES = ("mse", "psnr")
N_MODES = 8


@dataclass
class DPEConfig:
    # --- schedule (official supervised DATA.py / training script) ---
    epochs: int = 50                  # process_max_epoch
    iterations: int = 0               # > 0: this many iterations instead of epochs (smoke / quick)
    lr: float = 1e-5                  # netG_base_learning_rate
    betas: tuple = (0.9, 0.999)       # tf.train.AdamOptimizer defaults
    lr_decay_epoch: int = 25          # netG_base_learning_decay_epoch: after epochs >= this, lower the lr ...
    lr_decay_span: int = 25           # netG_base_learning_decay: ... by lr / span per epoch (linear to 0)
    # --- data ---
    batch: int = 3                    # data_train_batch_size
    augment: bool = True              # the 8 dihedral modes per image and epoch (data_augmentation_size = 8)
    random_pad: bool = False          # data_use_random_pad (random position on the canvas)
    resample: str = "lanczos"         # resizing to / from the 512 canvas: lanczos (PIL ANTIALIAS) | bicubic
    # --- loss / model ---
    loss: str = "mse"                 # mse (DSN Table 1, maintainer's answer) | psnr (released supervised script)
    init_factor: float = 1e-3         # netG_init_weight (variance-scaling factor)
    gan: bool = False                 # the paper's 2-way GAN (not implemented: refused)
    # --- bookkeeping ---
    checkpoint_every: int = 1000
    val_every: int = 0                # validation PSNR every N iterations (logged only; never selects)

    def validate(self) -> None:
        m = NAME
        if not isinstance(self.gan, bool):
            raise BenchError(f"{m}: gan must be true or false")
        if self.gan:
            raise BenchError("dpe: gan=true (the paper's 2-way GAN: WGAN-GP discriminators, adaptive weighting, "
                             "identity/cycle terms) is not implemented in this benchmark; DSN's Table 1 uses the "
                             "paired generator trained with MSE, which is what gan=false (the default) runs")
        for name in ("epochs", "iterations", "lr_decay_epoch", "checkpoint_every", "val_every"):
            check_range(m, name, getattr(self, name), 0, 10**9, integer=True)
        if self.iterations == 0 and self.epochs < 1:
            raise BenchError("dpe: epochs must be at least 1 (or set iterations > 0)")
        check_range(m, "lr_decay_span", self.lr_decay_span, 1, 10**9, integer=True)
        check_range(m, "lr", self.lr, 0, 1, lo_open=True)
        self.betas = check_betas(m, self.betas)
        check_range(m, "batch", self.batch, 1, 4096, integer=True)
        for name in ("augment", "random_pad"):
            if not isinstance(getattr(self, name), bool):
                raise BenchError(f"{m}: {name} must be true or false")
        if self.resample not in RESAMPLERS:
            raise BenchError(f"{m}: option resample={self.resample!r}; choose one of {', '.join(RESAMPLERS)}")
        if self.loss not in LOSSES:
            raise BenchError(f"{m}: option loss={self.loss!r}; choose one of {', '.join(LOSSES)}")
        check_range(m, "init_factor", self.init_factor, 0, 1e3, lo_open=True)


def dpe_lr_factor(epoch: float, decay_epoch: int, span: int) -> float:
    """The official schedule as a factor of the base lr for (0-based) ``epoch``: 1 up to and including
    ``decay_epoch``, then lowered by 1/span after every further epoch (the decrement happens at the end of each
    epoch >= decay_epoch), never below 0. ``epoch`` may be fractional (fixed-iteration runs)."""
    k = int(np.floor(epoch)) - decay_epoch
    return float(max(0.0, 1.0 - max(0, k) / span))


@dataclass
class CanvasBatch(Batch):
    rects: list[tuple[int, int, int, int]] = dataclasses.field(default_factory=list)  # (r0, r1, c0, c1) each
    modes: list[int] = dataclasses.field(default_factory=list)


class CanvasSampler(SeededSampler):
    """The official supervised data pipeline (see the module docstring). Pairs are resized to a 512 long side
    once, at load time, and kept as uint8. Each epoch is a fresh permutation of the (image, mode) list drawn
    from a ``torch.Generator`` seeded from the run seed (its state goes into checkpoints)."""

    def __init__(self, pairs: Sequence[TrainPair], batch: int, seed: int, *, augment: bool = True,
                 random_pad: bool = False, resample: str = "lanczos", size: int = CANVAS,
                 device: torch.device | str = "cpu", progress: bool = False):
        if not pairs:
            raise BenchError("no training pairs")
        self.batch, self.size, self.random_pad = int(batch), int(size), bool(random_pad)
        self.device = torch.device(device)
        self.ids = [p.id for p in pairs]
        self.lows, self.highs = load_training_images(pairs, method=NAME, progress=progress,
                                                     prepare=lambda a: resize_uint8(a, size, resample))
        self.modes = N_MODES if augment else 1
        n_samples = len(self.lows) * self.modes
        self.per_epoch = n_samples // self.batch          # data_train_batch_count (floor)
        if self.per_epoch < 1:
            raise BenchError(f"dpe: batch {self.batch} is larger than the {n_samples} training samples")
        self.n_used = self.per_epoch * self.batch         # data_train_sample_count: the tail is never used
        self._seed_order(seed, "canvas")

    def __len__(self) -> int:
        return len(self.lows)

    @property
    def iterations_per_epoch(self) -> int:
        return self.per_epoch

    def describe(self) -> dict[str, Any]:
        return {"n_images": len(self), "canvas": self.size, "batch": self.batch, "modes_per_image": self.modes,
                "samples_per_epoch": self.n_used, "iterations_per_epoch": self.per_epoch,
                "random_pad": self.random_pad, "paired": True}

    def sample_shape(self, index: int) -> tuple[int, int]:
        """(h, w) of sample ``index`` after its dihedral mode (odd quarter turns swap the sides)."""
        i, mode = index // self.modes, index % self.modes
        h, w = self.lows[i].shape[:2]
        return (w, h) if (mode // 2) % 2 else (h, w)

    def sample(self, index: int, top: int = 0, left: int = 0):
        """Sample ``index`` of the official repeated list: image ``index // modes`` in mode ``index % modes``,
        placed at (top, left) on the canvas. Returns (low canvas, high canvas, rect), 1 x 3 x S x S floats."""
        i, mode = index // self.modes, index % self.modes
        out = []
        for img in (self.lows[i], self.highs[i]):
            a = np.ascontiguousarray(dihedral(img, mode))
            out.append(torch.from_numpy(a).permute(2, 0, 1)[None].float().div_(255.0))
        low_c, rect = to_canvas(out[0], self.size, top, left)
        high_c, _ = to_canvas(out[1], self.size, top, left)
        return low_c, high_c, rect

    def next_batch(self) -> CanvasBatch:
        if self._pos + self.batch > len(self._perm):
            self._perm = torch.randperm(self.n_used, generator=self.generator).tolist()
            self._pos = 0
            self.epoch += 1
        idx = self._perm[self._pos:self._pos + self.batch]
        self._pos += self.batch
        lows, highs, rects, ids, modes = [], [], [], [], []
        for k in idx:
            i, mode = k // self.modes, k % self.modes
            h, w = self.sample_shape(k)
            top = left = 0
            if self.random_pad:
                top = int(torch.randint(0, self.size - h + 1, (1,), generator=self.generator))
                left = int(torch.randint(0, self.size - w + 1, (1,), generator=self.generator))
            lo, hi, rect = self.sample(k, top, left)
            lows.append(lo)
            highs.append(hi)
            rects.append(rect)
            ids.append(self.ids[i])
            modes.append(mode)
        return CanvasBatch(torch.cat(lows).to(self.device), torch.cat(highs).to(self.device), ids, rects, modes)


def canvas_loss(out: torch.Tensor, target: torch.Tensor, rects: Sequence[tuple[int, int, int, int]],
                kind: str = "mse") -> dict[str, torch.Tensor]:
    """Per-image MSE over each image's rectangle, then ``mse``: their mean, or ``psnr``: the mean of their
    log10 (the official 'PSNR' data term). Also returns the batch-mean MSE and PSNR for logging."""
    mses = torch.stack([((out[i, :, r0:r1, c0:c1] - target[i, :, r0:r1, c0:c1]) ** 2).mean()
                        for i, (r0, r1, c0, c1) in enumerate(rects)])
    if kind == "mse":
        loss = mses.mean()
    elif kind == "psnr":
        loss = torch.log10(mses.clamp_min(1e-12)).mean()
    else:
        raise ValueError(f"unknown loss {kind!r}")
    mse = mses.detach().mean()
    return {"loss": loss, "mse": mse, "psnr": -10.0 * torch.log10(mses.detach().clamp_min(1e-12)).mean()}


class DPE(TorchMethod):
    name = NAME
    display_name = "DPE (paired)"
    family = "supervised"
    citation = ("Y.-S. Chen, Y.-C. Wang, M.-H. Kao, and Y.-Y. Chuang, \"Deep Photo Enhancer: Unpaired Learning "
                "for Image Enhancement from Photographs with GANs,\" in Proc. IEEE/CVF CVPR, 2018, "
                "pp. 6306-6314.")
    bibkey = "chen2018deep"
    version = 1
    trainable = True
    pad_multiple = 1           # any size: the adapter resizes onto the 512 canvas and back itself
    uses_pairs = True
    Config = DPEConfig
    official_description = TF_WEIGHTS
    profiles = {
        # two batch-1 steps on the real 512 canvas (the architecture needs it; ~7 s per step on one CPU core)
        "smoke": {"iterations": 2, "batch": 1, "checkpoint_every": 1, "val_every": 0},
        # CPU-feasible on the demo set: 24 batch-1 steps (~3 min on one core), lr 1e-4 (the official 1e-5 barely
        # moves the near-identity initial network in so few steps), no decay
        "quick": {"iterations": 24, "batch": 1, "lr": 1e-4, "lr_decay_epoch": 10**6, "checkpoint_every": 8,
                  "val_every": 24},
        # the official supervised recipe with DSN's MSE loss (LOL-400: 1,066 it/epoch, 53,300 iterations)
        "paper": {"epochs": 50, "iterations": 0, "batch": 3, "lr": 1e-5, "lr_decay_epoch": 25, "lr_decay_span": 25,
                  "loss": "mse", "augment": True, "val_every": 1000, "checkpoint_every": 2000},
        "paper@lol": {"epochs": 50},
        "paper@fivek": {"epochs": 50},
    }

    @classmethod
    def official_layout(cls):
        from .official import layout

        return layout()

    # ---- model ------------------------------------------------------------------------------
    def build_model(self) -> DPEGenerator:
        model = DPEGenerator()
        if self.config.init_factor != 1e-3:
            init_variance_scaling(model, self.config.init_factor)
        return model

    def checkpoint_loaded(self, checkpoint: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.trained = meta.get("schedule") or self.trained

    def forward_enhance(self, x: torch.Tensor) -> torch.Tensor:
        return run_on_canvas(x, self.model, CANVAS, self.config.resample)

    # ---- provenance -------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        c = self.config
        out = {
            "implementation": "PyTorch re-implementation of the official DPE paired generator (TF netG of the "
                              "supervised experiment 604 / demo DATA.py, CONVNET.py)",
            "variant": "paired generator trained with a pixel loss (no GAN), as in DSN Table 1",
            "faithful": bool(c.init_factor == 1e-3 and c.resample == "lanczos"),
            "loss": {"mse": "MSE on the image rectangle, per image, batch mean (DSN; maintainer issue #1)",
                     "psnr": "mean over images of log10(MSE) on the rectangle (released supervised script)"}[c.loss],
            "optimizer": f"Adam lr {c.lr:g} betas {tuple(c.betas)}, linear decay by lr/{c.lr_decay_span} per "
                         f"epoch after epoch {c.lr_decay_epoch}",
            "training_input": (f"pairs resized to a {CANVAS} long side ({c.resample}), "
                               f"{N_MODES if c.augment else 1} dihedral mode(s) per image and epoch, symmetric "
                               f"padding onto the {CANVAS}x{CANVAS} canvas "
                               f"({'random position' if c.random_pad else 'top-left'}), batch {c.batch}"),
            "inference": (f"resize to a {CANVAS} long side ({c.resample}), symmetric padding bottom/right to "
                          f"{CANVAS}x{CANVAS}, generator (BN moving averages), crop, resize back to the input "
                          "size, clamp to [0,1]"),
            **self.weights_info,
        }
        if self.trained:
            out["schedule"] = self.trained.get("description")
        return out

    # ---- training ---------------------------------------------------------------------------
    def schedule(self, per_epoch: int) -> tuple[int, float, str]:
        """(iterations, iterations per schedule epoch, description)."""
        c = self.config
        if c.iterations > 0:
            total = c.iterations
            scale = total / c.epochs if c.epochs > 0 else float(total)
            desc = f"fixed: {total} iterations (schedule epochs of {scale:g} iterations)"
        else:
            total, scale = c.epochs * per_epoch, float(per_epoch)
            desc = f"epochs: {c.epochs} x {per_epoch} iterations"
        desc += (f", lr {c.lr:g} until epoch {c.lr_decay_epoch}, then -{c.lr:g}/{c.lr_decay_span} per epoch")
        return total, scale, desc

    def train(self, train_pairs: Sequence[TrainPair], val_pairs: Sequence[TrainPair], out_dir: Path, seed: int,
              progress: bool = True) -> Path:
        c = self.config
        c.validate()
        device = self.device
        model = self.fresh_model(derive_seed(seed, "init"))
        sampler = CanvasSampler(train_pairs, c.batch, seed, augment=c.augment, random_pad=c.random_pad,
                                resample=c.resample, device=device, progress=progress)
        total, per_sched_epoch, desc = self.schedule(sampler.iterations_per_epoch)
        settings = TrainSettings(iterations=total, lr=c.lr, betas=tuple(c.betas), milestones=(),
                                 checkpoint_every=c.checkpoint_every, val_every=c.val_every, select="last")

        def lr_factor(iteration: int) -> float:
            # the official per-epoch linear decay, applied before each iteration's update
            return dpe_lr_factor(iteration / per_sched_epoch, c.lr_decay_epoch, c.lr_decay_span)

        def step(batch: CanvasBatch) -> dict[str, torch.Tensor]:
            return canvas_loss(model(batch.low), batch.high, batch.rects, c.loss)

        self.trained = {"iterations": total, "n_train": len(sampler), "iterations_per_epoch":
                        sampler.iterations_per_epoch, "description": desc}
        meta = self.checkpoint_meta(seed, schedule=self.trained, sampler=sampler.describe())
        log.info("training dpe for %d iterations on %d pairs (%s)", total, len(sampler), desc)
        return self.run_trainer(sampler, step, out_dir, settings, seed=seed, meta=meta, val_pairs=val_pairs,
                                progress=progress, lr_lambda=lr_factor)

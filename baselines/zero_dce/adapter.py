"""``zero-dce``: adapter for Zero-DCE (Guo, Li et al., CVPR 2020). See ``SOURCE.md``.

Defaults are the official ``lowlight_train.py`` recipe: DCE-Net with N(0, 0.02) conv weights, the four
non-reference losses in the code's form with weights TV 200 / spatial 1 / colour 5 / exposure 10 (E = 0.6 on
16×16 patches, 4×4 regions for spatial consistency), Adam lr 1e-4 with coupled weight decay 1e-4, total-norm
gradient clipping at 0.1, batch 8 of whole low-light images resized to 256×256 (PIL Lanczos, the old
``Image.ANTIALIAS``), reshuffled every epoch with the last batch of an epoch smaller (``drop_last=False``), 200
epochs at a constant learning rate, and the last weights kept. Training reads the *low* images only.

At test time the network runs on the full-resolution input (no resizing, any size).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bench.errors import BenchError, unknown_name
from bench.methods.base import TrainPair, check_betas, check_range
from bench.methods.torch_method import TorchMethod
from bench.training import Batch, TrainSettings, WholeImageSampler, constant_lr_schedule

from . import losses as L
from .model import DCENet, init_official

log = logging.getLogger("bench.zero_dce")

__all__ = ["ZeroDCE", "ZeroDCEConfig", "ResizedLowSampler"]

NAME = "zero-dce"


@dataclass
class ZeroDCEConfig:
    # --- network ---
    init_std: float = 0.02          # official weights_init: conv weights ~ N(0, 0.02)
    # --- losses (official lowlight_train.py / Myloss.py; the paper's weights are TV 20, colour 0.5) ---
    loss_form: str = "code"         # code | paper (formulas of the four terms; losses.py)
    w_tv: float = 200.0
    w_spa: float = 1.0
    w_col: float = 5.0
    w_exp: float = 10.0
    exposure_level: float = 0.6     # E
    exposure_patch: int = 16
    spatial_pool: int = 4
    # --- optimiser ---
    lr: float = 1e-4
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 1e-4      # coupled (torch Adam's L2 term), as the official code
    grad_clip: float = 0.1          # total gradient norm
    # --- data ---
    resize: int = 256               # training images resized to resize×resize (the paper says 512)
    batch: int = 8
    # --- schedule ---
    epochs: int = 200               # iterations = epochs × ceil(n_train / batch), constant learning rate
    iterations: int = 0             # > 0: this many iterations instead of the epoch schedule
    # --- bookkeeping ---
    checkpoint_every: int = 1000
    val_every: int = 0              # validation PSNR on the val split (logged only; 0 = off, as the official code)

    def validate(self) -> None:
        m = NAME
        if self.loss_form not in L.FORMS:
            raise unknown_name("loss_form of zero-dce", self.loss_form, list(L.FORMS))
        check_range(m, "init_std", self.init_std, 0, 1, lo_open=True)
        for name in ("w_tv", "w_spa", "w_col", "w_exp", "weight_decay", "grad_clip"):
            check_range(m, name, getattr(self, name), 0, 1e6)
        check_range(m, "exposure_level", self.exposure_level, 0, 1)
        check_range(m, "exposure_patch", self.exposure_patch, 1, 4096, integer=True)
        check_range(m, "spatial_pool", self.spatial_pool, 1, 4096, integer=True)
        check_range(m, "lr", self.lr, 0, 1, lo_open=True)
        self.betas = check_betas(m, self.betas)
        check_range(m, "resize", self.resize, 1, 8192, integer=True)
        if self.resize < max(self.exposure_patch, self.spatial_pool):
            raise BenchError(f"{m}: resize={self.resize} is smaller than exposure_patch={self.exposure_patch} "
                             f"or spatial_pool={self.spatial_pool}")
        check_range(m, "batch", self.batch, 1, 4096, integer=True)
        for name in ("epochs", "iterations", "checkpoint_every", "val_every"):
            check_range(m, name, getattr(self, name), 0, 10**9, integer=True)
        if self.iterations == 0 and self.epochs < 1:
            raise BenchError(f"{m}: set epochs >= 1 or iterations >= 1")


class ResizedLowSampler(WholeImageSampler):
    """Whole low-light images resized once to ``size``×``size`` (PIL Lanczos, as the official loader's
    ``Image.ANTIALIAS``), served in successive random permutations in batches of ``batch``; the last batch of
    each pass holds the remainder (``DataLoader(shuffle=True, drop_last=False)``). No augmentation, no crops.
    The order comes from a ``torch.Generator`` seeded from the run seed and saved in checkpoints."""

    def __init__(self, pairs: Sequence[TrainPair], size: int, batch: int, seed: int,
                 device: torch.device | str = "cpu", progress: bool = False):
        self.size = int(size)
        super().__init__(pairs, batch, seed, use_high=False, drop_last=False, method=NAME, device=device,
                         progress=progress)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        img = Image.fromarray(image, "RGB").resize((self.size, self.size), Image.Resampling.LANCZOS)
        return np.asarray(img, dtype=np.uint8)

    def describe(self) -> dict[str, Any]:
        return {"n_images": len(self), "resize": self.size, "batch": self.batch, "augment": False,
                "last_batch": "partial (drop_last=False)", "paired": False}


class ZeroDCE(TorchMethod):
    name = NAME
    display_name = "Zero-DCE"
    family = "zero-reference"
    citation = ("C. Guo, C. Li, J. Guo, C. C. Loy, J. Hou, S. Kwong, and R. Cong, \"Zero-Reference Deep Curve "
                "Estimation for Low-Light Image Enhancement,\" in Proc. CVPR, 2020, pp. 1780-1789.")
    bibkey = "guo2020zero"
    version = 1
    trainable = True
    pad_multiple = 1
    uses_pairs = False
    Config = ZeroDCEConfig
    official_key_suffix = "e_conv1.weight"   # an official enhance_net_nopool state dict (maybe via DataParallel)
    official_description = "an official Zero-DCE state dict (e_conv1 … e_conv7)"
    profiles = {
        # three iterations on 32×32 resized images, batch 2: every code path, seconds on a CPU
        "smoke": {"resize": 32, "batch": 2, "iterations": 3, "checkpoint_every": 2},
        # CPU-feasible on the demo set (5 training images → one batch per epoch): 64×64 inputs, lr 1e-3 so that
        # 150 steps move the curves visibly (the official 1e-4 needs ~60k steps)
        "quick": {"resize": 64, "batch": 8, "epochs": 150, "lr": 1e-3, "checkpoint_every": 50},
        # the official lowlight_train.py recipe (same for both datasets; DSN trained it on the low inputs only)
        "paper": {"resize": 256, "batch": 8, "epochs": 200, "iterations": 0, "lr": 1e-4},
        "paper@lol": {"epochs": 200},
        "paper@fivek": {"epochs": 200},
    }

    @classmethod
    def official_layout(cls):
        from .official import layout

        return layout()

    # ---- model ------------------------------------------------------------------------------
    def build_model(self) -> DCENet:
        model = DCENet()
        init_official(model, self.config.init_std)
        return model

    def forward_enhance(self, x: torch.Tensor) -> torch.Tensor:
        _, out, _ = self.model(x)  # type: ignore[misc]
        return out

    # ---- losses -----------------------------------------------------------------------------
    def loss_terms(self, low: torch.Tensor) -> dict[str, torch.Tensor]:
        """The official objective on a batch of low-light images (``self.model`` must be built)."""
        c = self.config
        _, out, maps = self.model(low)  # type: ignore[misc]
        tv = L.illumination_smoothness(maps, c.loss_form)
        spa = L.spatial_consistency(out, low, c.spatial_pool, c.loss_form)
        col = L.colour_constancy(out, c.loss_form)
        exp = L.exposure_control(out, c.exposure_patch, c.exposure_level, c.loss_form)
        total = c.w_tv * tv + c.w_spa * spa + c.w_col * col + c.w_exp * exp
        return {"loss": total, "loss_tv": tv, "loss_spa": spa, "loss_col": col, "loss_exp": exp}

    # ---- provenance -------------------------------------------------------------------------
    def schedule(self, n_train: int) -> tuple[int, str]:
        c = self.config
        return constant_lr_schedule(c.iterations, c.epochs, n_train, c.batch, c.lr)

    def provenance(self) -> dict[str, Any]:
        c = self.config
        paper_like = c.loss_form == "paper"
        return {
            "implementation": "PyTorch re-implementation of the official Zero-DCE code (enhance_net_nopool, Myloss.py, "
                              "lowlight_train.py)",
            "faithful": True,
            "losses": (f"{c.loss_form} form; weights TV {c.w_tv:g}, spatial {c.w_spa:g}, colour {c.w_col:g}, "
                       f"exposure {c.w_exp:g} (E={c.exposure_level:g} on {c.exposure_patch}x{c.exposure_patch} "
                       f"patches, {c.spatial_pool}x{c.spatial_pool} spatial regions)"),
            "recipe": "paper's loss formulas" if paper_like else "official code",
            "training_input": f"low images only, resized to {c.resize}x{c.resize} (PIL Lanczos), batch {c.batch}",
            "optimizer": (f"Adam lr {c.lr:g} betas {tuple(c.betas)}, coupled weight decay {c.weight_decay:g}, "
                          f"grad-norm clip {c.grad_clip:g}"),
            "inference": "full resolution, output of the 8th curve iteration, clamped to [0,1]",
            **self.weights_info,
        }

    # ---- training ---------------------------------------------------------------------------
    def train(self, train_pairs: Sequence[TrainPair], val_pairs: Sequence[TrainPair], out_dir: Path, seed: int,
              progress: bool = True) -> Path:
        c = self.config
        c.validate()
        self.fresh_model(seed)
        sampler = ResizedLowSampler(train_pairs, c.resize, c.batch, seed, device=self.device, progress=progress)
        iterations, description = self.schedule(len(sampler))
        settings = TrainSettings(iterations=iterations, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay,
                                 grad_clip=c.grad_clip, milestones=(), checkpoint_every=c.checkpoint_every,
                                 val_every=c.val_every, select="last")

        def step(batch: Batch) -> dict[str, torch.Tensor]:
            return self.loss_terms(batch.low)

        meta = self.checkpoint_meta(seed, schedule={"iterations": iterations, "n_train": len(sampler),
                                                    "iterations_per_epoch": sampler.iterations_per_epoch,
                                                    "description": description})
        log.info("training zero-dce for %d iterations on %d low images", iterations, len(sampler))
        return self.run_trainer(sampler, step, out_dir, settings, seed=seed, meta=meta,
                                val_pairs=val_pairs if c.val_every > 0 else (), progress=progress)

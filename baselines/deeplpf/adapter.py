"""``deeplpf``: adapter for DeepLPF (Moran, Marza, McDonagh, Parisot, Slabaugh, CVPR 2020). See ``SOURCE.md``.

Defaults are the released ``sjmoran/DeepLPF`` recipe as DSN's corrected Table 1 run used it: the official
network (1,769,347 parameters), the official loss (L1 on normalised Lab + 1e-3 · (1 − MS-SSIM on L), MS-SSIM with
a 5×5 window), Adam lr 1e-4 (β 0.9/0.999, ε 1e-8), **batch 1** of whole training images with the official
gated flips (``data.py`` ``Dataset.__getitem__``: with p = 0.5 the image may be flipped, and then horizontally
and vertically with p = 0.5 each, so each flip has p = 0.25 and 5/8 of the draws are not flipped; ``flips``
selects ``official``, ``independent`` or ``off``), a constant learning rate, and 300 epochs (DSN's corrected
run; the released models stopped at epochs 424 / 49). Inference runs on the whole input image (no padding or
resizing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bench import training
from bench.errors import BenchError, unknown_name
from bench.methods.base import TrainPair, check_betas, check_range
from bench.methods.torch_method import TorchMethod
from bench.training import Batch, CropSampler, TrainSettings, constant_lr_schedule, derive_seed

from .losses import MSSSIM_FORMS, deeplpf_loss
from .model import PARAMETER_COUNT, DeepLPFNet

log = logging.getLogger("bench.deeplpf")

__all__ = ["DeepLPF", "DeepLPFConfig", "FLIP_MODES", "WholeImageSampler", "parse_flips"]

NAME = "deeplpf"

# Whole-image flip augmentation (see SOURCE.md, deviation 3):
#   official    -- the released data.py: a gate with p = 0.5, then horizontal and vertical flips with p = 0.5
#                  each inside it (P(none) = 5/8, P(h only) = P(v only) = P(both) = 1/8)
#   independent -- horizontal and vertical flips with p = 0.5 each (this adapter's version-1 behaviour, and the
#                  torchvision RandomHorizontalFlip + RandomVerticalFlip of the older, PyTorch 0.3.1 release)
#   off         -- no flips
FLIP_MODES = ("official", "independent", "off")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_flips(value: Any) -> str:
    """A ``flips`` setting as one of :data:`FLIP_MODES`. Booleans (the option was a bool up to adapter version 1)
    still parse: true / yes / on / 1 mean "flips on", which is now the official gated flips, and false / no /
    0 mean ``off``. ``independent`` reproduces version 1's flips."""
    if isinstance(value, bool):
        return "official" if value else "off"
    text = str(value).strip().lower()
    if text in FLIP_MODES:
        return text
    if text in _TRUE:
        return "official"
    if text in _FALSE:
        return "off"
    raise unknown_name("flips of deeplpf", str(value), [*FLIP_MODES, "true", "false"])


@dataclass
class DeepLPFConfig:
    # --- network ---
    b3_quirk: bool = True            # official: ellipse 2's blue channel uses ellipse 3's b (upstream "v2" fixed it)
    # --- loss (official DeepLPFLoss) ---
    w_msssim: float = 1e-3
    ssim_window: int = 5
    msssim_form: str = "official"    # official | standard (see losses.py)
    # --- optimiser ---
    lr: float = 1e-4
    betas: tuple = (0.9, 0.999)
    # --- data ---
    batch: int = 1                   # the authors require batch 1 (the official filters index [0, ...])
    crop: int = 0                    # 0 = whole images (official); > 0 = random square crops of this size
    flips: str = "official"          # official (gated, see FLIP_MODES) | independent (p = 0.5 each) | off;
                                     # true/false still parse (true = official, false = off)
    # --- schedule ---
    epochs: int = 300                # DSN's corrected run (README errata): 300 epochs at batch 1
    iterations: int = 0              # > 0: this many iterations instead of the epoch schedule
    # --- bookkeeping ---
    checkpoint_every: int = 1000
    val_every: int = 0               # validation PSNR on the val split (logged only); 0 = off
    select: str = "last"             # last | val_psnr

    def validate(self) -> None:
        m = NAME
        if self.msssim_form not in MSSSIM_FORMS:
            raise unknown_name("msssim_form of deeplpf", self.msssim_form, list(MSSSIM_FORMS))
        self.flips = parse_flips(self.flips)
        if self.select not in ("last", "val_psnr"):
            raise unknown_name("select of deeplpf", self.select, ["last", "val_psnr"])
        check_range(m, "w_msssim", self.w_msssim, 0, 1e6)
        check_range(m, "ssim_window", self.ssim_window, 1, 31, integer=True)
        check_range(m, "lr", self.lr, 0, 1, lo_open=True)
        self.betas = check_betas(m, self.betas)
        check_range(m, "batch", self.batch, 1, 1024, integer=True)
        check_range(m, "crop", self.crop, 0, 8192, integer=True)
        if 0 < self.crop < DeepLPFNet.MIN_SIDE:
            raise BenchError(f"{m}: crop={self.crop} is below {DeepLPFNet.MIN_SIDE} (four 2x poolings)")
        if self.batch > 1 and self.crop == 0:
            raise BenchError(f"{m}: batch={self.batch} needs crop > 0 (whole images differ in size)")
        for name in ("epochs", "iterations", "checkpoint_every", "val_every"):
            check_range(m, name, getattr(self, name), 0, 10**9, integer=True)
        if self.iterations == 0 and self.epochs < 1:
            raise BenchError(f"{m}: set epochs >= 1 or iterations >= 1")


class WholeImageSampler(training.WholeImageSampler):
    """Whole training pairs, one permutation per epoch, batch 1 (the official DataLoader), with random flips
    (``flips``, one of :data:`FLIP_MODES`; a bool still parses). ``official`` is the released ``data.py``
    (``Dataset.__getitem__``, training branch): ``if random.random() > 0.5:`` then, inside it, a horizontal
    flip ``if random.random() > 0.5`` and a vertical flip ``if random.random() > 0.5``. Here every image takes
    three draws of the generator (gate, horizontal, vertical; a flip happens when its draw and the gate's are
    < 0.5), so the stream does not depend on the outcome. ``independent`` takes two draws (horizontal,
    vertical, p = 0.5 each), exactly as adapter version 1 did. The order and the flips come from one seeded
    ``torch.Generator`` whose state is saved in checkpoints."""

    def __init__(self, pairs: Sequence[TrainPair], seed: int, flips: bool | str = "official",
                 device: torch.device | str = "cpu", progress: bool = False):
        self.flip_mode = parse_flips(flips)
        super().__init__(pairs, 1, seed, flips=self.flip_mode != "off", seed_tag="whole-images",
                         min_side=DeepLPFNet.MIN_SIDE, small_hint="; use crop=0 only with images of at least that size",
                         method=NAME, device=device, progress=progress)

    def flip(self, images: list[np.ndarray]) -> list[np.ndarray]:
        if self.flip_mode == "independent":
            return super().flip(images)
        gate, hflip, vflip = (torch.rand(3, generator=self.generator) < 0.5).tolist()
        if gate and hflip:
            images = [a[:, ::-1] for a in images]
        if gate and vflip:
            images = [a[::-1] for a in images]
        return images

    def describe(self) -> dict[str, Any]:
        return {"n_images": len(self), "crop": "whole images", "batch": 1, "flips": self.flip_mode, "paired": True}


class DeepLPF(TorchMethod):
    name = NAME
    display_name = "DeepLPF"
    family = "supervised"
    citation = ("S. Moran, P. Marza, S. McDonagh, S. Parisot, and G. Slabaugh, \"DeepLPF: Deep Local Parametric "
                "Filters for Image Enhancement,\" in Proc. CVPR, 2020, pp. 12826-12835.")
    bibkey = "moran2020deeplpf"
    version = 2                      # 2: whole-image flips default to the official gated ones (flips=official)
    trainable = True
    pad_multiple = 1
    uses_pairs = True
    Config = DeepLPFConfig
    official_key_suffix = "fc_cubic.weight"
    official_description = "an official DeepLPFNet state dict (backbonenet.*, deeplpfnet.*)"
    profiles = {
        # three batch-1 steps on 64×64 crops: every code path in seconds on a CPU
        "smoke": {"crop": 64, "iterations": 3, "checkpoint_every": 2},
        # CPU-feasible on the demo set (5 training images, whole images at batch 1): 30 epochs = 150 steps
        "quick": {"crop": 0, "epochs": 30, "checkpoint_every": 50},
        # the official recipe with DSN's corrected schedule (batch 1, 300 epochs, whole images)
        "paper": {"crop": 0, "batch": 1, "epochs": 300, "iterations": 0, "lr": 1e-4},
        "paper@lol": {"epochs": 300},
        "paper@fivek": {"epochs": 300},
    }

    @classmethod
    def official_layout(cls):
        from .official import layout

        return layout()

    # ---- model ------------------------------------------------------------------------------
    def build_model(self) -> DeepLPFNet:
        return DeepLPFNet(b3_quirk=self.config.b3_quirk)

    # ---- losses -----------------------------------------------------------------------------
    def loss_terms(self, low: torch.Tensor, high: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        out = self.model(low)  # type: ignore[misc]
        return deeplpf_loss(out, high, c.w_msssim, c.ssim_window, c.msssim_form)

    # ---- provenance -------------------------------------------------------------------------
    def schedule(self, n_train: int) -> tuple[int, str]:
        c = self.config
        return constant_lr_schedule(c.iterations, c.epochs, n_train, c.batch, c.lr)

    def provenance(self) -> dict[str, Any]:
        c = self.config
        faithful = c.b3_quirk and c.msssim_form == "official" and c.w_msssim == 1e-3 and c.ssim_window == 5
        return {
            "implementation": "PyTorch re-implementation of the released sjmoran/DeepLPF code (DeepLPFNet, "
                              "DeepLPFLoss, main.py recipe)",
            "faithful": bool(faithful),
            "parameters_official": PARAMETER_COUNT,
            "unused_official_parameters": 53_568,
            "loss": (f"L1 on normalised Lab + {c.w_msssim:g} x (1 - MS-SSIM on L), window {c.ssim_window}, "
                     f"MS-SSIM form {c.msssim_form}"),
            "fusion": "Y2 = clamp(Y1 + cubic), S = clamp(s_grad + s_ell, 0, 2), Y = clamp(clamp(Y2*S) + Y1)",
            "ellipse_b3_quirk": c.b3_quirk,
            "training_input": (f"batch {c.batch}, " + ("whole images" if c.crop == 0 else f"{c.crop}x{c.crop} crops")
                               + _flips_text(c)),
            "optimizer": f"Adam lr {c.lr:g} betas {tuple(c.betas)} eps 1e-8, constant learning rate",
            "inference": "whole image, output clamped to [0,1]",
            **self.weights_info,
        }

    # ---- training ---------------------------------------------------------------------------
    def train(self, train_pairs: Sequence[TrainPair], val_pairs: Sequence[TrainPair], out_dir: Path, seed: int,
              progress: bool = True) -> Path:
        c = self.config
        c.validate()
        device = self.device
        self.fresh_model(derive_seed(seed, "init"))
        if c.crop > 0:
            sampler: Any = CropSampler(train_pairs, c.crop, c.batch, seed, use_high=True,
                                       augment=c.flips != "off", device=device, progress=progress)
        else:
            sampler = WholeImageSampler(train_pairs, seed, flips=c.flips, device=device, progress=progress)
        iterations, description = self.schedule(len(sampler))
        settings = TrainSettings(iterations=iterations, lr=c.lr, betas=tuple(c.betas), checkpoint_every=c.checkpoint_every,
                                 val_every=c.val_every, select=c.select)

        def step(batch: Batch) -> dict[str, torch.Tensor]:
            return self.loss_terms(batch.low, batch.high)

        meta = self.checkpoint_meta(seed, schedule={"iterations": iterations, "n_train": len(sampler),
                                                    "description": description})
        log.info("training deeplpf for %d iterations on %d pairs", iterations, len(sampler))
        return self.run_trainer(sampler, step, out_dir, settings, seed=seed, meta=meta,
                                val_pairs=val_pairs if c.val_every > 0 else (), progress=progress)


def _flips_text(c: DeepLPFConfig) -> str:
    if c.flips == "off":
        return ", no flips"
    if c.crop > 0:
        return ", crops with the 8 dihedral augmentations (CropSampler)"
    if c.flips == "official":
        return (", official gated h/v flips (p = 0.5 gate, then p = 0.5 each: P(h) = P(v) = 0.25, "
                "P(none) = 0.625)")
    return ", independent h/v flips (p = 0.5 each)"

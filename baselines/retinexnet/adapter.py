"""``retinexnet``: adapter for RetinexNet (Wei, Wang, Yang & Liu, BMVC 2018). See ``SOURCE.md``.

Training is the official two-phase procedure, expressed as two :class:`bench.training.Trainer` runs in
sub-folders of the training directory, each checkpointed and resumable on its own:

1. ``decom/``: DecomNet alone, on ``loss_Decom`` (low and high patches go through the same DecomNet);
2. ``relight/``: RelightNet alone, on ``loss_Relight``, with DecomNet frozen at the weights phase 1 ended with.

Both phases use the official recipe: Adam (β 0.9/0.999), lr 1e-3 for epochs 0-19 then 1e-4, ``epochs`` = 100
epochs of floor(n_train / 16) iterations (the official drop-last epoch), batches of 16 48x48 patches with the 8
flip/rotation modes. The official script builds *one* TF1 ``AdamOptimizer`` for both phases, which shares its
``beta1_power``/``beta2_power`` accumulators between the two train ops, so the Relight phase starts with the
bias-correction count the Decom phase ended with; ``adam_shared_steps=True`` (default) reproduces that by
starting phase 2's Adam at step = phase-1 iterations (zero moments). When re-run, a finished phase is not
redone: its Trainer returns its finished weights file, which is loaded back. The returned checkpoint
(``model_final.pt`` in the training directory) holds both networks.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from bench.errors import BenchError
from bench.methods.base import TrainPair, check_range
from bench.methods.torch_method import TF_WEIGHTS, TorchMethod
from bench.training import (
    WEIGHTS_FORMAT,
    CropSampler,
    Trainer,
    TrainSettings,
    derive_seed,
    load_weights,
    save_torch,
)

from .denoise import DENOISERS, denoise_reflectance
from .losses import LossWeights, decom_loss, relight_loss
from .model import RetinexNetModel

log = logging.getLogger("bench.retinexnet")

__all__ = ["RetinexNetConfig", "RetinexNet", "phase_schedule", "decom_step_fn", "relight_step_fn", "continue_adam_steps"]


@dataclass
class RetinexNetConfig:
    # --- schedule (per phase: the official --epoch is used for both phases) ---
    epochs: int = 100                 # official main.py --epoch
    iterations: int = 0               # > 0: this many iterations per phase instead of epochs (smoke / quick)
    lr: float = 1e-3                  # official --start_lr
    lr_drop_epoch: int = 20           # official: lr[20:] = lr[0] / 10
    lr_gamma: float = 0.1
    adam_shared_steps: bool = True    # phase 2's Adam continues phase 1's bias-correction count (TF1 behaviour)
    # --- data ---
    batch: int = 16                   # official --batch_size
    crop: int = 48                    # official --patch_size
    augment: bool = True              # the 8 flip/rotation modes (official data_augmentation)
    small_images: str = "reflect"     # images smaller than the crop (bench/training.py)
    # --- loss weights (official model.py) ---
    w_mutual: float = 0.001
    w_equal_r: float = 0.01
    w_smooth: float = 0.1
    w_relight_smooth: float = 3.0
    edge_lambda: float = 10.0
    # --- test time ---
    denoise: str = "none"             # none (official test code) | nlmeans (substitute for the paper's BM3D)
    denoise_sigma: float = 10.0       # noise level of R on the 0..255 scale (nlmeans only)
    # --- bookkeeping ---
    checkpoint_every: int = 500
    val_every: int = 0                # relight phase: validation PSNR every N iterations (logged only)

    def validate(self) -> None:
        m = "retinexnet"
        for name in ("epochs", "iterations", "lr_drop_epoch", "checkpoint_every", "val_every"):
            check_range(m, name, getattr(self, name), 0, 10**9, integer=True)
        if self.iterations == 0 and self.epochs < 1:
            raise BenchError("retinexnet: epochs must be at least 1 (or set iterations > 0)")
        check_range(m, "lr", self.lr, 0, 1, lo_open=True)
        check_range(m, "lr_gamma", self.lr_gamma, 0, 1, lo_open=True)
        check_range(m, "batch", self.batch, 1, 4096, integer=True)
        check_range(m, "crop", self.crop, 8, 16384, integer=True)
        for name in ("w_mutual", "w_equal_r", "w_smooth", "w_relight_smooth", "edge_lambda"):
            check_range(m, name, getattr(self, name), 0, 1e6)
        if not isinstance(self.adam_shared_steps, bool) or not isinstance(self.augment, bool):
            raise BenchError("retinexnet: adam_shared_steps and augment must be true or false")
        if self.small_images not in ("reflect", "clip"):
            raise BenchError(f"retinexnet: option small_images={self.small_images!r}; choose reflect or clip")
        if self.denoise not in DENOISERS:
            raise BenchError(f"retinexnet: option denoise={self.denoise!r}; choose one of {', '.join(DENOISERS)} "
                             "(BM3D is not available offline; nlmeans is the documented substitute)")
        check_range(m, "denoise_sigma", self.denoise_sigma, 0.0, 255.0, lo_open=True)

    def loss_weights(self) -> LossWeights:
        return LossWeights(mutual=self.w_mutual, equal_r=self.w_equal_r, smooth=self.w_smooth,
                           relight_smooth=self.w_relight_smooth, edge_lambda=self.edge_lambda)


def phase_schedule(config: RetinexNetConfig, n_train: int) -> tuple[int, list[int], str]:
    """(iterations, LR milestones, description) of one phase.

    Epochs: ``epochs`` x floor(n_train / batch) iterations (at least 1 per epoch), the LR x ``lr_gamma`` after
    ``lr_drop_epoch`` epochs. Fixed iterations: the drop at the same fraction (``lr_drop_epoch / epochs``).
    """
    c = config
    if c.iterations > 0:
        total = c.iterations
        drop = total * c.lr_drop_epoch // c.epochs if c.epochs > 0 else 0
        desc = f"fixed: {total} iterations per phase, lr {c.lr:g} x{c.lr_gamma:g} at {drop}"
    else:
        per = max(1, n_train // c.batch)
        total = c.epochs * per
        drop = c.lr_drop_epoch * per
        desc = (f"epochs: {c.epochs} x {per} (floor({n_train}/{c.batch})) iterations per phase, "
                f"lr {c.lr:g} x{c.lr_gamma:g} after epoch {c.lr_drop_epoch}")
    milestones = [drop] if 0 < drop < total else []
    return total, milestones, desc


def decom_step_fn(model: RetinexNetModel, weights: LossWeights):
    """Phase 1 step: DecomNet on the low and the high patches (one pass, shared weights), ``loss_Decom``."""

    def step(batch):
        n = batch.low.shape[0]
        r, i = model.decom(torch.cat([batch.low, batch.high], dim=0))
        return decom_loss(r[:n], i[:n], r[n:], i[n:], batch.low, batch.high, weights)

    return step


def relight_step_fn(model: RetinexNetModel, weights: LossWeights):
    """Phase 2 step: frozen DecomNet on the low patches, RelightNet trained on ``loss_Relight``."""

    def step(batch):
        with torch.no_grad():
            r_low, i_low = model.decom(batch.low)
        return relight_loss(r_low, model.relight(i_low, r_low), batch.high, weights)

    return step


class RetinexNet(TorchMethod):
    name = "retinexnet"
    display_name = "RetinexNet"
    family = "supervised"
    citation = ("C. Wei, W. Wang, W. Yang, and J. Liu, \"Deep Retinex Decomposition for Low-Light Enhancement,\" "
                "in Proc. British Machine Vision Conference (BMVC), 2018.")
    bibkey = "wei2018deep"
    version = 1
    trainable = True
    pad_multiple = 1           # any size: TF "SAME" convolutions and nearest resizes to the skips' sizes
    uses_pairs = True
    Config = RetinexNetConfig
    trained_meta_keys = ("seed", "schedule", "iterations")
    official_description = TF_WEIGHTS
    combined_checkpoint = ("phase", "both")   # phase trainers write "decom" / "relight" files
    test_time_options = frozenset({"denoise", "denoise_sigma"})  # applied to R at test time only
    profiles = {
        # a handful of iterations per phase on tiny patches: every code path (both phases, resume, combine)
        "smoke": {"iterations": 3, "batch": 2, "crop": 24, "checkpoint_every": 2, "val_every": 0},
        # CPU-feasible on the demo set (~1.5-3 min on 2 shared cores; see SOURCE.md): the official patches and
        # lr, a smaller batch, 30 iterations per phase with the drop at 20 % as in the official schedule
        "quick": {"iterations": 30, "batch": 8, "crop": 48, "checkpoint_every": 10, "val_every": 30},
        # the official recipe (identical for both datasets: the code has one recipe)
        "paper": {"epochs": 100, "iterations": 0, "batch": 16, "crop": 48, "lr": 1e-3, "lr_drop_epoch": 20},
        "paper@lol": {"epochs": 100},
        "paper@fivek": {"epochs": 100},
    }

    @classmethod
    def official_layout(cls):
        from .official import layout

        return layout()

    # ---- model ------------------------------------------------------------------------------
    def build_model(self) -> RetinexNetModel:
        return RetinexNetModel()

    def begin_setup(self) -> None:
        pass   # no re-validation: the config was validated in __init__

    def _forward(self, low: torch.Tensor) -> torch.Tensor:
        c = self.config
        model = self.model
        r_low, i_low = model.decom(low)
        i_delta = model.relight(i_low, r_low)
        if c.denoise != "none":
            r_low = denoise_reflectance(r_low, i_low, c.denoise, c.denoise_sigma)
        return model.compose(r_low, i_delta).clamp(0.0, 1.0)

    def forward_enhance(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    # ---- provenance -------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        c = self.config
        out: dict[str, Any] = {
            "implementation": "PyTorch rebuild of the official TensorFlow graph (weichen582/RetinexNet model.py)",
            "output": "S = R_low * I_delta (I_delta replicated to 3 channels), clipped to [0,1] as save_images does",
            "faithful": c.denoise == "none",
            "denoise": ("none (the official test code; the paper applies BM3D to R)" if c.denoise == "none" else
                        f"SUBSTITUTE for BM3D: skimage non-local means on R (sigma={c.denoise_sigma:g}/255, h=0.8 sigma, "
                        "5x5 patches, distance 6), blended R' = I_low*R + (1-I_low)*R_nlm"),
            "loss_weights": dataclasses.asdict(c.loss_weights()),
            "adam_shared_steps": bool(c.adam_shared_steps),
            **self.weights_provenance(),
        }
        if c.denoise != "none":
            out["substitutes"] = ["BM3D denoising of the reflectance -> illumination-weighted non-local means "
                                  "(skimage.restoration.denoise_nl_means)"]
        return out

    # ---- training ---------------------------------------------------------------------------
    def train(self, train_pairs: Sequence[TrainPair], val_pairs: Sequence[TrainPair], out_dir: Path, seed: int,
              progress: bool = True) -> Path:
        c = self.config
        device = self.device
        out_dir = Path(out_dir)
        model = self.fresh_model(seed)
        weights = c.loss_weights()
        sampler = CropSampler(train_pairs, c.crop, c.batch, seed, use_high=True, augment=c.augment,
                              small=c.small_images, device=device, progress=progress)
        iterations, milestones, desc = phase_schedule(c, len(sampler))
        base_meta = self.checkpoint_meta(seed, schedule=desc, iterations=iterations, n_train=len(sampler))

        def settings() -> TrainSettings:
            return TrainSettings(iterations=iterations, lr=c.lr, milestones=tuple(milestones), gamma=c.lr_gamma,
                                 checkpoint_every=c.checkpoint_every)

        # ---- phase 1: decomposition --------------------------------------------------------
        log.info("retinexnet phase 1 (decom): %d iterations, milestones %s, %d images", iterations, milestones,
                 len(sampler))
        decom = Trainer(model.decom, list(model.decom.parameters()), sampler, decom_step_fn(model, weights),
                        out_dir / "decom", settings(), seed=seed, device=device,
                        meta={**base_meta, "phase": "decom"}, progress=progress, desc="train retinexnet (decom)")
        decom_iterations = load_weights(model.decom, decom.run())   # a finished phase returns without loading
        model.decom.eval()

        # ---- phase 2: relight (DecomNet frozen) ---------------------------------------------
        seed2 = derive_seed(seed, "relight")
        fresh = torch.Generator().manual_seed(derive_seed(seed, "relight", "crops"))
        sampler.load_state_dict({"generator": fresh.get_state(), "perm": [], "pos": 0, "epoch": 0})
        s2 = dataclasses.replace(settings(), val_every=c.val_every)
        adam_start = decom_iterations if c.adam_shared_steps else 0
        relight = Trainer(model.relight, list(model.relight.parameters()), sampler, relight_step_fn(model, weights),
                          out_dir / "relight", s2, seed=seed2, device=device, enhance_fn=self._forward,
                          val_pairs=val_pairs, meta={**base_meta, "phase": "relight"}, progress=progress,
                          desc="train retinexnet (relight)",
                          # a fresh phase 2 starts at Adam step adam_start; a resumed one restores its own state
                          init_optimizer_state=(lambda opt: continue_adam_steps(opt, adam_start)) if adam_start
                          else None)
        relight_iterations = load_weights(model.relight, relight.run())
        model.eval()

        final = out_dir / "model_final.pt"
        save_torch({"format": WEIGHTS_FORMAT, "version": 1, "iteration": relight_iterations, "selected": "last",
                    "model": model.state_dict(),
                    "meta": {**base_meta, "phase": "both", "decom_iterations": decom_iterations,
                             "relight_iterations": relight_iterations, "relight_adam_start_step": adam_start}},
                   final)
        return final


def continue_adam_steps(optimizer: torch.optim.Adam, steps: int) -> None:
    """Start ``optimizer`` (fresh, zero moments) at step ``steps``, so its bias corrections are those of a TF1
    ``AdamOptimizer`` whose ``beta1_power``/``beta2_power`` already decayed through ``steps`` updates of another
    train op (the official script's Decom phase)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            optimizer.state[p] = {"step": torch.tensor(float(steps), dtype=torch.float32),
                                  "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                  "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}

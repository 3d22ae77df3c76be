"""``kind``: adapter for KinD (Zhang, Zhang & Guo, ACM MM 2019). See ``SOURCE.md``.

Training is the official three-script procedure, expressed as three :class:`bench.training.Trainer` runs in
sub-folders of the training directory, each checkpointed and resumable on its own:

1. ``decom/`` (``decomposition_net_train.py``): DecomNet on ``loss_Decom``; batches of 10 48×48 same-position
   low/high patches of the min-max-normalised images, Adam lr 1e-4, 2,000 epochs of floor(n/10) iterations.
2. ``adjust/`` (``adjustment_net_train.py``): the illumination adjustment net on the DecomNet illuminations of
   the *whole* training images (DecomNet frozen at the weights stage 1 ended with): batches of 10 48×48 patches,
   per patch a ratio map and a random brighten/darken swap, MSE + gradient loss; Adam lr 1e-4, 2,000 epochs.
3. ``restoration/`` (``reflectance_restoration_net_train.py``): the restoration U-Net on [R_low, I_low] of the
   whole images against R_high ** 1.2; batches of 4 384×384 patches, MSE + gradient + (1 - SSIM); Adam
   lr 1e-4 for epochs 0-800, then 5e-5; 1,000 epochs of floor(n/4) iterations.

Each official script builds its own ``AdamOptimizer``, so each stage starts a fresh Adam. A finished stage is not
redone: its Trainer returns its weights file, which is loaded back. The returned checkpoint (``model_final.pt``
in the training directory) holds all three nets.

Test time: ``ratio`` is the constant fed to the adjustment net. The default ``ratio=5.0`` with
``postprocess=auto`` (= ``evaluate``) is the official ``evaluate.py``, which never sees the ground truth.
``ratio=gt`` is ``evaluate_LOLdataset.py``'s oracle (ratio from the DecomNet illumination of the ground truth,
``postprocess=auto`` = ``none``); it needs the reference image at enhancement time, which ``bench run`` does
not pass to adapters, so ``enhance(low)`` refuses it with a BenchError; ``enhance(low, reference=high)``
computes it (see ``needs_reference_at_test``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
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

from .inference import compose, gt_ratio, minmax_normalize, ratio_map
from .losses import DecomWeights, adjust_loss, adjust_ratio_maps, decom_loss, restoration_loss
from .model import KinDModel

log = logging.getLogger("bench.kind")

__all__ = ["KinDConfig", "KinD", "MapCropSampler", "stage_schedule", "decom_step_fn", "adjust_step_fn",
           "restoration_step_fn", "decompose_images", "STAGES"]

STAGES = ("decom", "adjust", "restoration")
POSTPROCESS = ("auto", "none", "evaluate")


@dataclass
class KinDConfig:
    # --- schedule: per stage, the official scripts' values ---
    iterations: int = 0               # > 0: this many iterations for every stage instead of epochs (smoke/quick)
    decom_epochs: int = 2000
    decom_batch: int = 10
    decom_crop: int = 48
    decom_lr: float = 1e-4
    adjust_epochs: int = 2000
    adjust_batch: int = 10
    adjust_crop: int = 48
    adjust_lr: float = 1e-4
    restore_epochs: int = 1000
    restore_batch: int = 4
    restore_crop: int = 384
    restore_lr: float = 1e-4
    restore_lr_drop_epoch: int = 801  # official lr_schedule: lr for (0-based) epochs <= 800, then lr / 2
    restore_lr_gamma: float = 0.5
    # --- data ---
    augment: bool = True              # the 8 flip/rotation modes (official data_augmentation)
    small_images: str = "reflect"     # images smaller than a stage's crop (bench/training.py)
    normalize_input: bool = True      # official load_images: per-image min-max normalisation (train and test)
    # --- losses (official scripts) ---
    w_equal_r: float = 0.01
    w_i_mutual: float = 0.2
    w_i_input: float = 0.15
    restore_target_gamma: float = 1.2  # the restoration target is R_high ** 1.2 ("to improve the contrast")
    # --- test time ---
    ratio: str = "5.0"                # a number (fixed ratio, official evaluate.py) or "gt" (LOL oracle)
    postprocess: str = "auto"         # auto | none | evaluate (auto: evaluate for a fixed ratio, none for gt)
    # --- bookkeeping ---
    checkpoint_every: int = 1000
    val_every: int = 0                # restoration stage: validation PSNR every N iterations (logged only)

    def validate(self) -> None:
        m = "kind"
        for name in ("iterations", "decom_epochs", "adjust_epochs", "restore_epochs", "restore_lr_drop_epoch",
                     "checkpoint_every", "val_every"):
            check_range(m, name, getattr(self, name), 0, 10**9, integer=True)
        if self.iterations == 0 and min(self.decom_epochs, self.adjust_epochs, self.restore_epochs) < 1:
            raise BenchError("kind: every stage needs at least 1 epoch (or set iterations > 0)")
        for stage in ("decom", "adjust", "restore"):
            check_range(m, f"{stage}_batch", getattr(self, f"{stage}_batch"), 1, 4096, integer=True)
            check_range(m, f"{stage}_lr", getattr(self, f"{stage}_lr"), 0, 1, lo_open=True)
        check_range(m, "decom_crop", self.decom_crop, 8, 16384, integer=True)
        check_range(m, "adjust_crop", self.adjust_crop, 8, 16384, integer=True)
        # 4 poolings in the restoration U-Net and an 11x11 'VALID' SSIM window
        check_range(m, "restore_crop", self.restore_crop, 16, 16384, integer=True)
        check_range(m, "restore_lr_gamma", self.restore_lr_gamma, 0, 1, lo_open=True)
        check_range(m, "restore_target_gamma", self.restore_target_gamma, 0, 10, lo_open=True)
        for name in ("w_equal_r", "w_i_mutual", "w_i_input"):
            check_range(m, name, getattr(self, name), 0, 1e6)
        for name in ("augment", "normalize_input"):
            if not isinstance(getattr(self, name), bool):
                raise BenchError(f"kind: option {name} must be true or false")
        if self.small_images not in ("reflect", "clip"):
            raise BenchError(f"kind: option small_images={self.small_images!r}; choose reflect or clip")
        if self.postprocess not in POSTPROCESS:
            raise BenchError(f"kind: option postprocess={self.postprocess!r}; choose one of {', '.join(POSTPROCESS)}")
        self.fixed_ratio()  # checks the ratio option

    def fixed_ratio(self) -> float | None:
        """The fixed ratio, or None for ``ratio=gt``."""
        text = str(self.ratio).strip().lower()
        if text == "gt":
            return None
        try:
            value = float(text)
        except ValueError:
            raise BenchError(f"kind: option ratio={self.ratio!r} must be a number (e.g. 5.0, the official "
                             "evaluate.py) or 'gt' (the ground-truth oracle of evaluate_LOLdataset.py)") from None
        check_range("kind", "ratio", value, 0.0, 100.0, lo_open=True)
        return value

    def resolved_postprocess(self) -> str:
        if self.postprocess != "auto":
            return self.postprocess
        return "none" if self.fixed_ratio() is None else "evaluate"

    def decom_weights(self) -> DecomWeights:
        return DecomWeights(equal_r=self.w_equal_r, i_mutual=self.w_i_mutual, i_input=self.w_i_input)


def stage_schedule(config: KinDConfig, stage: str, n_train: int) -> tuple[int, list[int], str]:
    """(iterations, LR milestones, description) of one stage.

    Epochs: ``<stage>_epochs`` × floor(n_train / batch) iterations (the official drop-last ``numBatch``; at least
    1). The restoration LR is multiplied by ``restore_lr_gamma`` after ``restore_lr_drop_epoch`` epochs (fixed
    iterations: at the same fraction of the run). Decom and adjust use a constant LR.
    """
    c = config
    key = "restore" if stage == "restoration" else stage
    batch, epochs = getattr(c, f"{key}_batch"), getattr(c, f"{key}_epochs")
    lr = getattr(c, f"{key}_lr")
    if c.iterations > 0:
        total = c.iterations
        drop = total * c.restore_lr_drop_epoch // c.restore_epochs if c.restore_epochs > 0 else 0
        desc = f"fixed: {total} iterations, lr {lr:g}"
    else:
        per = max(1, n_train // batch)
        total = epochs * per
        drop = c.restore_lr_drop_epoch * per
        desc = f"epochs: {epochs} x {per} (floor({n_train}/{batch})) iterations, lr {lr:g}"
    milestones: list[int] = []
    if stage == "restoration" and 0 < drop < total:
        milestones = [drop]
        desc += f", x{c.restore_lr_gamma:g} after iteration {drop}"
    return total, milestones, desc


# ------------------------------------------------------------------------------------------------
# samplers
# ------------------------------------------------------------------------------------------------
class MapCropSampler(CropSampler):
    """A :class:`CropSampler` over precomputed float maps (H×W×C, stored as float16) instead of uint8 images.

    The official adjustment and restoration scripts decompose each *whole* training image once with the
    trained DecomNet and crop patches from those maps; this sampler does the same with CropSampler's batch
    order, crop positions, augmentation, RNG state and resume (the maps are padded, when smaller than the
    crop, after the decomposition). ``lows[i]`` / ``highs[i]`` are the input / target maps of image ``ids[i]``.
    """

    def __init__(self, ids: Sequence[str], lows: Sequence[np.ndarray], highs: Sequence[np.ndarray], crop: int,
                 batch: int, seed: int, *, augment: bool = True, small: str = "reflect",
                 device: torch.device | str = "cpu"):
        if not ids or len(ids) != len(lows) or len(lows) != len(highs):
            raise BenchError("MapCropSampler needs one input and one target map per image")
        self._check_options(crop, batch, small)
        self.ids = list(ids)
        self.batch, self.use_high, self.augment, self.small = int(batch), True, bool(augment), small
        self.device = torch.device(device)
        self.lows = [np.ascontiguousarray(a, dtype=np.float16) for a in lows]
        self.highs = [np.ascontiguousarray(a, dtype=np.float16) for a in highs]
        for i, (a, b) in enumerate(zip(self.lows, self.highs)):
            if a.ndim != 3 or b.ndim != 3 or a.shape[:2] != b.shape[:2]:
                raise BenchError(f"maps of image {self.ids[i]} must be H×W×C of the same size")
        self._fit_crop(int(crop))     # padded after the decomposition, like CropSampler's images
        self._seed_order(seed, "crops")

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(maps=True, input_channels=int(self.lows[0].shape[2]), target_channels=int(self.highs[0].shape[2]))
        return d

    def _to_tensor(self, arrays: list[np.ndarray]) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(np.stack(arrays))).to(torch.float32)   # N×h×w×C
        return t.to(self.device, non_blocking=True).permute(0, 3, 1, 2).contiguous()


def _image_tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.uint8, copy=True)).to(device).permute(2, 0, 1)[None].float().div_(255.0)


@torch.no_grad()
def decompose_images(decom: torch.nn.Module, images: Iterable[np.ndarray], device: torch.device,
                     normalize: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """DecomNet (R, I) of whole uint8 H×W×3 images, as float16 H×W×3 and H×W×1 arrays (the official scripts
    decompose every training image once, after ``load_images``' min-max normalisation)."""
    was_training = decom.training
    decom.eval()
    out = []
    try:
        for img in images:
            x = _image_tensor(img, device)
            if normalize:
                x = minmax_normalize(x)
            r, i = decom(x)
            out.append((r[0].permute(1, 2, 0).to(torch.float16).cpu().numpy(),
                        i[0].permute(1, 2, 0).to(torch.float16).cpu().numpy()))
    finally:
        decom.train(was_training)
    return out


# ------------------------------------------------------------------------------------------------
# step functions
# ------------------------------------------------------------------------------------------------
def _normalizer(stats: Mapping[str, tuple[float, float]] | None) -> Callable[[torch.Tensor, list[str]], torch.Tensor]:
    """Per-image min-max normalisation of crops, with each *whole* image's min/max (``load_images``)."""

    def apply(x: torch.Tensor, ids: list[str]) -> torch.Tensor:
        if stats is None:
            return x
        lo = torch.tensor([stats[i][0] for i in ids], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        hi = torch.tensor([stats[i][1] for i in ids], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        return (x - lo) / (hi - lo).clamp_min(0.001)

    return apply


def decom_step_fn(decom: torch.nn.Module, weights: DecomWeights,
                  low_stats: Mapping[str, tuple[float, float]] | None = None,
                  high_stats: Mapping[str, tuple[float, float]] | None = None):
    """Stage 1: DecomNet on the low and the high patches (one pass, shared weights), ``loss_Decom``."""
    norm_low, norm_high = _normalizer(low_stats), _normalizer(high_stats)

    def step(batch):
        low, high = norm_low(batch.low, batch.ids), norm_high(batch.high, batch.ids)
        n = low.shape[0]
        r, i = decom(torch.cat([low, high], dim=0))
        return decom_loss(r[:n], i[:n], r[n:], i[n:], low, high, weights)

    return step


def adjust_step_fn(adjust: torch.nn.Module):
    """Stage 2: batch = (I_low, I_high) patches; per patch a fair coin (the global torch RNG, which the Trainer
    seeds and checkpoints) picks brighten (I_low, 1/ratio + 1e-4 → I_high) or darken (I_high, ratio → I_low)."""

    def step(batch):
        swap = torch.rand(batch.low.shape[0]) < 0.5
        inp, rmap, target = adjust_ratio_maps(batch.low, batch.high, swap.to(batch.low.device))
        terms = adjust_loss(adjust(inp, rmap), target)
        terms["darken_share"] = float(swap.float().mean())
        return terms

    return step


def restoration_step_fn(restore: torch.nn.Module):
    """Stage 3: batch.low = [R_low, I_low] (4 channels), batch.high = R_high ** γ (3 channels)."""

    def step(batch):
        out = restore(batch.low[:, :3], batch.low[:, 3:4])
        return restoration_loss(out, batch.high)

    return step


# ------------------------------------------------------------------------------------------------
# the adapter
# ------------------------------------------------------------------------------------------------
class KinD(TorchMethod):
    name = "kind"
    display_name = "KinD"
    family = "supervised"
    citation = ("Y. Zhang, J. Zhang, and X. Guo, \"Kindling the Darkness: A Practical Low-light Image Enhancer,\" "
                "in Proc. ACM International Conference on Multimedia (MM), 2019, pp. 1632-1640.")
    bibkey = "zhang2019kindling"
    version = 1
    trainable = True
    pad_multiple = 1           # any size: ceil-mode pooling and cropped transposed convs, as TF "SAME"
    uses_pairs = True
    Config = KinDConfig
    trained_meta_keys = ("seed", "schedules", "iterations")
    official_description = TF_WEIGHTS
    combined_checkpoint = ("stage", "all")   # stage trainers write "decom" / "adjust" / "restoration" files
    # the ratio policy and post-processing act at test time only: changing them never retrains
    test_time_options = frozenset({"ratio", "postprocess"})
    profiles = {
        # a couple of iterations per stage on tiny patches: every code path (3 stages, maps, resume, combine)
        "smoke": {"iterations": 2, "decom_batch": 2, "decom_crop": 24, "adjust_batch": 2, "adjust_crop": 24,
                  "restore_batch": 1, "restore_crop": 32, "checkpoint_every": 1, "val_every": 0},
        # CPU-feasible on the demo set (see SOURCE.md): official batches and patches for decom/adjust, a small
        # restoration batch/patch, 20 iterations per stage, validation PSNR at the end
        "quick": {"iterations": 20, "decom_batch": 10, "decom_crop": 48, "adjust_batch": 10, "adjust_crop": 48,
                  "restore_batch": 2, "restore_crop": 64, "checkpoint_every": 10, "val_every": 20},
        # the official recipe (the code has one recipe for all data)
        "paper": {"iterations": 0, "decom_epochs": 2000, "decom_batch": 10, "decom_crop": 48, "decom_lr": 1e-4,
                  "adjust_epochs": 2000, "adjust_batch": 10, "adjust_crop": 48, "adjust_lr": 1e-4,
                  "restore_epochs": 1000, "restore_batch": 4, "restore_crop": 384, "restore_lr": 1e-4,
                  "restore_lr_drop_epoch": 801, "restore_lr_gamma": 0.5, "checkpoint_every": 2000},
        "paper@lol": {},
        "paper@fivek": {},
    }

    def __init__(self, config: KinDConfig | None = None):
        super().__init__(config)
        # The proposed harness hook: a method whose test-time policy needs the ground truth says so here, and
        # the harness would call enhance(low, reference=high). Today's harness never passes it.
        self.needs_reference_at_test = self.config.fixed_ratio() is None

    @classmethod
    def official_layout(cls):
        from .official import layout

        return layout()

    # ---- model ------------------------------------------------------------------------------
    def build_model(self) -> KinDModel:
        return KinDModel()

    def begin_setup(self) -> None:
        pass   # no re-validation: the config was validated in __init__

    def _forward(self, low: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        model = self.model
        x = minmax_normalize(low) if c.normalize_input else low
        r_low, i_low = model.decom(x)
        r_restored = model.restore(r_low, i_low)
        fixed = c.fixed_ratio()
        if fixed is None:
            if reference is None:
                raise BenchError("kind: ratio=gt takes the illumination ratio from the ground truth, which "
                                 "`bench run` does not pass to adapters yet; use a fixed ratio (default 5.0)")
            ref = reference.to(self.device, torch.float32)
            if ref.shape != low.shape:
                raise BenchError(f"kind: reference {tuple(ref.shape)} and input {tuple(low.shape)} differ in size")
            _, i_high = model.decom(minmax_normalize(ref) if c.normalize_input else ref)
            ratio: float | torch.Tensor = gt_ratio(i_low, i_high)
        else:
            ratio = fixed
        i_adjusted = model.adjust(i_low, ratio_map(i_low, ratio))
        return compose(x, r_low, i_low, r_restored, i_adjusted, c.resolved_postprocess()).clamp(0.0, 1.0)

    def forward_enhance(self, x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` → enhanced image; ``reference`` (the ground truth, ``enhance(low, reference=high)``) is used
        only by ``ratio=gt``."""
        return self._forward(x, reference)

    # ---- provenance -------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        c = self.config
        fixed = c.fixed_ratio()
        post = c.resolved_postprocess()
        out: dict[str, Any] = {
            "implementation": "PyTorch rebuild of the official TensorFlow graphs and training scripts "
                              "(zhangyhuaee/KinD model.py, *_train.py, evaluate*.py)",
            "faithful": True,
            "ratio": "gt" if fixed is None else fixed,
            "ratio_policy": ("ORACLE: ratio = mean(I_high / (I_low + 1e-4)) from the DecomNet illumination of the "
                             "ground truth (official evaluate_LOLdataset.py)" if fixed is None else
                             f"fixed ratio {fixed:g}, no ground truth (official evaluate.py uses 5.0)"),
            "uses_ground_truth_at_test": fixed is None,
            "postprocess": post,
            "output": ("R_restored * I_adjusted (evaluate_LOLdataset.py)" if post == "none" else
                       "evaluate.py: I_low*S + (1-I_low) * (R_restored * min(sqrt(2*gauss3(gray(R_low))),1) "
                       "* I_adjusted)") + ", clipped to [0,1]",
            "normalize_input": bool(c.normalize_input),
            "restore_target_gamma": c.restore_target_gamma,
            "loss_weights": dataclasses.asdict(c.decom_weights()),
            **self.weights_provenance(),
        }
        return out

    # ---- training ---------------------------------------------------------------------------
    def train(self, train_pairs: Sequence[TrainPair], val_pairs: Sequence[TrainPair], out_dir: Path, seed: int,
              progress: bool = True) -> Path:
        c = self.config
        if c.fixed_ratio() is None and c.val_every > 0 and val_pairs:
            raise BenchError("kind: validation with ratio=gt needs the reference at enhancement time, which "
                             "the Trainer does not pass; set val_every=0 or a fixed ratio")
        device = self.device
        out_dir = Path(out_dir)
        model = self.fresh_model(seed)
        base_meta = self.checkpoint_meta(seed)
        schedules: dict[str, str] = {}
        iterations: dict[str, int] = {}

        # ---- stage 1: decomposition --------------------------------------------------------
        sampler = CropSampler(train_pairs, c.decom_crop, c.decom_batch, seed, use_high=True, augment=c.augment,
                              small=c.small_images, device=device, progress=progress)
        n_train = len(sampler)
        ids = list(sampler.ids)
        low_stats = high_stats = None
        if c.normalize_input:
            low_stats = {i: _minmax(a) for i, a in zip(sampler.ids, sampler.lows)}
            high_stats = {i: _minmax(a) for i, a in zip(sampler.ids, sampler.highs)}  # type: ignore[arg-type]
        total, milestones, desc = stage_schedule(c, "decom", n_train)
        schedules["decom"] = desc
        log.info("kind stage 1 (decom): %s", desc)
        trainer = Trainer(model.decom, list(model.decom.parameters()), sampler,
                          decom_step_fn(model.decom, c.decom_weights(), low_stats, high_stats), out_dir / "decom",
                          self._settings(total, milestones, c.decom_lr), seed=seed, device=device,
                          meta={**base_meta, "stage": "decom", "schedule": desc}, progress=progress,
                          desc="train kind (decom)")
        iterations["decom"] = load_weights(model.decom, trainer.run())
        del sampler, trainer
        model.decom.eval()

        # ---- decompose the whole (unpadded) training images once with the frozen DecomNet ----
        lows_dec = decompose_images(model.decom, _images(train_pairs, "low"), device, c.normalize_input)
        highs_dec = decompose_images(model.decom, _images(train_pairs, "high"), device, c.normalize_input)

        # ---- stage 2: illumination adjustment ------------------------------------------------
        seed2 = derive_seed(seed, "adjust")
        sampler = MapCropSampler(ids, [i for _, i in lows_dec], [i for _, i in highs_dec], c.adjust_crop,
                                 c.adjust_batch, seed2, augment=c.augment, small=c.small_images, device=device)
        total, milestones, desc = stage_schedule(c, "adjust", n_train)
        schedules["adjust"] = desc
        log.info("kind stage 2 (adjust): %s", desc)
        trainer = Trainer(model.adjust, list(model.adjust.parameters()), sampler, adjust_step_fn(model.adjust),
                          out_dir / "adjust", self._settings(total, milestones, c.adjust_lr), seed=seed2,
                          device=device, meta={**base_meta, "stage": "adjust", "schedule": desc},
                          progress=progress, desc="train kind (adjust)")
        iterations["adjust"] = load_weights(model.adjust, trainer.run())
        del sampler, trainer
        model.adjust.eval()

        # ---- stage 3: reflectance restoration ------------------------------------------------
        seed3 = derive_seed(seed, "restoration")
        gamma = float(c.restore_target_gamma)
        inputs = [np.concatenate([r, i], axis=2) for r, i in lows_dec]
        targets = [np.power(r.astype(np.float32), gamma).astype(np.float16) for r, _ in highs_dec]
        del lows_dec, highs_dec
        sampler = MapCropSampler(ids, inputs, targets, c.restore_crop, c.restore_batch, seed3, augment=c.augment,
                                 small=c.small_images, device=device)
        del inputs, targets
        total, milestones, desc = stage_schedule(c, "restoration", n_train)
        schedules["restoration"] = desc
        log.info("kind stage 3 (restoration): %s", desc)
        settings = dataclasses.replace(self._settings(total, milestones, c.restore_lr), gamma=c.restore_lr_gamma,
                                       val_every=c.val_every)
        trainer = Trainer(model.restore, list(model.restore.parameters()), sampler,
                          restoration_step_fn(model.restore), out_dir / "restoration", settings, seed=seed3,
                          device=device, enhance_fn=self._forward, val_pairs=val_pairs,
                          meta={**base_meta, "stage": "restoration", "schedule": desc}, progress=progress,
                          desc="train kind (restoration)")
        iterations["restoration"] = load_weights(model.restore, trainer.run())
        del sampler, trainer
        model.eval()

        final = out_dir / "model_final.pt"
        save_torch({"format": WEIGHTS_FORMAT, "version": 1, "iteration": iterations["restoration"],
                    "selected": "last", "model": model.state_dict(),
                    "meta": {**base_meta, "stage": "all", "schedules": schedules, "iterations": iterations,
                             "n_train": n_train}}, final)
        return final

    def _settings(self, iterations: int, milestones: list[int], lr: float) -> TrainSettings:
        # TF1 AdamOptimizer defaults (beta 0.9/0.999); no weight decay, no clipping (official scripts)
        return TrainSettings(iterations=iterations, lr=lr, milestones=tuple(milestones),
                             checkpoint_every=self.config.checkpoint_every)


def _images(pairs: Sequence[TrainPair], side: str):
    """The training images of one side, decoded one at a time (uint8 H×W×3)."""
    for p in pairs:
        a = p.load_low() if side == "low" else p.load_high()
        if a is None:
            raise BenchError(f"training pair {p.id} has no reference image, but KinD trains on pairs")
        yield np.ascontiguousarray(a, dtype=np.uint8)


def _minmax(a: np.ndarray) -> tuple[float, float]:
    return float(a.min()) / 255.0, float(a.max()) / 255.0

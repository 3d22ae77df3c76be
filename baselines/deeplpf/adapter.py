"""``deeplpf``: adapter for DeepLPF (Moran, Marza, McDonagh, Parisot, Slabaugh, CVPR 2020). See ``SOURCE.md``.

Defaults are the released ``sjmoran/DeepLPF`` recipe as DSN's corrected Table 1 run used it: the official
network (1,769,347 parameters), the official loss (L1 on normalised Lab + 1e-3 · (1 − MS-SSIM on L), MS-SSIM with
a 5×5 window), Adam lr 1e-4 (β 0.9/0.999, ε 1e-8), **batch 1** of whole training images (random horizontal and
vertical flips, p = 0.5 each), a constant learning rate, and 300 epochs (DSN's corrected run; the released models
stopped at epochs 424 / 49). Inference runs on the whole input image (no padding or resizing).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from bench.errors import BenchError, unknown_name
from bench.methods.base import Method, TrainPair, check_range
from bench.training import (
    STATE_FORMAT,
    WEIGHTS_FORMAT,
    Batch,
    CropSampler,
    Trainer,
    TrainSettings,
    derive_seed,
    iterations_per_epoch,
    load_torch,
    seed_all,
)

from .losses import MSSSIM_FORMS, deeplpf_loss
from .model import PARAMETER_COUNT, DeepLPFNet

log = logging.getLogger("bench.deeplpf")

__all__ = ["DeepLPF", "DeepLPFConfig", "WholeImageSampler"]

NAME = "deeplpf"


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
    flips: bool = True               # random horizontal and vertical flips (p = 0.5 each)
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
        if self.select not in ("last", "val_psnr"):
            raise unknown_name("select of deeplpf", self.select, ["last", "val_psnr"])
        check_range(m, "w_msssim", self.w_msssim, 0, 1e6)
        check_range(m, "ssim_window", self.ssim_window, 1, 31, integer=True)
        check_range(m, "lr", self.lr, 0, 1, lo_open=True)
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise BenchError(f"{m}: option betas={self.betas!r} must be two numbers in [0, 1)")
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


class WholeImageSampler:
    """Whole training pairs, one permutation per epoch, random horizontal/vertical flips (p = 0.5 each),
    batch 1 (the official DataLoader). The order and the flips come from one seeded ``torch.Generator`` whose
    state is saved in checkpoints."""

    def __init__(self, pairs: Sequence[TrainPair], seed: int, flips: bool = True,
                 device: torch.device | str = "cpu", progress: bool = False):
        if not pairs:
            raise BenchError("no training pairs")
        self.ids = [p.id for p in pairs]
        self.flips, self.device, self.batch = bool(flips), torch.device(device), 1
        self.lows, self.highs = [], []
        for p in tqdm(pairs, desc="load train images", unit="img", disable=not progress, leave=False):
            low, high = p.load_low(), p.load_high()
            if high is None:
                raise BenchError(f"training pair {p.id} has no reference image, but deeplpf trains on pairs")
            if low.shape != high.shape:
                raise BenchError(f"training pair {p.id}: low and high differ in size")
            if min(low.shape[:2]) < DeepLPFNet.MIN_SIDE:
                raise BenchError(f"training pair {p.id} is smaller than {DeepLPFNet.MIN_SIDE} px; use crop=0 only "
                                 "with images of at least that size")
            self.lows.append(np.ascontiguousarray(low, dtype=np.uint8))
            self.highs.append(np.ascontiguousarray(high, dtype=np.uint8))
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "whole-images"))
        self._perm: list[int] = []
        self._pos = 0
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lows)

    @property
    def iterations_per_epoch(self) -> int:
        return len(self.lows)

    def describe(self) -> dict[str, Any]:
        return {"n_images": len(self), "crop": "whole images", "batch": 1, "flips": self.flips, "paired": True}

    def next_batch(self) -> Batch:
        if self._pos >= len(self._perm):
            self._perm = torch.randperm(len(self), generator=self.generator).tolist()
            self._pos = 0
            self.epoch += 1
        i = self._perm[self._pos]
        self._pos += 1
        low, high = self.lows[i], self.highs[i]
        if self.flips:
            hflip, vflip = (torch.rand(2, generator=self.generator) < 0.5).tolist()
            if hflip:
                low, high = low[:, ::-1], high[:, ::-1]
            if vflip:
                low, high = low[::-1], high[::-1]
        conv = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device).permute(2, 0, 1)[None].float() / 255.0  # noqa: E731
        return Batch(conv(low), conv(high), [self.ids[i]])

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": list(self._perm), "pos": self._pos,
                "epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._perm, self._pos, self.epoch = list(state["perm"]), int(state["pos"]), int(state["epoch"])


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return str(value)


class DeepLPF(Method):
    name = NAME
    display_name = "DeepLPF"
    family = "supervised"
    citation = ("S. Moran, P. Marza, S. McDonagh, S. Parisot, and G. Slabaugh, \"DeepLPF: Deep Local Parametric "
                "Filters for Image Enhancement,\" in Proc. CVPR, 2020, pp. 12826-12835.")
    bibkey = "moran2020deeplpf"
    version = 1
    trainable = True
    pad_multiple = 1
    uses_pairs = True
    Config = DeepLPFConfig
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

    def __init__(self, config: DeepLPFConfig | None = None):
        super().__init__(config)
        self.config.validate()
        self.model: DeepLPFNet | None = None
        self.weights_info: dict[str, Any] = {"weights_kind": "none"}

    # ---- model ------------------------------------------------------------------------------
    def build_model(self) -> DeepLPFNet:
        return DeepLPFNet(b3_quirk=self.config.b3_quirk)

    def setup(self, device: torch.device, weights: Path | None = None) -> dict[str, Any]:
        self.device = torch.device(device)
        self.config.validate()
        self.model = self.build_model()
        self.weights_info = {"weights_kind": "none"}
        if weights is not None:
            self._load(Path(weights))
        self.model.to(self.device).eval()
        return self.provenance()

    def _load(self, path: Path) -> None:
        from bench.fsutil import sha256_file

        obj = load_torch(path)
        if isinstance(obj, Mapping) and obj.get("format") in (WEIGHTS_FORMAT, STATE_FORMAT):
            meta = obj.get("meta") or {}
            if meta.get("method") != self.name:
                raise BenchError(f"{path} holds weights of method {meta.get('method')!r}, not {self.name}")
            sd, kind = obj["model"], "bench_checkpoint" if obj["format"] == WEIGHTS_FORMAT else "bench_train_state"
        elif isinstance(obj, Mapping) and any(str(k).endswith("fc_cubic.weight") for k in obj):
            sd, kind = {str(k).removeprefix("module."): v for k, v in obj.items()}, "official_state_dict"
        else:
            raise BenchError(f"{path} is neither a deeplpf checkpoint of this project nor an official DeepLPFNet "
                             "state dict (backbonenet.*, deeplpfnet.*)")
        try:
            self.model.load_state_dict(sd, strict=True)  # type: ignore[union-attr]
        except RuntimeError as e:
            raise BenchError(f"{path}: {str(e).strip().splitlines()[0][:200]}") from None
        self.weights_info = {"weights_kind": kind, "weights_sha256": sha256_file(path)}

    def enhance(self, low: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("call setup() first")
        self.model.eval()
        with torch.no_grad():
            out = self.model(low.to(self.device, torch.float32))
        return out.clamp(0.0, 1.0).to(low.device)

    # ---- losses -----------------------------------------------------------------------------
    def loss_terms(self, low: torch.Tensor, high: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        out = self.model(low)  # type: ignore[misc]
        return deeplpf_loss(out, high, c.w_msssim, c.ssim_window, c.msssim_form)

    # ---- provenance -------------------------------------------------------------------------
    def schedule(self, n_train: int) -> tuple[int, str]:
        c = self.config
        if c.iterations > 0:
            return c.iterations, f"fixed: {c.iterations} iterations, constant lr {c.lr:g}"
        per = iterations_per_epoch(n_train, c.batch)
        return c.epochs * per, f"{c.epochs} epochs x ceil({n_train}/{c.batch}) = {c.epochs * per} iterations, constant lr"

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
                               + (", random h/v flips" if c.flips else ", no flips")),
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
        seed_all(derive_seed(seed, "init"))
        self.model = self.build_model().to(device)
        model = self.model
        if c.crop > 0:
            sampler: Any = CropSampler(train_pairs, c.crop, c.batch, seed, use_high=True, augment=c.flips,
                                       device=device, progress=progress)
        else:
            sampler = WholeImageSampler(train_pairs, seed, flips=c.flips, device=device, progress=progress)
        iterations, description = self.schedule(len(sampler))
        settings = TrainSettings(iterations=iterations, lr=c.lr, betas=tuple(c.betas), checkpoint_every=c.checkpoint_every,
                                 val_every=c.val_every, select=c.select)

        def step(batch: Batch) -> dict[str, torch.Tensor]:
            return self.loss_terms(batch.low, batch.high)

        meta = {"method": self.name, "version": self.version, "config": _jsonable(dataclasses.asdict(c)),
                "seed": int(seed), "schedule": {"iterations": iterations, "n_train": len(sampler),
                                                "description": description}}
        log.info("training deeplpf for %d iterations on %d pairs", iterations, len(sampler))
        trainer = Trainer(model, [p for p in model.parameters() if p.requires_grad], sampler, step, Path(out_dir),
                          settings, seed=seed, device=device, enhance_fn=self.enhance,
                          val_pairs=val_pairs if c.val_every > 0 else (), meta=meta, progress=progress,
                          desc="train deeplpf")
        ckpt = trainer.run()
        model.eval()
        return ckpt

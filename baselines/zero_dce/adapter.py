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
    Trainer,
    TrainSettings,
    derive_seed,
    iterations_per_epoch,
    load_torch,
    seed_all,
)

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
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise BenchError(f"{m}: option betas={self.betas!r} must be two numbers in [0, 1)")
        check_range(m, "resize", self.resize, 1, 8192, integer=True)
        if self.resize < max(self.exposure_patch, self.spatial_pool):
            raise BenchError(f"{m}: resize={self.resize} is smaller than exposure_patch={self.exposure_patch} "
                             f"or spatial_pool={self.spatial_pool}")
        check_range(m, "batch", self.batch, 1, 4096, integer=True)
        for name in ("epochs", "iterations", "checkpoint_every", "val_every"):
            check_range(m, name, getattr(self, name), 0, 10**9, integer=True)
        if self.iterations == 0 and self.epochs < 1:
            raise BenchError(f"{m}: set epochs >= 1 or iterations >= 1")


class ResizedLowSampler:
    """Whole low-light images resized once to ``size``×``size`` (PIL Lanczos, as the official loader's
    ``Image.ANTIALIAS``), served in successive random permutations in batches of ``batch``; the last batch of
    each pass holds the remainder (``DataLoader(shuffle=True, drop_last=False)``). No augmentation, no crops.
    The order comes from a ``torch.Generator`` seeded from the run seed and saved in checkpoints."""

    def __init__(self, pairs: Sequence[TrainPair], size: int, batch: int, seed: int,
                 device: torch.device | str = "cpu", progress: bool = False):
        from PIL import Image

        if not pairs:
            raise BenchError("no training images")
        self.size, self.batch, self.device = int(size), int(batch), torch.device(device)
        self.ids = [p.id for p in pairs]
        images = []
        for p in tqdm(pairs, desc="load train images", unit="img", disable=not progress, leave=False):
            low = np.ascontiguousarray(p.load_low(), dtype=np.uint8)
            img = Image.fromarray(low, "RGB").resize((self.size, self.size), Image.Resampling.LANCZOS)
            images.append(np.asarray(img, dtype=np.uint8))
        self.images = np.stack(images)           # n×size×size×3 uint8
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "order"))
        self._perm: list[int] = []
        self._pos = 0
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def iterations_per_epoch(self) -> int:
        return iterations_per_epoch(len(self), self.batch)

    def describe(self) -> dict[str, Any]:
        return {"n_images": len(self), "resize": self.size, "batch": self.batch, "augment": False,
                "last_batch": "partial (drop_last=False)", "paired": False}

    def next_batch(self) -> Batch:
        if self._pos >= len(self._perm):
            self._perm = torch.randperm(len(self), generator=self.generator).tolist()
            self._pos = 0
            self.epoch += 1
        idx = self._perm[self._pos:self._pos + self.batch]
        self._pos += len(idx)
        t = torch.from_numpy(self.images[idx]).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        return Batch(t.contiguous(), None, [self.ids[i] for i in idx])

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


class ZeroDCE(Method):
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

    def __init__(self, config: ZeroDCEConfig | None = None):
        super().__init__(config)
        self.config.validate()
        self.model: DCENet | None = None
        self.weights_info: dict[str, Any] = {"weights_kind": "none"}

    # ---- model ------------------------------------------------------------------------------
    def build_model(self) -> DCENet:
        model = DCENet()
        init_official(model, self.config.init_std)
        return model

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
        elif isinstance(obj, Mapping) and any(str(k).endswith("e_conv1.weight") for k in obj):
            # an official enhance_net_nopool state dict (possibly saved through DataParallel)
            sd, kind = {str(k).removeprefix("module."): v for k, v in obj.items()}, "official_state_dict"
        else:
            raise BenchError(f"{path} is neither a zero-dce checkpoint of this project nor an official "
                             "Zero-DCE state dict (e_conv1 … e_conv7)")
        try:
            self.model.load_state_dict(sd, strict=True)  # type: ignore[union-attr]
        except RuntimeError as e:
            raise BenchError(f"{path}: {str(e).strip().splitlines()[0][:200]}") from None
        self.weights_info = {"weights_kind": kind, "weights_sha256": sha256_file(path)}

    def enhance(self, low: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("call setup() first")
        with torch.no_grad():
            _, out, _ = self.model(low.to(self.device, torch.float32))
        return out.clamp(0.0, 1.0).to(low.device)

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
        if c.iterations > 0:
            return c.iterations, f"fixed: {c.iterations} iterations, constant lr {c.lr:g}"
        per = iterations_per_epoch(n_train, c.batch)
        return c.epochs * per, f"{c.epochs} epochs x ceil({n_train}/{c.batch}) = {c.epochs * per} iterations, constant lr"

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
        device = self.device
        seed_all(seed)
        self.model = self.build_model().to(device)
        model = self.model
        sampler = ResizedLowSampler(train_pairs, c.resize, c.batch, seed, device=device, progress=progress)
        iterations, description = self.schedule(len(sampler))
        settings = TrainSettings(iterations=iterations, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay,
                                 grad_clip=c.grad_clip, milestones=(), checkpoint_every=c.checkpoint_every,
                                 val_every=c.val_every, select="last")

        def step(batch: Batch) -> dict[str, torch.Tensor]:
            return self.loss_terms(batch.low)

        meta = {"method": self.name, "version": self.version, "config": _jsonable(dataclasses.asdict(c)),
                "seed": int(seed), "schedule": {"iterations": iterations, "n_train": len(sampler),
                                                "iterations_per_epoch": sampler.iterations_per_epoch,
                                                "description": description}}
        log.info("training zero-dce for %d iterations on %d low images", iterations, len(sampler))
        trainer = Trainer(model, [p for p in model.parameters() if p.requires_grad], sampler, step, Path(out_dir),
                          settings, seed=seed, device=device, enhance_fn=self.enhance,
                          val_pairs=val_pairs if c.val_every > 0 else (), meta=meta, progress=progress,
                          desc="train zero-dce")
        ckpt = trainer.run()
        model.eval()
        return ckpt

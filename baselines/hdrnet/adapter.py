"""``hdrnet``: adapter for HDRNet (Gharbi et al., SIGGRAPH 2017). See ``SOURCE.md`` for what is followed and why.

Defaults are the official ``hdrnet/bin/train.py`` ones: model ``HDRNetCurves``, 256² low-res input, 16×16 grid
(``spatial_bin`` 16), 8 luma bins, channel multiplier 1, no batch norm; L2 loss (mean of squares, on the
unclipped output); Adam lr 1e-4 (TF defaults β = 0.9/0.999), no weight decay, constant learning rate; batch 16
of random 512×512 crops with a 256×256 nearest-neighbour copy as the low-res input; flips/rotations off.
``train.py`` has no stopping rule (it loops until killed), so the length of the "paper" run is our choice,
stated in epochs (``paper@lol`` / ``paper@fivek``) and recorded in provenance.

Inference works at any size: the low-res path always resizes to 256² (nearest, as in training), the guide and the
slicing run at full resolution, and the output is clipped to [0, 1] (as the official ``run.py``).

:class:`HDRNet` is also the base class of the DeepUPE adapter (``baselines.deepupe.adapter``), which overrides
the model, the output mapping and the loss.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from bench.errors import BenchError, unknown_name
from bench.methods.base import Method, TrainPair, check_range
from bench.training import (
    STATE_FORMAT,
    WEIGHTS_FORMAT,
    CropSampler,
    Trainer,
    TrainSettings,
    iterations_per_epoch,
    load_torch,
    seed_all,
)

from .model import HDRNET_GLOBAL_STRIDES, HDRNET_N_LOCAL, LOWRES_MODES, HDRNetModel, resize_lowres

log = logging.getLogger("bench.hdrnet")

__all__ = ["HDRNetConfig", "HDRNet"]


@dataclass
class HDRNetConfig:
    # --- structure (official model_params defaults) ---
    net_input_size: int = 256        # side of the low-res input of the coefficient network
    spatial_bin: int = 16            # grid side (16×16 cells at 256²)
    luma_bins: int = 8               # grid depth
    channel_multiplier: int = 1
    batch_norm: bool = False         # --batch_norm (off by default)
    lowres_resize: str = "nearest"   # nearest (training pipeline) | nearest-exact (run.py) | bilinear | area
    # --- optimiser (train.py) ---
    lr: float = 1e-4
    weight_decay: float = 0.0        # none in the code; the paper mentions a small one (~1e-8, not verified)
    # --- data ---
    batch: int = 16
    crop: int = 512                  # --output_resolution 512 512
    augment: bool = False            # flips/rotations exist but are off by default
    small_images: str = "clip"       # images smaller than the crop: clip the crop (LOL 600×400, FiveK-500) | reflect
    # --- schedule (constant learning rate; the length is our choice, see module doc) ---
    epochs: int = 100                # iterations = epochs × ceil(n_train / batch) unless `iterations` > 0
    iterations: int = 0              # > 0: a fixed number of iterations instead of epochs
    # --- bookkeeping ---
    checkpoint_every: int = 1000
    val_every: int = 1000            # validation PSNR on the val split (logged; 0 = off)
    select: str = "last"             # last | val_psnr (never the test set)

    def _check_common(self, m: str) -> None:
        check_range(m, "net_input_size", self.net_input_size, 4, 4096, integer=True)
        check_range(m, "spatial_bin", self.spatial_bin, 4, 4096, integer=True)
        ratio = self.net_input_size / self.spatial_bin
        if ratio < 1 or 2 ** round(math.log2(ratio)) != ratio:
            raise BenchError(f"{m}: net_input_size/spatial_bin must be a power of two "
                             f"(got {self.net_input_size}/{self.spatial_bin})")
        check_range(m, "luma_bins", self.luma_bins, 1, 256, integer=True)
        check_range(m, "channel_multiplier", self.channel_multiplier, 1, 64, integer=True)
        if self.lowres_resize not in LOWRES_MODES:
            raise unknown_name(f"lowres_resize of {m}", self.lowres_resize, list(LOWRES_MODES))
        check_range(m, "lr", self.lr, 0, 1, lo_open=True)
        check_range(m, "weight_decay", self.weight_decay, 0, 1)
        check_range(m, "batch", self.batch, 1, 4096, integer=True)
        check_range(m, "crop", self.crop, 8, 16384, integer=True)
        if self.batch_norm and self.batch < 2:
            raise BenchError(f"{m}: batch_norm needs batch >= 2 (batch statistics of one sample are undefined)")
        if self.small_images not in ("clip", "reflect"):
            raise unknown_name(f"small_images mode of {m}", self.small_images, ["clip", "reflect"])
        for name in ("epochs", "iterations", "checkpoint_every", "val_every"):
            check_range(m, name, getattr(self, name), 0, 10**9, integer=True)
        if self.iterations == 0 and self.epochs < 1:
            raise BenchError(f"{m}: set epochs >= 1 or iterations >= 1")
        if self.select not in ("last", "val_psnr"):
            raise unknown_name(f"select policy of {m}", self.select, ["last", "val_psnr"])

    def validate(self) -> None:
        self._check_common("hdrnet")


class HDRNet(Method):
    name = "hdrnet"
    display_name = "HDRNet"
    family = "supervised"
    citation = ("M. Gharbi, J. Chen, J. T. Barron, S. W. Hasinoff, and F. Durand, \"Deep Bilateral Learning for "
                "Real-Time Image Enhancement,\" ACM Transactions on Graphics (Proc. SIGGRAPH), vol. 36, no. 4, "
                "pp. 118:1-118:12, 2017. doi:10.1145/3072959.3073592")
    bibkey = "gharbi2017deep"
    version = 1
    trainable = True
    pad_multiple = 1
    uses_pairs = True
    Config = HDRNetConfig
    # the coefficient-network layout (HDRNet: 2 global convs, 2 local convs)
    global_strides: tuple[int, ...] = HDRNET_GLOBAL_STRIDES
    n_local: int = HDRNET_N_LOCAL
    official_parameters: int = 482_080
    profiles = {
        # a few iterations on tiny crops: exercises every code path (the low-res path is always 256²)
        "smoke": {"crop": 48, "batch": 2, "iterations": 3, "checkpoint_every": 2, "val_every": 0},
        # CPU-feasible on the demo set (~30 s on 2 idle cores); lr 10x the official 1e-4 so that 100 steps move it
        "quick": {"crop": 128, "batch": 4, "iterations": 100, "lr": 1e-3, "checkpoint_every": 50, "val_every": 100},
        # the official recipe; lengths are our choice (train.py has no stopping rule): ~25-28k iterations at batch 16
        "paper": {},
        "paper@lol": {"epochs": 1000},      # LOL 400 pairs: 25 iterations/epoch -> 25,000 iterations
        "paper@fivek": {"epochs": 100},     # FiveK 4500 pairs: 282 iterations/epoch -> 28,200 iterations
    }

    def __init__(self, config: HDRNetConfig | None = None):
        super().__init__(config)
        self.config.validate()
        self.model: HDRNetModel | None = None
        self.weights_info: dict[str, Any] = {"weights_kind": "none"}
        self.trained: dict[str, Any] | None = None

    @classmethod
    def official_layout(cls):
        from .official import layout

        return layout()

    # ---- model ------------------------------------------------------------------------------
    def structure(self) -> dict[str, Any]:
        c = self.config
        return {"net_input_size": int(c.net_input_size), "spatial_bin": int(c.spatial_bin),
                "luma_bins": int(c.luma_bins), "channel_multiplier": int(c.channel_multiplier),
                "batch_norm": bool(c.batch_norm), "global_convs": len(self.global_strides),
                "local_convs": int(self.n_local)}

    def build_model(self) -> HDRNetModel:
        """A freshly initialised network for this config (consumes the global torch RNG)."""
        c = self.config
        return HDRNetModel(luma_bins=c.luma_bins, channel_multiplier=c.channel_multiplier, spatial_bin=c.spatial_bin,
                           net_input_size=c.net_input_size, batch_norm=c.batch_norm,
                           global_strides=self.global_strides, n_local=self.n_local)

    def lowres(self, x: torch.Tensor) -> torch.Tensor:
        return resize_lowres(x, self.config.net_input_size, self.config.lowres_resize)

    def network_output(self, low: torch.Tensor) -> torch.Tensor:
        """The network's raw full-resolution output for a batch of inputs (what the loss sees)."""
        assert self.model is not None
        return self.model(self.lowres(low), low)

    def output_from_network(self, low: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """The enhanced image from the raw output at test time (HDRNet: clip to [0, 1], as ``run.py``)."""
        return raw.clamp(0.0, 1.0)

    def loss_terms(self, low: torch.Tensor, high: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training loss on a batch: HDRNet's L2 (``metrics.l2_loss``: mean of squares, unclipped output)."""
        out = self.network_output(low)
        return {"loss": torch.mean((out - high) ** 2)}

    # ---- lifecycle ---------------------------------------------------------------------------
    def setup(self, device: torch.device, weights: Path | None = None) -> dict[str, Any]:
        self.device = torch.device(device)
        self.model = self.build_model()
        self.weights_info = {"weights_kind": "none"}
        self.trained = None
        if weights is not None:
            self._load(Path(weights))
        self.model.to(self.device).eval()
        return self.provenance()

    def _load(self, path: Path) -> None:
        from bench.fsutil import sha256_file

        assert self.model is not None
        obj = load_torch(path)
        extra: dict[str, Any] = {}
        if isinstance(obj, Mapping) and (obj.get("meta") or {}).get("weights_source") == "official":
            # converted by bench weights import official: the layout checked every shape against this structure
            from bench.methods.torch_method import official_import_facts

            meta = obj.get("meta") or {}
            if meta.get("method") != self.name:
                raise BenchError(f"{path} holds weights of method {meta.get('method')!r}, not {self.name}")
            state, kind, extra = obj["model"], "official_import", official_import_facts(meta)
        elif isinstance(obj, Mapping) and obj.get("format") in (WEIGHTS_FORMAT, STATE_FORMAT):
            meta = obj.get("meta") or {}
            if meta.get("method") != self.name:
                raise BenchError(f"{path} holds weights of method {meta.get('method')!r}, not {self.name}")
            have, want = meta.get("structure") or {}, self.structure()
            diff = [f"{k}={have.get(k)!r} (this run: {v!r})" for k, v in want.items() if have.get(k) != v]
            if diff:
                raise BenchError(f"{path} was trained with {', '.join(diff)}; pass matching --set options")
            state = obj["model"]
            self.trained = {"iteration": obj.get("iteration"), "selected": obj.get("selected", "state"),
                            "seed": meta.get("seed"), "schedule": meta.get("schedule")}
            kind = "bench_checkpoint" if obj["format"] == WEIGHTS_FORMAT else "bench_train_state"
        elif isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state, kind = obj, "state_dict"
        else:
            raise BenchError(f"{path} is neither a checkpoint of {self.name} nor a state dict")
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise BenchError(f"{path}: {str(e).strip().splitlines()[0][:200]}") from None
        self.weights_info = {"weights_kind": kind, "weights_sha256": sha256_file(path), **extra}

    def enhance(self, low: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("call setup() first")
        with torch.no_grad():
            return self._enhance_tensor(low.to(self.device))

    def _enhance_tensor(self, low: torch.Tensor) -> torch.Tensor:
        assert self.model is not None
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.output_from_network(low, self.network_output(low))
        finally:
            self.model.train(was_training)

    # ---- provenance -------------------------------------------------------------------------
    def schedule(self, n_train: int) -> int:
        c = self.config
        return c.iterations if c.iterations > 0 else c.epochs * iterations_per_epoch(n_train, c.batch)

    def schedule_description(self) -> str:
        c = self.config
        if c.iterations > 0:
            return f"fixed: {c.iterations} iterations, constant lr {c.lr:g}"
        return f"{c.epochs} epochs x ceil(n_train/{c.batch}) iterations, constant lr {c.lr:g}"

    def provenance(self) -> dict[str, Any]:
        c = self.config
        out: dict[str, Any] = {
            "implementation": "PyTorch re-implementation of the official TensorFlow HDRNetCurves (google/hdrnet)",
            "structure": ", ".join(f"{k}={v}" for k, v in self.structure().items()),
            "slicing": "trilinear, cell-centred (x+0.5)·GW/W, border-clamped; grid_sample(align_corners=False, "
                       "border); exact tent in depth (official: smoothed tent, <=1e-4 forward difference)",
            "lowres_input": f"{c.net_input_size}x{c.net_input_size}, {c.lowres_resize} resize",
            "loss": "L2 (mean squared error on the unclipped output)",
            "optimizer": f"Adam lr={c.lr:g}, betas=(0.9, 0.999), weight_decay={c.weight_decay:g}",
            "data": f"batch {c.batch}, {c.crop}px random crops (small images: {c.small_images}), "
                    f"augmentation {'on' if c.augment else 'off'}",
            "schedule": self.schedule_description() + " (length not given by the official code: our choice)",
            "parameters_official": self.official_parameters,
            "faithful": True,
            **self.weights_info,
        }
        if self.trained:
            out["trained"] = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                              for k, v in self.trained.items()}
        return out

    # ---- training ---------------------------------------------------------------------------
    def train(self, train_pairs: Sequence[TrainPair], val_pairs: Sequence[TrainPair], out_dir: Path, seed: int,
              progress: bool = True) -> Path:
        c = self.config
        device = self.device
        seed_all(seed)
        self.model = self.build_model().to(device)
        model = self.model
        sampler = CropSampler(train_pairs, c.crop, c.batch, seed, use_high=True, augment=c.augment,
                              small=c.small_images, device=device, progress=progress)
        iterations = self.schedule(len(sampler))
        settings = TrainSettings(iterations=iterations, lr=c.lr, weight_decay=c.weight_decay,
                                 checkpoint_every=c.checkpoint_every, val_every=c.val_every, select=c.select)

        def step(batch):
            return self.loss_terms(batch.low, batch.high)

        meta = {
            "method": self.name, "version": self.version, "structure": self.structure(), "seed": int(seed),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(c).items()},
            "schedule": {"iterations": iterations, "n_train": len(sampler), "crop": sampler.crop,
                         "iterations_per_epoch": iterations_per_epoch(len(sampler), c.batch),
                         "description": self.schedule_description()},
        }
        log.info("training %s for %d iterations on %d images (crop %d)", self.name, iterations, len(sampler),
                 sampler.crop)
        trainer = Trainer(model, [p for p in model.parameters() if p.requires_grad], sampler, step, Path(out_dir),
                          settings, seed=seed, device=device, enhance_fn=self._enhance_tensor, val_pairs=val_pairs,
                          meta=meta, progress=progress, desc=f"train {self.name}")
        ckpt = trainer.run()
        model.eval()
        return ckpt

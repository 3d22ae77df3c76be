"""``enlightengan``: adapter for EnlightenGAN (Jiang et al., TIP 2021). See ``SOURCE.md``.

Defaults are the released ``VITA-Group/EnlightenGAN`` training script (``scripts/script.py``): the attention-guided
U-Net generator, the global relativistic-LSGAN discriminator (5 layers) and the local LSGAN patch discriminator
(4 layers) on 1 + 5 random 32² patches, the self feature-preserving loss on instance-normalised VGG-16 relu5_1
features (computed without the fourth max-pool, the official ``--vgg_maxpooling`` being off) of the output and the
input, on the whole crop and on the patches, weight 1; Adam lr 1e-4, β1 0.5; batch 32 of 320² crops with h/v flips
and the ``--vary`` darkening; 100 epochs at constant lr then 100 of linear decay to zero.

Training is unpaired: domain A is the training split's low images, domain B its normal-light (reference) images,
each visited in its own random order with its own crops (see ``gan.UnpairedSampler``). ``uses_pairs`` is False:
no loss ever compares an output with its own reference.

VGG-16 (``bench.vgg_features``): ``vgg_weights=auto`` uses the file recorded by ``bench weights import vgg16``
(torchvision's ``vgg16-397923af.pth`` or the Caffe-converted ``vgg16.weight`` the official code loads) and
otherwise a documented substitute, a seeded random VGG-16; the choice is recorded in the checkpoint and in the
provenance (``faithful: False`` with a ``substitutes`` entry for the substitute).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from bench.errors import BenchError, unknown_name
from bench.fsutil import jsonable
from bench.methods.base import TrainPair, check_range
from bench.methods.torch_method import TorchMethod
from bench.training import derive_seed, iterations_per_epoch

from .gan import EnlightenGANStep, GanSettings, GanTrainer, UnpairedSampler
from .model import (
    ATTENTION_KINDS,
    D_PARAMETERS,
    DP_PARAMETERS,
    G_PARAMETERS,
    AttentionUNet,
    NoNormDiscriminator,
    attention_map,
    weights_init,
)

log = logging.getLogger("bench.enlightengan")

__all__ = ["EnlightenGAN", "EnlightenGANConfig"]

NAME = "enlightengan"
VGG_PREPROCESS = ("auto", "imagenet", "caffe", "caffe_nomean")


@dataclass
class EnlightenGANConfig:
    # --- generator / attention ---
    attention: str = "luminance"     # luminance (official data loader) | max_rgb
    # test time: bilinear upsampling with aligned corners, as the release's PyTorch 0.3.1 F.upsample did (the
    # official-weights pipeline); False is PyTorch >= 0.4's, which our training uses
    upsample_align_corners: bool = False
    # --- self feature-preserving loss ---
    vgg_weights: str = "auto"        # auto (imported file, else substitute) | substitute | path to a VGG-16 state dict
    vgg_layer: str = "relu5_1"       # official --vgg_choose relu5_1
    vgg_pool4: bool = False          # official --vgg_maxpooling off: relu5_1 without the 4th max-pool
    vgg_instance_norm: bool = True   # official: --no_vgg_instance not set
    vgg_preprocess: str = "auto"     # auto: caffe_nomean for the Caffe file (official vgg_preprocess), else imagenet
    w_vgg: float = 1.0               # official --vgg 1
    # --- discriminators ---
    use_ragan: bool = True           # global D relativistic (--use_ragan); the patch D is plain LSGAN (--hybrid_loss)
    n_layers_d: int = 5
    n_layers_patch_d: int = 4
    patch: int = 32                  # --patchSize
    n_patches: int = 5               # --patchD_3 (plus the one --patchD patch)
    # --- optimiser and schedule ---
    lr: float = 1e-4
    beta1: float = 0.5
    niter: int = 100                 # epochs at constant lr
    niter_decay: int = 100           # epochs of linear decay to 0
    iterations: int = 0              # > 0: this many iterations (the lr rule still counts epochs of the data)
    # --- data ---
    batch: int = 32
    crop: int = 320                  # --fineSize
    flips: bool = True
    vary: bool = True                # --vary 1: darken the input ×1/2…1/4 with p = 0.5
    low_times: int = 200
    high_times: int = 400
    # --- bookkeeping ---
    checkpoint_every: int = 1000

    def validate(self) -> None:
        m = NAME
        if self.attention not in ATTENTION_KINDS:
            raise unknown_name("attention of enlightengan", self.attention, list(ATTENTION_KINDS))
        if self.vgg_preprocess not in VGG_PREPROCESS:
            raise unknown_name("vgg_preprocess of enlightengan", self.vgg_preprocess, list(VGG_PREPROCESS))
        from bench.vgg_features import LAYERS

        if self.vgg_layer not in LAYERS:
            raise unknown_name("vgg_layer of enlightengan", self.vgg_layer, LAYERS)
        check_range(m, "w_vgg", self.w_vgg, 0, 1e6)
        check_range(m, "n_layers_d", self.n_layers_d, 1, 8, integer=True)
        check_range(m, "n_layers_patch_d", self.n_layers_patch_d, 1, 8, integer=True)
        check_range(m, "patch", self.patch, 8, 4096, integer=True)
        check_range(m, "n_patches", self.n_patches, 0, 64, integer=True)
        check_range(m, "lr", self.lr, 0, 1, lo_open=True)
        check_range(m, "beta1", self.beta1, 0, 0.999999)
        for name in ("niter", "niter_decay", "iterations", "checkpoint_every"):
            check_range(m, name, getattr(self, name), 0, 10**9, integer=True)
        if self.iterations == 0 and self.niter + self.niter_decay < 1:
            raise BenchError(f"{m}: set niter + niter_decay >= 1 or iterations >= 1")
        check_range(m, "batch", self.batch, 1, 4096, integer=True)
        check_range(m, "crop", self.crop, 16, 8192, integer=True)
        if self.patch > self.crop:
            raise BenchError(f"{m}: patch={self.patch} is larger than crop={self.crop}")
        check_range(m, "low_times", self.low_times, 100, 10**6, integer=True)
        check_range(m, "high_times", self.high_times, self.low_times, 10**6, integer=True)


class EnlightenGAN(TorchMethod):
    name = NAME
    display_name = "EnlightenGAN"
    family = "unpaired"
    citation = ("Y. Jiang, X. Gong, D. Liu, Y. Cheng, C. Fang, X. Shen, J. Yang, P. Zhou, and Z. Wang, "
                "\"EnlightenGAN: Deep Light Enhancement Without Paired Supervision,\" IEEE Trans. Image Process., "
                "vol. 30, pp. 2340-2349, 2021.")
    bibkey = "jiang2021enlightengan"
    version = 1
    test_time_options = frozenset({"upsample_align_corners"})
    trainable = True
    pad_multiple = 1  # the generator pads (centred reflection, multiple of 16) and crops back itself
    uses_pairs = False
    Config = EnlightenGANConfig
    # an official netG_A state dict (latest_net_G_A.pth; saved through DataParallel: "module." prefix)
    official_key_suffix = "conv10.weight"
    official_description = "an official EnlightenGAN generator state dict (conv1_1 … conv10)"
    profiles = {
        # two alternating G/D steps at batch 1 on 64² crops with the official 32² patches (every code path)
        "smoke": {"batch": 1, "crop": 64, "iterations": 2, "checkpoint_every": 1},
        # CPU-feasible on the demo set (5 low + 5 normal-light images): batch 4 of 128² crops,
        # 25 + 25 epochs of 2 iterations = 100 alternating steps
        "quick": {"batch": 4, "crop": 128, "niter": 25, "niter_decay": 25, "checkpoint_every": 50},
        # the released script: batch 32, 320² crops, 100 + 100 epochs, lr 1e-4, beta1 0.5
        "paper": {"batch": 32, "crop": 320, "niter": 100, "niter_decay": 100, "iterations": 0, "lr": 1e-4},
        "paper@lol": {"niter": 100, "niter_decay": 100},
        "paper@fivek": {"niter": 100, "niter_decay": 100},
    }

    @classmethod
    def official_layout(cls):
        from .official import layout

        return layout()

    def __init__(self, config: EnlightenGANConfig | None = None):
        super().__init__(config)
        self.vgg_info: dict[str, Any] | None = None

    # ---- model ------------------------------------------------------------------------------
    def build_model(self) -> AttentionUNet:
        g = AttentionUNet()
        g.apply(weights_init)
        return g

    def build_discriminators(self) -> tuple[NoNormDiscriminator, NoNormDiscriminator]:
        c = self.config
        d, dp = NoNormDiscriminator(3, 64, c.n_layers_d), NoNormDiscriminator(3, 64, c.n_layers_patch_d)
        d.apply(weights_init)
        dp.apply(weights_init)
        return d, dp

    def build_vgg(self, device: torch.device):
        from bench.vgg_features import vgg16_features

        c = self.config
        kw: dict[str, Any] = {"drop_pools": () if c.vgg_pool4 else ("pool4",)}
        if c.vgg_weights == "substitute":
            kw["use_imported"] = False
        elif c.vgg_weights != "auto":
            kw["weights"] = c.vgg_weights
        probe_pre = c.vgg_preprocess
        vgg, info = vgg16_features(device, c.vgg_layer, preprocess="imagenet" if probe_pre == "auto" else probe_pre,
                                   **kw)
        if probe_pre == "auto" and info["kind"] == "caffe_vgg16":
            # the official vgg_preprocess: BGR, [0, 255], no mean subtraction (--vgg_mean off)
            vgg, info = vgg16_features(device, c.vgg_layer, preprocess="caffe_nomean", **kw)
        return vgg, info

    def training_identity(self) -> dict[str, Any]:
        """The VGG-16 the perceptual loss will use, so importing real weights retrains instead of reusing
        weights trained against the random substitute."""
        c = self.config
        if c.vgg_weights == "substitute":
            return {"vgg": "substitute"}
        if c.vgg_weights != "auto":
            from bench.fsutil import sha256_file

            return {"vgg_file_sha256": sha256_file(c.vgg_weights)}
        from bench.fsutil import read_yaml
        from bench.weights import VGG_RECORD, weights_dir

        record = weights_dir() / VGG_RECORD
        return {"vgg_file_sha256": (read_yaml(record) or {}).get("source_sha256") if record.exists() else None}

    def checkpoint_loaded(self, checkpoint: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.vgg_info = meta.get("vgg")

    def load_model_state(self, path: Path, state: Mapping[str, Any], key: str | None = None) -> None:
        # Not strict, unlike the other adapters: PyTorch 0.4-era checkpoints have no BatchNorm
        # num_batches_tracked buffers; nothing else may be missing
        assert self.model is not None
        result = self.model.load_state_dict(state[key] if key is not None else state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise BenchError(f"{path}: state dict does not fit the EnlightenGAN generator (missing {missing[:3]}, "
                             f"unexpected {result.unexpected_keys[:3]})")

    def forward_enhance(self, x: torch.Tensor) -> torch.Tensor:
        self.model.align_corners = bool(self.config.upsample_align_corners)  # type: ignore[union-attr]
        out, _ = self.model(x * 2 - 1, attention_map(x, self.config.attention))  # type: ignore[misc]
        return (out + 1) / 2

    # ---- provenance -------------------------------------------------------------------------
    def schedule(self, n_train: int) -> tuple[int, int, str]:
        c = self.config
        per = iterations_per_epoch(n_train, c.batch)
        if c.iterations > 0:
            return c.iterations, per, f"fixed: {c.iterations} iterations ({per} per epoch for the lr rule)"
        total = (c.niter + c.niter_decay) * per
        return total, per, (f"{c.niter} + {c.niter_decay} epochs x ceil({n_train}/{c.batch}) = {total} iterations, "
                            "linear decay to 0 over the last niter_decay epochs")

    def _defaults_differ(self) -> list[str]:
        c, d = self.config, EnlightenGANConfig()
        keys = ("attention", "vgg_layer", "vgg_pool4", "vgg_instance_norm", "w_vgg", "use_ragan", "n_layers_d",
                "n_layers_patch_d", "patch", "n_patches", "beta1", "vary", "flips")
        return [k for k in keys if getattr(c, k) != getattr(d, k)]

    def provenance(self) -> dict[str, Any]:
        c = self.config
        vgg = self.vgg_info
        substitutes: list[str] = []
        if vgg is None:
            vgg_line: Any = f"not resolved yet (vgg_weights={c.vgg_weights}; resolved when training starts)"
        else:
            vgg_line = vgg
            if not vgg.get("faithful"):
                substitutes += list(vgg.get("substitutes") or [
                    f"VGG-16 for the self feature-preserving loss: {vgg.get('kind')} file not verified as the "
                    f"official weights ({vgg.get('faithful_reason', 'no reason recorded')})"])
        changed = self._defaults_differ()
        faithful = bool(vgg is not None and vgg.get("faithful")) and not changed
        return {
            "implementation": "PyTorch re-implementation of the official VITA-Group/EnlightenGAN code "
                              "(Unet_resize_conv, NoNormDiscriminator, single_model.py losses, scripts/script.py)",
            "faithful": faithful,
            "substitutes": substitutes,
            "options_changed_from_official": changed,
            "vgg16": vgg_line,
            "parameters": {"generator": G_PARAMETERS, "global_discriminator": D_PARAMETERS,
                           "patch_discriminator": DP_PARAMETERS},
            "losses": (f"global {'relativistic ' if c.use_ragan else ''}LSGAN + patch LSGAN on 1+{c.n_patches} "
                       f"{c.patch}x{c.patch} patches + {c.w_vgg:g} x self feature-preserving "
                       f"({'instance-normalised ' if c.vgg_instance_norm else ''}{c.vgg_layer}"
                       f"{'' if c.vgg_pool4 else ', no pool4'}) on image and patches"),
            "attention": f"1 - {c.attention} of the (darkened) input",
            "training_input": (f"unpaired: low images vs the training split's normal-light images, independently "
                               f"shuffled and cropped; batch {c.batch}, crop {c.crop}, flips {c.flips}, vary {c.vary}"),
            "optimizer": f"Adam lr {c.lr:g} betas ({c.beta1:g}, 0.999) for G, D and patch D",
            "inference": "centred reflection padding to a multiple of 16 inside the generator, BatchNorm in eval mode",
            **self.weights_info,
        }

    # ---- training ---------------------------------------------------------------------------
    def train(self, train_pairs: Sequence[TrainPair], val_pairs: Sequence[TrainPair], out_dir: Path, seed: int,
              progress: bool = True) -> Path:
        c = self.config
        c.validate()
        device = self.device
        highs = [TrainPair(p.id, p.high_path, None) for p in train_pairs if p.high_path is not None]
        lows = [TrainPair(p.id, p.low_path, None) for p in train_pairs]
        if not highs:
            raise BenchError("enlightengan trains against normal-light images: the training split has no reference "
                             "images to use as the unpaired normal-light domain")
        self.fresh_model(derive_seed(seed, "init"))
        d, dp = (m.to(device) for m in self.build_discriminators())
        vgg, self.vgg_info = self.build_vgg(device) if c.w_vgg > 0 else (None, {"kind": "none", "faithful": False})
        sampler = UnpairedSampler(lows, highs, c.crop, c.batch, seed, flips=c.flips, vary=c.vary,
                                  low_times=c.low_times, high_times=c.high_times, device=device, progress=progress)
        iterations, per, description = self.schedule(len(sampler))
        settings = GanSettings(iterations=iterations, iterations_per_epoch=per, lr=c.lr, beta1=c.beta1,
                               niter=c.niter, niter_decay=c.niter_decay, checkpoint_every=c.checkpoint_every)
        step = EnlightenGANStep(self.model, d, dp, vgg, patch=c.patch, n_patches=c.n_patches, w_vgg=c.w_vgg,
                                vgg_instance_norm=c.vgg_instance_norm, use_ragan=c.use_ragan, attention=c.attention)
        meta = self.checkpoint_meta(seed, vgg=jsonable(self.vgg_info),
                                    schedule={"iterations": iterations, "n_low": len(lows), "n_high": len(highs),
                                              "iterations_per_epoch": per, "description": description})
        log.info("training enlightengan for %d iterations (%d low, %d normal-light images; VGG %s)", iterations,
                 len(lows), len(highs), self.vgg_info.get("kind"))
        trainer = GanTrainer(self.model, d, dp, step, sampler, Path(out_dir), settings, seed=seed, meta=meta,
                             device=device, progress=progress, n_patches=c.n_patches, patch=c.patch)
        ckpt = trainer.run()
        self.model.eval()
        return ckpt

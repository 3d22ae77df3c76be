"""``ours``: the DSN adapter (training, checkpoints, official weights, Table 2 variants).

Defaults follow ``dsn_reference.md`` §2 and decisions D4-D7: the official network (8 invertible blocks,
RRAM subnets with three unshared units), L2 loss summed over C×H×W and averaged over the batch in both
directions (λ_H = λ_L = 1), Adam (lr 2e-4, betas 0.9/0.999, coupled weight decay 1e-5), gradient-norm
clip 10, batch 2 of 180² crops with the 8 dihedral augmentations, and the *paper's* schedule expressed
in epochs (iterations = epochs × ceil(n_train / batch); LOL 250 epochs halving every 100, FiveK 200
halving every 50 -- the ``paper@lol`` / ``paper@fivek`` profile layers), the LR stepped per iteration.
``schedule=code`` is the official configs' iteration schedule. The last checkpoint is used (D5).

Encoder E/D (D1): ``encoder=auto`` uses the VGG-16 conv1 tensors imported with
``bench weights import vgg16 FILE`` if there are any, else the closed-form fallback (bench/dsn/NOTES.md);
``vgg16`` insists on imported ones; ``fallback`` and ``haar`` force those. ``validate()`` resolves the choice
into ``encoder_tensors`` (family:kind:sha256 of the tensors), which is part of the training identity, so
importing other VGG weights trains anew instead of reusing weights trained around other tensors.

Variants: ``VARIANTS`` maps the Table 2 row names (plus "full") to option overrides; ``--set variant=NAME``
applies one, and ``validate()`` always relabels ``variant`` with the preset the options actually match
("custom" if none), which is what the report reads (``config.variant``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..errors import BenchError, unknown_name
from ..fsutil import jsonable
from ..methods.base import TrainPair, check_betas, check_range
from ..methods.torch_method import TorchMethod
from ..training import CropSampler, Trainer, TrainSettings, epoch_schedule, iterations_per_epoch
from ..amp import AMP_MODES, inference as amp_inference
from .losses import LOSSES, get_loss, quantize_ste
from .memory import MEMORY_MODES
from .allocator import ALLOCATOR_CHOICES

log = logging.getLogger("bench.dsn")

__all__ = ["DSNConfig", "DSNMethod", "VARIANTS", "ALT_VARIANTS", "TABLE2", "ENCODER_CHOICES", "SCHEDULES",
           "variant_of", "resolve_encoder"]

ENCODER_CHOICES = ("auto", "vgg16", "fallback", "haar")
SCHEDULES = ("paper", "code", "fixed")

#: Table 2 rows (plus "full") -> option overrides. Which subnet each row used is our reading (bench/dsn/NOTES.md).
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "l1_loss": {"loss": "l1"},
    "psnr_loss": {"loss": "psnr"},
    "one_way": {"backward_loss": False},
    "no_attention": {"subnet": "no_attention"},
    "resblk": {"subnet": "resblk"},
    "se_resblk": {"subnet": "se_resblk"},
    "densenet": {"subnet": "dense"},
    "no_rl": {"subnet": "chain"},
    "two_round_rl": {"rounds": 2},
    "four_ib": {"n_blocks": 4},
    "haar": {"encoder": "haar"},
}
#: Alternative readings of rows the paper leaves ambiguous (not in Table 2 by default).
ALT_VARIANTS: dict[str, dict[str, Any]] = {
    "tied": {"subnet": "rram_tied"},                          # the paper's "t rounds without more parameters"
    "no_rl_one_unit": {"rounds": 1},                          # w/o RL as a single RSCA unit
    "two_round_rl_tied": {"subnet": "rram_tied", "rounds": 2},
}
#: Table 2 of the paper: variant -> (row label, ΔPSNR, ΔSSIM) on LOL, relative to DSN (21.71 / 0.834).
TABLE2: dict[str, tuple[str, float, float]] = {
    "full": ("DSN (ours)", 0.0, 0.0),
    "l1_loss": ("L2 → L1 loss", -0.98, -0.024),
    "psnr_loss": ("L2 → PSNR loss", -0.20, -0.007),
    "one_way": ("w/o backward loss", -1.28, -0.014),
    "no_attention": ("w/o attention", -3.10, -0.038),
    "resblk": ("RESBLK", -3.50, -0.067),
    "se_resblk": ("SE-RESBLK", -1.32, -0.034),
    "densenet": ("DenseNet", -2.74, -0.039),
    "no_rl": ("w/o RL", -1.08, -0.008),
    "two_round_rl": ("two-round RL", -0.42, -0.009),
    "four_ib": ("4 IB", -1.42, -0.026),
    "haar": ("Haar wavelets", -1.74, -0.027),
}
_ALL_VARIANTS = {**VARIANTS, **ALT_VARIANTS}
# the options that define a variant (everything else -- optimiser, data, schedule -- is not a variant)
_VARIANT_KEYS = ("loss", "backward_loss", "subnet", "rounds", "n_blocks", "lambda_h", "lambda_l")

_LOL_CODE = (20_000, 40_000, 60_000, 80_000, 100_000)
_FIVEK_CODE = (150_000, 300_000, 450_000, 600_000, 750_000)


@dataclass
class DSNConfig:
    # --- structure (bench/dsn/model.py) ---
    subnet: str = "rram"            # rram | rram_tied | chain | no_attention | resblk | se_resblk | dense
    n_blocks: int = 8
    rounds: int = 3
    encoder: str = "auto"           # auto | vgg16 | fallback | haar
    # --- loss ---
    loss: str = "l2"                # l2 | l1 | psnr (both directions)
    backward_loss: bool = True      # False = "w/o backward loss" (one-way)
    lambda_h: float = 1.0
    lambda_l: float = 1.0
    # --- optimiser ---
    lr: float = 2e-4
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 1e-5      # coupled (Adam's L2 term), as the official code
    grad_clip: float = 10.0         # total gradient norm; 0 = off
    # --- data ---
    batch: int = 2
    crop: int = 180
    augment: bool = True            # flips + transpose, p = 0.5 each
    small_images: str = "reflect"   # reflect | clip (images smaller than the crop; bench/training.py)
    # --- schedule ---
    schedule: str = "paper"         # paper (epochs) | code (official iterations) | fixed (iterations, milestones)
    epochs: int = 250               # paper: LOL 250 (paper@lol), FiveK 200 (paper@fivek)
    halve_every_epochs: int = 100   # paper: LOL 100, FiveK 50
    gamma: float = 0.5
    code_iterations: int = 500_000  # code: LOL 500k, FiveK 1M
    code_milestones: tuple = _LOL_CODE
    iterations: int = 0             # fixed
    milestones: tuple = ()          # fixed
    # --- bookkeeping ---
    checkpoint_every: int = 1000
    val_every: int = 1000           # validation PSNR on the val split (logged; 0 = off)
    select: str = "last"            # last | val_psnr (D5: never the test set)
    variant: str = "full"           # a VARIANTS / ALT_VARIANTS name; relabelled by validate()
    encoder_tensors: str = ""       # set by validate(): family:kind:sha256 of the E/D tensors in use
    # --- precision (bench/amp.py; fp32 = "off" is the protocol, anything else is flagged) ---
    amp: str = "off"                # training autocast: off | bf16 | fp16 (fp16 with a gradient scaler)
    amp_inference: str = "off"      # inference autocast (a test-time option: changing it never retrains)
    inference: str = "fast"         # fast (in place; channels-last on CPU) | plain (the straightforward forward)
    allocator: str = "default"      # default (= reuse_heap on the CPU fast path where torch uses huge pages) |
                                    # reuse_heap | glibc (glibc's own settings); process-wide, bit-identical:
                                    # bench/dsn/allocator.py, bench/large_pages.py
    # --- training memory (bench/dsn/memory.py): what backward keeps of the invertible blocks ---
    memory: str = "full"            # full (plain autograd) | blocks (recompute each block) | reversible (inverses)
    # --- training speed (bench/train_speed.py; all off = the paper's fp32 recipe) ---
    channels_last_train: bool = False  # parameters and batches channels-last while training
    compile: str = "off"            # off | default | reduce-overhead | max-autotune (torch.compile; CUDA only)
    optimizer_impl: str = "default"  # default | foreach | fused (torch.optim.Adam)
    loader_workers: int = 0         # threads cutting the crops ahead of the step (bit-identical batches)
    tf32: bool = False              # TF32 convolutions/matmuls on CUDA while training (False = forced off)

    def validate(self) -> None:
        from .model import SUBNETS, make_subnet_constructor

        m = "ours"
        if self.variant not in _ALL_VARIANTS:
            if self.variant != "custom":
                raise unknown_name("variant of ours", self.variant, list(_ALL_VARIANTS))
        else:
            defaults = DSNConfig()
            for key, value in _ALL_VARIANTS[self.variant].items():
                current = getattr(self, key)
                if current != value and current != getattr(defaults, key):
                    raise BenchError(f"ours: variant {self.variant} sets {key}={value!r}, but {key}={current!r} was given")
                setattr(self, key, value)
        if self.subnet not in SUBNETS:
            raise unknown_name("subnet of ours", self.subnet, list(SUBNETS))
        if self.encoder not in ENCODER_CHOICES:
            raise unknown_name("encoder of ours", self.encoder, list(ENCODER_CHOICES))
        if self.loss not in LOSSES:
            raise unknown_name("loss of ours", self.loss, list(LOSSES))
        if self.schedule not in SCHEDULES:
            raise unknown_name("schedule of ours", self.schedule, list(SCHEDULES))
        if self.small_images not in ("reflect", "clip"):
            raise unknown_name("small_images mode of ours", self.small_images, ["reflect", "clip"])
        if self.select not in ("last", "val_psnr"):
            raise unknown_name("select policy of ours", self.select, ["last", "val_psnr"])
        if self.allocator not in ALLOCATOR_CHOICES:
            raise unknown_name("allocator option of ours", self.allocator, list(ALLOCATOR_CHOICES))
        if self.inference not in ("fast", "plain"):
            raise unknown_name("inference path of ours", self.inference, ["fast", "plain"])
        from ..train_speed import check_speed_options

        check_speed_options(self.compile, self.optimizer_impl, self.loader_workers, who="ours")
        for name in ("amp", "amp_inference"):
            if getattr(self, name) not in AMP_MODES:
                raise unknown_name(f"{name} mode of ours", getattr(self, name), list(AMP_MODES))
        if self.memory not in MEMORY_MODES:
            raise unknown_name("memory option of ours", self.memory, list(MEMORY_MODES))
        if self.memory == "reversible" and self.amp != "off":
            raise BenchError(f"ours: memory=reversible needs amp=off (inputs rebuilt from {self.amp} outputs lose "
                             "their low bits); use memory=blocks with amp")
        check_range(m, "n_blocks", self.n_blocks, 1, 64, integer=True)
        check_range(m, "rounds", self.rounds, 1, 16, integer=True)
        try:
            make_subnet_constructor(self.subnet, self.rounds)
        except ValueError as e:
            raise BenchError(f"ours: {e}") from None
        for name in ("lambda_h", "lambda_l", "weight_decay", "grad_clip"):
            check_range(m, name, getattr(self, name), 0, 1e6)
        check_range(m, "lr", self.lr, 0, 1, lo_open=True)
        check_range(m, "gamma", self.gamma, 0, 1, lo_open=True)
        self.betas = check_betas(m, self.betas)
        check_range(m, "batch", self.batch, 1, 4096, integer=True)
        check_range(m, "crop", self.crop, 1, 16384, integer=True)
        for name in ("epochs", "halve_every_epochs", "code_iterations", "iterations", "checkpoint_every", "val_every"):
            check_range(m, name, getattr(self, name), 0, 10**9, integer=True)
        self.milestones = tuple(int(v) for v in self.milestones)
        self.code_milestones = tuple(int(v) for v in self.code_milestones)
        if self.schedule == "fixed" and self.iterations < 1:
            raise BenchError("ours: schedule=fixed needs iterations >= 1")
        if self.schedule == "paper" and self.epochs < 1:
            raise BenchError("ours: schedule=paper needs epochs >= 1")
        if self.schedule == "code" and self.code_iterations < 1:
            raise BenchError("ours: schedule=code needs code_iterations >= 1")
        if not self.backward_loss and self.lambda_l != 1.0:
            raise BenchError("ours: lambda_l has no effect with backward_loss=false; leave it at 1")
        self.variant = variant_of(self)
        family, _, info = resolve_encoder(self.encoder)
        self.encoder_tensors = f"{family}:{info['kind']}:{info['tensors_sha256']}"


def variant_of(config: DSNConfig) -> str:
    """The preset the variant-defining options match (Table 2 names first), else "custom"."""
    defaults = DSNConfig()
    for name, overrides in _ALL_VARIANTS.items():
        want = {k: overrides.get(k, getattr(defaults, k)) for k in _VARIANT_KEYS}
        if all(getattr(config, k) == v for k, v in want.items()) and \
                (config.encoder == "haar") == (overrides.get("encoder") == "haar"):
            return name
    return "custom"


def resolve_encoder(choice: str) -> tuple[str, tuple | None, dict[str, Any]]:
    """``(family, encoder_weights for DSN or None, info)`` for an encoder choice (see module doc)."""
    from ..weights import imported_vgg16
    from .encoder import fallback_encoder, haar_encoder

    if choice == "haar":
        return "haar", None, haar_encoder()[2]
    if choice == "fallback":
        return "fallback", None, fallback_encoder(0)[2]
    vgg = imported_vgg16()
    if vgg is None:
        if choice == "vgg16":
            raise BenchError("ours: encoder=vgg16 needs VGG-16 weights: run `bench weights import vgg16 FILE` "
                             "(the paper's numbers need the Caffe-derived vgg16.weight)")
        return "fallback", None, fallback_encoder(0)[2]
    w1, w2, record = vgg
    info = {"kind": record["kind"], "sha256": record.get("source_sha256"), "path": record.get("source_path"),
            "tensors_sha256": record["tensors_sha256"], "imported": True}
    return "vgg16", (w1, w2, info), info


def _family_of(info: Mapping[str, Any]) -> str:
    """Encoder family from an ``encoder_info`` dict (tensors from a checkpoint are recognised by hash)."""
    from ..weights import imported_vgg16
    from .encoder import fallback_encoder, haar_encoder

    kind = str(info.get("kind", ""))
    if kind in ("caffe_t7", "torchvision_v1"):
        return "vgg16"
    if kind.startswith("fallback"):
        return "fallback"
    if kind.startswith("haar"):
        return "haar"
    sha = info.get("tensors_sha256")
    vgg = imported_vgg16()
    if vgg is not None and sha == vgg[2].get("tensors_sha256"):
        return "vgg16"
    if sha == fallback_encoder(0)[2]["tensors_sha256"]:
        return "fallback"
    if sha == haar_encoder()[2]["tensors_sha256"]:
        return "haar"
    return "from_checkpoint"


class DSNMethod(TorchMethod):
    name = "ours"
    display_name = "DSN (ours)"
    family = "supervised"
    citation = ("L. Zhao, S.-P. Lu, T. Chen, Z. Yang, and A. Shamir, \"Deep Symmetric Network for Underexposed "
                "Image Enhancement with Recurrent Attentional Learning,\" in Proc. ICCV, 2021, pp. 12075-12084.")
    bibkey = "zhao2021deep"
    version = 1
    trainable = True
    pad_multiple = 1
    uses_pairs = True
    tileable = True                 # fully convolutional; the global channel-attention means are gathered
                                    # image-wide by bench/tiling.py's extra pass
    test_time_options = frozenset({"amp_inference", "inference", "allocator"})
    # added after DSN runs existed; at these values training and outputs are what they were before
    late_options = {"memory": "full", "channels_last_train": False, "compile": "off", "optimizer_impl": "default",
                    "loader_workers": 0, "tf32": False, "allocator": "default"}
    Config = DSNConfig
    profiles = {
        # a few iterations of tiny crops: exercises every code path (n_blocks stays 8)
        "smoke": {"crop": 24, "schedule": "fixed", "iterations": 3, "milestones": (), "checkpoint_every": 2,
                  "val_every": 0},
        # CPU-feasible: ~2 minutes on 2 cores for the demo set, inference included (measured in bench/dsn/NOTES.md);
        # the paper's optimiser (lr 1e-3 diverged here), 32-px crops (a 64-px step costs ~4x more)
        "quick": {"crop": 32, "schedule": "fixed", "iterations": 60, "milestones": (40,),
                  "checkpoint_every": 20, "val_every": 60},
        "paper@lol": {"epochs": 250, "halve_every_epochs": 100, "code_iterations": 500_000,
                      "code_milestones": _LOL_CODE},
        "paper@fivek": {"epochs": 200, "halve_every_epochs": 50, "code_iterations": 1_000_000,
                        "code_milestones": _FIVEK_CODE},
    }

    @classmethod
    def official_layout(cls):
        from .official import layout

        return layout()

    # ---- model ------------------------------------------------------------------------------
    def structure(self) -> dict[str, Any]:
        c = self.config
        return {"n_blocks": int(c.n_blocks), "subnet": c.subnet, "rounds": int(c.rounds),
                "encoder": "haar" if c.encoder == "haar" else "conv"}

    def build_model(self):
        """A freshly initialised DSN for this config (consumes the global torch RNG, like the official code)."""
        from .model import DSN

        c = self.config
        family, weights, _ = resolve_encoder(c.encoder)
        try:
            model = DSN(n_blocks=c.n_blocks, subnet=c.subnet, rounds=c.rounds,
                        encoder="haar" if family == "haar" else "conv", encoder_weights=weights)
        except ValueError as e:
            raise BenchError(f"ours: {e}") from None
        return model.set_memory(c.memory)   # only consulted while autograd is on (training)

    def validate_config(self) -> None:
        # not on construction or setup: validate() resolves the encoder files and relabels the variant,
        # which build_config has done (and a config built by hand keeps what it says)
        pass

    allocator_record: dict[str, Any] | None = None   # what prepare_inference did to the C allocator

    def prepare_inference(self) -> None:
        from .. import large_pages
        from .allocator import allocator_state, reuse_heap

        self.model.set_fast_inference(self.config.inference == "fast")
        # CPU fast path: keep the big feature maps on the heap (bench/dsn/allocator.py; process-wide, once),
        # by default only where torch allocates them on huge pages: without them the never-trimmed heap
        # fragments (RSS grew to 9-17 GB, NOTES.md); allocator=reuse_heap asks for it anyway, =glibc never
        mode = self.config.allocator
        if mode != "glibc" and self.model.fast_inference and next(self.model.parameters()).device.type == "cpu":
            if mode == "reuse_heap" or large_pages.active():
                self.allocator_record = reuse_heap()
            elif "default" in allocator_state():      # (another setup may have applied it in this process)
                self.allocator_record = {"default": "glibc defaults (reuse_heap not applied: torch's huge-page "
                                                    "path is off in this process, bench/large_pages.py)"}

    def check_checkpoint_meta(self, path: Path, meta: Mapping[str, Any]) -> None:
        have, want = meta.get("structure") or {}, self.structure()
        diff = [f"{k}={have.get(k)!r} (this run: {want[k]!r})" for k in ("n_blocks", "subnet", "rounds")
                if have.get(k) != want[k]]
        if diff:
            raise BenchError(f"{path} was trained with {', '.join(diff)}; pass matching --set options")

    def checkpoint_loaded(self, checkpoint: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        from .encoder import tensor_sha256

        enc = dict(meta.get("encoder_info") or {})
        enc["tensors_sha256"] = tensor_sha256(self.model.encoder_in.haar_weights1, self.model.encoder_in.haar_weights2)
        self.model.encoder_info = enc
        self.trained = {k: meta.get(k) for k in ("schedule", "seed", "variant") if k in meta}
        self.trained["iteration"] = checkpoint.get("iteration")
        self.trained["selected"] = checkpoint.get("selected", "state")

    def official_import_loaded(self, record: Mapping[str, Any]) -> None:
        from .encoder import tensor_sha256

        source = next(iter(record.get("files") or []), {})
        self.model.encoder_info = {
            "kind": "dsn_checkpoint", "sha256": source.get("sha256"), "path": source.get("path"),
            "tensors_sha256": tensor_sha256(self.model.encoder_in.haar_weights1, self.model.encoder_in.haar_weights2)}

    def load_official(self, path: Path, obj: Any) -> dict[str, Any]:
        # official-layout checkpoints come in several wrappers and are loaded by name mapping, not by a strict
        # load_state_dict of a key-suffix-recognised dict (bench/dsn/official.py)
        from ..fsutil import sha256_file
        from .official import load_official_state_dict, read_state_dict

        try:
            sd, _ = read_state_dict(obj)
        except ValueError as e:
            raise BenchError(f"{path}: {e}") from None
        if not any(k.startswith("operations.") for k in sd):
            sample = ", ".join(list(sd)[:3]) or "<empty>"
            raise BenchError(f"{path} is neither a checkpoint of ours nor an official-layout DSN state dict "
                             f"(first keys: {sample})")
        try:
            load_official_state_dict(self.model, sd)
        except ValueError as e:
            raise BenchError(f"{path}: {str(e).splitlines()[0]}") from None
        self.model.encoder_info.update({"sha256": sha256_file(path), "path": str(path.resolve())})
        from ..methods.torch_method import official_summary
        from ..official.importer import describe_file

        return {"weights_source": "official", "official": official_summary({"files": [describe_file(path, "state_dict")]})}

    def enhance(self, low: torch.Tensor) -> torch.Tensor:
        # the raw network output, unclamped and left in the train/eval mode it is in: the harness clamps
        if self.model is None:
            raise RuntimeError("call setup() first")
        with torch.no_grad():
            return amp_inference(self.model.enhance, low, self.config.amp_inference)

    # ---- provenance -------------------------------------------------------------------------
    def schedule_description(self) -> str:
        c = self.config
        if c.schedule == "paper":
            return (f"paper: {c.epochs} epochs x ceil(n_train/{c.batch}) iterations, lr x{c.gamma} every "
                    f"{c.halve_every_epochs} epochs")
        if c.schedule == "code":
            return f"code: {c.code_iterations} iterations, lr x{c.gamma} at {list(c.code_milestones)}"
        return f"fixed: {c.iterations} iterations, lr x{c.gamma} at {list(c.milestones)}"

    def trainable_parameters(self) -> int:
        """Trainable parameters the forward pass uses: 11,559,624 for the full model (the official count
        without its never-called ``soca`` modules, which are still built so official checkpoints load)."""
        from .model import count_parameters

        return count_parameters(self.model, used_only=True) if getattr(self, "model", None) is not None else 0

    def provenance(self) -> dict[str, Any]:
        from ..weights import faithfulness

        c = self.config
        if self.model is not None:
            info = dict(self.model.encoder_info)
        else:
            info = dict(resolve_encoder(c.encoder)[2])
        family = _family_of(info)
        faithful, reason = faithfulness(info.get("kind"), info.get("sha256"), info.get("tensors_sha256"))
        out: dict[str, Any] = {
            "variant": variant_of(c),
            "structure": f"n_blocks={c.n_blocks}, subnet={c.subnet}, rounds={c.rounds}",
            "loss": c.loss, "backward_loss": bool(c.backward_loss), "lambda_h": c.lambda_h, "lambda_l": c.lambda_l,
            "schedule": self.schedule_description(),
            "amp": c.amp, "amp_inference": c.amp_inference, "memory": c.memory,
            "inference_path": self._inference_path(),
            "encoder": family,
            "encoder_choice": c.encoder,
            "encoder_kind": info.get("kind"),
            "encoder_tensors_sha256": info.get("tensors_sha256"),
            "encoder_file_sha256": info.get("sha256") if info.get("sha256") != info.get("tensors_sha256") else None,
            "faithful": faithful,
            "faithful_reason": reason,
            **self.weights_provenance(),
        }
        configured = c.encoder_tensors.rsplit(":", 1)[-1] if c.encoder_tensors else None
        if self.weights_info.get("weights_kind") != "none" and configured and configured != info.get("tensors_sha256"):
            out["encoder_note"] = ("the weights file carries its own encoder tensors, which differ from the configured "
                                   f"encoder ({c.encoder_tensors.split(':')[0]}); the file's are used")
        return out

    def _inference_path(self) -> dict[str, Any] | None:
        from .allocator import allocator_state

        if self.model is None:
            return None
        return {**self.model.inference_path(), "allocator": self.allocator_record or allocator_state()}

    # ---- training ---------------------------------------------------------------------------
    def step_fn(self, model):
        """``batch -> {"loss", "loss_forward"[, "loss_backward"]}`` of this config for ``model`` (the Trainer's
        step; ``bench perf dsn-memory`` times the same one)."""
        c = self.config
        loss_fn = get_loss(c.loss)
        lambda_h, lambda_l, two_way = float(c.lambda_h), float(c.lambda_l), bool(c.backward_loss)

        def step(batch):
            terms: dict[str, Any] = {"loss": None}
            forward = loss_fn(model.enhance(batch.low), batch.high)       # ℓ_H: ||enhance(low) - high||²
            terms["loss_forward"] = forward
            total = lambda_h * forward
            if two_way:                                                    # ℓ_L: ||degrade(Q(high)) - low||²
                backward = loss_fn(model.degrade(quantize_ste(batch.high)), batch.low)
                terms["loss_backward"] = backward
                total = total + lambda_l * backward
            terms["loss"] = total
            return terms

        return step

    def schedule(self, n_train: int) -> tuple[int, list[int]]:
        c = self.config
        if c.schedule == "paper":
            return epoch_schedule(n_train, c.batch, c.epochs, c.halve_every_epochs)
        if c.schedule == "code":
            return c.code_iterations, [m for m in c.code_milestones if m < c.code_iterations]
        return c.iterations, [m for m in c.milestones if m < c.iterations]

    def train(self, train_pairs: Sequence[TrainPair], val_pairs: Sequence[TrainPair], out_dir: Path, seed: int,
              progress: bool = True) -> Path:
        c = self.config
        device = self.device
        model = self.fresh_model(seed)
        sampler = CropSampler(train_pairs, c.crop, c.batch, seed, use_high=True, augment=c.augment,
                              small=c.small_images, device=device, progress=progress)
        iterations, milestones = self.schedule(len(sampler))
        settings = TrainSettings(iterations=iterations, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay,
                                 grad_clip=c.grad_clip, milestones=tuple(milestones), gamma=c.gamma,
                                 checkpoint_every=c.checkpoint_every, val_every=c.val_every, select=c.select,
                                 amp=c.amp, channels_last=c.channels_last_train, compile=c.compile,
                                 optimizer_impl=c.optimizer_impl, loader_workers=c.loader_workers, tf32=c.tf32)
        step = self.step_fn(model)
        meta = {
            "method": self.name, "version": self.version, "structure": self.structure(), "variant": c.variant,
            "encoder_info": jsonable(model.encoder_info), "config": jsonable(dataclasses.asdict(c)), "seed": int(seed),
            "schedule": {"kind": c.schedule, "iterations": iterations, "milestones": list(milestones),
                         "n_train": len(sampler), "iterations_per_epoch": iterations_per_epoch(len(sampler), c.batch),
                         "description": self.schedule_description()},
        }
        log.info("training ours (%s) for %d iterations, milestones %s, on %d images", c.variant, iterations,
                 milestones, len(sampler))
        trainer = Trainer(model, list(model.trainable_parameters()), sampler, step, Path(out_dir), settings,
                          seed=seed, device=device, enhance_fn=model.enhance, val_pairs=val_pairs, meta=meta,
                          progress=progress, desc=f"train ours ({c.variant})")
        ckpt = trainer.run()
        model.eval()
        self.prepare_inference()   # as setup() does after loading the checkpoint
        return ckpt

"""The adapter contract every method implements.

An adapter maps a float RGB tensor in [0,1] (1×3×H×W) to one of the same shape in [0,1]. The harness
owns everything around that call: image I/O, padding to ``pad_multiple`` and cropping back, seeds,
timing, clamping, 8-bit quantisation, metrics and provenance.

Subclasses declare metadata as class attributes and a ``Config`` dataclass whose fields are the
method's options (``bench run --set key=value`` overrides them by name, type-checked). Trainable
methods also implement ``train`` and ``load_checkpoint``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from ..errors import BenchError

FAMILIES = ("reference", "classical", "zero-reference", "supervised", "unpaired", "reinforcement")
PROFILES = ("smoke", "quick", "paper")


@dataclass
class NoConfig:
    pass


@dataclass(frozen=True)
class TrainPair:
    """One training example handed to ``Method.train``, loaded on demand as uint8 H×W×3 arrays."""

    id: str
    low_path: Path
    high_path: Path | None

    def load_low(self):
        from ..imageio import read_rgb

        return read_rgb(self.low_path)

    def load_high(self):
        from ..imageio import read_rgb

        return None if self.high_path is None else read_rgb(self.high_path)


class Method:
    name: ClassVar[str]
    display_name: ClassVar[str]
    family: ClassVar[str]
    citation: ClassVar[str] = ""
    bibkey: ClassVar[str] = ""
    version: ClassVar[int] = 1
    trainable: ClassVar[bool] = False
    pad_multiple: ClassVar[int] = 1
    # Use the paired reference images when training (False for zero-reference and unpaired methods).
    uses_pairs: ClassVar[bool] = True
    # Config fields that only change inference (e.g. an output gamma): left out of the training identity,
    # so changing them re-runs the evaluation but never retrains.
    test_time_options: ClassVar[frozenset[str]] = frozenset()
    # Options added after runs existed, with the value that reproduces the old behaviour: left out of the
    # training and run identities while they hold it, so adding an option never renames (and so re-does)
    # a finished training or run; any other value is part of both.
    late_options: ClassVar[dict[str, Any]] = {}
    # True when enhance() must see the reference (an oracle such as KinD's ratio=gt): the harness then
    # passes ``reference=`` and marks the run's protocol ``uses_ground_truth_at_test``.
    needs_reference_at_test: bool = False
    # True when enhance() may be applied to overlapping tiles and blended (a fully convolutional network):
    # the memory policy (bench/tiling.py) then tiles images that do not fit instead of using the CPU.
    tileable: ClassVar[bool] = False
    Config: ClassVar[type] = NoConfig
    # Per-profile overrides of Config fields, e.g. {"smoke": {"iterations": 5}}. A key "paper@fivek" applies on
    # top of "paper" for datasets whose name starts with "fivek" (schedules differ per dataset in the papers).
    profiles: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.Config()
        self.device = torch.device("cpu")

    # --- lifecycle -------------------------------------------------------------------------
    def setup(self, device: torch.device, weights: Path | None = None) -> dict[str, Any]:
        """Build the model on ``device`` and load ``weights`` if given; return provenance facts."""
        self.device = device
        return {}

    def enhance(self, low: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to(self, device: torch.device) -> "Method":
        """Move every module the adapter holds to ``device`` (the memory policy's CPU fallback calls it, and
        moves back after). Adapters keeping tensors outside modules override it."""
        for value in vars(self).values():
            if isinstance(value, torch.nn.Module):
                value.to(device)
        self.device = torch.device(device)
        return self

    def train(self, train_pairs: Sequence[TrainPair], val_pairs: Sequence[TrainPair], out_dir: Path,
              seed: int, progress: bool = True) -> Path:
        """Train from scratch (or resume from ``out_dir``); return the checkpoint path."""
        raise BenchError(f"method {self.name} is not trainable")

    def training_identity(self) -> dict[str, Any]:
        """Facts outside the config that change trained weights (e.g. which VGG weights a perceptual
        loss used); they are hashed into the training run's identity so a change retrains."""
        return {}

    def image_record(self) -> dict[str, Any] | None:
        """What the method decided for the image it last enhanced (e.g. an RL agent's edit sequence);
        the harness saves it as ``records/<ID>.json`` in the run directory."""
        return None

    # --- introspection ---------------------------------------------------------------------
    def trainable_parameters(self) -> int:
        """Trainable parameter count of the model as built by ``setup`` (0 for classical methods)."""
        module = getattr(self, "model", None)
        if isinstance(module, torch.nn.Module):
            return sum(p.numel() for p in module.parameters() if p.requires_grad)
        return 0

    def provenance(self) -> dict[str, Any]:
        """Facts a reader needs to interpret the numbers (substitutes used, options in force)."""
        return {}


def check_range(method: str, name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
                integer: bool = False) -> None:
    """For ``Config.validate``: a finite number (or integer) in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    import math

    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        raise BenchError(f"{method}: option {name}={value!r} must be a finite {'integer' if integer else 'number'}")
    if (value <= lo if lo_open else value < lo) or value > hi:
        bracket = "(" if lo_open else "["
        raise BenchError(f"{method}: option {name}={value!r} is out of range {bracket}{lo}, {hi}]")


def check_betas(method: str, betas: Any) -> tuple[float, ...]:
    """For ``Config.validate``: Adam's two betas, each in [0, 1); returns them as a tuple of floats."""
    betas = tuple(float(b) for b in betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise BenchError(f"{method}: option betas={betas!r} must be two numbers in [0, 1)")
    return betas


def config_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config_cls)}


def _coerce(name: str, raw: str, current: Any, annotation: Any) -> Any:
    kind = type(current) if current is not None else None
    text = str(annotation)
    try:
        if kind is bool or text == "bool":
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int or text == "int":
            return int(raw)
        if kind is float or text == "float":
            return float(raw)
        if isinstance(current, (list, tuple)):
            items = [s for s in raw.split(",") if s != ""]
            elem = type(current[0]) if current else str
            return type(current)(elem(s) for s in items)
        return raw
    except ValueError:
        raise BenchError(f"option {name}={raw!r}: expected {kind.__name__ if kind else text}") from None


def build_config(method_cls: type[Method], profile: str, overrides: dict[str, str], dataset: str = "") -> Any:
    """Config = dataclass defaults, then the profile's overrides (generic, then per dataset), then ``--set``."""
    if profile not in PROFILES:
        raise BenchError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    config = method_cls.Config()
    fields = config_fields(method_cls.Config)
    layers = [method_cls.profiles.get(profile, {})]
    layers += [v for k, v in method_cls.profiles.items()
               if k.startswith(profile + "@") and dataset.startswith(k.split("@", 1)[1])]
    for layer in layers:
        for key, value in layer.items():
            if key not in fields:
                raise BenchError(f"{method_cls.name}: profile sets unknown option {key!r}")
            setattr(config, key, value)
    for key, raw in overrides.items():
        if key not in fields:
            from ..errors import unknown_name

            raise unknown_name(f"option of {method_cls.name}", key, list(fields) or ["(this method has no options)"])
        setattr(config, key, _coerce(key, raw, getattr(config, key), fields[key].type))
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config

"""Generic training machinery shared by every trainable method (method-agnostic).

Two pieces:

``CropSampler``
    Random crops from training pairs held in RAM as uint8 (each ``TrainPair`` is decoded once, with
    ``load_low()`` / ``load_high()``). Low and high are cropped at the *same* position. Augmentation is
    the official DSN/BasicSR one: horizontal flip, vertical flip and transpose, each with p = 0.5, which
    gives all 8 dihedral transforms. Unpaired and zero-reference methods pass ``use_high=False`` and get
    low crops only (``Batch.high is None``).

    Images are visited in successive random permutations (sampling without replacement); batches are
    always full, so one "epoch" of a schedule is ``ceil(n / batch)`` iterations (exactly the official
    ``drop_last`` epoch whenever ``n`` is a multiple of the batch, as for LOL 400 and FiveK 4500 at
    batch 2). Images smaller than the crop are handled by ``small``:

    - ``"reflect"`` (default): such an image (and its partner) is padded once, at load time, by mirror
      reflection without repeating the edge pixel (``numpy.pad(mode="reflect")``), split evenly between
      the two sides, up to the crop size. Padding is identical for low and high.
    - ``"clip"``: no padding; the crop size of *every* batch is reduced to the smallest image side in the
      training set (batches stay square and stackable).

    All randomness (permutations, crop positions, flips) comes from one ``torch.Generator`` seeded from
    the run seed, whose state is saved in checkpoints so a resumed run draws the same batches.

``WholeImageSampler``
    Whole images (no crops) for methods whose official loader feeds full frames: successive random
    permutations (``drop_last`` or a partial last batch), optional random horizontal/vertical flips, batch 1
    or batches of same-size images, with the generator state saved in checkpoints like ``CropSampler``'s.

``Trainer``
    The loop: seeding (python/numpy/torch from the run seed), a fixed number of iterations, Adam with
    optional coupled weight decay (torch's ``Adam(weight_decay=...)``, an L2 term added to the gradient)
    and optional total-norm gradient clipping, a MultiStep learning-rate schedule with per-iteration
    milestones, a tqdm bar, a CSV training log (``train_log.csv``: iteration, loss terms, [grad_norm],
    lr, seconds), periodic checkpoints written atomically (``state_<iteration>.pt``: model, optimiser,
    scheduler, RNG states, sampler state, iteration), *resume* from the latest checkpoint in ``out_dir``,
    optional validation PSNR on whole validation images (``val.csv``; logged only unless
    ``select="val_psnr"``; the test split is never seen here), and the final weights file
    (``model_final.pt``: ``{"format": "bench-weights", "model", "iteration", "selected", "meta"}``, or
    ``model_best.pt`` under ``select="val_psnr"``) whose path it returns. When it is written,
    ``train_done.json`` records it and the training states are deleted (they hold the Adam moments too,
    3× the weights; ``keep_final_state=True`` keeps the last); calling ``run`` again with the same
    settings returns the finished weights without training.

    A Ctrl-C between iterations, or during the forward/backward part of one, saves the state of the last
    completed iteration before re-raising, so ``bench train`` continues exactly where it stopped.

The method supplies ``step_fn(batch) -> {"loss": tensor, <term>: tensor|float, ...}`` and, for
validation, ``enhance_fn(low) -> output``; everything else is here. Two optional hooks cover schedules
the settings cannot express: ``lr_lambda(iteration) -> factor`` (the LR of the update that completes
iteration ``iteration + 1`` is ``settings.lr * factor``, instead of MultiStep milestones) and
``init_optimizer_state(optimizer)`` (called once when training starts from scratch, never on resume, e.g.
to continue Adam's step count from an earlier phase).
"""

from __future__ import annotations

import csv
import io
import math
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .amp import Amp
from .distributed import Dist, current, ddp_step
from .errors import BenchError
from .fsutil import canonical_hash, write_bytes, write_json, write_text
from .train_speed import SPEED_DEFAULTS, TrainSpeed, check_speed_options

__all__ = [
    "Batch",
    "SeededSampler",
    "CropSampler",
    "WholeImageSampler",
    "load_training_images",
    "TrainSettings",
    "Trainer",
    "STATE_FORMAT",
    "WEIGHTS_FORMAT",
    "derive_seed",
    "seed_all",
    "capture_rng",
    "restore_rng",
    "save_torch",
    "load_torch",
    "load_weights",
    "latest_state",
    "TrainDir",
    "iterations_per_epoch",
    "constant_lr_schedule",
    "epoch_schedule",
]

STATE_FORMAT = "bench-train-state"
WEIGHTS_FORMAT = "bench-weights"
SMALL_MODES = ("reflect", "clip")
SELECT_MODES = ("last", "val_psnr")
_STATE_RE = re.compile(r"^state_(\d{8})\.pt$")


# ------------------------------------------------------------------------------------------------
# seeds and RNG states
# ------------------------------------------------------------------------------------------------
def derive_seed(seed: int, *tags: Any) -> int:
    """A 63-bit seed derived from the run seed and tags (independent streams for crops, init, ...)."""
    return int(canonical_hash([int(seed), *tags])[:15], 16)


def seed_all(seed: int) -> None:
    """Seed python's ``random``, NumPy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """Global RNG states as plain containers and tensors (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def torch_bytes(obj: Any) -> bytes:
    """``torch.save`` of ``obj`` as bytes, serialised in memory: the zip's inner folder is then always ``archive/``
    (saved to a file, torch names it after the file -- a temporary name -- so equal tensors gave other bytes)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_torch(obj: Any, path: Path) -> None:
    """Write ``obj`` byte-reproducibly (:func:`torch_bytes`) through a temporary file renamed into place: equal
    tensors give equal bytes (and sha256), and a crash never leaves half a file."""
    write_bytes(path, torch_bytes(obj))


def load_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BenchError(f"missing file {path}") from None
    except Exception as e:  # zip/pickle errors, weights_only refusals
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BenchError(f"{path}: not a loadable torch file ({type(e).__name__}: {first[:160]})") from None


def load_weights(module: torch.nn.Module, path: Path) -> int:
    """Load a weights file written by :class:`Trainer` into ``module`` (strictly); return its iteration."""
    obj = load_torch(path)
    module.load_state_dict(obj["model"], strict=True)
    return int(obj["iteration"])


def latest_state(out_dir: Path) -> Path | None:
    """The training-state checkpoint with the highest iteration in ``out_dir`` (None if there is none)."""
    found = sorted((int(m.group(1)), p) for p in Path(out_dir).glob("state_*.pt") if (m := _STATE_RE.match(p.name)))
    return found[-1][1] if found else None


class TrainDir:
    """The files of one training directory, for every training loop: ``state_<iteration>.pt`` checkpoints
    (rotated), CSV logs whose rows start with the iteration (cut back on resume), and ``train_done.json``,
    which names the weights of a finished run and the hash of the settings that made them."""

    def __init__(self, path: Path, settings_identity: Mapping[str, Any]):
        self.path = Path(path)
        self.settings_hash = canonical_hash(settings_identity)

    @property
    def done_path(self) -> Path:
        return self.path / "train_done.json"

    @property
    def log_path(self) -> Path:
        return self.path / "train_log.csv"

    def state_path(self, iteration: int) -> Path:
        return self.path / f"state_{iteration:08d}.pt"

    def finished(self) -> Path | None:
        """The weights of an already finished run with these settings (training is not repeated)."""
        from .records import read_json_record

        if not self.done_path.exists():
            return None
        done = read_json_record(self.done_path, f"; remove it to let training finish again from {self.path}'s "
                                                "last state")
        path = self.path / str(done.get("weights"))
        if done.get("settings") == self.settings_hash and path.is_file():
            return path
        return None

    def read_state(self, path: Path) -> Mapping[str, Any]:
        """A training state written with these settings (anything else is refused)."""
        state = load_torch(path)
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise BenchError(f"{path} is not a training-state checkpoint")
        if canonical_hash(state["settings"]) != self.settings_hash:
            raise BenchError(f"{path} was written with other training settings; remove {self.path} to start over")
        return state

    def write_state(self, state: Mapping[str, Any], iteration: int, keep: int = 1) -> Path:
        """Write the state of ``iteration`` atomically, then drop all but the newest ``keep`` states."""
        path = self.state_path(iteration)
        save_torch(dict(state), path)
        states = sorted(p for p in self.path.glob("state_*.pt") if _STATE_RE.match(p.name))
        for old in states[: max(0, len(states) - keep)]:
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def finish(self, weights: Path, iteration: int, keep_final_state: bool) -> None:
        """Mark the run finished with ``weights``; the states (3x the weights with Adam's moments) go unless kept."""
        write_json(self.done_path, {"weights": weights.name, "iteration": iteration, "settings": self.settings_hash})
        if not keep_final_state:
            for old in self.path.glob("state_*.pt"):
                old.unlink(missing_ok=True)

    @staticmethod
    def truncate_csv(path: Path, upto: int) -> None:
        """Drop rows written after the checkpoint a run resumes from (they will be redone), a torn last row (no
        newline: a crash mid-write; the next append would be glued to it), rows of the wrong width and repeated
        iterations."""
        if not path.exists():
            return
        data = path.read_bytes()
        torn = bool(data) and not data.endswith(b"\n")
        if torn:
            data = data[: data.rfind(b"\n") + 1]
        try:
            rows = list(csv.reader(io.StringIO(data.decode("utf-8", "replace").replace("\x00", ""), newline="")))
        except csv.Error:
            rows = []
        if not rows:
            if torn or data:
                write_text(path, "")
            return
        keep, last = [rows[0]], -1
        for r in rows[1:]:
            if len(r) == len(rows[0]) and r[0].isdigit() and last < int(r[0]) <= upto:
                keep.append(r)
                last = int(r[0])
        if torn or len(keep) != len(rows):
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(keep)
            write_text(path, buf.getvalue())

    @staticmethod
    def append_csv(path: Path, header: list[str], row: list[Any]) -> None:
        from .records import drop_torn_tail

        drop_torn_tail(path)                 # never glue a row to one a crash cut short
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            if new:
                w.writerow(header)
            w.writerow(row)

    def append_log(self, iteration: int, columns: Sequence[str], values: Mapping[str, float], lr: float,
                   elapsed: float) -> None:
        """One ``train_log.csv`` row: iteration, the loss terms in ``columns`` order, lr, seconds so far."""
        self.append_csv(self.log_path, ["iteration", *columns, "lr", "seconds"],
                        [iteration, *(f"{values.get(c, float('nan')):.6g}" for c in columns), f"{lr:.6g}",
                         f"{elapsed:.3f}"])


# ------------------------------------------------------------------------------------------------
# schedules
# ------------------------------------------------------------------------------------------------
def iterations_per_epoch(n_train: int, batch: int) -> int:
    if n_train < 1:
        raise BenchError("no training images")
    return math.ceil(n_train / batch)


def constant_lr_schedule(iterations: int, epochs: int, n_train: int, batch: int, lr: float) -> tuple[int, str]:
    """(iterations, description) of a constant-LR run: ``iterations`` if > 0, else ``epochs`` epochs of
    ceil(n_train / batch) iterations."""
    if iterations > 0:
        return iterations, f"fixed: {iterations} iterations, constant lr {lr:g}"
    per = iterations_per_epoch(n_train, batch)
    return epochs * per, f"{epochs} epochs x ceil({n_train}/{batch}) = {epochs * per} iterations, constant lr"


def epoch_schedule(n_train: int, batch: int, epochs: int, step_epochs: int) -> tuple[int, list[int]]:
    """Paper-style schedule: ``epochs`` epochs of ceil(n/batch) iterations, the LR multiplied by gamma
    after every ``step_epochs`` epochs (milestones strictly inside the run). Returns (iterations, milestones)."""
    per = iterations_per_epoch(n_train, batch)
    total = epochs * per
    milestones = [k * step_epochs * per for k in range(1, epochs // step_epochs + 1)] if step_epochs > 0 else []
    return total, [m for m in milestones if m < total]


# ------------------------------------------------------------------------------------------------
# sampler
# ------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    low: torch.Tensor                 # N×3×h×w float in [0,1] on the device
    high: torch.Tensor | None         # same, or None for low-only sampling
    ids: list[str]


def _pad_to(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if not ph and not pw:
        return img
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode=mode)


def load_training_images(pairs: Sequence[Any], *, use_high: bool = True, method: str = "this method",
                         min_side: int = 1, small_hint: str = "",
                         prepare: Callable[[np.ndarray], np.ndarray] | None = None,
                         progress: bool = False) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Decode every pair once: (lows, highs) as contiguous uint8 H×W×3 arrays (highs None unless ``use_high``).
    Each reference must exist and match its low image's size, and no side may be below ``min_side`` pixels;
    ``prepare`` (e.g. a resize) is applied to each image as it is loaded."""
    lows: list[np.ndarray] = []
    highs: list[np.ndarray] | None = [] if use_high else None
    for p in tqdm(pairs, desc="load train images", unit="img", disable=not progress, leave=False):
        images = [p.load_low()]
        if highs is not None:
            high = p.load_high()
            if high is None:
                raise BenchError(f"training pair {p.id} has no reference image, but {method} trains on pairs")
            if high.shape != images[0].shape:
                raise BenchError(f"training pair {p.id}: low {images[0].shape[1]}×{images[0].shape[0]} and high "
                                 f"{high.shape[1]}×{high.shape[0]} differ in size")
            images.append(high)
        if min(images[0].shape[:2]) < min_side:
            raise BenchError(f"training image {p.id} is smaller than {min_side} pixels on a side{small_hint}")
        images = [np.ascontiguousarray(a, dtype=np.uint8) for a in images]
        if prepare is not None:
            images = [prepare(a) for a in images]
        lows.append(images[0])
        if highs is not None:
            highs.append(images[1])
    return lows, highs


class SeededSampler:
    """What the samplers share: the order of the images, drawn from a ``torch.Generator`` seeded from the run
    seed and a tag (the current permutation, the position in it, the number of passes begun), which checkpoints
    save and restore (``state_dict`` / ``load_state_dict``), and uint8 N×H×W×3 → float N×3×H×W on the device."""

    device: torch.device

    def _seed_order(self, seed: int, tag: str) -> None:
        self.generator = torch.Generator().manual_seed(derive_seed(seed, tag))
        self._perm: list[int] = []
        self._pos = 0
        self.epoch = 0

    def _to_tensor(self, arrays: list[np.ndarray]) -> torch.Tensor:
        return self._upload(self._host(arrays))

    @staticmethod
    def _host(arrays: list[np.ndarray], pin: bool = False) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(np.stack(arrays)))  # N×h×w×3 uint8
        return t.pin_memory() if pin else t

    def _upload(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        return t.contiguous()

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": list(self._perm), "pos": self._pos,
                "epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._perm, self._pos, self.epoch = list(state["perm"]), int(state["pos"]), int(state["epoch"])


class CropSampler(SeededSampler):
    """Random same-position crops of (low, high) pairs with the 8 dihedral augmentations (see module doc)."""

    def __init__(self, pairs: Sequence[Any], crop: int, batch: int, seed: int, *, use_high: bool = True,
                 augment: bool = True, small: str = "reflect", device: torch.device | str = "cpu",
                 progress: bool = False):
        if not pairs:
            raise BenchError("no training pairs")
        self._check_options(crop, batch, small)
        self.ids = [p.id for p in pairs]
        self.batch, self.use_high, self.augment, self.small = int(batch), bool(use_high), bool(augment), small
        self.device = torch.device(device)
        self.lows, self.highs = load_training_images(pairs, use_high=use_high, progress=progress)
        self._fit_crop(int(crop))
        self._seed_order(seed, "crops")

    @staticmethod
    def _check_options(crop: int, batch: int, small: str) -> None:
        if crop < 1 or batch < 1:
            raise BenchError(f"crop and batch must be positive (crop={crop}, batch={batch})")
        if small not in SMALL_MODES:
            raise BenchError(f"unknown small-image mode {small!r}; choose {' or '.join(SMALL_MODES)}")

    def _fit_crop(self, crop: int) -> None:
        """Images smaller than ``crop`` (low and high alike): padded once (``reflect``), or the crop reduced to
        the smallest side (``clip``)."""
        self.padded = 0
        if self.small == "clip":
            self.crop = min(crop, min(min(a.shape[:2]) for a in self.lows))
            return
        self.crop = crop
        for i, low in enumerate(self.lows):
            if min(low.shape[:2]) < self.crop:
                self.padded += 1
                self.lows[i] = _pad_to(low, self.crop)
                if self.highs is not None:
                    self.highs[i] = _pad_to(self.highs[i], self.crop)

    def __len__(self) -> int:
        return len(self.lows)

    @property
    def iterations_per_epoch(self) -> int:
        return iterations_per_epoch(len(self.lows), self.batch)

    def describe(self) -> dict[str, Any]:
        return {"n_images": len(self.lows), "crop": self.crop, "batch": self.batch, "augment": self.augment,
                "small_images": self.small, "padded_images": self.padded, "paired": self.use_high}

    def _next_index(self) -> int:
        if self._pos >= len(self._perm):
            self._perm = torch.randperm(len(self.lows), generator=self.generator).tolist()
            self._pos = 0
            self.epoch += 1
        i = self._perm[self._pos]
        self._pos += 1
        return i

    def _randint(self, n: int) -> int:
        return int(torch.randint(0, n, (1,), generator=self.generator))

    def next_batch(self) -> Batch:
        return self.upload_batch(self.make_batch(self.plan_batch()))

    def plan_batch(self) -> list[tuple[int, int, int, tuple[bool, ...]]]:
        """The random draws of one batch, in order: (image, top, left, (hflip, vflip, transpose)) per crop."""
        plan = []
        for _ in range(self.batch):
            i = self._next_index()
            h, w = self.lows[i].shape[:2]
            top, left = self._randint(h - self.crop + 1), self._randint(w - self.crop + 1)
            flips = tuple((torch.rand(3, generator=self.generator) < 0.5).tolist()) if self.augment else ()
            plan.append((i, top, left, flips))
        return plan

    def make_batch(self, plan: Sequence[tuple[int, int, int, tuple[bool, ...]]], pin: bool = False) -> Batch:
        """The crops of a plan as host uint8 N×h×w×3 tensors (draws nothing: safe in a loader thread)."""
        c = self.crop
        lows, highs, ids = [], [], []
        for i, top, left, flips in plan:
            crops = [self.lows[i][top:top + c, left:left + c]]
            if self.highs is not None:
                crops.append(self.highs[i][top:top + c, left:left + c])
            if flips:
                hflip, vflip, rot = flips
                # the BasicSR order: horizontal flip, vertical flip, then transpose
                if hflip:
                    crops = [a[:, ::-1] for a in crops]
                if vflip:
                    crops = [a[::-1] for a in crops]
                if rot:
                    crops = [a.transpose(1, 0, 2) for a in crops]
            lows.append(crops[0])
            if self.highs is not None:
                highs.append(crops[1])
            ids.append(self.ids[i])
        return Batch(self._host(lows, pin), self._host(highs, pin) if self.highs is not None else None, ids)

    def upload_batch(self, batch: Batch) -> Batch:
        """A :meth:`make_batch` result as float N×3×h×w in [0,1] on the device."""
        return Batch(self._upload(batch.low), self._upload(batch.high) if batch.high is not None else None, batch.ids)


class WholeImageSampler(SeededSampler):
    """Whole training images (no crops), in successive random permutations, ``batch`` per step.

    ``drop_last=True``: every batch is full; a permutation's tail too short for one is skipped
    (``DataLoader(shuffle=True, drop_last=True)``). ``False``: the last batch of each pass holds the remainder.
    ``flips``: random horizontal, then vertical flip (p = 0.5 each, drawn per image, low and high alike; see
    :meth:`flip`, which subclasses may override). A batch
    > 1 needs images of one size. ``use_high=False`` loads the low images only (``Batch.high is None``).
    Images are decoded once and kept as uint8; subclasses may override :meth:`prepare` to transform each one at
    load time (e.g. resize). The order and the flips come from one ``torch.Generator`` seeded from the run seed
    and ``seed_tag``, whose state is saved in checkpoints so a resumed run draws the same batches.
    """

    def __init__(self, pairs: Sequence[Any], batch: int, seed: int, *, use_high: bool = True, flips: bool = False,
                 drop_last: bool = True, seed_tag: str = "order", min_side: int = 1, small_hint: str = "",
                 method: str = "this method", device: torch.device | str = "cpu", progress: bool = False):
        if not pairs:
            raise BenchError("no training images")
        self.batch, self.use_high, self.flips, self.drop_last = int(batch), bool(use_high), bool(flips), bool(drop_last)
        self.device = torch.device(device)
        if self.drop_last and self.batch > len(pairs):
            raise BenchError(f"batch {self.batch} is larger than the {len(pairs)} training images")
        self.ids = [p.id for p in pairs]
        self.lows, self.highs = load_training_images(pairs, use_high=use_high, method=method, min_side=min_side,
                                                     small_hint=small_hint, prepare=self.prepare, progress=progress)
        if self.batch > 1 and len({a.shape for a in self.lows}) > 1:
            raise BenchError(f"{method}: batch > 1 on whole images needs training images of one size; set crop > 0")
        self._seed_order(seed, seed_tag)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Applied once to every loaded uint8 H×W×3 image (low and high alike); the identity here."""
        return image

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def iterations_per_epoch(self) -> int:
        return len(self) // self.batch if self.drop_last else iterations_per_epoch(len(self), self.batch)

    def describe(self) -> dict[str, Any]:
        return {"n_images": len(self), "crop": "whole image", "batch": self.batch, "augment": self.flips,
                "last_batch": "dropped (drop_last=True)" if self.drop_last else "partial (drop_last=False)",
                "paired": self.use_high}

    def flip(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """The random flips of one image (low and high alike): horizontal, then vertical, p = 0.5 each, from
        two draws of the sampler's generator. Subclasses may override it (e.g. DeepLPF's gated flips)."""
        hflip, vflip = (torch.rand(2, generator=self.generator) < 0.5).tolist()
        if hflip:
            images = [a[:, ::-1] for a in images]
        if vflip:
            images = [a[::-1] for a in images]
        return images

    def next_batch(self) -> Batch:
        if self._pos + (self.batch if self.drop_last else 1) > len(self._perm):
            self._perm = torch.randperm(len(self), generator=self.generator).tolist()
            self._pos = 0
            self.epoch += 1
        idx = self._perm[self._pos:self._pos + self.batch]
        self._pos += len(idx)
        lows, highs = [], []
        for i in idx:
            images = [self.lows[i]] if self.highs is None else [self.lows[i], self.highs[i]]
            if self.flips:
                images = self.flip(images)
            lows.append(images[0])
            highs.extend(images[1:])
        return Batch(self._to_tensor(lows), self._to_tensor(highs) if self.highs is not None else None,
                     [self.ids[i] for i in idx])


# ------------------------------------------------------------------------------------------------
# trainer
# ------------------------------------------------------------------------------------------------
@dataclass
class TrainSettings:
    iterations: int
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0          # coupled (torch.optim.Adam's L2 term), on every trainable tensor
    grad_clip: float = 0.0             # max total gradient norm; 0 = off
    milestones: tuple[int, ...] = ()   # iterations after which the LR is multiplied by gamma
    gamma: float = 0.5
    checkpoint_every: int = 1000       # 0 = only at the end
    keep_states: int = 1               # how many state_*.pt files to keep while training
    keep_final_state: bool = False     # keep the last state_*.pt once the weights file is written
    val_every: int = 0                 # 0 = no validation; otherwise also once at the end
    select: str = "last"               # "last" or "val_psnr" (best validation PSNR; never the test set)
    log_every: int = 1
    cudnn_benchmark: bool = True       # as the official code; affects only CUDA
    amp: str = "off"                   # off | bf16 | fp16 (bench/amp.py); part of identity(): no mixed resumes
    # speed (bench/train_speed.py): same training, other kernels/threads; in identity() unless at the default
    channels_last: bool = False        # parameters and batches channels-last
    compile: str = "off"               # off | default | reduce-overhead | max-autotune (CUDA only)
    optimizer_impl: str = "default"    # default | foreach | fused (torch.optim.Adam)
    loader_workers: int = 0            # threads preparing crops ahead (bit-identical batches)
    tf32: bool = False                 # TF32 convs/matmuls on CUDA (False = forced off, the fp32 protocol)

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.milestones = tuple(sorted(int(m) for m in self.milestones))
        if self.iterations < 1:
            raise BenchError(f"iterations must be at least 1, got {self.iterations}")
        if self.select not in SELECT_MODES:
            raise BenchError(f"unknown selection policy {self.select!r}; choose {' or '.join(SELECT_MODES)}")
        if self.keep_states < 1:
            raise BenchError("keep_states must be at least 1")
        check_speed_options(self.compile, self.optimizer_impl, self.loader_workers)

    def identity(self) -> dict[str, Any]:
        """What must agree for a checkpoint to be resumed (the log/checkpoint cadence may change)."""
        d = asdict(self)
        for k in ("checkpoint_every", "keep_states", "keep_final_state", "log_every", "val_every"):
            d.pop(k)
        for k, default in SPEED_DEFAULTS.items():   # off: the identity (and hash) runs had before these options
            if d[k] == default:
                d.pop(k)
        return d


class _Phase:
    CLEAN, COMPUTING, UPDATING = "clean", "computing", "updating"


class Trainer:
    """Run ``settings.iterations`` optimiser steps of ``step_fn`` on batches from ``sampler``.

    Args:
        model: the module whose ``state_dict`` is checkpointed.
        params: the tensors to optimise (e.g. only those with ``requires_grad``).
        sampler: a :class:`CropSampler` or :class:`WholeImageSampler` (or anything with ``next_batch``,
            ``state_dict`` and ``load_state_dict``).
        step_fn: ``batch -> {"loss": scalar tensor, other terms...}``; terms are logged in insertion order.
        out_dir: where checkpoints and logs go (the training run's directory).
        settings: :class:`TrainSettings`.
        seed: the run seed (python/numpy/torch are seeded from it before the first iteration).
        enhance_fn: ``low (1×3×H×W) -> output`` for validation; required if ``val_every`` > 0 and
            ``val_pairs`` is non-empty.
        val_pairs: pairs to validate on (whole images, PSNR of the 8-bit outputs); never the test split.
        meta: JSON-able facts stored in every checkpoint and the weights file (method, structure, ...).
        lr_lambda: ``iteration -> factor``; if given, before each iteration every parameter group's LR is set to
            ``settings.lr * lr_lambda(iteration)`` (``iteration`` = the iterations completed so far), in place of
            MultiStep milestones (giving both is an error). It is not part of ``settings.identity()``: the
            method's config must determine it.
        init_optimizer_state: ``optimizer -> None``, called once before the first iteration of a run that
            starts from scratch (not when resuming from a checkpoint, which restores the optimiser's state, nor
            when the run has already finished).
    """

    def __init__(self, model: torch.nn.Module, params: Sequence[torch.nn.Parameter] | Any, sampler: Any,
                 step_fn: Callable[[Batch], Mapping[str, Any]], out_dir: Path, settings: TrainSettings, *,
                 seed: int, device: torch.device | str = "cpu",
                 enhance_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 val_pairs: Sequence[Any] = (), meta: Mapping[str, Any] | None = None, progress: bool = True,
                 desc: str = "train", lr_lambda: Callable[[int], float] | None = None,
                 init_optimizer_state: Callable[[torch.optim.Optimizer], None] | None = None,
                 dist: Dist | None = None):
        self.model, self.params = model, [p for p in params]
        self.sampler, self.step_fn, self.settings = sampler, step_fn, settings
        self.out_dir = Path(out_dir)
        self.files = TrainDir(self.out_dir, settings.identity())
        self.seed, self.device = int(seed), torch.device(device)
        self.enhance_fn, self.val_pairs = enhance_fn, list(val_pairs)
        self.meta = dict(meta or {})
        self.progress, self.desc = progress, desc
        if settings.val_every > 0 and self.val_pairs and enhance_fn is None:
            raise BenchError("validation needs an enhance function")
        if lr_lambda is not None and settings.milestones:
            raise BenchError("give either LR milestones or an lr_lambda schedule, not both")
        self.lr_lambda, self.init_optimizer_state = lr_lambda, init_optimizer_state
        self.dist = dist or current()        # torchrun: the same global batch split over the processes
        self.amp = Amp(settings.amp, self.device)
        self.speed = TrainSpeed(settings, self.device)   # channels-last, compile, Adam impl, loader, TF32
        self.speed.prepare_model(model)
        self.sampler = self.speed.wrap_sampler(sampler)
        self._step = self.speed.compile_step(ddp_step(model, step_fn, self.dist))  # one DDP forward per step
        self.optimizer = self.speed.adam(self.params, lr=settings.lr, betas=settings.betas,
                                         weight_decay=settings.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(settings.milestones),
                                                              gamma=settings.gamma)
        self.iteration = 0
        self.elapsed = 0.0
        self.best: dict[str, Any] | None = None
        self.columns: list[str] | None = None
        self._val_images: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._phase = _Phase.CLEAN
        self._pre_step: dict[str, Any] | None = None
        self.resumed_from: Path | None = None

    # ---- paths ------------------------------------------------------------------------------
    @property
    def val_path(self) -> Path:
        return self.out_dir / "val.csv"

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self, rng: Mapping[str, Any] | None = None, sampler: Mapping[str, Any] | None = None) -> dict:
        sched = self.scheduler.state_dict()
        sched["milestones"] = dict(sched.get("milestones", {}))
        return {
            "format": STATE_FORMAT, "version": 1, "iteration": self.iteration, "elapsed": self.elapsed,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "scheduler": sched,
            "rng": dict(rng) if rng is not None else capture_rng(),
            "sampler": dict(sampler) if sampler is not None else self.sampler.state_dict(),
            "settings": self.settings.identity(), "columns": self.columns, "best": self.best, "meta": self.meta,
            "amp": self.amp.state_dict(),
        }

    def load_state(self, path: Path) -> None:
        state = self.files.read_state(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        sched = dict(state["scheduler"])
        from collections import Counter

        sched["milestones"] = Counter({int(k): int(v) for k, v in sched.get("milestones", {}).items()})
        self.scheduler.load_state_dict(sched)
        restore_rng(state["rng"])
        self.sampler.load_state_dict(state["sampler"])
        self.iteration, self.elapsed = int(state["iteration"]), float(state["elapsed"])
        self.columns, self.best = state.get("columns"), state.get("best")
        self.amp.load_state_dict(state.get("amp"))
        self.resumed_from = path

    def save_state(self, rng: Mapping[str, Any] | None = None, sampler: Mapping[str, Any] | None = None) -> Path:
        if not self.dist.is_main():          # rank 0 writes; the others wait for it
            self.dist.barrier()
            return self.files.state_path(self.iteration)
        path = self.files.write_state(self.state_dict(rng, sampler), self.iteration, self.settings.keep_states)
        self.dist.barrier()
        return path

    def save_weights(self, path: Path, selected: str) -> Path:
        save_torch({"format": WEIGHTS_FORMAT, "version": 1, "iteration": self.iteration, "selected": selected,
                    "model": self.model.state_dict(), "meta": self.meta}, path)
        return path

    # ---- validation -------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> float:
        from .imageio import quantize, to_tensor
        from .metrics import psnr_rgb

        if self._val_images is None:
            self._val_images = [(p.load_low(), p.load_high()) for p in self.val_pairs]
        was_training = self.model.training
        self.model.eval()
        scores = []
        try:
            for low, high in self._val_images:
                out = self.enhance_fn(to_tensor(low).to(self.device))  # type: ignore[misc]
                scores.append(psnr_rgb(quantize(out), high))
        finally:
            self.model.train(was_training)
        finite = [s for s in scores if math.isfinite(s)]
        return float(np.mean(finite)) if finite else float("inf")

    def _maybe_validate(self, final: bool) -> None:
        s = self.settings
        if s.val_every <= 0 or not self.val_pairs or not self.dist.is_main():
            return
        if not final and self.iteration % s.val_every:
            return
        t0 = time.perf_counter()
        psnr = self.validate()
        self.files.append_csv(self.val_path, ["iteration", "psnr", "n", "seconds"],
                              [self.iteration, f"{psnr:.6f}", len(self.val_pairs), f"{time.perf_counter() - t0:.3f}"])
        if self.best is None or psnr > self.best["psnr"]:
            self.best = {"iteration": self.iteration, "psnr": psnr}
            if s.select == "val_psnr":
                self.save_weights(self.out_dir / "model_best.pt", f"val_psnr@{self.iteration}")

    # ---- the loop ---------------------------------------------------------------------------
    def _on_iteration_end(self, iteration: int) -> None:
        """Hook called after every completed iteration (tests use it to simulate interruptions)."""

    def run(self) -> Path:
        s = self.settings
        self.out_dir.mkdir(parents=True, exist_ok=True)
        finished = self.files.finished()
        if finished is not None:
            return finished
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = bool(s.cudnn_benchmark)
        seed_all(self.seed)
        latest = latest_state(self.out_dir)
        if latest is not None:
            self.load_state(latest)
        elif self.init_optimizer_state is not None:
            self.init_optimizer_state(self.optimizer)
        if self.dist.is_main():
            self.files.truncate_csv(self.files.log_path, self.iteration)
            self.files.truncate_csv(self.val_path, self.iteration)
            write_json(self.out_dir / "train_settings.json",
                       {"settings": asdict(s), "sampler": getattr(self.sampler, "describe", dict)(), "seed": self.seed,
                        "device": str(self.device), "world_size": self.dist.world_size,
                        "resumed_from": str(self.resumed_from) if self.resumed_from else None, "meta": self.meta,
                        "speed": self.speed.describe()})
        self.model.train()
        bar = tqdm(total=s.iterations, initial=self.iteration, desc=self.desc, unit="it",
                   disable=not self.progress or not self.dist.is_main(), dynamic_ncols=True)
        last_saved = self.iteration
        self.speed.enter()
        try:
            while self.iteration < s.iterations:
                t0 = time.perf_counter()
                self._pre_step = {"rng": capture_rng(), "sampler": self.sampler.state_dict()}
                self._phase = _Phase.COMPUTING
                batch = self.dist.shard(self.sampler.next_batch())   # every rank draws the global batch
                batch = self.speed.prepare_batch(batch)              # channels-last when asked
                self.optimizer.zero_grad(set_to_none=True)
                if self.lr_lambda is not None:
                    lr = s.lr * self.lr_lambda(self.iteration)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                with self.amp.autocast():
                    terms = self._step(batch)
                loss = terms["loss"]
                self.amp.backward(loss)
                values = self.dist.mean({k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                                         for k, v in terms.items()})
                if not math.isfinite(values["loss"]):
                    raise BenchError(f"training loss became {values['loss']} at iteration {self.iteration + 1}; "
                                     f"the last checkpoint is kept in {self.out_dir}")
                if s.grad_clip > 0:
                    self.amp.unscale_(self.optimizer)
                    values["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, s.grad_clip))
                lr = self.optimizer.param_groups[0]["lr"]
                self._phase = _Phase.UPDATING
                self.amp.step(self.optimizer)
                self.scheduler.step()
                self.iteration += 1
                self.elapsed += time.perf_counter() - t0
                self._phase = _Phase.CLEAN
                if self.columns is None:
                    self.columns = list(values)
                if (self.iteration % max(1, s.log_every) == 0 or self.iteration == s.iterations) \
                        and self.dist.is_main():
                    self.files.append_log(self.iteration, self.columns, values, lr, self.elapsed)
                bar.update(1)
                bar.set_postfix(loss=f"{values['loss']:.4g}", lr=f"{lr:.2g}", refresh=False)
                self._maybe_validate(final=self.iteration == s.iterations)
                if (s.checkpoint_every > 0 and self.iteration % s.checkpoint_every == 0) \
                        or self.iteration == s.iterations:
                    self.save_state()
                    last_saved = self.iteration
                self._on_iteration_end(self.iteration)
        except KeyboardInterrupt:
            self._save_on_interrupt(last_saved)
            raise
        finally:
            bar.close()
            self.speed.close()
        if self.iteration > last_saved:
            self.save_state()
        best = self.out_dir / "model_best.pt"
        use_best = self.settings.select == "val_psnr" and best.exists()
        final = best if use_best else self.out_dir / "model_final.pt"
        with self.dist.main_only() as main:   # rank 0 writes; every rank returns the same path
            if main:
                if not use_best:
                    self.save_weights(final, "last")
                self.files.finish(final, self.iteration, s.keep_final_state)
        return final

    def _save_on_interrupt(self, last_saved: int) -> None:
        """Keep the last completed iteration when the user presses Ctrl-C (see module doc)."""
        if self._phase == _Phase.CLEAN and self.iteration > last_saved:
            self.save_state()
        elif self._phase == _Phase.COMPUTING and self.iteration > last_saved and self._pre_step is not None:
            # parameters and optimiser are untouched; rewind the batch draw and the global RNGs
            self.save_state(rng=self._pre_step["rng"], sampler=self._pre_step["sampler"])

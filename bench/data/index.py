"""``bench data index``: a user's own folder of images becomes a dataset with a generated manifest.

Low and high images are paired by file stem (never by order); a stem without its partner, two files
with one stem, or a pair whose sizes differ is refused. Without ``--high`` the set is unpaired and
only no-reference metrics can score it. Everything goes to the ``test`` split unless fractions are
given; ``val`` is then carved from ``train`` (and is a subset of it, as in every other manifest).
The files are read in place; the manifest, with every file's sha256, is written to
``$BENCH_DATA/_manifests/NAME.yaml``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import BenchError
from ..fsutil import sha256_file
from ..paths import local_manifests_dir, manifests_root
from .manifest import Manifest, Pair
from .prepare import PrepareReport, _listing
from .sources import is_image

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def _by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise BenchError(f"{folder} is not a folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and is_image(p.name):
            if p.stem in found:
                raise BenchError(f"two images with stem {p.stem!r} in {folder}: {found[p.stem].name}, {p.name}")
            found[p.stem] = p
    if not found:
        raise BenchError(f"no images in {folder}")
    return found


def _size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:
        raise BenchError(f"cannot read image {path}: {e}") from None


def index_folder(name: str, low: Path, high: Path | None, train_fraction: float = 0.0,
                 val_fraction: float = 0.0, seed: int = 0, progress: bool = True) -> PrepareReport:
    if not NAME_RE.match(name):
        raise BenchError(f"dataset name {name!r}: use lower-case letters, digits, '.', '_' or '-'")
    if (manifests_root() / "datasets" / f"{name}.yaml").exists():
        raise BenchError(f"{name} is a built-in dataset; choose another name")
    if not (0.0 <= train_fraction < 1.0 and 0.0 <= val_fraction < 1.0):
        raise BenchError("--train-fraction and --val-fraction must lie in [0, 1)")
    if val_fraction and not train_fraction:
        raise BenchError("--val-fraction carves validation from train: give --train-fraction too")
    low, high = low.resolve(), high.resolve() if high else None
    lows = _by_stem(low)
    highs = _by_stem(high) if high else {}
    if high:
        only_low, only_high = sorted(set(lows) - set(highs)), sorted(set(highs) - set(lows))
        if only_low or only_high:
            parts = []
            if only_low:
                parts.append(f"{len(only_low)} low image(s) without a high partner ({_listing(only_low)})")
            if only_high:
                parts.append(f"{len(only_high)} high image(s) without a low partner ({_listing(only_high)})")
            raise BenchError(f"{name}: " + "; ".join(parts))
    root = Path(os.path.commonpath([str(low)] + ([str(high)] if high else [])))
    pairs = []
    for stem in tqdm(sorted(lows), desc=f"index {name}", unit="img", disable=not progress, leave=False):
        lo = lows[stem]
        hi = highs.get(stem)
        if hi is not None and _size(lo) != _size(hi):
            a, b = _size(lo), _size(hi)
            raise BenchError(f"{name}: {stem}: low is {a[0]}x{a[1]} but high is {b[0]}x{b[1]}")
        pairs.append(Pair(stem, lo.relative_to(root).as_posix(), sha256_file(lo),
                          hi.relative_to(root).as_posix() if hi else None, sha256_file(hi) if hi else None))

    order = np.random.default_rng(seed).permutation(len(pairs))
    n_train = int(round(train_fraction * len(pairs)))
    train = sorted((pairs[i] for i in order[:n_train]), key=lambda p: p.id)
    test = sorted((pairs[i] for i in order[n_train:]), key=lambda p: p.id)
    splits = {"test": test}
    if train:
        splits = {"train": train, "val": train[: int(round(val_fraction * len(train)))], "test": test}
        if val_fraction:
            vorder = np.random.default_rng(seed + 1).permutation(len(train))
            splits["val"] = sorted((train[i] for i in vorder[: int(round(val_fraction * len(train)))]),
                                   key=lambda p: p.id)
    m = Manifest(
        name=name, version=1, description=f"indexed from {low}" + (f" and {high}" if high else " (unpaired)"),
        paired=high is not None, storage=name, source={"kind": "indexed", "root": str(root)}, splits=splits,
        split_rule=f"seeded permutation (numpy default_rng({seed})): train fraction {train_fraction}, "
                   f"val fraction of train {val_fraction}, rest test",
    )
    path = local_manifests_dir() / f"{name}.yaml"
    m.save(path)
    return PrepareReport(name, {s: len(v) for s, v in splits.items()}, path)

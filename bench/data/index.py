"""``bench data index``: a user's own folder of images becomes a dataset with a generated manifest.

Low and high images are paired by file stem (never by order); a stem without its partner, two files
with one stem, or a pair whose sizes differ is refused. Every image is decoded completely, with the
decoding runs use (``bench.imageio.read_rgb``: EXIF orientation applied), so sizes are compared as runs
see them and a truncated or undecodable file, or one smaller than the SSIM window, is refused here
rather than after a split was enhanced. A link that resolves outside the dataset folder is refused;
every file not taken (not an image, hidden, a sub-folder, a dangling link or a link loop) is named. Without ``--high`` the set is unpaired and
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
from ..fsutil import os_reason, resolve_user_path, sha256_file, sweep_stale_temporaries
from ..imageio import MIN_SIDE, read_rgb
from ..paths import local_manifests_dir, manifests_root
from .manifest import Manifest, Pair
from .prepare import PrepareReport, _listing
from .sources import IMAGE_SUFFIXES, is_image

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def _by_stem(folder: Path, root: Path, skipped: list[tuple[str, str]]) -> dict[str, Path]:
    """The images of ``folder`` by stem; every entry not taken is added to ``skipped`` with the reason.

    A link is followed only when it resolves inside ``root`` (runs refuse anything else, so it is refused
    here, before any work); a link loop or a dangling link is skipped and named.
    """
    if not folder.is_dir():
        raise BenchError(f"{folder} is not a folder")
    found: dict[str, Path] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise BenchError(f"cannot list {folder}: {os_reason(e)}") from None
    for p in entries:
        why = None
        if p.name.startswith("."):
            why = "hidden file"
        elif p.is_symlink():
            try:
                target = p.resolve(strict=True)
            except FileNotFoundError:
                why = "dangling symbolic link"
            except (OSError, RuntimeError) as e:
                why = os_reason(e)
            else:
                if not target.is_relative_to(root):
                    raise BenchError(f"{p} links to {target}, outside the dataset folder {root}; runs read only files "
                                     "inside it: copy the file in, or index a folder that holds both")
        if why is None:
            if p.is_dir():
                why = "a folder (sub-folders are not searched)"
            elif not p.is_file():
                why = "not a regular file"
            elif not is_image(p.name):
                why = f"not an image ({p.suffix or 'no suffix'}; images are {', '.join(sorted(IMAGE_SUFFIXES))})"
        if why is not None:
            skipped.append((str(p), why))
            continue
        if p.stem in found:
            raise BenchError(f"two images with stem {p.stem!r} in {folder}: {found[p.stem].name}, {p.name}")
        found[p.stem] = p
    if not found:
        raise BenchError(f"no images in {folder}" + (f" ({len(skipped)} file(s) skipped: "
                                                     f"{_listing([f'{Path(a).name} ({b})' for a, b in skipped])})"
                                                     if skipped else ""))
    return found


def _decoded_shape(path: Path) -> tuple[int, int]:
    """(W, H) of ``path`` as runs see it: decoded completely, EXIF orientation applied (bench.imageio)."""
    arr = read_rgb(path)
    return arr.shape[1], arr.shape[0]


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
    low = resolve_user_path(low, "--low")
    high = resolve_user_path(high, "--high") if high else None
    root = Path(os.path.commonpath([str(low)] + ([str(high)] if high else [])))
    skipped: list[tuple[str, str]] = []
    lows = _by_stem(low, root, skipped)
    highs = _by_stem(high, root, skipped) if high else {}
    if high:
        only_low, only_high = sorted(set(lows) - set(highs)), sorted(set(highs) - set(lows))
        if only_low or only_high:
            parts = []
            if only_low:
                parts.append(f"{len(only_low)} low image(s) without a high partner ({_listing(only_low)})")
            if only_high:
                parts.append(f"{len(only_high)} high image(s) without a low partner ({_listing(only_high)})")
            raise BenchError(f"{name}: " + "; ".join(parts))
    pairs = []
    problems: list[str] = []
    too_small: list[str] = []
    for stem in tqdm(sorted(lows), desc=f"index {name}", unit="img", disable=not progress, leave=False):
        lo = lows[stem]
        hi = highs.get(stem)
        try:
            a = _decoded_shape(lo)
            b = _decoded_shape(hi) if hi is not None else None
        except BenchError as e:
            problems.append(str(e))
            continue
        small = [f"{p.relative_to(root).as_posix()} ({wh[0]}x{wh[1]})" for p, wh in ((lo, a), (hi, b))
                 if wh is not None and min(wh) < MIN_SIDE]
        if small:
            too_small.extend(small)
            continue
        if b is not None and a != b:
            problems.append(f"{stem}: low is {a[0]}x{a[1]} but high is {b[0]}x{b[1]} (after EXIF orientation)"
                            if _exif_rotated(lo) or _exif_rotated(hi) else
                            f"{stem}: low is {a[0]}x{a[1]} but high is {b[0]}x{b[1]}")
            continue
        pairs.append(Pair(stem, lo.relative_to(root).as_posix(), sha256_file(lo),
                          hi.relative_to(root).as_posix() if hi else None, sha256_file(hi) if hi else None))
    if too_small:
        problems.insert(0, f"{len(too_small)} image(s) under {root} smaller than {MIN_SIDE}x{MIN_SIDE} pixels, the "
                           f"SSIM window ({_listing(too_small)})")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise BenchError(f"{name}: " + "; ".join(problems[:5]) + more + "; nothing was indexed")

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
        paired=high is not None, storage=name,
        source={"kind": "indexed", "root": str(root), "low": str(low), **({"high": str(high)} if high else {}),
                "options": {"train_fraction": train_fraction, "val_fraction": val_fraction, "seed": seed}},
        splits=splits,
        split_rule=f"seeded permutation (numpy default_rng({seed})): train fraction {train_fraction}, "
                   f"val fraction of train {val_fraction}, rest test",
    )
    folder = local_manifests_dir()
    sweep_stale_temporaries(folder, recursive=False)
    path = folder / f"{name}.yaml"
    m.save(path, sealed=True, what="the dataset manifest")
    return PrepareReport(name, {s: len(v) for s, v in splits.items()}, path, skipped)


def _exif_rotated(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            return im.getexif().get(0x0112, 1) not in (1, None)
    except Exception:  # noqa: BLE001 (only used to word a message)
        return False

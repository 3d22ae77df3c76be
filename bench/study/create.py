"""``bench study create``: completed runs of one dataset → a blind forced-choice study folder.

A study lives in ``<results>/studies/NAME/``:

- ``study.json``: the design -- dataset and split, the methods and the runs they come from, the seed, the rater
  groups, and the trials (an opaque trial id, the image id, its category, and for every method the opaque name
  of its output's copy; with ``--with-input`` also the input's copy);
- ``img/``: the images raters see under random names (``<32 hex>.png``), so neither a URL nor a file name says
  which method made an image; each is re-encoded from its pixels (no byte, chunk or metadata of the run's file,
  hence a sha256 that is not in the run's ``per_image.csv``), padded so the candidates of a trial have one size,
  written in a random order and given one common file time;
- ``votes.sqlite``: created by ``bench study serve`` (see :mod:`bench.study.store`).

The order of trials and the left-to-right order of the methods are drawn per rater when the rater joins, from
the study seed and the rater's join number (:func:`bench.study.store.rater_orders`), and recorded with every
vote. Image selection (``--images``, ``--per-category``) is seeded by ``--seed`` too.
"""

from __future__ import annotations

import csv
import json
import random
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import BenchError
from ..fsutil import write_json
from ..paths import results_root

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_METHODS, MAX_METHODS = 2, 4
DEFAULT_GROUPS = ("expert", "amateur")
GROUP_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
NO_CATEGORY = "all"
STUDY_FILE = "study.json"
DB_FILE = "votes.sqlite"
IMG_DIR = "img"


def studies_root() -> Path:
    return results_root() / "studies"


def study_dir(name: str | Path) -> Path:
    """A study's folder from its NAME (under ``<results>/studies``) or from a path to the folder."""
    text = str(name)
    if "/" in text or text.startswith("."):
        path = Path(text).expanduser().resolve()
        if not (path / STUDY_FILE).is_file():
            raise BenchError(f"{path} is not a study folder (no {STUDY_FILE})")
        return path
    if not NAME_RE.match(text):
        raise BenchError(f"study name {text!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    return studies_root() / text


def load_study(name: str | Path) -> tuple[Path, dict[str, Any]]:
    path = study_dir(name)
    f = path / STUDY_FILE
    if not f.is_file():
        known = sorted(p.name for p in studies_root().glob(f"*/{STUDY_FILE}")) if studies_root().is_dir() else []
        hint = f"; studies: {', '.join(p for p in known)}" if known else "; create it with `bench study create`"
        raise BenchError(f"no study {str(name)!r} at {path}{hint}")
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot read {f}: {e}") from None
    return path, doc


@dataclass
class RunInfo:
    path: Path
    method: str
    display_name: str
    dataset: str
    split: str
    run_id: str
    outputs: dict[str, Path]
    smoke: bool


def read_run(path: Path) -> RunInfo:
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise BenchError(f"run directory {path} does not exist")
    if not (path / "DONE").is_file():
        raise BenchError(f"run {path} is not complete (no DONE); finish it with `bench run` first")
    from ..records import read_config, verify_run

    verify_run(path, outputs=True)   # the seal in DONE: edited records or outputs are refused, naming the file
    cfg = read_config(path / "config.yaml")
    for key in ("method", "dataset", "split"):
        if not cfg.get(key):
            raise BenchError(f"{path}/config.yaml has no {key!r}; is this a run directory?")
    outs = {p.stem: p for p in sorted((path / "outputs").glob("*.png"))} if (path / "outputs").is_dir() else {}
    if not outs:
        raise BenchError(f"run {path} has no outputs/*.png")
    return RunInfo(path, str(cfg["method"]), str(cfg.get("display_name") or cfg["method"]), str(cfg["dataset"]),
                   str(cfg["split"]), str(cfg.get("run_id") or path.name), outs, bool(cfg.get("smoke")))


def read_categories(path: Path) -> dict[str, str]:
    """``id,category`` CSV (a header row naming both columns) → {image id: category}."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"categories file {path} not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        id_col = cols.get("id") or cols.get("image")
        cat_col = cols.get("category")
        if not id_col or not cat_col:
            raise BenchError(f"{path}: needs a header with columns id,category")
        out: dict[str, str] = {}
        for lineno, row in enumerate(reader, 2):
            pid, cat = (row.get(id_col) or "").strip(), (row.get(cat_col) or "").strip()
            if not pid and not cat:
                continue
            if not pid or not cat:
                raise BenchError(f"{path}:{lineno}: empty id or category")
            if out.get(pid, cat) != cat:
                raise BenchError(f"{path}:{lineno}: image {pid!r} listed in two categories ({out[pid]!r}, {cat!r})")
            out[pid] = cat
    if not out:
        raise BenchError(f"{path}: no rows")
    return out


def select_images(ids: Sequence[str], categories: dict[str, str] | None, images: int | None,
                  per_category: int | None, seed: int) -> tuple[list[tuple[str, str]], list[str]]:
    """Seeded choice of (image id, category) pairs and notes about what was left out."""
    notes: list[str] = []
    rng = random.Random(seed)
    if categories is not None:
        unknown = sorted(set(categories) - set(ids))
        if unknown:
            notes.append(f"{len(unknown)} image(s) in the categories file have no output in every run "
                         f"(e.g. {', '.join(unknown[:3])})")
        missing = [i for i in ids if i not in categories]
        if missing:
            notes.append(f"{len(missing)} image(s) without a category left out (e.g. {', '.join(missing[:3])})")
        pool = [(i, categories[i]) for i in ids if i in categories]
    else:
        pool = [(i, NO_CATEGORY) for i in ids]
    if not pool:
        raise BenchError("no image is left to put in the study")
    if per_category is not None:
        if per_category < 1:
            raise BenchError("--per-category must be at least 1")
        chosen: list[tuple[str, str]] = []
        cats = list(dict.fromkeys(c for _, c in pool))
        for c in cats:
            members = [p for p in pool if p[1] == c]
            if len(members) < per_category:
                raise BenchError(f"category {c!r} has {len(members)} image(s), fewer than --per-category "
                                 f"{per_category}")
            chosen += rng.sample(members, per_category)
        pool = chosen
    if images is not None:
        if images < 1:
            raise BenchError("--images must be at least 1")
        if images > len(pool):
            raise BenchError(f"--images {images}: only {len(pool)} image(s) are available")
        if per_category is not None and images != len(pool):
            raise BenchError(f"--images {images} and --per-category {per_category} disagree: "
                             f"{per_category} per category makes {len(pool)} images")
        pool = rng.sample(pool, images)
    cat_order = {c: k for k, c in enumerate(dict.fromkeys(c for _, c in pool))}
    return sorted(pool, key=lambda p: (cat_order[p[1]], p[0])), notes


def _input_path(dataset: str, split: str, pid: str) -> Path:
    from ..data.manifest import load_manifest

    m = load_manifest(dataset)
    for p in m.split(split):
        if p.id == pid:
            path = m.file_path(p.low)
            if not path.is_file():
                raise BenchError(f"--with-input: input {path} of {pid} is missing; run `bench data prepare {dataset}`")
            return path
    raise BenchError(f"--with-input: image {pid} is not in {dataset}:{split}")


PAD_CHUNK = b"paDd"  # a private, ancillary, safe-to-copy PNG chunk: decoders skip it
PAD_BLOCK = 4096
BLIND_MTIME = 946684800  # 2000-01-01: every served file has the same time


def blind_png(path: Path) -> bytes:
    """An image's pixels re-encoded as a fresh 8-bit RGB PNG: no chunk, metadata or encoder setting carried over
    from the file (so its bytes, and its sha256 in the run's ``per_image.csv``, never identify the run)."""
    import io

    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot read image {path}: {e}") from None
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def pad_png(pngs: Sequence[bytes]) -> list[bytes]:
    """The PNGs padded to one common size (a multiple of :data:`PAD_BLOCK`) with a chunk of random bytes before
    ``IEND``: the candidates of a trial all have the same size, so sizes cannot order the methods, and no two
    files (nor a file and any run output) share their bytes."""
    import struct
    import zlib

    target = -(-(max(len(p) for p in pngs) + 12 + 16) // PAD_BLOCK) * PAD_BLOCK
    out = []
    for png in pngs:
        if png[-8:-4] != b"IEND":  # pragma: no cover -- PIL always ends with IEND
            raise BenchError("internal: re-encoded PNG has no IEND chunk")
        payload = secrets.token_bytes(target - len(png) - 12)
        chunk = struct.pack(">I", len(payload)) + PAD_CHUNK + payload + struct.pack(">I", zlib.crc32(PAD_CHUNK +
                                                                                                   payload))
        out.append(png[:-12] + chunk + png[-12:])
    return out


def _write_blind(path: Path, data: bytes) -> None:
    import os

    path.write_bytes(data)
    os.utime(path, (BLIND_MTIME, BLIND_MTIME))


def _opaque(taken: set[str]) -> str:
    while True:
        name = secrets.token_hex(16) + ".png"
        if name not in taken:
            taken.add(name)
            return name


def create_study(name: str, runs: Sequence[Path], images: int | None = None, per_category: int | None = None,
                 seed: int = 0, with_input: bool = False, categories: Path | None = None,
                 groups: Sequence[str] = DEFAULT_GROUPS, title: str | None = None,
                 root: Path | None = None) -> tuple[Path, list[str]]:
    """Build the study folder; returns (its path, notes). Refuses to overwrite an existing study."""
    if not NAME_RE.match(name or ""):
        raise BenchError(f"study name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    dest = (Path(root) if root else studies_root()) / name
    if dest.exists():
        raise BenchError(f"study {name} already exists at {dest}; choose another name (its votes are kept)")
    groups = [g.strip().lower() for g in groups if g.strip()]
    bad = [g for g in groups if not GROUP_RE.match(g)]
    if bad or not groups or len(set(groups)) != len(groups):
        raise BenchError(f"--groups: give distinct lower-case names (letters, digits, '_' or '-'), got {groups}")
    infos = [read_run(r) for r in runs]
    if not MIN_METHODS <= len(infos) <= MAX_METHODS:
        raise BenchError(f"a study compares {MIN_METHODS} to {MAX_METHODS} methods (keys 1-{MAX_METHODS}); "
                         f"got {len(infos)} run(s)")
    first = infos[0]
    for r in infos[1:]:
        if (r.dataset, r.split) != (first.dataset, first.split):
            raise BenchError(f"runs of different data: {first.path} is {first.dataset}:{first.split}, "
                             f"{r.path} is {r.dataset}:{r.split}")
    methods = [r.method for r in infos]
    if len(set(methods)) != len(methods):
        dup = sorted({m for m in methods if methods.count(m) > 1})
        raise BenchError(f"two runs of the same method ({', '.join(dup)}); give one run per method")
    notes: list[str] = []
    common = set(first.outputs)
    for r in infos[1:]:
        common &= set(r.outputs)
    every = set().union(*(r.outputs for r in infos))
    if every - common:
        notes.append(f"{len(every - common)} image(s) not output by every run left out")
    if not common:
        raise BenchError("the runs have no output image in common")
    smoke = [r.method for r in infos if r.smoke]
    if smoke:
        notes.append(f"smoke run(s) (--limit or smoke profile): {', '.join(smoke)}")
    cats = read_categories(categories) if categories else None
    chosen, sel_notes = select_images(sorted(common), cats, images, per_category, seed)
    notes += sel_notes

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{name}.{secrets.token_hex(4)}.tmp"
    try:
        (tmp / IMG_DIR).mkdir(parents=True)
        taken: set[str] = set()
        trial_ids: set[str] = set()
        trials = []
        for pid, cat in chosen:
            tid = secrets.token_hex(8)
            while tid in trial_ids:
                tid = secrets.token_hex(8)
            trial_ids.add(tid)
            files = {}
            encoded = {}
            for r in infos:
                files[r.method] = _opaque(taken)
                encoded[files[r.method]] = blind_png(r.outputs[pid])
            inp = None
            if with_input:
                inp = _opaque(taken)
                _write_blind(tmp / IMG_DIR / inp, pad_png([blind_png(_input_path(first.dataset, first.split, pid))])[0])
            names = list(encoded)
            random.SystemRandom().shuffle(names)  # the write order must not follow --runs either
            for name, data in zip(names, pad_png([encoded[n] for n in names])):
                _write_blind(tmp / IMG_DIR / name, data)
            trials.append({"id": tid, "image": pid, "category": cat, "files": files, "input": inp})
        from ..provenance import now

        doc = {
            "format": 1, "name": name, "title": title or f"Which photo looks best? ({name})", "created": now(),
            "seed": int(seed), "dataset": first.dataset, "split": first.split, "groups": groups,
            "methods": [{"name": r.method, "display_name": r.display_name, "run": str(r.path), "run_id": r.run_id}
                        for r in infos],
            "with_input": bool(with_input), "categories_file": str(Path(categories).resolve()) if categories else None,
            "categorized": cats is not None,
            "selection": {"images": images, "per_category": per_category, "n_trials": len(trials)},
            "order": "per rater, drawn at join from (seed, join number): trial order and left-to-right method order",
            "trials": trials,
        }
        write_json(tmp / STUDY_FILE, doc)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest, notes

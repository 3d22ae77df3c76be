"""MIT-Adobe FiveK (Expert C) in the two readings of the DSN paper (dsn_reference.md D3).

* ``fivek``: the Distort-and-Recover 500-px JPEG pairs as downloaded (DSN's README). Their checksums
  cannot be known here, so the first ``prepare`` records them in a lock file and every later
  ``prepare`` and run verifies against it.
* ``fivek-distorted``: the paper's text. Expert C targets, with inputs synthesised by the
  Distort-and-Recover operators (``bench.data.distort``), seeded per image so a rebuild is
  bit-identical; the drawn operators are recorded in the lock file. Targets may be any export (e.g.
  the 512-px TIFFs of Adobe-DPE), decoded with their ICC profile to sRGB and stored as PNG.

Both use DSN's split: IDs 000001–004500 train and 004501–005000 test. A file is matched to an ID by
its name: ``000123.jpg`` is 000123, and a FiveK name ``a0123-…`` is taken to be 000123 (D&R numbers
the images in FiveK order; this mapping is presumed, not verified). Its role comes from a folder
name on its path: low = raw/low/input, high = target/high/expertc/c/gt.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from ..errors import BenchError
from ..fsutil import sha256_bytes, sha256_file
from .manifest import Manifest, Pair, lock_path
from .prepare import PrepareReport, _listing, _unique_pairs, selected_splits
from .sources import Source, is_image

LOW_FOLDERS = {"raw", "low", "input", "inputs"}
HIGH_FOLDERS = {"target", "targets", "high", "expertc", "c", "gt", "expert_c"}


def id_from_name(name: str) -> str | None:
    stem = PurePosixPath(name).stem
    if re.fullmatch(r"\d{1,6}", stem):
        return stem.zfill(6)
    m = re.match(r"a(\d{4})(?:[-_].*)?$", stem)
    return m.group(1).zfill(6) if m else None


def _role(rel: str) -> str | None:
    parts = [p.lower() for p in PurePosixPath(rel).parts[:-1]]
    for part in reversed(parts):
        if part in LOW_FOLDERS:
            return "low"
        if part in HIGH_FOLDERS:
            return "high"
    return None


def index_source(src: Source, roles: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """Map (role, id) → relative path of every image under the root whose role and ID are clear."""
    found: dict[tuple[str, str], str] = {}
    for rel in sorted(src.all_files()):
        if not is_image(rel):
            continue
        role, pid = _role(rel), id_from_name(rel)
        if role is None and roles == ("high",):
            role = "high"  # a plain folder of targets
        if role not in roles or pid is None:
            continue
        if (role, pid) in found:
            raise BenchError(f"two {role} files for FiveK id {pid}: {found[(role, pid)]} and {rel}")
        found[(role, pid)] = rel
    return found


def _require(m: Manifest, wanted: list[Pair], found, roles, partial: bool, root: Path) -> list[Pair]:
    missing = [p for p in wanted if any((r, p.id) not in found for r in roles)]
    if missing and not partial:
        raise BenchError(
            f"{m.name}: {len(missing)} of {len(wanted)} pairs have no {'/'.join(roles)} image under {root} "
            f"(ids {_listing([p.id for p in missing])}); pass --partial to build from what is there "
            f"(runs are then marked partial). {m.source.get('how_to_get', '')}".rstrip()
        )
    present = [p for p in wanted if p not in missing]
    if not present:
        raise BenchError(f"{m.name}: no usable image found under {root}")
    return present


def _write_lock(m: Manifest, splits: dict[str, list[Pair]], partial: bool, extra: dict) -> Manifest:
    lp = lock_path(m)
    if lp.exists():  # keep splits prepared earlier (e.g. --split test first, train later)
        old = _read_lock(m)
        splits = {**old.splits, **splits}
        partial = partial or bool(old.extra.get("partial"))
        extra = {k: {**old.extra.get(k, {}), **v} if isinstance(v, dict) else v for k, v in extra.items()}
    lock = Manifest(m.name, m.version, m.description, m.paired, m.storage,
                    dict(m.source), splits, m.split_rule, extra=dict(extra, partial=partial))
    lock.save(lock_path(m), sealed=True, what="the lock file")
    return lock


def _lock_splits(m: Manifest, split_names: list[str], pairs_by_id: dict[str, Pair]) -> dict[str, list[Pair]]:
    return {s: [pairs_by_id[p.id] for p in m.split(s) if p.id in pairs_by_id] for s in split_names}


def _check_against_old_lock(m: Manifest, new: dict[str, Pair]) -> None:
    lp = lock_path(m)
    if not lp.exists():
        return
    old = {p.id: p for ps in _read_lock(m).splits.values() for p in ps}
    changed = [i for i, p in new.items() if i in old and (old[i].low_sha256, old[i].high_sha256) != (p.low_sha256, p.high_sha256)]
    if changed:
        raise BenchError(f"{m.name}: {len(changed)} pair(s) differ from the hashes recorded in {lp} on first use "
                         f"(ids {_listing(changed)}); restore the original files or delete the lock to start over")


def _read_lock(m: Manifest) -> Manifest:
    from .manifest import locked

    return locked(m)


def prepare_locked(m: Manifest, root: Path, split: str | None, partial: bool, progress: bool) -> PrepareReport:
    split_names = selected_splits(m, split)
    src = Source(root)
    found = index_source(src, ("low", "high"))
    present = _require(m, _unique_pairs(m, split_names), found, ("low", "high"), partial, root)
    done: dict[str, Pair] = {}
    for p in tqdm(present, desc=f"hash {m.name}", unit="pair", disable=not progress, leave=False):
        lo, hi = found[("low", p.id)], found[("high", p.id)]
        low_rel = f"low/{p.id}{PurePosixPath(lo).suffix.lower()}"
        high_rel = f"high/{p.id}{PurePosixPath(hi).suffix.lower()}"
        done[p.id] = Pair(p.id, low_rel, src.sha256(lo), high_rel, src.sha256(hi))
    _check_against_old_lock(m, done)
    from ..imageio import check_min_size, read_rgb

    unusable: list[str] = []
    for p in tqdm(present, desc=f"copy {m.name}", unit="pair", disable=not progress, leave=False):
        q = done[p.id]
        for rel, srel, digest in ((q.low, found[("low", p.id)], q.low_sha256), (q.high, found[("high", p.id)], q.high_sha256)):
            dest = m.file_path(rel)
            if not (dest.is_file() and sha256_file(dest) == digest):
                src.copy_to(srel, dest)
            try:  # decoded as runs decode it: complete, EXIF orientation applied, at least the SSIM window
                arr = read_rgb(dest)
                check_min_size(src.describe(srel), arr)
            except BenchError as e:
                unusable.append(str(e).replace(str(dest), src.describe(srel)))
    if unusable:
        more = f" (and {len(unusable) - 5} more)" if len(unusable) > 5 else ""
        raise BenchError(f"{m.name}: " + "; ".join(unusable[:5]) + more + "; no lock was written (fix or remove them "
                         "and re-run)")
    splits = _lock_splits(m, split_names, done)
    _write_lock(m, splits, partial and len(present) < len(_unique_pairs(m, split_names)), {})
    return PrepareReport(m.name, {s: len(v) for s, v in splits.items()}, m.root)


def image_seed(base_seed: int, pid: str) -> int:
    """A per-image seed that does not depend on which other images are built, or in which order."""
    return int(sha256_bytes(f"{base_seed}:{pid}".encode())[:8], 16)


def _distort_one(args) -> tuple[str, str, str, list]:
    target_path, pid, low_dest, high_dest, seed, variant = args
    from ..imageio import read_rgb, write_png
    from .distort import distort

    from ..imageio import check_min_size

    target = read_rgb(target_path)
    check_min_size(target_path, target)
    low, ops = distort(target, seed, variant)
    write_png(high_dest, target)
    write_png(low_dest, low)
    return pid, sha256_file(low_dest), sha256_file(high_dest), ops


def prepare_distorted(m: Manifest, root: Path, split: str | None, partial: bool, jobs: int | None,
                      progress: bool) -> PrepareReport:
    split_names = selected_splits(m, split)
    src = Source(root)
    if src.zip is not None:
        raise BenchError(f"{m.name}: unpack the Expert C images into a folder first (zip input is not supported here)")
    found = index_source(src, ("high",))
    present = _require(m, _unique_pairs(m, split_names), found, ("high",), partial, root)
    base_seed = int(m.source.get("seed", 0))
    variant = str(m.source.get("variant", "uniform"))
    tasks = [(str(src.root / found[("high", p.id)]), p.id, m.file_path(p.low), m.file_path(p.high),
              image_seed(base_seed, p.id), variant) for p in present]
    results: dict[str, tuple] = {}
    workers = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    from ..fsutil import die_with_parent

    with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        for pid, lo, hi, ops in tqdm(pool.map(_distort_one, tasks, chunksize=4), total=len(tasks),
                                     desc=f"distort {m.name}", unit="img", disable=not progress):
            results[pid] = (lo, hi, ops)
    done = {p.id: Pair(p.id, p.low, results[p.id][0], p.high, results[p.id][1]) for p in present}
    _check_against_old_lock(m, done)
    splits = _lock_splits(m, split_names, done)
    _write_lock(m, splits, partial and len(present) < len(_unique_pairs(m, split_names)),
                {"operators": {pid: results[pid][2] for pid in sorted(results)},
                 "targets": {p.id: found[("high", p.id)] for p in present}})
    return PrepareReport(m.name, {s: len(v) for s, v in splits.items()}, m.root)

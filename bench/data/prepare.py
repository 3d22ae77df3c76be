"""``bench data prepare``: check a user's download against a manifest and put the files in place.

Nothing is written unless every requested file is present and matches its checksum; the error then
names how many files are missing or altered and which. Files land under ``$BENCH_DATA/<storage>/``
at the manifest's relative paths, each copied atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..errors import BenchError
from ..fsutil import sha256_file, sweep_stale_temporaries
from .manifest import Manifest, Pair, load_manifest
from .sources import Source, is_image


@dataclass
class PrepareReport:
    dataset: str
    splits: dict[str, int]
    root: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) not taken (bench data index)

    def skipped_lines(self) -> list[str]:
        """Every skipped file, named, for stderr (empty when none)."""
        if not self.skipped:
            return []
        return [f"note: skipped {len(self.skipped)} file(s):"] + [f"  {f}: {why}" for f, why in self.skipped]

    def lines(self) -> list[str]:
        sizes = ", ".join(f"{s}: {n} pairs" for s, n in self.splits.items())
        return [f"prepared {self.dataset} ({sizes}) under {self.root}"]


def _listing(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


def selected_splits(m: Manifest, split: str | None) -> list[str]:
    if split is None:
        return list(m.splits)
    m.split(split)  # raises with "did you mean"
    return [split]


def _unique_pairs(m: Manifest, splits: list[str]) -> list[Pair]:
    """Pairs of the splits, once each (``val`` is a subset of ``train``)."""
    seen: dict[str, Pair] = {}
    for s in splits:
        for p in m.split(s):
            seen.setdefault(p.id, p)
    return list(seen.values())


def prepare_files(m: Manifest, root: Path, split: str | None, progress: bool = True) -> PrepareReport:
    """Datasets whose every file is known in advance by its sha256 (LOL)."""
    splits = selected_splits(m, split)
    src = Source(root)
    pairs = _unique_pairs(m, splits)
    src.locate([p.low for p in pairs[:50]] + [p.high for p in pairs[:50] if p.high])

    split_ids = {s: {q.id for q in m.split(s)} for s in splits}
    missing: dict[str, list[str]] = {s: [] for s in splits}
    altered: list[str] = []
    present_ok: dict[str, int] = {s: 0 for s in splits}
    bad_ids: set[str] = set()
    for p in tqdm(pairs, desc=f"check {m.name}", unit="pair", disable=not progress, leave=False):
        pair_ok = True
        for rel, digest in ((p.low, p.low_sha256), (p.high, p.high_sha256)):
            if rel is None:
                continue
            if not src.exists(rel):
                pair_ok = False
                for s in splits:
                    if p.id in split_ids[s] and rel not in missing[s]:
                        missing[s].append(rel)
            elif digest and src.sha256(rel) != digest:
                pair_ok = False
                altered.append(rel)
        if not pair_ok:
            bad_ids.add(p.id)
    for s in splits:
        present_ok[s] = len(split_ids[s] - bad_ids)

    if altered:
        raise BenchError(
            f"{m.name}: {len(altered)} file(s) under {src.describe('')} differ from the manifest's checksums "
            f"({_listing(altered)}); re-download them. {m.source.get('how_to_get', '')}".rstrip()
        )
    missing_splits = {s: v for s, v in missing.items() if v}
    if missing_splits:
        parts = []
        for s, files in missing_splits.items():
            n_pairs = len(m.split(s)) - present_ok[s]
            parts.append(f"{n_pairs} of {len(m.split(s))} {s} pairs missing ({_listing(files, 8)})")
        verified = "; ".join(f"the {present_ok[s]} present {s} pairs match their checksums" for s in missing_splits)
        complete = [s for s in m.splits if s not in missing_splits and s in splits]
        hint = f" Prepare only complete splits with --split ({', '.join(complete)})," if complete and split is None else ""
        raise BenchError(
            f"{m.name}: " + "; ".join(parts) + f" under {src.describe('')}; {verified}; nothing was written.{hint} "
            + m.source.get("how_to_get", "")
        )

    expected = {r for p in _unique_pairs(m, list(m.splits)) for r in (p.low, p.high) if r}
    folders = {str(Path(r).parent) for p in pairs for r in (p.low, p.high) if r}
    unexpected = sorted(
        f for f in (x[len(src.base):] for x in src.all_files() if x.startswith(src.base))
        if str(Path(f).parent) in folders and is_image(f) and f not in expected
    )
    if unexpected:
        raise BenchError(f"{m.name}: {len(unexpected)} unexpected image(s) beside the manifest's files "
                         f"({_listing(unexpected)}); this is not the release the manifest describes")

    for p in tqdm(pairs, desc=f"copy {m.name}", unit="pair", disable=not progress, leave=False):
        for rel, digest in ((p.low, p.low_sha256), (p.high, p.high_sha256)):
            if rel is None:
                continue
            dest = m.file_path(rel)
            if dest.is_file() and (not digest or sha256_file(dest) == digest):
                continue
            src.copy_to(rel, dest)
    return PrepareReport(m.name, {s: len(m.split(s)) for s in splits}, m.root)


def prepare(name: str, root: Path | None, split: str | None = None, partial: bool = False,
            jobs: int | None = None, progress: bool = True) -> PrepareReport:
    m = load_manifest(name)
    kind = m.kind
    if kind == "demo":
        from .demo import build_demo

        return build_demo(m, progress=progress)
    if kind == "indexed":
        raise BenchError(f"{name} was made by `bench data index` and reads its files in place; nothing to prepare")
    if root is None:
        raise BenchError(f"bench data prepare {name} needs --root PATH. {m.source.get('how_to_get', '')}".rstrip())
    from ..fsutil import resolve_user_path

    root = resolve_user_path(root, "--root")
    sweep_stale_temporaries(m.root)  # temporaries of an earlier prepare killed mid-write
    if kind == "files":
        if partial:
            raise BenchError(f"--partial is not allowed for {name}: its files are known; use --split instead")
        return prepare_files(m, root, split, progress)
    if kind == "lock":
        from .fivek import prepare_locked

        return prepare_locked(m, root, split, partial, progress)
    if kind == "distorted":
        from .fivek import prepare_distorted

        return prepare_distorted(m, root, split, partial, jobs, progress)
    raise BenchError(f"{name}: cannot prepare source kind {kind!r}")

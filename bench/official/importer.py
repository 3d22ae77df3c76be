"""``bench weights import official --method M PATH...``: the authors' released checkpoints, converted once.

The official files are read (torch state dicts with ``weights_only``; TensorFlow checkpoints with
:mod:`bench.official.tfbundle`, CRC32C-checked), mapped into a freshly built network of the method by its
:class:`~bench.official.layout.OfficialLayout` (strict: :mod:`bench.official.layout`), and stored as one
weights file of this project in ``$BENCH_DATA/_weights/official/<method>-<id>.pt`` whose ``meta`` says
``weights_source: official`` and carries the record: every source file's path, sha256, size and the
``manifests/weights.yaml`` entry it matches ("unverified" when it matches none). ``official:M`` (``--weights``)
names the latest import of M, ``official:M@ID`` a given one; the stored file is re-hashed against the record
before it is used. ``--dry-run`` checks names and shapes only (a TF index without its data shard is enough).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..errors import BenchError
from ..fsutil import canonical_hash, read_yaml, sha256_file, write_yaml
from ..paths import data_root
from ..provenance import now
from .layout import LayoutError, OfficialLayout, Part, convert, dry_run
from .tfbundle import TFCheckpointError, open_bundle

__all__ = ["official_dir", "imports", "layout_for", "locate_parts", "read_part",
           "import_official", "resolve_official", "describe_file"]

RECORD = "official_imports.yaml"


def official_dir() -> Path:
    return data_root() / "_weights" / "official"


def _record_path() -> Path:
    return data_root() / "_weights" / RECORD


def imports() -> list[dict[str, Any]]:
    """Every recorded import, oldest first."""
    p = _record_path()
    if not p.exists():
        return []
    return list((read_yaml(p) or {}).get("imports") or [])


def layout_for(cls: type) -> OfficialLayout:
    layout = cls.official_layout() if hasattr(cls, "official_layout") else None
    if layout is None:
        raise BenchError(f"{cls.name} has no official checkpoint to import"
                         + (" (it is not a learned method)" if not getattr(cls, "trainable", False) else ""))
    return layout


def _default_model(cls: type) -> torch.nn.Module:
    from ..methods.base import build_config

    torch.manual_seed(0)
    method = cls(build_config(cls, "paper", {}, ""))
    method.device = torch.device("cpu")
    if hasattr(method, "begin_setup"):
        method.begin_setup()   # what build_model may need (e.g. Distort-and-Recover's state builder)
    return method.build_model()


# ------------------------------------------------------------------------------------------------
# finding and reading the official files
# ------------------------------------------------------------------------------------------------
def _matches(part: Part, path: Path) -> bool:
    text = str(path).replace(os.sep, "/")
    return any(f"/{name}" in f"/{text}" or text.endswith(name) for name in part.locate)


def _search(root: Path, part: Part) -> list[Path]:
    """Candidates for ``part`` under the folder ``root`` (three levels deep), by its ``locate`` names."""
    found: list[Path] = []
    for depth in ("*", "*/*", "*/*/*"):
        for p in sorted(root.glob(depth)):
            if _matches(part, p.relative_to(root)) and (p.is_dir() or p.suffix in (".index", ".pth", ".pt", ".pkl")):
                found.append(p)
        if found:
            return found
    return found


def locate_parts(layout: OfficialLayout, paths: Sequence[Path]) -> dict[str, Path]:
    """Which given path holds which part. One part: the one path. Several: each path by the part's
    ``locate`` names, or one folder searched for all of them. A part not found is named with where the
    official release keeps it."""
    paths = [Path(p).expanduser() for p in paths]
    for p in paths:
        if not p.exists() and not Path(f"{p}.index").exists():
            raise BenchError(f"official weights not found: {p}")
    if len(layout.parts) == 1:
        if len(paths) != 1:
            raise BenchError(f"{layout.method}: give one official file, got {len(paths)}")
        return {layout.parts[0].name: paths[0]}
    out: dict[str, Path] = {}
    for part in layout.parts:
        direct = [p for p in paths if _matches(part, p)]
        if len(direct) == 1:
            out[part.name] = direct[0]
            continue
        inside = [c for p in paths if p.is_dir() for c in _search(p, part)]
        if len(inside) == 1:
            out[part.name] = inside[0]
        elif not inside:
            raise BenchError(f"{layout.method}: the official {part.name} checkpoint ({part.release_path}) is not "
                             f"among {', '.join(map(str, paths))}; give its folder too")
        else:
            raise BenchError(f"{layout.method}: several candidates for the {part.name} checkpoint "
                             f"({', '.join(map(str, inside[:3]))}); give the folders one by one")
    return out


def describe_file(path: Path, role: str) -> dict[str, Any]:
    from ..weights import find_entry

    sha = sha256_file(path)
    found = find_entry(None, sha, None)
    return {"role": role, "path": str(path.resolve()), "size": path.stat().st_size, "sha256": sha,
            "manifest_id": found[0] if found else None, "status": "verified" if found else "unverified"}


def _torch_tensors(part: Part, path: Path) -> dict[str, torch.Tensor]:
    from ..training import load_torch

    if path.is_dir():
        raise BenchError(f"{path} is a folder; the official {part.name or 'weights'} file is a PyTorch file "
                         f"({part.release_path})")
    obj = load_torch(path)
    for key in part.containers:   # {"state_dict": {...}}-style wrappers
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping) and len(obj) <= 4:
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise BenchError(f"{path}: expected a state dict (names to tensors), got {type(obj).__name__}")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        name = str(k)
        for prefix in part.strip_prefixes:
            name = name.removeprefix(prefix)
        if not isinstance(v, torch.Tensor):
            raise BenchError(f"{path}: entry {k} is a {type(v).__name__}, not a tensor")
        out[name] = v
    return out


def read_part(part: Part, path: Path, *, shapes_only: bool = False,
              needed: set[str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(name -> array, or -> shape with ``shapes_only``; file records; reading stats) of one official part."""
    t0 = time.perf_counter()
    if part.format == "torch":
        tensors = _torch_tensors(part, path)
        values: dict[str, Any] = {k: tuple(v.shape) for k, v in tensors.items()} if shapes_only else tensors
        return values, [describe_file(path, "state_dict")], {"seconds": time.perf_counter() - t0}
    try:
        bundle = open_bundle(path)
        files = [describe_file(bundle.index_path, "index")]
        if shapes_only:
            return ({n: e.shape for n, e in bundle.entries.items()}, files,
                    {"seconds": time.perf_counter() - t0, "missing_shards": [
                        {"name": p.name, "expected_bytes": s} for p, s in bundle.missing_shards()]})
        bundle.require_shards()
        files += [describe_file(bundle.shard_path(s), "data") for s in sorted(bundle.shard_sizes())]
        import tracemalloc

        tracemalloc.start()
        names = [n for n in bundle.entries if needed is None or n in needed]
        arrays: dict[str, Any] = bundle.read_all(names)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # names of unread (ignored) tensors still take part in the strictness check, by shape
        arrays.update({n: _Shape(e.shape) for n, e in bundle.entries.items() if n not in arrays})
        return arrays, files, {"seconds": time.perf_counter() - t0, "peak_bytes": peak,
                               "tensors_read": len(names), "bytes_read": sum(bundle.entries[n].size for n in names)}
    except TFCheckpointError as e:
        raise BenchError(str(e)) from None


class _Shape:
    """Stands for an official tensor that is ignored, so it is never read: only its shape is known."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)


# ------------------------------------------------------------------------------------------------
# import
# ------------------------------------------------------------------------------------------------
def import_official(method: str, paths: Sequence[str | os.PathLike], *, dry: bool = False,
                    facts: Callable[[Mapping[str, torch.Tensor]], Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Convert and store (or, with ``dry``, only check) the official files of ``method``; the record
    (``facts``: method-specific facts read off the converted state dict, recorded with it)."""
    from ..registry import canonical, load_method_class
    from ..training import WEIGHTS_FORMAT, save_torch

    name = canonical(method)
    cls = load_method_class(name)
    layout = layout_for(cls)
    located = locate_parts(layout, [Path(p) for p in paths])
    model = _default_model(cls)
    state = model.state_dict()
    needed = {p.name: {r.source for r in p.rules} for p in layout.parts}
    sources: dict[str, dict[str, Any]] = {}
    files: list[dict[str, Any]] = []
    reading: dict[str, Any] = {}
    for part in layout.parts:
        values, recs, stats = read_part(part, located[part.name], shapes_only=dry, needed=needed[part.name])
        sources[part.name] = values
        files += [{"part": part.name, **r} for r in recs]
        reading[part.name or "file"] = stats
    try:
        if dry:
            summary = dry_run(layout, state, sources)
            return {"method": name, "dry_run": True, "files": files, "reading": reading, **summary}
        converted = convert(layout, state, sources)
    except LayoutError as e:
        raise BenchError(f"{name}: {e}") from None
    model.load_state_dict(converted, strict=True)   # the layout is checked against the state dict; this too
    import_id = canonical_hash(sorted(f["sha256"] for f in files))[:12]
    record: dict[str, Any] = {
        "method": name, "id": import_id, "imported_at": now(), **checkpoint_facts(name, files),
        "files": files, "reading": reading,
        "test_pipeline": layout.test_pipeline, "test_overrides": dict(layout.test_overrides),
        "official_quantize": layout.official_quantize, "description": layout.description,
        **(facts(converted) if facts else {}),
    }
    meta = {"method": name, "version": cls.version, "weights_source": "official", "official": record}
    if getattr(cls, "combined_checkpoint", None):
        key, value = cls.combined_checkpoint
        meta[key] = value
    stored = official_dir() / f"{name}-{import_id}.pt"
    save_torch({"format": WEIGHTS_FORMAT, "model": converted, "meta": meta}, stored)
    record["stored"] = str(stored)
    record["stored_sha256"] = sha256_file(stored)
    rest = [r for r in imports() if not (r.get("method") == name and r.get("id") == import_id)]
    write_yaml(_record_path(), {"imports": rest + [record]})
    return record


def checkpoint_facts(method: str, files: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What ``manifests/weights.yaml`` says of the checkpoint these files make up: its id (the label), where it
    came from, what it was trained on and which test sets that training data overlaps. Verified only when every
    file matches an entry of that one checkpoint, of this method."""
    from ..weights import manifest_checkpoints, manifest_entries

    entries = manifest_entries()
    groups = {entries.get(str(f.get("manifest_id")), {}).get("checkpoint") for f in files}
    methods = {entries.get(str(f.get("manifest_id")), {}).get("method") for f in files}
    ok = all(f.get("manifest_id") for f in files) and len(groups) == 1 and methods == {method}
    ids = sorted({str(f["manifest_id"]) for f in files if f.get("manifest_id")})
    if not ok:
        why = ("no file matches manifests/weights.yaml" if not ids else
               "its files match entries of different checkpoints or methods" if len(groups) > 1 or methods != {method}
               else "some of its files match no entry of manifests/weights.yaml")
        return {"label": "unverified", "verified": False, "manifest_ids": ids, "unverified_reason": why}
    group = str(next(iter(groups)))
    facts = manifest_checkpoints().get(group, {})
    return {"label": group, "verified": True, "manifest_ids": ids, "checkpoint": group,
            **{k: facts[k] for k in ("source_repo", "commit", "licence", "trained_on", "contamination")
               if k in facts}}


def resolve_official(spec: str) -> tuple[Path, dict[str, Any]]:
    """``official:M`` or ``official:M@ID`` -> (stored weights file, its record); the file is re-hashed."""
    from ..registry import canonical

    body = spec.split(":", 1)[1]
    method, _, wanted = body.partition("@")
    name = canonical(method)
    found = [r for r in imports() if r.get("method") == name and (not wanted or r.get("id") == wanted)]
    if not found:
        what = f"{name}@{wanted}" if wanted else name
        raise BenchError(f"--weights {spec}: no official checkpoint of {what} imported; "
                         f"run: bench weights import official --method {name} PATH")
    record = found[-1]
    stored = Path(record["stored"])
    if not stored.is_file():
        raise BenchError(f"--weights {spec}: the converted file {stored} is gone; import the official file again")
    if sha256_file(stored) != record.get("stored_sha256"):
        raise BenchError(f"--weights {spec}: {stored} differs from the file written at import "
                         f"(sha256 recorded {str(record.get('stored_sha256'))[:16]}…); import the official file again")
    return stored, record

"""``bench weights``: import, show and verify the weight files that cannot be downloaded here.

Sub-commands (``register`` builds their parsers; ``cli.py`` calls it):

``bench weights import vgg16 FILE``
    Reads VGG-16 ``conv1_1``/``conv1_2`` weights (W1 64×3×3×3, W2 64×64×3×3) from torchvision's
    ``vgg16-397923af.pth``, the Caffe-derived ``vgg16.weight`` the official DSN code uses, or an official
    DSN checkpoint (its frozen ``operations.0.haar_weights1/2``), checks the shapes, and stores the two
    tensors in ``$BENCH_DATA/_weights/vgg16_conv1.pt`` (atomically) with a record
    ``vgg16_conv1.yaml`` (file sha256, kind, tensors sha256, the gain of EᵀE, whether the file is the one
    the paper's numbers need). ``ours`` with ``encoder=auto`` (the default) or ``encoder=vgg16`` then uses
    them; the source file is not needed any more.
``bench weights import official [--method M] PATH... [--dry-run]``
    The authors' released checkpoint of any learned method (default ``ours``, i.e. ``fiveK_G.pth``): PyTorch
    state dicts and TensorFlow checkpoints (read without TensorFlow), mapped strictly into our network and
    stored converted (``bench/official/importer.py``). Files matching ``manifests/weights.yaml`` are labelled
    with their checkpoint entry, others "unverified". ``bench run --weights official:M`` uses the import.
``bench weights show``
    What is imported, with hashes, and what ``manifests/weights.yaml`` knows.
``bench weights verify``
    Re-hashes the stored tensors, the recorded source files still present, and every file that
    ``manifests/weights.yaml`` lists and that an import has located; exit status 2 on any mismatch.

Faithfulness (``dsn_reference.md`` D1): a run is called faithful only when its encoder tensors are the
Caffe-lineage VGG-16 conv1 tensors **and a hash proves it**: either the file's sha256 equals the
manifest's known ``sha256`` of ``vgg16.weight``, or the tensors' sha256 equals the manifest's known
``conv1_tensors_sha256``. Both are unknown today, so no run is faithful until someone records them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import BenchError
from .fsutil import read_yaml, sha256_file, write_yaml
from .paths import data_root, manifests_root
from .provenance import now
from .subcommand import add_subcommand

__all__ = [
    "weights_dir",
    "manifest_entries",
    "faithfulness",
    "import_vgg16",
    "imported_vgg16",
    "manifest_checkpoints",
    "show_lines",
    "verify",
    "register",
    "main",
]

VGG_TENSORS = "vgg16_conv1.pt"
VGG_RECORD = "vgg16_conv1.yaml"
UNKNOWN = "unknown"
PAPER_FILE_NOTE = ("the paper's numbers need the Caffe-derived vgg16.weight (kind caffe_t7, the vgg16.t7 lineage "
                   "of abhiskk/fast-neural-style and EnlightenGAN); torchvision's weights are a documented "
                   "substitute with different numbers (dsn_reference D1)")


def weights_dir() -> Path:
    """``$BENCH_DATA/_weights``: machine-local imported weights (git-ignored with the data folder)."""
    return data_root() / "_weights"


# ------------------------------------------------------------------------------------------------
# manifest
# ------------------------------------------------------------------------------------------------
def manifest_path() -> Path:
    return manifests_root() / "weights.yaml"


def manifest_entries() -> dict[str, dict[str, Any]]:
    path = manifest_path()
    if not path.exists():
        return {}
    doc = read_yaml(path) or {}
    files = doc.get("files") or {}
    if not isinstance(files, dict):
        raise BenchError(f"{path}: 'files' must be a mapping of id to entry")
    return {str(k): dict(v or {}) for k, v in files.items()}


def manifest_checkpoints() -> dict[str, dict[str, Any]]:
    """``checkpoints:`` of manifests/weights.yaml: one entry per official release (its files list it)."""
    path = manifest_path()
    if not path.exists():
        return {}
    groups = (read_yaml(path) or {}).get("checkpoints") or {}
    if not isinstance(groups, dict):
        raise BenchError(f"{path}: 'checkpoints' must be a mapping of id to entry")
    return {str(k): dict(v or {}) for k, v in groups.items()}


def _known(value: Any) -> str | None:
    return None if value in (None, "", UNKNOWN) else str(value)


def find_entry(filename: str | None = None, sha256: str | None = None,
               kind: str | None = None) -> tuple[str, dict[str, Any]] | None:
    """The manifest entry matching a file: by known sha256 first, then by file name, then by kind."""
    entries = manifest_entries()
    if sha256:
        for k, e in entries.items():
            if _known(e.get("sha256")) == sha256:
                return k, e
    if filename:
        for k, e in entries.items():
            if e.get("filename") == filename:
                return k, e
    if kind:
        for k, e in entries.items():
            if e.get("kind") == kind:
                return k, e
    return None


def _sha_status(entry: dict[str, Any] | None, sha256: str) -> str:
    if entry is None:
        return "not in manifest"
    known = _known(entry.get("sha256"))
    if known is None:
        return "unknown in manifest"
    return "match" if known == sha256 else "MISMATCH"


def faithfulness(kind: str | None, file_sha256: str | None, tensors_sha256: str | None) -> tuple[bool, str]:
    """(faithful, reason) for encoder tensors, by the rule in the module docstring (D1)."""
    entries = manifest_entries()
    caffe = next((e for e in entries.values() if e.get("kind") == "caffe_t7"), {})
    t_known, f_known = _known(caffe.get("conv1_tensors_sha256")), _known(caffe.get("sha256"))
    if t_known and tensors_sha256 == t_known:
        return True, "encoder tensors match the Caffe VGG-16 conv1 tensors hash in manifests/weights.yaml"
    if kind == "caffe_t7":
        if f_known and file_sha256 == f_known:
            return True, "Caffe-derived vgg16.weight whose sha256 matches manifests/weights.yaml"
        if f_known or t_known:
            return False, "Caffe-style VGG file whose hash differs from the one in manifests/weights.yaml"
        return False, ("Caffe-style vgg16.weight imported, but manifests/weights.yaml records no hash to check it "
                       "against (D1: never faithful unless the hash matches); record it once verified")
    if kind == "torchvision_v1":
        return False, "torchvision VGG-16 conv1: a documented substitute, not the paper's Caffe weights"
    if kind == "dsn_checkpoint":
        return False, "encoder tensors taken from a DSN checkpoint; no known hash to prove they are the paper's"
    if kind and kind.startswith("fallback"):
        return False, "no VGG-16 file imported: closed-form fallback encoder (bench/dsn/NOTES.md)"
    if kind and kind.startswith("haar"):
        return False, "Haar-frame encoder (the Table 2 ablation)"
    return False, f"encoder kind {kind!r} is not the paper's VGG-16"


# ------------------------------------------------------------------------------------------------
# vgg16 conv1
# ------------------------------------------------------------------------------------------------
def _file(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchError(f"weights file not found: {path}")
    return path


def import_vgg16(path: str | os.PathLike) -> dict[str, Any]:
    """Import W1/W2 from ``path`` into ``$BENCH_DATA/_weights``; returns the record (see module doc)."""
    from .dsn.encoder import encoder_gain, load_vgg16_conv1
    from .training import save_torch

    path = _file(path)
    try:
        w1, w2, info = load_vgg16_conv1(str(path))
    except ValueError as e:
        raise BenchError(str(e).splitlines()[0]) from None
    found = find_entry(path.name, info["sha256"], info["kind"])
    entry_id, entry = found if found else (None, None)
    faithful, reason = faithfulness(info["kind"], info["sha256"], info["tensors_sha256"])
    gain = encoder_gain(w1, w2)
    record = {
        "what": "VGG-16 conv1_1/conv1_2 weights for DSN's frozen encoder/decoder",
        "kind": info["kind"],
        "source_path": str(path.resolve()),
        "source_sha256": info["sha256"],
        "source_size": path.stat().st_size,
        "filename_hash_ok": info.get("filename_hash_ok"),
        "tensors_sha256": info["tensors_sha256"],
        "stored": VGG_TENSORS,
        "manifest_id": entry_id,
        "manifest_sha256": _sha_status(entry, info["sha256"]),
        "faithful": faithful,
        "faithful_reason": reason,
        "gain": {k: gain[k] for k in ("interior_gain", "mean_gain", "dc_eigenvalues", "spectral_norm")},
        "imported_at": now(),
        "note": PAPER_FILE_NOTE,
    }
    d = weights_dir()
    save_torch({"W1": w1, "W2": w2, "kind": info["kind"], "tensors_sha256": info["tensors_sha256"]}, d / VGG_TENSORS)
    write_yaml(d / VGG_RECORD, record)
    return record


def imported_vgg16() -> tuple[Any, Any, dict[str, Any]] | None:
    """``(W1, W2, record)`` of the imported VGG-16 conv1 tensors, or None if nothing was imported.

    The tensors are re-hashed against the record; a mismatch is a one-line ``BenchError``."""
    from .dsn.encoder import check_encoder_weights, tensor_sha256
    from .training import load_torch

    d = weights_dir()
    if not (d / VGG_RECORD).exists():
        return None
    record = read_yaml(d / VGG_RECORD) or {}
    obj = load_torch(d / VGG_TENSORS)
    try:
        w1, w2 = check_encoder_weights(obj["W1"], obj["W2"], str(d / VGG_TENSORS))
    except (KeyError, TypeError, ValueError) as e:
        raise BenchError(f"{d / VGG_TENSORS} is damaged ({e}); re-run bench weights import vgg16 FILE") from None
    if tensor_sha256(w1, w2) != record.get("tensors_sha256"):
        raise BenchError(f"{d / VGG_TENSORS} does not match its record {d / VGG_RECORD}; "
                         "re-run bench weights import vgg16 FILE")
    return w1, w2, record


# ------------------------------------------------------------------------------------------------
# show / verify
# ------------------------------------------------------------------------------------------------
def show_lines() -> list[str]:
    lines = [f"weights folder: {weights_dir()}"]
    vgg = imported_vgg16()
    if vgg is None:
        lines.append("vgg16 conv1: not imported (ours uses the closed-form fallback encoder; "
                     "import with: bench weights import vgg16 FILE)")
    else:
        r = vgg[2]
        lines += [
            f"vgg16 conv1: {r.get('kind')} from {r.get('source_path')}",
            f"  file sha256:    {r.get('source_sha256')} (manifest: {r.get('manifest_sha256')})",
            f"  tensors sha256: {r.get('tensors_sha256')}",
            f"  faithful:       {'yes' if r.get('faithful') else 'no'} ({r.get('faithful_reason')})",
            f"  EᵀE gain:       interior {r.get('gain', {}).get('interior_gain', float('nan')):.4g}, "
            f"spectral norm {r.get('gain', {}).get('spectral_norm', float('nan')):.4g}",
            f"  imported:       {r.get('imported_at')}",
        ]
    from .official.importer import imports

    off = imports()
    if not off:
        lines.append("official checkpoints: none imported (bench weights import official --method M PATH)")
    for r in off:
        lines.append(f"official {r.get('method')} [{r.get('label')}] import {r.get('id')}: {r.get('stored')}")
        for f in r.get("files") or []:
            lines.append(f"  {f.get('part') or 'file'} {f.get('role')}: {f.get('path')} sha256 {str(f.get('sha256'))[:16]}… "
                         f"({f.get('manifest_id') or 'unverified'})")
        lines.append(f"  use: bench run --method {r.get('method')} --dataset D --weights official:{r.get('method')}")
    entries = manifest_entries()
    if entries:
        lines.append(f"known files ({manifest_path()}):")
        for k, e in entries.items():
            lines.append(f"  {k}: {e.get('filename')} [{e.get('kind')}] sha256 {e.get('sha256', UNKNOWN)}")
    return lines


def verify() -> tuple[list[str], list[str]]:
    """Re-hash everything imported and every manifest-listed file an import located. (lines, problems)."""
    lines: list[str] = []
    problems: list[str] = []
    located: dict[str, list[tuple[Path, str]]] = {}  # manifest id -> [(path, recorded sha)]
    d = weights_dir()
    if (d / VGG_RECORD).exists():
        try:
            _, _, r = imported_vgg16()  # type: ignore[misc]
            lines.append(f"ok: {d / VGG_TENSORS} tensors sha256 {r['tensors_sha256'][:16]}… as recorded")
        except BenchError as e:
            problems.append(str(e))
            r = read_yaml(d / VGG_RECORD) or {}
        src = Path(str(r.get("source_path", "")))
        if r.get("source_path") and src.is_file():
            located.setdefault(r.get("manifest_id") or "", []).append((src, str(r.get("source_sha256"))))
        elif r.get("source_path"):
            lines.append(f"note: source {src} is gone (not needed: the tensors are stored)")
    from .official.importer import imports

    for r in imports():
        stored = Path(str(r.get("stored")))
        if not stored.is_file() or sha256_file(stored) != r.get("stored_sha256"):
            problems.append(f"converted official {r.get('method')} weights {stored} are missing or altered; "
                            "import the official file again")
        else:
            lines.append(f"ok: {stored} as written at import ({r.get('label')})")
        for f in r.get("files") or []:
            p = Path(str(f.get("path")))
            if p.is_file():
                located.setdefault(f.get("manifest_id") or "", []).append((p, str(f.get("sha256"))))
            else:
                lines.append(f"note: official source {p} is gone (not needed: the converted weights are stored)")
    entries = manifest_entries()
    seen: set[Path] = set()
    for entry_id, items in located.items():
        for path, recorded in items:
            if path in seen:
                continue
            seen.add(path)
            sha = sha256_file(path)
            if sha != recorded:
                problems.append(f"{path}: sha256 {sha[:16]}… differs from the one recorded at import ({recorded[:16]}…)")
                continue
            known = _known(entries.get(entry_id, {}).get("sha256")) if entry_id else None
            if entry_id and known and known != sha:
                problems.append(f"{path}: sha256 {sha[:16]}… differs from manifests/weights.yaml {entry_id} ({known[:16]}…)")
            elif entry_id and known:
                lines.append(f"ok: {path} matches manifests/weights.yaml {entry_id}")
            elif entry_id:
                lines.append(f"ok: {path} unchanged since import ({entry_id}: hash unknown in the manifest, recorded {sha[:16]}…)")
            else:
                lines.append(f"ok: {path} unchanged since import (not listed in the manifest)")
    if not lines and not problems:
        lines.append("nothing imported; see bench weights show")
    return lines, problems


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def cmd_weights(args: argparse.Namespace) -> int:
    if args.weights_cmd == "import":
        if args.what == "vgg16":
            if len(args.file) != 1 or args.dry_run or args.method:
                raise BenchError("bench weights import vgg16 takes one FILE (no --method, no --dry-run)")
            r = import_vgg16(args.file[0])
            print(f"imported VGG-16 conv1 ({r['kind']}) from {r['source_path']}")
            print(f"  file sha256 {r['source_sha256']} (manifest: {r['manifest_sha256']})")
            print(f"  tensors sha256 {r['tensors_sha256']} -> {weights_dir() / VGG_TENSORS}")
            print(f"  faithful: {'yes' if r['faithful'] else 'no'} ({r['faithful_reason']})")
            print(f"  note: {PAPER_FILE_NOTE}")
            print("  ours now uses these tensors (encoder=auto or encoder=vgg16); earlier trained weights are not reused")
        else:
            from .official.command import import_official, print_official

            print_official(import_official(args.method or "ours", args.file, dry=args.dry_run))
        return 0
    if args.weights_cmd == "show":
        print("\n".join(show_lines()))
        return 0
    lines, problems = verify()
    print("\n".join(lines + [f"PROBLEM: {p}" for p in problems]))
    if problems:
        raise BenchError(f"{len(problems)} weight file(s) missing or altered: {problems[0]}")
    return 0


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add ``weights`` and its sub-commands to ``subparsers`` (from ``ArgumentParser.add_subparsers``).

    ``parents`` (e.g. cli.py's ``quiet``) go to ``weights`` and to each nested command. cli.py wraps its
    ``add_parser`` so that it passes its own parents already; that wrapper refuses a second ``parents``
    (TypeError), and the top-level parser is then created without them (bench.subcommand)."""
    fmt = argparse.RawDescriptionHelpFormatter
    kw: dict[str, Any] = dict(
        help="import, show or verify weight files (VGG-16 for ours, official DSN checkpoints)",
        formatter_class=fmt,
        epilog="examples:\n  bench weights import vgg16 ~/Downloads/vgg16.weight\n"
               "  bench weights import vgg16 vgg16-397923af.pth\n  bench weights import official fiveK_G.pth\n"
               "  bench weights show\n  bench weights verify")
    w = add_subcommand(subparsers, "weights", parents, **kw)
    wsub = w.add_subparsers(dest="weights_cmd", required=True, parser_class=type(w))
    imp = wsub.add_parser("import", parents=list(parents), formatter_class=fmt,
                          help="check a weights file and record it (vgg16: store its conv1 tensors)",
                          epilog="examples:\n  bench weights import vgg16 vgg16.weight\n"
                                 "  bench weights import official fiveK_G.pth\n"
                                 "  bench weights import official --method zero-dce Epoch99.pth\n"
                                 "  bench weights import official --method kind KinD/checkpoint/\n"
                                 "  bench weights import official --method hdrnet --dry-run hdrp/")
    imp.add_argument("what", choices=["vgg16", "official"])
    imp.add_argument("file", type=Path, nargs="+",
                     help="vgg16: one file; official: the file, TF checkpoint folder(s) or a folder holding them")
    imp.add_argument("--method", help="official: the method whose release this is (default ours)")
    imp.add_argument("--dry-run", action="store_true",
                     help="official: check names and shapes only (a TF .index without its data shard suffices)")
    wsub.add_parser("show", parents=list(parents), help="what is imported, with hashes")
    wsub.add_parser("verify", parents=list(parents), help="re-hash what was imported")
    w.set_defaults(fn=cmd_weights)
    return w


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m bench.weights ...``), with cli.py's error handling."""
    root = argparse.ArgumentParser(prog="bench")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    sub = root.add_subparsers(dest="cmd", required=True)
    register(sub, [quiet])
    args = root.parse_args(argv)
    try:
        return args.fn(args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())

"""Finished records that can be trusted: the run seal, record readers that fail in one line, directory locks.

**The seal.** A finished run's ``DONE`` records the sha256 of every file it vouches for (``seal.files``:
``config.yaml``, ``env.json``, ``enhance.csv``, ``per_image.csv``, ``metrics.csv``, ``outputs/*.png`` and the
per-image ``records/*.json``). Everything that reads a finished run checks it first (:func:`verify_run`):
``bench run`` before reusing a run, ``bench eval``, ``bench report``, ``bench figure`` and ``bench study create``.

- A file that differs from its seal, is missing, or an output that the seal does not list is refused in one line
  naming the file -- except what can be re-derived: ``metrics.csv`` is re-derived from ``per_image.csv`` and
  accepted (and restored, where the folder is writable) only if the re-derived bytes match the seal; ``bench
  eval`` re-scores ``per_image.csv`` and ``metrics.csv`` from the sealed outputs.
- ``bench eval`` re-seals the run after adding its columns.
- Runs written before runs were sealed (a ``DONE`` without ``seal``) stay usable: they are read as they are,
  checked only for being readable (``metrics.csv`` is re-derived from ``per_image.csv`` when missing or
  unreadable), and reported as *unsealed* (``bench report`` lists them in its notes). ``bench eval RUN_DIR``
  seals such a run as it then is.

``bench report`` checks the records it tallies (everything but the PNGs); the PNGs are checked where they are
read (reuse, ``bench eval``, ``bench study create``; ``bench figure`` compares each drawn output with the sealed
``per_image.csv``).

**Locks.** :func:`dir_lock` takes an exclusive ``fcntl.flock`` on ``<dir>/.lock`` for a writer (``bench run``
of a run or training directory, ``bench eval``) and a shared one for a reader, so one run directory has one
writer at a time and readers never see a half-merged record. A second process waits, saying once on stderr
which PID holds the directory; with ``BENCH_LOCK_TIMEOUT=SECONDS`` it gives up after that long with a one-line
error naming the PID (``0``: refuse at once). Locks are re-entrant within one process. On read-only media
readers go without a lock (no writer can be there).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import BenchError
from .fsutil import read_text, read_yaml, sha256_bytes, sha256_file, write_json, write_text

log = logging.getLogger("bench.records")

SEAL_VERSION = 1
SEALED_FILES = ("config.yaml", "env.json", "enhance.csv", "per_image.csv", "metrics.csv")
SEALED_GLOBS = ("outputs/*.png", "records/*.json")
LOCK_NAME = ".lock"
REDERIVABLE = ("metrics.csv",)            # from per_image.csv, here
RESCORABLE = ("per_image.csv", "metrics.csv")   # from the outputs, by bench eval


def notice(message: str) -> None:
    """A one-line note on stderr (and in the log) that does not stop the command."""
    log.info(message)
    print(f"bench: note: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# readers that fail in one line
# ------------------------------------------------------------------------------------------------
def read_csv_rows(path: Path, what: str = "") -> list[dict[str, str]]:
    """The rows of a CSV record (a header row first), or a one-line error naming the file."""
    text = read_text(path, hint=what)
    try:
        return list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise BenchError(f"{path} is not a readable CSV file ({e}){what}") from None


def read_json_record(path: Path, what: str = "") -> dict[str, Any]:
    """A JSON object record (``DONE``, ``train_done.json``, ``env.json``), or a one-line error naming the file."""
    text = read_text(path, hint=what)
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise BenchError(f"{path} is damaged (not valid JSON: {e}){what}") from None
    if not isinstance(doc, dict):
        raise BenchError(f"{path} is damaged (not a JSON object){what}")
    return doc


def read_config(path: Path, what: str = "") -> dict[str, Any]:
    """A run's or training run's ``config.yaml`` as a mapping, or a one-line error naming the file."""
    doc = read_yaml(path, hint=what)
    if not isinstance(doc, dict) or not doc:
        raise BenchError(f"{path} is empty or not a mapping{what}: the run's configuration is damaged")
    return doc


def drop_torn_tail(path: Path) -> bool:
    """Cut a last line that lacks its newline (a row torn by a crash) off an appended log; True if cut."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return False
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return False
            f.seek(max(0, size - (1 << 20)))
            tail = f.read()
            cut = tail.rfind(b"\n")
            new_size = (size - len(tail) + cut + 1) if cut >= 0 else 0
            f.truncate(new_size)
            return True
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------------------------------------
# the seal
# ------------------------------------------------------------------------------------------------
def sealed_paths(run_dir: Path) -> list[str]:
    run_dir = Path(run_dir)
    rels = [name for name in SEALED_FILES if (run_dir / name).is_file()]
    for pattern in SEALED_GLOBS:
        rels += sorted(p.relative_to(run_dir).as_posix() for p in run_dir.glob(pattern) if p.is_file())
    return rels


def compute_seal(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    return {"version": SEAL_VERSION, "algorithm": "sha256",
            "files": {rel: sha256_file(run_dir / rel) for rel in sealed_paths(run_dir)}}


def write_done(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``DONE`` (last) with the seal of the run directory as it now is."""
    doc = {**record, "seal": compute_seal(run_dir)}
    write_json(Path(run_dir) / "DONE", doc)
    return doc


def reseal(run_dir: Path, **extra: Any) -> dict[str, Any]:
    """Re-seal a finished run after an intended change (``bench eval``), keeping what ``DONE`` said."""
    done = read_json_record(Path(run_dir) / "DONE")
    done.pop("seal", None)
    done.update(extra)
    return write_done(run_dir, done)


@dataclass
class Verified:
    """What :func:`verify_run` found: the DONE record, whether it was sealed, what was re-derived or is stale."""

    run_dir: Path
    done: dict[str, Any]
    sealed: bool
    rederived: dict[str, str] = field(default_factory=dict)   # file -> re-derived text (metrics.csv)
    stale: list[str] = field(default_factory=list)            # files bench eval must re-score from the outputs


def _metrics_text_from(per_image: Path) -> str:
    from .evaluate import summary_csv_text

    return summary_csv_text(read_csv_rows(per_image))


def _writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK)


def _restore(run_dir: Path, rel: str, text: str) -> None:
    if _writable(run_dir):
        try:
            write_text(run_dir / rel, text)
        except BenchError:
            pass


def verify_run(run_dir: Path, *, outputs: bool = True, rescore: bool = False, repair: bool = True) -> Verified:
    """Check a finished run against the seal in its ``DONE`` (see the module doc).

    ``outputs``: also hash the PNGs (and refuse outputs the seal does not list). ``rescore``: the caller
    (``bench eval``) re-derives ``per_image.csv``/``metrics.csv`` from the outputs, so their mismatches are
    returned in ``stale`` instead of refused. ``repair``: write a re-derived ``metrics.csv`` back (if writable).
    """
    run_dir = Path(run_dir)
    done = read_json_record(run_dir / "DONE", f" (the run record of {run_dir}; re-run it with --force)")
    seal = done.get("seal")
    if seal is None:
        return _check_unsealed(run_dir, done, rescore, repair)
    files = seal.get("files") if isinstance(seal, dict) else None
    if not isinstance(files, dict) or "config.yaml" not in files:
        raise BenchError(f"{run_dir / 'DONE'} is damaged (its seal lists no files); re-run the run with --force")
    bad: dict[str, str] = {}
    for rel, sha in files.items():
        if rel.startswith(("outputs/",)) and not outputs:
            continue
        path = run_dir / rel
        if not path.is_file():
            bad[rel] = "missing"
        elif sha256_file(path) != sha:
            bad[rel] = "changed"
    if outputs:
        for p in sorted((run_dir / "outputs").glob("*.png")):
            rel = p.relative_to(run_dir).as_posix()
            if rel not in files:
                bad[rel] = "not part of the finished run"
    result = Verified(run_dir, done, True)
    if rescore:
        result.stale = [rel for rel in RESCORABLE if rel in bad]
        for rel in result.stale:
            bad.pop(rel)
    elif "metrics.csv" in bad and "per_image.csv" not in bad and "per_image.csv" in files:
        try:
            text = _metrics_text_from(run_dir / "per_image.csv")
        except BenchError:
            text = ""
        if sha256_bytes(text.encode("utf-8")) == files["metrics.csv"]:
            result.rederived["metrics.csv"] = text
            notice(f"{run_dir / 'metrics.csv'} was {bad.pop('metrics.csv')} after the run finished; re-derived from "
                   f"per_image.csv (it matches the seal)" + (" and restored" if repair and _writable(run_dir) else ""))
            if repair:
                _restore(run_dir, "metrics.csv", text)
    if bad:
        rel = next(iter(sorted(bad, key=lambda r: (r.startswith("outputs/"), r))))
        how = bad[rel]
        more = f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else ""
        if rel in RESCORABLE:
            advice = f"`bench eval {run_dir}` re-scores it from the outputs, or re-run it with --force"
        else:
            advice = "re-run it with --force (the same `bench run` command)"
        what = "does not match the seal in DONE" if how == "changed" else \
            ("is missing" if how == "missing" else "is not part of the finished run (not in the seal in DONE)")
        raise BenchError(f"run {run_dir}: {rel} {what}{more}: edited or damaged after the run finished; {advice}")
    return result


def _check_unsealed(run_dir: Path, done: dict[str, Any], rescore: bool, repair: bool) -> Verified:
    """A run finished before runs were sealed: readable records are accepted as they are (module doc)."""
    result = Verified(run_dir, done, False)
    read_config(run_dir / "config.yaml")
    per_image = run_dir / "per_image.csv"
    for rel in RESCORABLE:
        try:
            read_csv_rows(run_dir / rel)
        except BenchError:
            if rescore:
                result.stale.append(rel)
                continue
            if rel == "metrics.csv" and per_image.is_file():
                text = _metrics_text_from(per_image)
                result.rederived[rel] = text
                notice(f"{run_dir / rel} is missing or unreadable in an unsealed run; re-derived from per_image.csv")
                if repair:
                    _restore(run_dir, rel, text)
                continue
            raise
    if "per_image.csv" in result.stale and "metrics.csv" not in result.stale:
        result.stale.append("metrics.csv")
    return result


def read_metrics_rows(checked: Verified) -> list[dict[str, str]]:
    """``metrics.csv`` of a verified run (the re-derived text where it had to be re-derived)."""
    text = checked.rederived.get("metrics.csv")
    if text is not None:
        return list(csv.DictReader(io.StringIO(text, newline="")))
    return read_csv_rows(checked.run_dir / "metrics.csv")


# ------------------------------------------------------------------------------------------------
# locks
# ------------------------------------------------------------------------------------------------
_HELD: dict[str, list[Any]] = {}    # realpath of the directory -> [fd, depth, shared]


def _holders(fd: int) -> list[int]:
    """PIDs holding a flock on the file behind ``fd`` (Linux /proc/locks; [] where unavailable)."""
    try:
        st = os.fstat(fd)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue
        try:
            major, minor, inode = parts[5].split(":")
            if int(inode) == st.st_ino and int(major, 16) == os.major(st.st_dev) \
                    and int(minor, 16) == os.minor(st.st_dev):
                pids.append(int(parts[4]))
        except ValueError:
            continue
    return sorted(set(pids) - {os.getpid()})


def _describe_holder(path: Path, fd: int) -> str:
    try:
        recorded = path.read_bytes().decode("utf-8", "replace").strip()
    except OSError:
        recorded = ""
    pids = _holders(fd)
    if pids:
        named = recorded if recorded.startswith(f"pid {pids[0]} ") or recorded == f"pid {pids[0]}" else f"pid {pids[0]}"
        return named + (f" (and {len(pids) - 1} more)" if len(pids) > 1 else "")
    return recorded or "another process"


def _timeout() -> float | None:
    text = os.environ.get("BENCH_LOCK_TIMEOUT", "").strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        raise BenchError(f"BENCH_LOCK_TIMEOUT={text!r}: give seconds (0 refuses at once)") from None


@contextlib.contextmanager
def dir_lock(directory: Path, what: str = "run directory", shared: bool = False) -> Iterator[None]:
    """Hold ``directory``'s lock for the block: exclusive for a writer, shared for a reader (module doc)."""
    directory = Path(directory)
    key = os.path.realpath(directory)
    held = _HELD.get(key)
    if held is not None:                   # re-entrant within this process
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        if not shared:
            raise BenchError(f"cannot lock {what} {directory}: {e.strerror or e}") from None
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield                          # read-only media without a lock file: no writer can be there
            return
    try:
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(path, fd)
            limit = _timeout()
            if limit == 0:
                raise BenchError(f"{what} {directory} is in use by {holder}; wait for it to finish, or stop it")
            notice(f"waiting: {what} {directory} is in use by {holder}")
            deadline = None if limit is None else time.monotonic() + limit
            while True:
                try:
                    fcntl.flock(fd, op | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise BenchError(f"{what} {directory} is still in use by {_describe_holder(path, fd)} after "
                                         f"{limit:g} s (BENCH_LOCK_TIMEOUT); wait for it to finish, or stop it") from None
                    time.sleep(0.1)
        if not shared:
            command = " ".join(["bench", *sys.argv[1:]]) if sys.argv and sys.argv[0] else "bench"
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} ({command[:200]})\n".encode("utf-8", "replace"), 0)
            except OSError:
                pass
        _HELD[key] = [fd, 1, shared]
        try:
            yield
        finally:
            del _HELD[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------
# weights given with --weights
# ------------------------------------------------------------------------------------------------
def weights_provenance(path: Path, sha: str) -> dict[str, Any]:
    """Check a ``--weights`` file against what was recorded when it was trained or imported.

    A file inside a training directory is checked against that training's ``DONE``, a converted official import
    against the ``stored_sha256`` of its import record: a mismatch is refused in one line naming the file. A
    file elsewhere whose sha256 is recorded by a training or an import is verified as a copy of it. Any other
    file is accepted as given for the first time: its hash is part of the run ID and the run is marked
    ``verified: false`` (``bench report`` notes it)."""
    from .official.importer import imports
    from .paths import results_root

    real = Path(path).resolve()
    train_root = (results_root() / "train").resolve()
    done_path = real.parent / "DONE"
    if real.is_relative_to(train_root) and done_path.is_file():
        done = read_json_record(done_path)
        if done.get("checkpoint") == real.name:
            if done.get("sha256") != sha:
                raise BenchError(f"--weights {path}: the file differs from the one recorded when it was trained "
                                 f"(sha256 {str(done.get('sha256'))[:16]}… in {done_path}); it is damaged or was "
                                 f"changed")
            return {"verified": True, "verified_by": f"training record {done_path}"}
    records = imports()
    for r in records:
        if r.get("stored") and Path(str(r["stored"])).resolve() == real:
            if r.get("stored_sha256") != sha:
                raise BenchError(f"--weights {path}: the file differs from the one written when it was imported "
                                 f"(sha256 {str(r.get('stored_sha256'))[:16]}…); import the official file again")
            return {"verified": True, "verified_by": f"official import {r.get('method')}@{r.get('id')}"}
    for r in records:
        if r.get("stored_sha256") == sha or any(isinstance(f, dict) and f.get("sha256") == sha
                                                for f in r.get("files") or []):
            return {"verified": True, "verified_by": f"copy of official import {r.get('method')}@{r.get('id')}"}
    if train_root.is_dir():
        for done_file in sorted(train_root.glob("*/*/*/DONE")):
            try:
                done = read_json_record(done_file)
            except BenchError:
                continue
            if done.get("sha256") == sha:
                return {"verified": True, "verified_by": f"copy of the checkpoint of training {done_file.parent}"}
    return {"verified": False, "unverified": "matches no training or import record (given for the first time): "
                                             "hashed into the run ID, not checked against a record"}

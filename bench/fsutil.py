"""Atomic file writes and hashing: nothing half-written is ever left where a reader looks.

Every write goes through :func:`atomic_path`: the data is written to a temporary file beside the
target (``.NAME.<pid>-<random>.tmp``, the writer's PID in the name) and renamed over the target only
when the write completed. A failed write (disk full, a folder turned read-only, ...) is a one-line
``BenchError`` naming the file and what was being written; the target keeps its previous content (or
stays absent), so no later command can accept half a file, and re-running after the cause is fixed
completes. Temporaries of writers killed mid-write are removed by :func:`sweep_stale_temporaries`
(called by the commands in the folders they own), never those of a writer that is still alive.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from .errors import BenchError

_UMASK = os.umask(0)
os.umask(_UMASK)

#: ``.NAME.<pid>-<hex>.tmp``: a temporary of :func:`atomic_path` (older versions wrote ``.NAME.<random>.tmp``)
_TMP_RE = re.compile(r"^\..+\.(?:(\d+)-[0-9a-f]+|[A-Za-z0-9_]{8})\.tmp$")
_SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def os_reason(e: BaseException) -> str:
    """A short human reason for an ``OSError`` (``disk full`` for ENOSPC, ``read-only file system``, ...)."""
    if isinstance(e, OSError):
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return "disk full (no space left on device)" if e.errno == errno.ENOSPC else "disk quota exceeded"
        if e.errno == errno.EROFS:
            return "read-only file system"
        if e.errno == errno.ELOOP:
            return "symbolic link loop"
        if e.strerror:
            return e.strerror[0].lower() + e.strerror[1:]
    if isinstance(e, RuntimeError) and "loop" in str(e).lower():  # pathlib's "Symlink loop from ..."
        return "symbolic link loop"
    return str(e) or type(e).__name__


def _write_error(path: Path, tmp: Path | None, what: str | None, e: BaseException) -> BenchError:
    label = f"{what} {path}" if what else str(path)
    other = getattr(e, "filename", None)
    if other is not None and str(other) not in (str(path), str(tmp), str(path.parent)):
        return BenchError(f"cannot write {label}: {other}: {os_reason(e)}; nothing was written there")
    return BenchError(f"cannot write {label}: {os_reason(e)}; nothing was written there "
                      "(free space or fix the folder's permissions, then re-run the same command)")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    ``what`` (e.g. ``"the lock file"``) names the file in the error a failed write raises: any
    ``OSError`` while creating, writing or renaming becomes one ``BenchError`` naming ``path``.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_UMASK)
        os.close(fd)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # published files follow the umask
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        raise _write_error(path, tmp_path, what, e) from e
    except RuntimeError as e:  # torch.save reports a failed write (e.g. ENOSPC) as a RuntimeError
        if "write failed" not in str(e) and "failed writing" not in str(e):
            raise
        raise _write_error(path, tmp_path, what, e) from e
    finally:
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes, what: str | None = None) -> None:
    with atomic_path(path, what) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path: str | os.PathLike, text: str, what: str | None = None) -> None:
    write_bytes(path, text.encode("utf-8"), what)


def write_json(path: str | os.PathLike, obj: Any, what: str | None = None) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", what)


def dump_yaml(obj: Any) -> str:
    """``yaml.safe_dump`` with the C emitter when PyYAML has it (a 10,000-pair manifest in a second, not 90)."""
    return yaml.dump(obj, Dumper=_SAFE_DUMPER, sort_keys=False, allow_unicode=True)


def write_yaml(path: str | os.PathLike, obj: Any, what: str | None = None) -> None:
    write_text(path, dump_yaml(obj), what)


def read_text(path: str | os.PathLike, what: str | None = None, hint: str = "") -> str:
    """A UTF-8 text file exactly as stored (no newline translation), or one ``BenchError`` naming it (missing, a
    folder, a link loop, not UTF-8). ``what`` names the file in the message, ``hint`` is appended to it."""
    label = f"{what} {path}" if what else str(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BenchError(f"missing file {path}") from None
    except IsADirectoryError:
        raise BenchError(f"{label} is a folder, not a file") from None
    except OSError as e:
        raise BenchError(f"cannot read {label}: {os_reason(e)}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BenchError(f"{label} is not valid UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}){hint}; "
                         "it is damaged or was saved in another encoding") from None


def read_yaml(path: str | os.PathLike, what: str | None = None, hint: str = "") -> Any:
    text = read_text(path, what, hint)
    try:
        return yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as e:
        raise BenchError(f"{path} is not valid YAML: {str(e).splitlines()[0]}{hint}") from None


def canonical_hash(obj: Any) -> str:
    """Hash of a JSON-able object that does not depend on key order or whitespace."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return sha256_bytes(blob)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (for checkpoint metadata and provenance): mappings become dicts with
    string keys and lists/tuples become lists, recursively; strings, integers, finite floats, booleans and
    None stay as they are; anything else (paths, tensors, NaN/inf floats, ...) becomes its ``str``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return str(value)


def check_writable(directory: str | os.PathLike) -> Path:
    """Fail early and clearly if results cannot be written there."""
    directory = Path(directory)
    probe = directory / f".probe.{os.getpid()}-{secrets.token_hex(4)}.tmp"  # swept if we are killed here
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise BenchError(f"results folder {directory} is not writable: {os_reason(e)}") from None
    return directory


def resolve_user_path(path: str | os.PathLike, what: str) -> Path:
    """``path`` (given on the command line as ``what``, e.g. ``--low``) resolved, or one ``BenchError``:
    a symbolic link loop, a missing path or an unreadable one is named instead of raising from pathlib."""
    path = Path(path)
    try:
        return path.resolve(strict=True)
    except FileNotFoundError:
        raise BenchError(f"{what} {path} does not exist") from None
    except (OSError, RuntimeError) as e:
        raise BenchError(f"{what} {path}: {os_reason(e)}") from None


# --- leftovers of killed processes ---------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


#: temporaries without a writer PID in their name (older versions) are removed only when this old
LEGACY_TMP_AGE_S = 24 * 3600.0


def sweep_stale_temporaries(folder: str | os.PathLike, older_than_s: float = 60.0,
                            recursive: bool = True) -> list[Path]:
    """Remove the ``.NAME.<pid>-<hex>.tmp`` files of :func:`atomic_path` writers that died mid-write.

    A temporary is removed only when its writer (the PID in its name) no longer runs *and* it has not
    been touched for ``older_than_s`` seconds (PIDs on another machine sharing the folder are not
    visible here; the age keeps their live writes safe). Temporaries in the older PID-less naming are
    removed after :data:`LEGACY_TMP_AGE_S`. Returns what was removed; errors are ignored (best effort).
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    walker = os.walk(folder) if recursive else [(str(folder), [], [p.name for p in folder.iterdir()])]
    for dirpath, _dirs, files in walker:
        for name in files:
            m = _TMP_RE.match(name)
            if not m:
                continue
            p = Path(dirpath) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            age = now - st.st_mtime
            pid = m.group(1)
            stale = (age >= older_than_s and not pid_alive(int(pid))) if pid else age >= LEGACY_TMP_AGE_S
            if stale:
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed


def _parent_watch(parent_pid: int, interval_s: float) -> None:
    while True:
        time.sleep(interval_s)
        if os.getppid() == 1 or not pid_alive(parent_pid):
            os._exit(1)


def die_with_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """Worker-process initializer: end this process when ``parent_pid`` dies (even by kill -9).

    On Linux the kernel is asked for SIGKILL when the parent goes (``prctl(PR_SET_PDEATHSIG)``); a
    daemon thread that polls the parent covers other systems and parents that are not the direct one
    (e.g. a forkserver). Use as ``ProcessPoolExecutor(initializer=die_with_parent, initargs=(os.getpid(),))``.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if not pid_alive(parent_pid) or os.getppid() == 1:  # it died before the prctl took effect
        os._exit(1)
    threading.Thread(target=_parent_watch, args=(parent_pid, interval_s), daemon=True,
                     name="die-with-parent").start()

"""Hostile input and a hostile machine: every failure is one line on stderr, nothing half-done is accepted.

Covers (issue 15): a full disk and a read-only folder mid-write (injected at the write layer), text files
that are not UTF-8, symbolic link loops, images smaller than the SSIM window, the CLI's last-resort
handler, EXIF orientation at index time, truncated images and links at index time, the advice after a
checksum mismatch on an indexed set, the integrity records of lock files and indexed manifests, the C
YAML dumper, pool workers dying with their parent and the sweep of stale temporaries.
"""

from __future__ import annotations

import builtins
import errno
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from bench import fsutil
from bench.cli import main
from bench.data.manifest import load_manifest, lock_path
from bench.errors import BenchError

REPO = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, rc_expected, argv) -> str:
    rc = main(["-q", *argv])
    err = capsys.readouterr().err
    assert rc == rc_expected, (argv, rc, err)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("bench: error:"), err
    assert "Traceback" not in err
    return lines[0]


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def _pairs(base: Path, rng, stems=("a", "b"), shape=(16, 20)) -> tuple[Path, Path]:
    low, high = base / "low", base / "high"
    for s in stems:
        img = rng.integers(0, 256, (*shape, 3))
        _png(high / f"{s}.png", img)
        _png(low / f"{s}.png", img // 4)
    return low, high


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


# --- full disk / read-only folder, injected at the write layer -----------------------------------------
class _Full:
    """A file whose writes fail with ENOSPC once the shared byte budget is spent (after a partial write)."""

    def __init__(self, f, ctl):
        self._f, self._ctl = f, ctl

    def write(self, data):
        left = self._ctl.budget
        if len(data) > left:
            if left > 0:
                self._f.write(bytes(data[:left]))  # half a file reaches the disk, as on a real full disk
            self._ctl.budget = 0
            self._ctl.hits += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._ctl.budget -= len(data)
        return self._f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


class DiskFull:
    def __init__(self, monkeypatch):
        self.budget, self.hits, self.match = 0, 0, None
        real_open = builtins.open

        def fake_open(file, mode="r", *a, **k):
            f = real_open(file, mode, *a, **k)
            if self.match is not None and any(c in mode for c in "wax+") and self.match(str(file)):
                return _Full(f, self)
            return f

        monkeypatch.setattr(builtins, "open", fake_open)

    def arm(self, budget: int, match=lambda p: True):
        self.budget, self.match, self.hits = budget, match, 0

    def disarm(self):
        self.match = None


@pytest.fixture
def disk_full(monkeypatch):
    return DiskFull(monkeypatch)


def test_disk_full_while_preparing_is_one_line_leaves_nothing_and_rerun_completes(bench_env, disk_full, capsys):
    data = bench_env / "data"
    disk_full.arm(150_000, lambda p: p.startswith(str(data)))
    line = _one_line_error(capsys, 2, ["data", "prepare", "demo"])
    assert disk_full.hits == 1
    assert "disk full" in line and "cannot write the image" in line, line
    target = Path(re.search(r"cannot write the image (\S+):", line).group(1))
    assert target.is_relative_to(data) and not target.exists()  # the half-written file never got its name
    assert not _temporaries(data)
    assert not lock_path(load_manifest("demo")).exists()  # and the set is not accepted as built
    _one_line_error(capsys, 2, ["data", "verify", "demo"])
    disk_full.disarm()
    assert main(["-q", "data", "prepare", "demo"]) == 0
    assert main(["-q", "data", "verify", "demo"]) == 0


def test_disk_full_while_writing_a_lock_keeps_the_previous_one(demo, disk_full, capsys):
    lock = lock_path(load_manifest("demo"))
    before = lock.read_bytes()
    disk_full.arm(100, lambda p: ".lock.yaml." in p)
    line = _one_line_error(capsys, 2, ["data", "prepare", "demo"])
    assert f"cannot write the lock file {lock}: disk full" in line, line
    assert lock.read_bytes() == before and not _temporaries(lock.parent)
    disk_full.disarm()
    assert main(["-q", "data", "verify", "demo"]) == 0


def test_read_only_folder_is_one_line_naming_the_file(bench_env, rng, monkeypatch, capsys):
    low, high = _pairs(bench_env / "u", rng)
    manifests = bench_env / "data" / "_manifests"
    manifests.mkdir(parents=True)
    if os.geteuid() != 0:
        manifests.chmod(0o500)
    else:  # root writes through permissions: inject what a read-only file system answers
        real_open = os.open

        def ro_open(path, flags, *a, **k):
            if str(path).startswith(str(manifests)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(os, "open", ro_open)
    try:
        line = _one_line_error(capsys, 2, ["data", "index", "mine", "--low", str(low), "--high", str(high)])
    finally:
        manifests.chmod(0o700)
        monkeypatch.undo()
    assert f"cannot write the dataset manifest {manifests / 'mine.yaml'}" in line, line
    assert "read-only file system" in line or "permission denied" in line, line
    assert not (manifests / "mine.yaml").exists() and not _temporaries(manifests)
    assert main(["-q", "data", "index", "mine", "--low", str(low), "--high", str(high)]) == 0


def test_atomic_write_failure_names_what_and_keeps_the_old_content(tmp_path, disk_full):
    target = tmp_path / "x.json"
    fsutil.write_json(target, {"a": 1})
    disk_full.arm(3)
    with pytest.raises(BenchError, match=r"cannot write the summary .*x\.json: disk full"):
        fsutil.write_json(target, {"a": list(range(100))}, what="the summary")
    disk_full.disarm()
    assert fsutil.read_text(target).strip().startswith("{") and '"a": 1' in target.read_text()
    assert not _temporaries(tmp_path)


# --- text that is not UTF-8, damaged or cut records ---------------------------------------------------
def test_lock_and_manifest_with_garbage_bytes_are_one_line(demo, bench_env, rng, capsys):
    lock = lock_path(load_manifest("demo"))
    lock.write_bytes(lock.read_bytes()[:200] + b"\xff\xfe garbage \x81\n")
    line = _one_line_error(capsys, 2, ["data", "verify", "demo"])
    assert str(lock) in line and "not valid UTF-8" in line, line
    low, high = _pairs(bench_env / "u", rng)
    assert main(["-q", "data", "index", "mine", "--low", str(low), "--high", str(high)]) == 0
    manifest = bench_env / "data" / "_manifests" / "mine.yaml"
    manifest.write_bytes(manifest.read_bytes().replace(b"name: mine", b"name: m\xe9ine"))
    line = _one_line_error(capsys, 2, ["data", "show", "mine"])
    assert str(manifest) in line and "not valid UTF-8" in line, line
    manifest.write_bytes(b"- just\n- a list\n")
    line = _one_line_error(capsys, 2, ["data", "show", "mine"])
    assert str(manifest) in line, line


def _cut_last_lines(path: Path, n: int) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-n]))


def test_lock_cut_at_a_line_boundary_or_edited_is_refused(demo, capsys):
    m = load_manifest("demo")
    lock = lock_path(m)
    good = lock.read_bytes()
    assert yaml.safe_load(good)["integrity"]["pairs"]["test"] == len(m.split("test"))
    _cut_last_lines(lock, 5)  # still valid YAML, one pair fewer
    yaml.safe_load(lock.read_text())
    line = _one_line_error(capsys, 2, ["data", "verify", "demo"])
    assert str(lock) in line and "cut or edited" in line, line
    lock.write_bytes(good.replace(b"low_sha256: ", b"low_sha256: 0", 1))
    line = _one_line_error(capsys, 2, ["data", "verify", "demo"])
    assert "edited or damaged" in line, line
    lock.write_bytes(b"")
    line = _one_line_error(capsys, 2, ["data", "verify", "demo"])
    assert "empty" in line, line
    # runs on the demo set rebuild its damaged lock (it is made here, from installed packages)
    from bench.run import open_dataset

    open_dataset("demo", progress=False)
    assert main(["-q", "data", "verify", "demo"]) == 0


def test_lock_without_integrity_record_is_accepted_with_a_note(demo, capsys):
    lock = lock_path(load_manifest("demo"))
    d = yaml.safe_load(lock.read_text())
    del d["integrity"]
    lock.write_text(yaml.safe_dump(d, sort_keys=False))
    assert main(["-q", "data", "verify", "demo"]) == 0
    err = capsys.readouterr().err
    assert "no integrity record" in err and str(lock) in err


def test_indexed_manifest_cut_is_refused(bench_env, rng, capsys):
    low, high = _pairs(bench_env / "u", rng, stems=("a", "b", "c"))
    assert main(["-q", "data", "index", "mine", "--low", str(low), "--high", str(high)]) == 0
    manifest = bench_env / "data" / "_manifests" / "mine.yaml"
    _cut_last_lines(manifest, 5)
    line = _one_line_error(capsys, 2, ["data", "verify", "mine"])
    assert str(manifest) in line and "test has 2 pairs, recorded 3" in line, line
    assert "bench data index mine" in line


# --- paths and images given by the user ---------------------------------------------------------------
def test_symlink_loop_as_low_or_high_is_one_line(bench_env, rng, capsys):
    low, high = _pairs(bench_env / "u", rng)
    loop = bench_env / "loop"
    loop.symlink_to(loop)
    line = _one_line_error(capsys, 2, ["data", "index", "x", "--low", str(loop)])
    assert "--low" in line and str(loop) in line and "symbolic link loop" in line, line
    line = _one_line_error(capsys, 2, ["data", "index", "x", "--low", str(low), "--high", str(loop)])
    assert "--high" in line and "symbolic link loop" in line, line
    line = _one_line_error(capsys, 2, ["data", "prepare", "lol", "--root", str(loop)])
    assert "--root" in line and "symbolic link loop" in line, line
    # an indexed file replaced by a link loop after indexing
    assert main(["-q", "data", "index", "mine", "--low", str(low), "--high", str(high)]) == 0
    (low / "a.png").unlink()
    (low / "a.png").symlink_to(low / "a.png")
    line = _one_line_error(capsys, 2, ["data", "verify", "mine"])
    assert str(low / "a.png") in line and "symbolic link loop" in line, line


def test_images_smaller_than_the_ssim_window_are_refused_at_index(bench_env, rng, capsys):
    low, high = _pairs(bench_env / "u", rng, stems=("a", "b"), shape=(16, 20))
    _png(low / "tiny.png", rng.integers(0, 256, (8, 10, 3)))
    _png(high / "tiny.png", rng.integers(0, 256, (8, 10, 3)))
    line = _one_line_error(capsys, 2, ["data", "index", "mine", "--low", str(low), "--high", str(high)])
    assert "low/tiny.png (10x8)" in line and "11x11" in line, line
    assert "mine" not in [p.stem for p in (bench_env / "data" / "_manifests").glob("*.yaml")]


def test_images_smaller_than_the_ssim_window_are_refused_at_prepare(bench_env, rng, capsys):
    root = bench_env / "C"
    for i, shape in (("004501", (20, 30)), ("004502", (8, 30))):
        for role in ("raw", "target"):
            (root / "test" / role).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*shape, 3)).astype(np.uint8)).save(root / "test" / role / f"{i}.jpg")
    line = _one_line_error(capsys, 2, ["data", "prepare", "fivek", "--root", str(root), "--split", "test", "--partial"])
    assert "004502.jpg is 30x8 pixels" in line and "11x11" in line, line
    assert not lock_path(load_manifest("fivek")).exists()


def _jpeg_with_orientation(path: Path, arr: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path, exif=exif.tobytes(), quality=95)


def test_index_compares_sizes_after_exif_orientation_as_runs_read(bench_env, rng, capsys):
    from bench.imageio import read_rgb

    base = bench_env / "phone"
    up = rng.integers(0, 256, (16, 24, 3))  # what a viewer shows: 24 wide, 16 high
    _png(base / "high" / "a.png", up)
    # a phone stores the sensor's landscape and says "rotate 90° clockwise to view" (orientation 6)
    _jpeg_with_orientation(base / "low" / "a.jpg", np.rot90(up // 4, k=1), 6)
    assert read_rgb(base / "low" / "a.jpg").shape == read_rgb(base / "high" / "a.png").shape
    assert main(["-q", "data", "index", "phone", "--low", str(base / "low"), "--high", str(base / "high")]) == 0
    # a mis-rotated pair: stored upright but tagged as rotated, so runs would read it 16 wide
    _jpeg_with_orientation(base / "low" / "a.jpg", up // 4, 6)
    line = _one_line_error(capsys, 2, ["data", "index", "phone2", "--low", str(base / "low"),
                                       "--high", str(base / "high")])
    assert "a: low is 16x24 but high is 24x16 (after EXIF orientation)" in line, line


def test_index_decodes_fully_refuses_outside_links_and_names_skipped_files(bench_env, rng, capsys):
    low, high = _pairs(bench_env / "u", rng, stems=("a", "b"))
    # a truncated image: its header is fine, its pixels are not all there
    data = (low / "b.png").read_bytes()
    (low / "b.png").write_bytes(data[: len(data) // 2])
    line = _one_line_error(capsys, 2, ["data", "index", "mine", "--low", str(low), "--high", str(high)])
    assert "cannot decode image" in line and str(low / "b.png") in line, line
    _png(low / "b.png", rng.integers(0, 256, (16, 20, 3)))
    # a link out of the dataset folder: every run would refuse it, so index does
    outside = _png(bench_env / "elsewhere" / "c.png", rng.integers(0, 256, (16, 20, 3)))
    (low / "c.png").symlink_to(outside)
    _png(high / "c.png", rng.integers(0, 256, (16, 20, 3)))
    line = _one_line_error(capsys, 2, ["data", "index", "mine", "--low", str(low), "--high", str(high)])
    assert str(low / "c.png") in line and "outside the dataset folder" in line, line
    (low / "c.png").unlink()
    (high / "c.png").unlink()
    # a link inside the folder is fine; a self-loop, a dangling link and a text file are skipped, by name
    (low / "loop.png").symlink_to(low / "loop.png")
    (low / "gone.png").symlink_to(low / "nothing.png")
    (low / "notes.txt").write_text("shot on a phone")
    assert main(["-q", "data", "index", "mine", "--low", str(low), "--high", str(high)]) == 0
    err = capsys.readouterr().err
    assert f"{low / 'loop.png'}: symbolic link loop" in err, err
    assert f"{low / 'gone.png'}: dangling symbolic link" in err, err
    assert f"{low / 'notes.txt'}: not an image" in err, err
    assert [p.id for p in load_manifest("mine").split("test")] == ["a", "b"]


def test_checksum_mismatch_on_an_indexed_set_advises_a_command_that_works(bench_env, rng, capsys):
    low, high = _pairs(bench_env / "u", rng)
    assert main(["-q", "data", "index", "mine", "--low", str(low), "--high", str(high), "--seed", "3"]) == 0
    _png(low / "a.png", rng.integers(0, 256, (16, 20, 3)))  # the user edits a photo in place
    line = _one_line_error(capsys, 2, ["data", "verify", "mine"])
    assert "bench data prepare" not in line, line
    advised = re.search(r"(bench data index .*)$", line).group(1)
    assert main(["-q", *shlex.split(advised)[1:]]) == 0, advised
    assert main(["-q", "data", "verify", "mine"]) == 0


# --- the last-resort handler ----------------------------------------------------------------------------
def test_unexpected_exception_is_one_line_with_a_log_and_debug_shows_it(bench_env, monkeypatch, capsys):
    import bench.cli as cli

    def broken(args):
        raise ZeroDivisionError("a bug in the harness")

    monkeypatch.setattr(cli, "cmd_ls", broken)
    line = _one_line_error(capsys, 1, ["ls", "metrics"])
    assert "unexpected ZeroDivisionError: a bug in the harness" in line and "--debug" in line, line
    log = Path(re.search(r"traceback in (\S+?);", line).group(1))
    assert log.is_relative_to(bench_env / "results" / "logs")
    text = log.read_text()
    assert "Traceback" in text and "ZeroDivisionError" in text and "ls metrics" in text
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "ls", "metrics"])
    with pytest.raises(ZeroDivisionError):
        main(["ls", "--debug", "metrics"])


def test_unexpected_os_error_names_the_file(bench_env, monkeypatch, capsys):
    import bench.cli as cli

    def broken(args):
        open(bench_env / "nowhere" / "x")

    monkeypatch.setattr(cli, "cmd_ls", broken)
    line = _one_line_error(capsys, 1, ["ls", "metrics"])
    assert str(bench_env / "nowhere" / "x") in line and "no such file or directory" in line.lower(), line


# --- YAML writer -------------------------------------------------------------------------------------
def test_large_yaml_uses_the_c_dumper_with_the_same_output(tmp_path):
    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML built without libyaml")
    assert fsutil._SAFE_DUMPER is yaml.CSafeDumper
    doc = {"name": "x", "n": 1, "f": 1e-05, "s": "yes", "u": "café", "splits": {"test": [
        {"id": f"{i:06d}", "low": f"low/{i}.png", "low_sha256": "ab" * 32} for i in range(50)]}}
    fsutil.write_yaml(tmp_path / "x.yaml", doc)
    assert fsutil.read_yaml(tmp_path / "x.yaml") == doc
    assert (tmp_path / "x.yaml").read_text(encoding="utf-8") == yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


# --- leftovers after kill -9 ----------------------------------------------------------------------------
_POOL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from bench.fsutil import die_with_parent

    def slow(_):
        time.sleep(120)

    if __name__ == "__main__":
        pool = ProcessPoolExecutor(2, initializer=die_with_parent, initargs=(os.getpid(),))
        futures = [pool.submit(slow, i) for i in range(2)]
        time.sleep(1.5)
        with open(sys.argv[1], "w") as f:
            f.write(" ".join(str(p) for p in pool._processes))
        os.kill(os.getpid(), 9)
""")


def test_pool_workers_die_with_their_parent(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(_POOL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    pid_file, log = tmp_path / "pids", tmp_path / "stderr"
    with open(log, "wb") as err:  # not a pipe: live workers would hold it open
        rc = subprocess.run([sys.executable, str(script), str(pid_file)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=60).returncode
    assert rc == -9, log.read_text()
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    while any(fsutil.pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [p for p in pids if fsutil.pid_alive(p)]
    for p in alive:  # do not leave them behind if the test fails
        os.kill(p, 9)
    assert not alive, f"workers {alive} outlived their killed parent"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_sweep_removes_temporaries_of_dead_writers_only(tmp_path):
    old = time.time() - 3600
    dead = tmp_path / "sub" / f".a.png.{_dead_pid()}-0a1b2c3d.tmp"
    live = tmp_path / f".b.png.{os.getpid()}-0a1b2c3d.tmp"
    fresh_dead = tmp_path / f".c.png.{_dead_pid()}-0a1b2c3d.tmp"
    legacy_old = tmp_path / ".d.yaml.k3j_x9qz.tmp"
    legacy_new = tmp_path / ".e.yaml.a8d_k2mz.tmp"
    keep = tmp_path / "f.tmp"
    for p in (dead, live, fresh_dead, legacy_old, legacy_new, keep):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
    for p in (dead, live, keep):
        os.utime(p, (old, old))
    os.utime(legacy_old, (old - 2 * 86400, old - 2 * 86400))
    removed = fsutil.sweep_stale_temporaries(tmp_path, older_than_s=60)
    assert sorted(removed) == sorted([dead, legacy_old])
    assert live.exists() and fresh_dead.exists() and legacy_new.exists() and keep.exists()


def test_temporaries_carry_the_writer_pid_and_prepare_sweeps_them(demo, bench_env):
    seen = []
    real = fsutil.os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        return real(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fsutil.os, "replace", spy)
        fsutil.write_text(bench_env / "t.txt", "x")
    assert re.fullmatch(rf"\.t\.txt\.{os.getpid()}-[0-9a-f]+\.tmp", seen[0]), seen
    stale = bench_env / "data" / "demo" / "low" / f".x.png.{_dead_pid()}-deadbeef.tmp"
    stale.write_bytes(b"half a png")
    os.utime(stale, (time.time() - 3600,) * 2)
    assert main(["-q", "data", "prepare", "demo"]) == 0
    assert not stale.exists()

"""Finished records are checked (the run seal), record damage fails in one line, one writer per directory
(two real processes), byte-reproducible checkpoints, torn training-log rows, failed-run logs, read-only reuse."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.errors import BenchError
from bench.paths import results_root
from bench.run import RunSpec, execute

REPO = Path(__file__).resolve().parents[1]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _one_line_error(capsys, rc, *needles):
    out = capsys.readouterr()
    assert rc == 2, out
    lines = [ln for ln in out.err.splitlines() if ln.startswith("bench: error:")]
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _run(**kw):
    return execute(RunSpec("gain", "demo", progress=False, **kw))


def _report(capsys):
    rc = main(["-q", "report", "table1", "--profile", "smoke", "--datasets", "demo", "--seeds", "0"])
    return rc


# --- the seal ----------------------------------------------------------------------------------------------
def test_done_seals_every_record_and_reuse_checks_it(demo, fake_methods, capsys):
    d = _run().run_dir
    done = json.loads((d / "DONE").read_text())
    files = done["seal"]["files"]
    assert {"config.yaml", "env.json", "enhance.csv", "per_image.csv", "metrics.csv"} <= set(files)
    assert sorted(k for k in files if k.startswith("outputs/")) == ["outputs/mpl-grace_hopper.png",
                                                                     "outputs/skimage-coffee.png"]
    original = (d / "metrics.csv").read_text()
    mean = _rows(d / "metrics.csv")[0]["mean"]

    # +5 dB on a mean: re-derived from per_image.csv (which matches the seal), restored, never used
    (d / "metrics.csv").write_text(original.replace(mean, repr(float(mean) + 5), 1))
    again = _run()
    assert again.reused and again.metrics[0]["mean"] == mean
    assert (d / "metrics.csv").read_text() == original
    assert "re-derived from per_image.csv" in capsys.readouterr().err

    # a deleted metrics.csv: the same (no traceback)
    (d / "metrics.csv").unlink()
    assert main(["-q", "run", "--method", "gain", "--dataset", "demo"]) == 0
    assert (d / "metrics.csv").read_text() == original

    # an edited output or config is refused, naming the file
    cfg = (d / "config.yaml").read_text()
    (d / "config.yaml").write_text(cfg.replace("method: gain", "method: eff"))
    _one_line_error(capsys, main(["-q", "run", "--method", "gain", "--dataset", "demo"]), "config.yaml",
                    "does not match the seal")
    (d / "config.yaml").write_text(cfg)
    png = d / "outputs" / "skimage-coffee.png"
    data = bytearray(png.read_bytes())
    data[-20] ^= 0xFF
    png.write_bytes(bytes(data))
    _one_line_error(capsys, main(["-q", "run", "--method", "gain", "--dataset", "demo"]),
                    "outputs/skimage-coffee.png")
    # --force redoes it
    assert main(["-q", "run", "--method", "gain", "--dataset", "demo", "--force"]) == 0


def test_report_and_study_refuse_an_edited_record(demo, fake_methods, capsys):
    from bench.report.collect import read_run
    from bench.study.create import read_run as study_read_run

    d = _run(profile="smoke").run_dir
    assert read_run(d).sealed
    cfg = (d / "config.yaml").read_text()
    (d / "config.yaml").write_text(cfg.replace("method: gain", "method: lime"))
    _one_line_error(capsys, _report(capsys), "config.yaml", "does not match the seal")
    with pytest.raises(BenchError, match="config.yaml does not match the seal"):
        study_read_run(d)
    (d / "config.yaml").write_text(cfg)

    rows = (d / "per_image.csv").read_text()
    (d / "per_image.csv").write_text(rows.replace(",0.", ",9.", 1))
    err = _one_line_error(capsys, _report(capsys), "per_image.csv")
    assert "bench eval" in err
    # bench eval re-scores it from the sealed outputs and re-seals: the report is whole again
    assert main(["-q", "eval", str(d)]) == 0
    assert (d / "per_image.csv").read_text() == rows
    capsys.readouterr()
    assert _report(capsys) == 0


def test_damaged_record_files_fail_in_one_line(demo, fake_methods, capsys):
    d = _run().run_dir
    for name in ("enhance.csv", "per_image.csv", "metrics.csv"):
        good = (d / name).read_bytes()
        (d / name).write_bytes(good[:40] + b"\xff\xfe\x80garbage\x00\n" + good[40:])
        rc = main(["-q", "run", "--method", "gain", "--dataset", "demo"])
        if name == "metrics.csv":
            assert rc == 0                       # re-derived from the sealed per_image.csv
        else:
            _one_line_error(capsys, rc, name)
        if name == "per_image.csv":              # bench eval re-derives it from the outputs
            assert main(["-q", "eval", str(d)]) == 0
        (d / name).write_bytes(good)
    # the same damage in a run finished before runs were sealed: one line too
    done = json.loads((d / "DONE").read_text())
    done.pop("seal")
    (d / "DONE").write_text(json.dumps(done))
    good = (d / "per_image.csv").read_bytes()
    (d / "per_image.csv").write_bytes(b"\xff\xfe" + good)
    _one_line_error(capsys, main(["-q", "run", "--method", "gain", "--dataset", "demo"]), "per_image.csv",
                    "not valid UTF-8")
    (d / "per_image.csv").write_bytes(good)
    # an emptied config.yaml under bench eval
    (d / "config.yaml").write_text("")
    _one_line_error(capsys, main(["-q", "eval", str(d)]), "config.yaml")
    # a truncated run DONE
    (d / "DONE").write_text('{"finished": "2024-')
    _one_line_error(capsys, main(["-q", "eval", str(d)]), "DONE", "not valid JSON")


def test_unsealed_runs_stay_usable_and_eval_seals_them(demo, fake_methods, capsys):
    from bench.report import collect

    d = _run(profile="smoke").run_dir
    done = json.loads((d / "DONE").read_text())
    done.pop("seal")
    (d / "DONE").write_text(json.dumps(done))          # as written before runs were sealed
    (d / "metrics.csv").unlink()
    again = _run(profile="smoke")
    assert again.reused and {r["metric"] for r in again.metrics} == {"psnr", "ssim"}
    rec = collect.read_run(d)
    assert rec is not None and not rec.sealed
    assert "unsealed" in collect.unsealed_note([rec])
    assert main(["-q", "eval", str(d)]) == 0
    assert "seal" in json.loads((d / "DONE").read_text()) and collect.read_run(d).sealed


def test_eval_that_adds_columns_reseals(demo, fake_methods):
    d = _run().run_dir
    assert main(["-q", "eval", str(d), "--metrics", "psnr_y"]) == 0
    seal = json.loads((d / "DONE").read_text())["seal"]["files"]
    from bench.fsutil import sha256_file

    assert seal["per_image.csv"] == sha256_file(d / "per_image.csv")
    assert "psnr_y" in _rows(d / "per_image.csv")[0]
    assert _run().reused


# --- training records and weights ------------------------------------------------------------------------
def test_truncated_training_done_and_changed_weights(demo, fake_methods, capsys, tmp_path):
    from bench.report import collect

    r = execute(RunSpec("fitgain", "demo", profile="smoke", progress=False))
    cfg = json.loads(json.dumps(__import__("yaml").safe_load((r.run_dir / "config.yaml").read_text())))
    train_dir = Path(cfg["weights"]["train_run"])
    done = train_dir / "DONE"
    good = done.read_text()
    done.write_text(good[: len(good) // 2])
    _one_line_error(capsys, main(["-q", "run", "--method", "fitgain", "--dataset", "demo", "--profile", "smoke",
                                  "--force"]), str(done), "not valid JSON")
    done.write_text(good)

    ckpt = train_dir / "checkpoint.json"
    original = ckpt.read_text()
    # a byte changed inside a trained checkpoint given with --weights: refused against its training record
    ckpt.write_text(original.replace(original[12], "9" if original[12] != "9" else "8", 1))
    _one_line_error(capsys, main(["-q", "run", "--method", "fitgain", "--dataset", "demo", "--profile", "smoke",
                                  "--weights", str(ckpt)]), str(ckpt), "differs from the one recorded")
    # a copy of it elsewhere: verified as a copy; a file never recorded: accepted, marked unverified
    ckpt.write_text(original)
    copy = tmp_path / "copy.json"
    copy.write_text(original)
    ok = execute(RunSpec("fitgain", "demo", profile="smoke", weights=copy, progress=False))
    assert ok.reused and ok.run_dir == r.run_dir          # the same weights are the same run
    from bench.fsutil import sha256_file
    from bench.records import weights_provenance

    w = weights_provenance(copy, sha256_file(copy))
    assert w["verified"] is True and "training" in w["verified_by"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"gain": 1.5}))
    new = execute(RunSpec("fitgain", "demo", profile="smoke", weights=other, progress=False))
    w = __import__("yaml").safe_load((new.run_dir / "config.yaml").read_text())["weights"]
    assert w["verified"] is False and "unverified" in capsys.readouterr().err
    rec = collect.read_run(new.run_dir)
    assert any("unverified" in n for n in collect.record_notes([rec]))


def test_checkpoints_are_byte_reproducible(tmp_path):
    from bench.training import load_torch, save_torch

    state = {"format": "bench-weights", "model": {"w": torch.arange(12.0).view(3, 4), "b": torch.ones(3)},
             "meta": {"method": "x"}}
    same = {"format": "bench-weights", "model": {"w": torch.arange(12.0).view(3, 4).clone(), "b": torch.ones(3)},
            "meta": {"method": "x"}}
    save_torch(state, tmp_path / "a" / "model_final.pt")
    save_torch(same, tmp_path / "b" / "other_name.pt")
    a, b = (tmp_path / "a" / "model_final.pt").read_bytes(), (tmp_path / "b" / "other_name.pt").read_bytes()
    assert a == b
    assert torch.equal(load_torch(tmp_path / "b" / "other_name.pt")["model"]["w"], state["model"]["w"])
    assert not list((tmp_path / "a").glob(".*.tmp"))


def test_torn_training_log_row_is_dropped_not_glued(tmp_path):
    from bench.training import TrainDir

    log = tmp_path / "train_log.csv"
    header = ["iteration", "loss", "lr", "seconds"]
    body = "".join(f"{i},0.5,0.001,{i}.0\n" for i in range(1, 11))
    log.write_text(",".join(header) + "\n" + body + "1")        # iteration 11, torn after its first byte
    TrainDir.truncate_csv(log, 10)                              # resume from the state of iteration 10
    TrainDir.append_csv(log, header, [11, "0.4", "0.001", "11.0"])
    iters = [r["iteration"] for r in _rows(log)]
    assert iters == [str(i) for i in range(1, 12)]
    # appended without a resume cut (e.g. val.csv): the torn tail is dropped before the row
    with open(log, "a") as f:
        f.write("12,0.")
    TrainDir.append_csv(log, header, [12, "0.3", "0.001", "12.0"])
    assert [r["iteration"] for r in _rows(log)][-2:] == ["11", "12"]


def test_torn_enhance_log_row_is_not_glued_on_resume(demo, fake_methods):
    d = _run().run_dir
    (d / "DONE").unlink()
    text = (d / "enhance.csv").read_text()
    (d / "enhance.csv").write_text(text.rstrip("\r\n"))            # last row complete but without its newline
    (d / "outputs" / "skimage-coffee.png").unlink()
    _run()
    ids = [r["id"] for r in _rows(d / "enhance.csv")]
    assert sorted(ids) == ["mpl-grace_hopper", "skimage-coffee"]


# --- failures, read-only media ------------------------------------------------------------------------------
def test_a_failed_run_writes_why_into_its_log(demo, fake_methods, monkeypatch, capsys):
    def broken(self, low):
        raise BenchError("the adapter refused this image (test)")

    monkeypatch.setattr(fake_methods.Gain, "enhance", broken)
    assert main(["-q", "run", "--method", "gain", "--dataset", "demo"]) == 2
    logs = list((results_root() / "runs" / "demo" / "gain").glob("*/log.txt"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "run failed: the adapter refused this image (test)" in text

    def crash(self, low):
        raise ZeroDivisionError("deep inside")

    monkeypatch.setattr(fake_methods.Gain, "enhance", crash)
    with pytest.raises(ZeroDivisionError):
        execute(RunSpec("gain", "demo", progress=False))
    text = logs[0].read_text()
    assert "run failed with an unexpected error" in text and "ZeroDivisionError: deep inside" in text


def test_finished_run_on_read_only_media_is_reused_and_reported(demo, fake_methods, monkeypatch, capsys):
    d = _run(profile="smoke").run_dir
    import bench.run as run_mod

    def refuse(directory):
        raise BenchError(f"results folder {directory} is not writable: Read-only file system")

    monkeypatch.setattr(run_mod, "check_writable", refuse)
    if os.geteuid() != 0:
        for p in [d, *d.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        assert main(["-q", "run", "--method", "gain", "--dataset", "demo", "--profile", "smoke"]) == 0
        assert "complete run reused" in capsys.readouterr().out
        assert main(["-q", "report", "table1", "--profile", "smoke", "--datasets", "demo", "--seeds", "0",
                     "--out", str(Path(os.environ["BENCH_RESULTS"]).parent / "tables")]) == 0
    finally:
        for p in [d, *d.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


# --- two processes on one directory -------------------------------------------------------------------------
GATED = textwrap.dedent('''
    import os, sys, time
    from dataclasses import dataclass
    sys.path.insert(0, {repo!r})
    from bench import registry
    from bench.methods.base import Method

    @dataclass
    class GatedConfig:
        gain: float = 2.0

    class Gated(Method):
        name = "gated"
        display_name = "Gated"
        family = "classical"
        Config = GatedConfig

        def enhance(self, low):
            gate = os.environ["GATE"]
            open(gate + ".started", "w").close()
            while not os.path.exists(gate):
                time.sleep(0.02)
            return (low * self.config.gain).clamp(0, 1)

    registry.METHODS["gated"] = "__main__:Gated"
    if sys.argv[1] == "hold":                  # hold the directories' locks until the gate opens
        import contextlib
        from bench.records import dir_lock
        with contextlib.ExitStack() as stack:
            for d in sys.argv[2:]:
                stack.enter_context(dir_lock(d, "directory"))
            open(os.environ["GATE"] + ".started", "w").close()
            while not os.path.exists(os.environ["GATE"]):
                time.sleep(0.02)
        sys.exit(0)
    from bench.cli import main
    sys.exit(main(sys.argv[1:]))
''')


def _wait_for(path: Path, proc: subprocess.Popen, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_two_processes_on_one_run_directory(demo, tmp_path):
    script = tmp_path / "gated.py"
    script.write_text(GATED.format(repo=str(REPO)))
    gate = tmp_path / "gate"
    env = {**os.environ, "GATE": str(gate), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(script), "-q", "run", "--method", "gated", "--dataset", "demo"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        _wait_for(Path(f"{gate}.started"), first)                 # the first is enhancing, holding the run
        refused = subprocess.run(cmd, env={**env, "BENCH_LOCK_TIMEOUT": "0"}, capture_output=True, text=True,
                                 timeout=120)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"in use by pid {first.pid}" in refused.stderr
        second = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = second.stderr.readline()                            # it waits, naming the holder
        assert "waiting" in line and f"pid {first.pid}" in line, line
        gate.touch()
        out1, err1 = first.communicate(timeout=120)
        out2, err2 = second.communicate(timeout=120)
    finally:
        gate.touch()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
    assert first.returncode == 0, err1
    assert second.returncode == 0 and "complete run reused" in out2, err2
    run_dir = Path(out1.split("run directory: ")[1].split()[0])
    ids = [r["id"] for r in _rows(run_dir / "enhance.csv")]
    assert sorted(ids) == ["mpl-grace_hopper", "skimage-coffee"]   # no duplicated rows, no header inside


def test_training_and_eval_have_one_writer(demo, fake_methods, tmp_path, monkeypatch, capsys):
    from bench.methods.base import build_config
    from bench.run import open_dataset, train_dir_for

    run_dir = _run().run_dir
    m = open_dataset("demo", progress=False)
    cls = fake_methods.FitGain
    tdir = train_dir_for(cls, build_config(cls, "smoke", {}, m.name), m, 0, "smoke")
    tdir.mkdir(parents=True)
    script = tmp_path / "gated.py"
    script.write_text(GATED.format(repo=str(REPO)))
    gate = tmp_path / "gate"
    holder = subprocess.Popen([sys.executable, str(script), "hold", str(tdir), str(run_dir)],
                              env={**os.environ, "GATE": str(gate), "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(Path(f"{gate}.started"), holder)
        monkeypatch.setenv("BENCH_LOCK_TIMEOUT", "0")
        _one_line_error(capsys, main(["-q", "train", "--method", "fitgain", "--dataset", "demo", "--profile",
                                      "smoke"]), f"pid {holder.pid}", "training directory")
        assert fake_methods.FitGain.trained == 0
        before = (run_dir / "per_image.csv").read_text()
        _one_line_error(capsys, main(["-q", "eval", str(run_dir), "--metrics", "psnr_y"]), f"pid {holder.pid}",
                        str(run_dir))
        assert (run_dir / "per_image.csv").read_text() == before
    finally:
        gate.touch()
        holder.communicate(timeout=60)
    monkeypatch.setenv("BENCH_LOCK_TIMEOUT", "")
    assert main(["-q", "train", "--method", "fitgain", "--dataset", "demo", "--profile", "smoke"]) == 0
    assert fake_methods.FitGain.trained == 1
    assert main(["-q", "eval", str(run_dir), "--metrics", "psnr_y"]) == 0

"""``bench reproduce``: the plan, skipping, resuming, local and Slurm execution, and the table at the end."""

from __future__ import annotations

import csv
import os
import sys
import types
from pathlib import Path

import pytest
import yaml

from bench import registry
from bench.cli import build_parser
from bench.errors import BenchError
from bench.paths import results_root
from bench.report.spec import load_spec
from bench.reproduce import (
    cmd_reproduce,
    parse_minutes,
    plan_table,
    slurm_parameters,
)
from bench.run import run_dir_for, run_identity

# --- helpers --------------------------------------------------------------------------------------


def small_spec(tmp_path: Path, rows=("identity", "gain", "fitgain"), seeds=(0, 1)) -> Path:
    """A table spec over the fake methods (the real tables have no rows for them)."""
    doc = {"name": "small", "kind": "absolute", "title": "small", "split": "test", "profile": "paper",
           "seeds": list(seeds), "datasets": ["demo"], "metrics": ["psnr", "ssim"], "decimals": {"psnr": 2, "ssim": 3},
           "groups": [{"name": "methods", "rows": [{"key": k, "label": k.upper()} for k in rows]}]}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def bench(*argv: str) -> int:
    """`bench ARGV` as bench.cli.main runs it (a BenchError is one line on stderr and exit 2)."""
    args = build_parser().parse_args(list(argv))
    try:
        return args.fn(args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return e.exit_code


def run_dirs() -> dict[str, float]:
    """Every run directory under <results>/runs with the mtime of its DONE (0 if none)."""
    out = {}
    for d in sorted((results_root() / "runs").glob("*/*/*")):
        done = d / "DONE"
        out[str(d)] = done.stat().st_mtime_ns if done.exists() else 0
    return out


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def plan_lines(out: str) -> dict[str, list[str]]:
    """Plan table rows of the printed output: row key -> cells."""
    lines = {}
    for line in out.splitlines():
        if line.startswith("| ") and not line.startswith("| row "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 7:  # plan rows only, not the rendered table printed after the runs
                lines.setdefault(cells[0], []).append(cells)
    return lines


# --- end to end -----------------------------------------------------------------------------------
def test_end_to_end_table1_smoke_on_demo(demo, capsys):
    """Over whatever methods are registered: implemented rows filled, the others blocked with the reason."""
    assert bench("reproduce", "table1", "--profile", "smoke", "--datasets", "demo", "--seeds", "0") == 0
    out = capsys.readouterr().out
    tables = results_root() / "tables"
    for name in ("table1.csv", "table1.md", "table1.tex", "table1.sources.csv", "table1.compare.md"):
        assert (tables / name).stat().st_size > 100, name
    spec = load_spec("table1")
    implemented = {r.key for r in spec.rows if r.method in registry.METHODS}
    assert "identity" in implemented
    plan = plan_lines(out)
    csv_rows = rows_of(tables / "table1.csv")
    for r in spec.rows:
        cells = [c for c in csv_rows if c["row"] == r.key]
        assert {c["metric"] for c in cells} == {"psnr", "ssim"}
        if r.key in implemented:
            assert all(c["mean"] not in ("", "nan") for c in cells), r.key
            assert all(p[5] == "to run" for p in plan[r.key])
        else:
            assert all(c["mean"] in ("", "nan") for c in cells), r.key  # missing, never filled
            assert plan[r.key][0][5] == "blocked" and "not implemented yet" in plan[r.key][0][6]
    sources = rows_of(tables / "table1.sources.csv")
    assert {s["row"] for s in sources} == implemented
    for s in sources:
        assert (results_root() / s["run_dir"] / "DONE").exists()
    md = (tables / "table1.md").read_text(encoding="utf-8")
    assert "demo PSNR" in md and "†" in md  # smoke cells are marked
    assert "wrote " in out and "ran " in out


def test_dry_run_blocks_unimplemented_methods_and_unprepared_datasets(monkeypatch, capsys):
    monkeypatch.delitem(registry.METHODS, "lime")  # lime stands for "a method not implemented yet"
    assert bench("reproduce", "table1", "--dry-run", "--profile", "smoke", "--datasets", "demo,lol",
                 "--methods", "identity", "lime", "ours") == 0
    out = capsys.readouterr().out
    plan = plan_lines(out)
    assert set(plan) == {"identity", "lime", "ours:no_rl", "ours"}
    lime = {p[2]: p for p in plan["lime"]}
    assert lime["demo"][5] == "blocked"
    assert "method lime is not implemented yet" in lime["demo"][6] and "registry" in lime["demo"][6]
    identity = {p[2]: p for p in plan["identity"]}
    assert identity["lol"][5] == "blocked" and "bench data prepare lol --root PATH" in identity["lol"][6]
    assert identity["demo"][5] == "to run" and "built on first use" in identity["demo"][6]
    assert "bench run --method identity --dataset demo --split test --profile smoke --seed 0" in out
    # a dry run builds and runs nothing
    assert not (Path(os.environ["BENCH_DATA"]) / "demo").exists()
    assert not (results_root() / "runs").exists() and not (results_root() / "tables").exists()


def test_methods_filter_and_unknown_names():
    spec = load_spec("table2")
    plan = plan_table(spec, ["demo"], "smoke", [0], ["ours:no_rl"])
    assert {r.row for r in plan.runs} == {"ours:no_rl"}
    with pytest.raises(BenchError, match="did you mean 'ours:no_rl'"):
        plan_table(spec, ["demo"], "smoke", [0], ["ours:no_rll"])
    with pytest.raises(BenchError, match="unknown dataset"):
        plan_table(spec, ["dmeo"], "smoke", [0])
    with pytest.raises(BenchError, match="not made from runs"):
        plan_table(load_spec("table3"))


def test_table2_variants_are_runs_of_ours_with_set_variant(monkeypatch):
    """Every Table 2 row, plus the reference row, planned as `bench run --method ours --set variant=...`."""
    import fake_methods

    @__import__("dataclasses").dataclass
    class VariantConfig:
        variant: str = "full"

    class Ours(fake_methods.Gain):
        name = "ours"
        trainable = True
        Config = VariantConfig

    class NoVariant(fake_methods.Gain):
        name = "ours"
        trainable = True

    mod = types.ModuleType("fake_ours")
    mod.Ours, mod.NoVariant = Ours, NoVariant
    monkeypatch.setitem(sys.modules, "fake_ours", mod)
    monkeypatch.setitem(registry.METHODS, "ours", "fake_ours:Ours")
    spec = load_spec("table2")
    plan = plan_table(spec, ["demo"], "smoke", [0, 1])
    keys = [r.key for r in spec.rows] + ["ours"]
    assert [r.row for r in plan.runs] == [k for k in keys for _ in (0, 1)]
    by_row = {(r.row, r.seed): r for r in plan.runs}
    assert by_row[("ours:no_rl", 1)].argv()[-2:] == ["--set", "variant=no_rl"]
    assert "--set" not in by_row[("ours", 0)].argv()
    assert all(r.state == "to run" for r in plan.runs)
    monkeypatch.setitem(registry.METHODS, "ours", "fake_ours:NoVariant")
    plan = plan_table(spec, ["demo"], "smoke", [0])
    no_rl = next(r for r in plan.runs if r.row == "ours:no_rl")
    assert no_rl.state == "blocked" and "has no option 'variant'" in no_rl.detail
    assert next(r for r in plan.runs if r.row == "ours").state == "to run"


# --- skipping, resuming, identity -----------------------------------------------------------------
def test_predicted_run_dirs_are_the_ones_bench_run_makes(demo, fake_methods, tmp_path):
    spec = load_spec(None, small_spec(tmp_path))
    plan = plan_table(spec, profile="smoke")
    assert [(r.row, r.seed, r.state) for r in plan.runs] == [
        ("identity", 0, "to run"), ("gain", 0, "to run"), ("fitgain", 0, "to run"), ("fitgain", 1, "to run")]
    from bench.run import RunSpec, execute

    made = {}
    for r in plan.runs:
        made[(r.row, r.seed)] = execute(RunSpec(r.method, r.dataset, profile=r.profile, seed=r.seed,
                                                progress=False)).run_dir
    again = plan_table(spec, profile="smoke")
    assert all(r.state == "done" for r in again.runs)
    for r in again.runs:
        assert r.run_dir == made[(r.row, r.seed)]
        if r.trainable:
            assert (r.train_dir / "DONE").exists()
    gain = next(r for r in plan.runs if r.row == "gain")
    assert gain.run_dir == made[("gain", 0)]  # known before running for deterministic methods


def test_second_reproduce_skips_everything(demo, fake_methods, tmp_path, capsys):
    spec = small_spec(tmp_path)
    assert bench("reproduce", "table1", "--spec", str(spec), "--profile", "smoke", "--out", str(tmp_path / "t")) == 0
    first = run_dirs()
    assert len(first) == 4 and all(first.values())
    calls, trained = fake_methods.Gain.calls, fake_methods.FitGain.trained
    assert trained == 2
    capsys.readouterr()
    assert bench("reproduce", "table1", "--spec", str(spec), "--profile", "smoke", "--out", str(tmp_path / "t")) == 0
    out = capsys.readouterr().out
    assert "4 done" in out and "nothing to run" in out
    assert run_dirs() == first  # no new run, no DONE rewritten
    assert (fake_methods.Gain.calls, fake_methods.FitGain.trained) == (calls, trained)
    assert len(rows_of(tmp_path / "t" / "small.sources.csv")) == 4


def test_interrupted_plan_resumes(demo, fake_methods, tmp_path, monkeypatch, capsys):
    spec = small_spec(tmp_path, rows=("identity", "gain"))
    real = fake_methods.Gain.enhance

    def crash_on_second(self, low):
        if fake_methods.Gain.calls >= 1:
            raise KeyboardInterrupt
        return real(self, low)

    monkeypatch.setattr(fake_methods.Gain, "enhance", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        bench("reproduce", "table1", "--spec", str(spec), "--profile", "smoke")
    assert fake_methods.Gain.calls == 1
    capsys.readouterr()
    assert bench("reproduce", "table1", "--spec", str(spec), "--profile", "smoke", "--dry-run") == 0
    plan = plan_lines(capsys.readouterr().out)
    assert plan["identity"][0][5] == "done"
    assert plan["gain"][0][5] == "partial" and "1/2 images enhanced" in plan["gain"][0][6]
    monkeypatch.setattr(fake_methods.Gain, "enhance", real)
    assert bench("reproduce", "table1", "--spec", str(spec), "--profile", "smoke") == 0
    assert fake_methods.Gain.calls == 2  # only the image that was not finished
    assert all(run_dirs().values())
    assert "| GAIN" in (results_root() / "tables" / "small.md").read_text(encoding="utf-8")


def test_a_failing_run_is_reported_and_the_others_still_run(demo, fake_methods, tmp_path, monkeypatch, capsys):
    spec = small_spec(tmp_path, rows=("gain", "identity"))

    def broken(self, low):
        raise RuntimeError("adapter bug")

    monkeypatch.setattr(fake_methods.Gain, "enhance", broken)
    assert bench("reproduce", "table1", "--spec", str(spec), "--profile", "smoke") == 2
    cap = capsys.readouterr()
    assert "FAILED" in cap.out and "1 run(s) failed: gain on demo seed 0" in cap.err
    log = results_root() / "logs" / "reproduce" / "small" / "demo__gain__s0.log"
    assert "adapter bug" in log.read_text()
    assert (results_root() / "tables" / "small.md").exists()  # the table is still written
    assert sum(bool(v) for v in run_dirs().values()) == 1  # identity finished


def test_jobs_run_as_concurrent_bench_run_subprocesses(demo, tmp_path, capsys):
    spec = small_spec(tmp_path, rows=("identity", "lime"))
    assert bench("reproduce", "table1", "--spec", str(spec), "--profile", "smoke", "--jobs", "2", "--no-report") == 0
    out = capsys.readouterr().out
    assert out.count("started") == 2 and out.count("done in") == 2
    logs = results_root() / "logs" / "reproduce" / "small"
    text = (logs / "demo__lime__s0.log").read_text()
    assert text.startswith("$ bench run --method lime --dataset demo") and "run directory:" in text
    assert sum(bool(v) for v in run_dirs().values()) == 2
    assert not (results_root() / "tables").exists()


# --- slurm ----------------------------------------------------------------------------------------
class FakeJob:
    def __init__(self, job_id, fn, args):
        self.job_id = job_id
        try:
            self._result, self._error = fn(*args), None
        except Exception as e:  # what submitit raises from result()
            self._result, self._error = None, e

    def result(self):
        if self._error is not None:
            raise RuntimeError(f"FailedJobError: job {self.job_id} raised\n{self._error!r}")
        return self._result


def fake_submitit(log: dict) -> types.ModuleType:
    """A stand-in for submitit: records the executor's settings and runs each job at once, in-process."""
    mod = types.ModuleType("submitit")

    class AutoExecutor:
        def __init__(self, folder, cluster=None, **kw):
            log.update(folder=folder, cluster=cluster, params={}, names=[], payloads=[])

        def update_parameters(self, **kw):
            if "name" in kw:
                log["names"].append(kw.pop("name"))
            log["params"].update(kw)

        def submit(self, fn, *args):
            log["payloads"].append(args[0])
            return FakeJob(str(1000 + len(log["payloads"])), fn, args)

    mod.AutoExecutor = AutoExecutor
    return mod


def test_slurm_executor_submits_one_job_per_run(demo, fake_methods, tmp_path, monkeypatch, capsys):
    log: dict = {}
    monkeypatch.setitem(sys.modules, "submitit", fake_submitit(log))
    spec = small_spec(tmp_path)
    assert bench("reproduce", "table1", "--spec", str(spec), "--profile", "smoke", "--executor", "slurm",
                 "--slurm-partition", "gpu", "--slurm-gpus", "1", "--slurm-time", "1-02:30:00", "--slurm-cpus", "8",
                 "--slurm-extra", "account=proj", "--slurm-extra", "qos=high") == 0
    out = capsys.readouterr().out
    assert log["cluster"] == "slurm" and log["folder"].endswith("logs/reproduce/small/slurm/%j")
    assert log["params"] == {"stderr_to_stdout": True, "slurm_partition": "gpu", "gpus_per_node": 1,
                             "timeout_min": 26 * 60 + 30, "cpus_per_task": 8,
                             "slurm_additional_parameters": {"account": "proj", "qos": "high"}}
    assert log["names"] == ["bench-demo__identity__s0", "bench-demo__gain__s0", "bench-demo__fitgain__s0",
                            "bench-demo__fitgain__s1"]
    assert [p["seed"] for p in log["payloads"]] == [0, 0, 0, 1]
    assert "submitted as Slurm job 1001" in out
    assert all(run_dirs().values()) and len(run_dirs()) == 4
    assert (results_root() / "tables" / "small.md").exists()


def test_slurm_failures_and_no_wait(demo, fake_methods, tmp_path, monkeypatch, capsys):
    log: dict = {}
    monkeypatch.setitem(sys.modules, "submitit", fake_submitit(log))
    spec = small_spec(tmp_path, rows=("gain",))
    def broken(self, low):
        raise RuntimeError("boom")

    monkeypatch.setattr(fake_methods.Gain, "enhance", broken)
    assert bench("reproduce", "table1", "--spec", str(spec), "--profile", "smoke", "--executor", "slurm") == 2
    assert "failed" in capsys.readouterr().err
    assert bench("reproduce", "table1", "--spec", str(spec), "--profile", "smoke", "--executor", "slurm",
                 "--no-wait") == 0
    out = capsys.readouterr().out
    assert "when they finish: bench report table1" in out


def test_slurm_without_submitit_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    assert bench("reproduce", "table1", "--datasets", "demo", "--executor", "slurm") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install submitit" in err
    assert not (results_root() / "runs").exists()


def test_slurm_options():
    assert parse_minutes("90") == 90 and parse_minutes("1:30:00") == 90 and parse_minutes("2-00:00:00") == 2880
    assert parse_minutes("45:30") == 46
    with pytest.raises(BenchError, match="--slurm-time"):
        parse_minutes("soon")
    with pytest.raises(BenchError, match="KEY=VALUE"):
        slurm_parameters(extra=["account"])
    assert slurm_parameters(extra=["--mail-type=END"])["slurm_additional_parameters"] == {"mail_type": "END"}


# --- cli ------------------------------------------------------------------------------------------
def test_register_works_with_the_bench_cli_parser_wrapper():
    p = build_parser()
    args = p.parse_args(["reproduce", "table2", "-q", "--datasets", "demo", "--seeds", "0,1", "--jobs", "3"])
    assert args.quiet and args.datasets == ["demo"] and args.jobs == 3 and args.fn is cmd_reproduce
    with pytest.raises(SystemExit):
        p.parse_args(["reproduce", "table3"])


def test_run_dir_for_matches_the_run_module(demo, fake_methods):
    """The identity mirrored here and bench.run's agree for a deterministic method with options."""
    from bench.data.manifest import load_manifest, locked
    from bench.methods.base import build_config
    from bench.run import RunSpec, execute

    cls = registry.load_method_class("gain")
    config = build_config(cls, "quick", {"gain": "3"}, "demo")
    predicted = run_dir_for(run_identity("gain", cls, config, None, locked(load_manifest("demo")), "test", 4, "quick"))
    made = execute(RunSpec("gain", "demo", profile="quick", seed=4, overrides={"gain": "3"}, progress=False))
    assert made.run_dir == predicted

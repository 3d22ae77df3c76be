"""``bench reproduce table1|table2``: plan every run a table needs, run what is missing, write the table.

The plan is every (table row × dataset × seed) the report will look for (:mod:`bench.report.collect`):
trainable methods get one run per seed asked, deterministic ones (``trainable: false``) one run; a DSN
variant row ``ours:<variant>`` is a run of ``ours`` with ``--set variant=<variant>``; a delta table (Table 2)
also needs its reference row (the full model). Each planned run gets a state, decided the way
:func:`bench.run.execute` decides it, without running anything:

- **done**: the run directory its identity hashes to has ``DONE`` (it is skipped);
- **partial**: that directory exists without ``DONE``, or the training run it needs was started and not
  finished (``bench run`` resumes both);
- **to run**: nothing of it exists yet ("train + evaluate", "evaluate (trained)" or "evaluate");
- **blocked**: it cannot run yet, with the command that would fix it (a method not in the registry, a
  dataset not prepared, an option the adapter does not have).

Then the runs that are not done or blocked are executed -- in this process one after another
(``--jobs 1``), as N concurrent ``bench run`` subprocesses (``--jobs N``), or as one Slurm job each through
submitit (``--executor slurm``) -- each with a log under ``<results>/logs/reproduce/<table>/``, and the table
is written with :func:`bench.report.write_table`.

Run and training directories are predicted with ``bench.run``'s own identity functions (``run_identity``,
``train_dir_for``), so a plan and ``bench run`` can never disagree about what is done.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import BenchError, unknown_name
from .report import _seeds, _split_list  # one parser for --datasets/--methods/--seeds lists
from .subcommand import add_subcommand

STATES = ("done", "partial", "to run", "blocked")
EXECUTORS = ("local", "slurm")
PLAN_TABLES = ("table1", "table2")

EPILOG = """\
examples:
  bench reproduce table1 --profile smoke --datasets demo
  bench reproduce table1 --dry-run
  bench reproduce table1 --profile quick --datasets lol-485-15 --methods lime eff --jobs 2
  bench reproduce table2 --profile paper --seeds 0 1 2 --executor slurm --slurm-partition gpu \\
      --slurm-gpus 1 --slurm-time 24:00:00 --slurm-extra account=myproj

States in the plan: done (complete, skipped), partial (interrupted; resumed), to run, blocked (with the
command that fixes it). Deterministic methods need one seed; trainable ones one run per seed asked.
Logs: <results>/logs/reproduce/<table>/<dataset>__<method>__s<seed>.log. After the runs, the table is
written as by `bench report` (same --profile, --datasets, --seeds). Ctrl-C keeps finished work: re-run the
same command to resume."""


# --- the plan -------------------------------------------------------------------------------------
@dataclass
class PlannedRun:
    """One run the table needs (or, when blocked before seeds are known, one row × dataset)."""

    row: str  # table row key: "lime", "ours", "ours:no_rl"
    label: str
    method: str
    dataset: str
    seeds: tuple[int, ...]  # one seed; a blocked row of unknown trainability stands for every seed asked
    profile: str
    split: str
    overrides: dict[str, str] = field(default_factory=dict)
    state: str = "to run"
    detail: str = ""
    run_dir: Path | None = None
    train_dir: Path | None = None
    trainable: bool | None = None

    @property
    def seed(self) -> int:
        return self.seeds[0]

    @property
    def runnable(self) -> bool:
        return self.state in ("partial", "to run")

    def argv(self, device: str = "auto") -> list[str]:
        """The ``bench`` arguments of this run."""
        args = ["run", "--method", self.method, "--dataset", self.dataset, "--split", self.split,
                "--profile", self.profile, "--seed", str(self.seed)]
        for key, value in self.overrides.items():
            args += ["--set", f"{key}={value}"]
        if device != "auto":
            args += ["--device", device]
        return args

    def command(self, device: str = "auto") -> str:
        return "bench " + shlex.join(self.argv(device))

    @property
    def job_name(self) -> str:
        variant = self.overrides.get("variant")
        method = f"{self.method}-{variant}" if variant else self.method
        return f"{self.dataset}__{method}__s{self.seed}"

    def payload(self, device: str = "auto") -> dict[str, Any]:
        """What a worker needs to run it (plain data: it is pickled for Slurm)."""
        return {"method": self.method, "dataset": self.dataset, "split": self.split, "profile": self.profile,
                "seed": self.seed, "overrides": dict(self.overrides), "device": device}


@dataclass
class Plan:
    table: str
    datasets: list[str]
    profile: str
    seeds: list[int]
    runs: list[PlannedRun]

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.runs)

    @property
    def todo(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.runnable]

    def rows(self) -> list[dict[str, str]]:
        out = []
        for r in self.runs:
            note = r.detail
            if r.state in ("done", "partial") and r.run_dir is not None:
                note = f"{_rel(r.run_dir)}" + (f" ({r.detail})" if r.detail else "")
            out.append({"row": r.row, "method": r.method + "".join(f" --set {k}={v}" for k, v in r.overrides.items()),
                        "dataset": r.dataset, "seed": ",".join(map(str, r.seeds)), "profile": r.profile,
                        "state": r.state, "run / what to do": note})
        return out

    def render(self) -> str:
        from tabulate import tabulate

        rows = self.rows()
        if not rows:
            return "(nothing to plan)"
        return tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True)

    def summary(self) -> str:
        n_runs = sum(len(r.seeds) if r.state == "blocked" else 1 for r in self.runs)
        parts = [f"{self.count(s)} {s}" for s in STATES if self.count(s)]
        return (f"plan for {self.table} ({self.profile} profile; datasets {', '.join(self.datasets)}; "
                f"seeds {', '.join(map(str, self.seeds))}): {len(self.runs)} entries covering {n_runs} runs: "
                + (", ".join(parts) or "nothing"))


def _rel(path: Path) -> str:
    from .paths import results_root

    try:
        return Path(path).relative_to(results_root()).as_posix()
    except ValueError:
        return str(path)


# --- datasets -------------------------------------------------------------------------------------
@dataclass
class DatasetState:
    name: str
    manifest: Any = None  # the manifest as runs see it (locked), or None
    problem: str = ""  # why nothing can run on it, with the fixing command
    will_build: bool = False  # the demo set is built on first use (dry run: not built yet)
    _split_problems: dict[str, str] = field(default_factory=dict)

    def problem_for(self, splits: Sequence[str]) -> str:
        """"" if every file of ``splits`` is in place, else why not and the command that fixes it."""
        if self.problem or self.manifest is None:
            return self.problem
        gaps = []
        for split in dict.fromkeys(splits):
            if split not in self._split_problems:
                self._split_problems[split] = _split_gap(self.manifest, split)
            if self._split_problems[split]:
                gaps.append(self._split_problems[split])
        if not gaps:
            return ""
        return f"dataset {self.name} not prepared ({'; '.join(gaps)}): {prepare_command(self.manifest)}"


def prepare_command(m: Any) -> str:
    if m.kind == "demo":
        return f"bench data prepare {m.name}"
    if m.kind == "indexed":
        return f"bench data index {m.name} --low LOW_FOLDER [--high HIGH_FOLDER]"
    return f"bench data prepare {m.name} --root PATH"


def _split_gap(m: Any, split: str) -> str:
    if split not in m.splits:
        return f"no {split} split"
    pairs = m.splits[split]
    missing = sum(not all(m.file_path(rel).is_file() for rel in (p.low, p.high) if rel) for p in pairs)
    return f"{missing} of {len(pairs)} {split} pairs missing" if missing else ""


def dataset_state(name: str, build: bool = False) -> DatasetState:
    """Whether runs can use dataset ``name``; an unknown name is an error (with "did you mean")."""
    from .data.manifest import load_manifest, lock_path, locked

    m = load_manifest(name)
    if m.kind == "demo" and not lock_path(m).exists():
        if not build:
            return DatasetState(name, will_build=True)
        from .run import open_dataset

        return DatasetState(name, open_dataset(name, progress=False))
    if m.kind in ("lock", "distorted", "demo") and not lock_path(m).exists():
        return DatasetState(name, problem=f"dataset {name} not prepared: {prepare_command(m)}")
    return DatasetState(name, locked(m))


def _identity_functions():
    from .run import run_dir_for, run_identity, train_dir_for

    return run_dir_for, run_identity, train_dir_for


def _enhanced(run_dir: Path) -> int:
    try:
        with open(run_dir / "enhance.csv", newline="") as f:
            return sum(1 for r in csv.DictReader(f) if r.get("output_sha256"))
    except OSError:
        return 0


def _run_state(run: PlannedRun, name: str, cls: Any, config: Any, m: Any) -> None:
    """Fill ``run.state``/``detail``/``run_dir``/``train_dir`` as ``bench run`` would find them."""
    run_dir_for, run_identity, train_dir_for = _identity_functions()
    weights_sha = None
    if cls.trainable:
        tdir = train_dir_for(cls, config, m, run.seed, run.profile)  # bench.run's own identity
        run.train_dir = tdir
        done = tdir / "DONE"
        if not done.exists():
            if tdir.exists():
                run.state, run.detail = "partial", f"training started, not finished: {_rel(tdir)}; resumes"
            else:
                run.state, run.detail = "to run", "train + evaluate"
            return
        from .records import read_json_record

        try:
            weights_sha = str(read_json_record(done)["sha256"])
        except (BenchError, KeyError):
            run.state, run.detail = "to run", f"training record {_rel(done)} unreadable; bench run will say why"
            return
    run.run_dir = run_dir_for(run_identity(name, cls, config, weights_sha, m, run.split, run.seed, run.profile))
    if (run.run_dir / "DONE").exists():
        run.state, run.detail = "done", ""
    elif run.run_dir.exists():
        n = len(m.split(run.split))
        run.state, run.detail = "partial", f"{_enhanced(run.run_dir)}/{n} images enhanced; resumes"
    else:
        run.state, run.detail = "to run", "evaluate (trained)" if cls.trainable else "evaluate"


# --- planning -------------------------------------------------------------------------------------
def table_rows(spec: Any, methods: Sequence[str] | None = None) -> list[Any]:
    """The rows a table's runs come from (a delta table's reference row included), filtered by ``methods``
    (row keys such as ``ours:no_rl``, or method names such as ``ours`` for every row of that method)."""
    from .report.spec import Row

    rows = list(spec.rows)
    if spec.kind == "delta" and spec.reference_row and spec.reference_row not in {r.key for r in rows}:
        rows.append(Row(spec.reference_row, spec.reference_row, "reference", False))
    if not methods:
        return rows
    known = [r.key for r in rows] + sorted({r.method for r in rows})
    for name in methods:
        if name not in known:
            raise unknown_name(f"row or method of {spec.name}", name, known)
    wanted = set(methods)
    return [r for r in rows if r.key in wanted or r.method in wanted]


def _method_class(method: str) -> tuple[Any, str]:
    from . import registry

    if method not in registry.METHODS and method not in registry.ALIASES:
        return None, f"method {method} is not implemented yet (no entry in bench/registry.py METHODS)"
    try:
        return registry.load_method_class(method), ""
    except BenchError as e:
        return None, f"method {method} cannot be loaded: {e}"


def _overrides(row: Any) -> dict[str, str]:
    """``ours:no_rl`` -> ``--set variant=no_rl``; the plain row is the method's defaults."""
    _, sep, variant = row.key.partition(":")
    return {"variant": variant} if sep else {}


def plan_table(spec: Any, datasets: Sequence[str] | None = None, profile: str | None = None,
               seeds: Sequence[int] | None = None, methods: Sequence[str] | None = None,
               build_datasets: bool = False) -> Plan:
    """Every run ``spec`` needs and its state; builds nothing unless ``build_datasets`` (the demo set)."""
    from .methods.base import PROFILES

    if spec.kind not in ("absolute", "delta"):
        raise BenchError(f"{spec.name} is not made from runs (kind {spec.kind}); `bench reproduce` plans "
                         f"{' and '.join(PLAN_TABLES)}")
    datasets = list(datasets or spec.datasets)
    profile = profile or spec.profile
    if profile not in PROFILES:
        raise BenchError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    seeds = list(seeds if seeds is not None else spec.seeds)
    if not seeds:
        raise BenchError("no seeds asked")
    states = {d: dataset_state(d, build_datasets) for d in dict.fromkeys(datasets)}
    runs: list[PlannedRun] = []
    for row in table_rows(spec, methods):
        cls, why = _method_class(row.method)
        for ds in dict.fromkeys(datasets):
            runs += _plan_cell(row, cls, why, states[ds], spec.split, profile, seeds)
    return Plan(spec.name, list(dict.fromkeys(datasets)), profile, seeds, runs)


def _plan_cell(row: Any, cls: Any, why: str, ds: DatasetState, split: str, profile: str,
               seeds: list[int]) -> list[PlannedRun]:
    from .methods.base import build_config, config_fields
    from .registry import canonical

    overrides = _overrides(row)
    base = dict(row=row.key, label=row.label, method=row.method, dataset=ds.name, profile=profile, split=split,
                overrides=overrides)

    def blocked(reason: str, which: list[int]) -> list[PlannedRun]:
        return [PlannedRun(**base, seeds=tuple(which), state="blocked", detail=reason,
                           trainable=None if cls is None else cls.trainable)]

    if cls is None:
        problems = [why, ds.problem_for([split])]
        return blocked("; ".join(p for p in problems if p), seeds)
    run_seeds = seeds if cls.trainable else seeds[:1]
    problems = []
    if cls.trainable and ds.manifest is not None and "train" not in ds.manifest.splits:
        problems.append(f"{cls.name} trains but dataset {ds.name} has no train split "
                        f"(bench run --weights FILE uses trained weights instead)")
    needed = [split] + ([s for s in ("train", "val") if ds.manifest is not None and s in ds.manifest.splits]
                        if cls.trainable else [])
    problems.append(ds.problem_for(needed))
    problems = [p for p in dict.fromkeys(problems) if p]
    if "variant" in overrides and "variant" not in config_fields(cls.Config):
        problems.append(f"method {cls.name} has no option 'variant' yet (planned as --set variant="
                        f"{overrides['variant']}; the variants live in bench/dsn/adapter.py)")
    if problems:
        return blocked("; ".join(problems), run_seeds)
    try:
        config = build_config(cls, profile, overrides, ds.name)
    except BenchError as e:
        return blocked(f"{e}", run_seeds)
    name = canonical(row.method)
    out = []
    for seed in run_seeds:
        run = PlannedRun(**base, seeds=(seed,), trainable=cls.trainable)
        if ds.manifest is None:  # the demo set, not built yet (dry run)
            run.detail = f"dataset {ds.name} is built on first use; " + (
                "train + evaluate" if cls.trainable else "evaluate")
        else:
            _run_state(run, name, cls, config, ds.manifest)
        out.append(run)
    return out


# --- execution ------------------------------------------------------------------------------------
@dataclass
class JobResult:
    run: PlannedRun
    ok: bool | None  # None: submitted, not waited for
    run_dir: Path | None
    seconds: float
    log: Path | None
    error: str = ""
    job_id: str = ""
    reused: bool = False


def log_dir(table: str) -> Path:
    from .paths import results_root

    return results_root() / "logs" / "reproduce" / table


def run_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one planned run (the function a Slurm job executes; plain data in and out)."""
    from .run import RunSpec, execute

    spec = RunSpec(method=payload["method"], dataset=payload["dataset"], split=payload["split"],
                   profile=payload["profile"], seed=int(payload["seed"]), overrides=dict(payload["overrides"]),
                   device=payload.get("device", "auto"), progress=bool(payload.get("progress", False)))
    result = execute(spec)
    return {"run_dir": str(result.run_dir), "reused": result.reused}


def _line(i: int, n: int, run: PlannedRun, what: str) -> str:
    return f"[{i}/{n}] {run.row} on {run.dataset} seed {run.seed}: {what}"


def run_local_inprocess(todo: list[PlannedRun], logs: Path, device: str = "auto",
                        echo: Any = print) -> list[JobResult]:
    """One after another in this process (``--jobs 1``); a failure is recorded and the next run goes on."""
    results = []
    bench_log = logging.getLogger("bench")
    for i, run in enumerate(todo, 1):
        path = logs / f"{run.job_name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        old_level = bench_log.level
        bench_log.addHandler(handler)
        bench_log.setLevel(logging.INFO)
        echo(_line(i, len(todo), run, f"running ({run.detail or run.state}); log {_rel(path)}"))
        t0 = time.perf_counter()
        try:
            bench_log.info("reproduce: %s", run.command(device))
            out = run_job(run.payload(device))
            res = JobResult(run, True, Path(out["run_dir"]), time.perf_counter() - t0, path, reused=out["reused"])
        except BenchError as e:
            bench_log.error("failed: %s", e)
            res = JobResult(run, False, None, time.perf_counter() - t0, path, str(e))
        except Exception as e:  # a bug in an adapter must not stop the other runs
            bench_log.error("failed:\n%s", traceback.format_exc())
            res = JobResult(run, False, None, time.perf_counter() - t0, path, f"{type(e).__name__}: {e}")
        finally:
            bench_log.removeHandler(handler)
            bench_log.setLevel(old_level)
            handler.close()
        echo(_line(i, len(todo), run, _outcome(res)))
        results.append(res)
    return results


def _outcome(res: JobResult) -> str:
    if res.ok:
        return f"done in {res.seconds:.1f} s -> {_rel(res.run_dir)}" if res.run_dir else f"done in {res.seconds:.1f} s"
    return f"FAILED after {res.seconds:.1f} s: {res.error.splitlines()[0] if res.error else '?'} (log {_rel(res.log)})"


def run_local_subprocesses(todo: list[PlannedRun], logs: Path, jobs: int, device: str = "auto",
                           echo: Any = print, poll_s: float = 0.2) -> list[JobResult]:
    """Up to ``jobs`` concurrent ``bench run`` subprocesses, each writing its log; Ctrl-C stops them all."""
    env = os.environ.copy()
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    pending = list(enumerate(todo, 1))
    running: dict[subprocess.Popen, tuple[int, PlannedRun, Path, float, Any]] = {}
    results: dict[int, JobResult] = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                i, run = pending.pop(0)
                path = logs / f"{run.job_name}.log"
                path.parent.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, "-m", "bench.cli", "-q", *run.argv(device)]
                fh = open(path, "a", encoding="utf-8")
                fh.write(f"$ {run.command(device)}\n")
                fh.flush()
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
                running[proc] = (i, run, path, time.perf_counter(), fh)
                echo(_line(i, len(todo), run, f"started ({run.detail or run.state}); log {_rel(path)}"))
            for proc in [p for p in running if p.poll() is not None]:
                i, run, path, t0, fh = running.pop(proc)
                fh.close()
                text = path.read_text(encoding="utf-8", errors="replace")
                run_dir = None
                for line in text.splitlines():
                    if line.startswith("run directory: "):
                        run_dir = Path(line[len("run directory: "):].split("  (")[0].strip())
                if proc.returncode == 0:
                    res = JobResult(run, True, run_dir, time.perf_counter() - t0, path,
                                    reused="complete run reused" in text)
                else:
                    err = [ln for ln in text.splitlines() if ln.startswith("bench: error:")]
                    tail = err[-1] if err else (text.strip().splitlines() or ["(no output)"])[-1]
                    res = JobResult(run, False, None, time.perf_counter() - t0, path,
                                    f"exit {proc.returncode}: {tail}")
                results[i] = res
                echo(_line(i, len(todo), run, _outcome(res)))
            if running:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        for proc in running:
            proc.terminate()
        for proc, (_, _, _, _, fh) in running.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            fh.close()
        raise
    return [results[i] for i in sorted(results)]


def _load_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise BenchError("--executor slurm needs submitit, which is not installed: pip install submitit") from None
    return submitit


def parse_minutes(text: str | None) -> int | None:
    """Slurm-style time (``90``, ``1:30:00``, ``2-00:00:00``, ``45:00``) -> whole minutes."""
    if text is None:
        return None
    t = str(text).strip()
    try:
        days = 0
        if "-" in t:
            d, t = t.split("-", 1)
            days = int(d)
        parts = [int(p) for p in t.split(":")]
        if len(parts) == 1:
            minutes = parts[0]
        elif len(parts) == 2:  # MM:SS as Slurm reads it
            minutes = parts[0] + (1 if parts[1] else 0)
        elif len(parts) == 3:
            minutes = parts[0] * 60 + parts[1] + (1 if parts[2] else 0)
        else:
            raise ValueError
    except ValueError:
        raise BenchError(f"--slurm-time {text!r}: use minutes, HH:MM:SS or D-HH:MM:SS") from None
    minutes += days * 24 * 60
    if minutes < 1:
        raise BenchError(f"--slurm-time {text!r} is under a minute")
    return minutes


def slurm_parameters(partition: str | None = None, gpus: int | None = None, time_limit: str | None = None,
                     cpus: int | None = None, mem_gb: float | None = None,
                     extra: Sequence[str] = ()) -> dict[str, Any]:
    """``executor.update_parameters`` arguments from the ``--slurm-*`` options."""
    params: dict[str, Any] = {"stderr_to_stdout": True}
    if partition:
        params["slurm_partition"] = partition
    if gpus is not None:
        params["gpus_per_node"] = int(gpus)
    if time_limit is not None:
        params["timeout_min"] = parse_minutes(time_limit)
    if cpus is not None:
        params["cpus_per_task"] = int(cpus)
    if mem_gb is not None:
        params["mem_gb"] = float(mem_gb)
    additional = {}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--slurm-extra expects KEY=VALUE (an sbatch option without --), got {item!r}")
        additional[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    if additional:
        params["slurm_additional_parameters"] = additional
    return params


def run_slurm(todo: list[PlannedRun], logs: Path, params: dict[str, Any], device: str = "auto", wait: bool = True,
              echo: Any = print) -> list[JobResult]:
    """One Slurm job per run through submitit; waits for them unless ``wait`` is False."""
    submitit = _load_submitit()
    folder = logs / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    executor.update_parameters(**params)
    submitted = []
    for i, run in enumerate(todo, 1):
        executor.update_parameters(name=f"bench-{run.job_name}")
        job = executor.submit(run_job, run.payload(device))
        submitted.append((run, job, time.perf_counter()))
        echo(_line(i, len(todo), run, f"submitted as Slurm job {job.job_id} ({run.command(device)})"))
    results = []
    for i, (run, job, t0) in enumerate(submitted, 1):
        log = logs / "slurm" / str(job.job_id)
        if not wait:
            results.append(JobResult(run, None, None, 0.0, log, job_id=str(job.job_id)))
            continue
        try:
            out = job.result()
            res = JobResult(run, True, Path(out["run_dir"]), time.perf_counter() - t0, log, job_id=str(job.job_id),
                            reused=bool(out.get("reused")))
        except Exception as e:  # submitit.FailedJobError / UncompletedJobError: the job's traceback or log end
            text = str(e).strip().splitlines()
            err = [ln for ln in text if "BenchError" in ln or ln.startswith("bench")]
            res = JobResult(run, False, None, time.perf_counter() - t0, log,
                            (err[-1] if err else (text[-1] if text else type(e).__name__)), job_id=str(job.job_id))
        echo(_line(i, len(todo), run, _outcome(res) + f" [job {job.job_id}]"))
        results.append(res)
    return results


# --- the command ----------------------------------------------------------------------------------
def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add the ``reproduce`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    kw: dict[str, Any] = dict(
        help="plan, run and report every run a table needs (table1, table2)",
        description="Plan every run a table needs (rows x datasets x seeds), skip complete runs, resume\n"
                    "interrupted ones, run the rest (locally or on Slurm), then write the table as\n"
                    "`bench report` does.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p = add_subcommand(subparsers, "reproduce", parents, **kw)
    p.add_argument("table", choices=list(PLAN_TABLES), help="which table")
    p.add_argument("--profile", choices=["smoke", "quick", "paper"],
                   help="training/evaluation profile of the runs (default: the spec's, paper)")
    p.add_argument("--datasets", nargs="+", metavar="NAME", help="dataset columns instead of the spec's "
                   "(comma- or space-separated), e.g. demo or lol-485-15,fivek-distorted")
    p.add_argument("--methods", nargs="+", metavar="ROW", help="only these rows: row keys (ours:no_rl) or method "
                   "names (ours = every ours row); the table is still written whole")
    p.add_argument("--seeds", nargs="+", metavar="SEED", help="seeds of trainable methods (default: spec's)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="local: N concurrent `bench run` subprocesses (1: one after another in this process)")
    p.add_argument("--executor", choices=list(EXECUTORS), default="local", help="local (default) or slurm "
                   "(one job per run through submitit)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop (nothing is built or run)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="passed to every run")
    p.add_argument("--spec", type=Path, metavar="YAML", help="a table spec other than manifests/tables/TABLE.yaml")
    p.add_argument("--out", type=Path, metavar="DIR", help="table output folder (default: <results>/tables)")
    p.add_argument("--no-report", action="store_true", help="run, but do not write the table")
    s = p.add_argument_group("slurm (with --executor slurm; needs `pip install submitit`)")
    s.add_argument("--slurm-partition", metavar="NAME")
    s.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs per job (gpus_per_node)")
    s.add_argument("--slurm-time", metavar="TIME", help="time limit per job: minutes, HH:MM:SS or D-HH:MM:SS")
    s.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per job (cpus_per_task)")
    s.add_argument("--slurm-mem", type=float, metavar="GB", help="memory per job in GB")
    s.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. account=proj or qos=high (repeatable)")
    s.add_argument("--no-wait", action="store_true", help="submit and return; run `bench report` when done")
    p.set_defaults(fn=cmd_reproduce)
    return p


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .report.spec import load_spec

    spec = load_spec(args.table, getattr(args, "spec", None))
    jobs = int(getattr(args, "jobs", 1) or 1)
    if jobs < 1:
        raise BenchError("--jobs must be at least 1")
    executor = getattr(args, "executor", "local")
    dry = bool(getattr(args, "dry_run", False))
    device = getattr(args, "device", "auto") or "auto"
    datasets = _split_list(getattr(args, "datasets", None))
    seeds = _seeds(getattr(args, "seeds", None))
    profile = getattr(args, "profile", None)
    params = None
    if executor == "slurm":  # parse the options before anything runs
        params = slurm_parameters(args.slurm_partition, args.slurm_gpus, args.slurm_time, args.slurm_cpus,
                                  args.slurm_mem, args.slurm_extra)
        if not dry:
            _load_submitit()
    plan = plan_table(spec, datasets, profile, seeds, _split_list(getattr(args, "methods", None)),
                      build_datasets=not dry)
    print(plan.render())
    print(plan.summary())
    if dry:
        if plan.todo:
            print("dry run: nothing was run; without --dry-run these would run:")
            for r in plan.todo:
                print("  " + r.command(device))
        return 0
    logs = log_dir(spec.name)
    results: list[JobResult] = []
    if plan.todo:
        if executor == "slurm":
            results = run_slurm(plan.todo, logs, params or {}, device, wait=not getattr(args, "no_wait", False))
        elif jobs == 1:
            results = run_local_inprocess(plan.todo, logs, device)
        else:
            results = run_local_subprocesses(plan.todo, logs, jobs, device)
    else:
        print("nothing to run: every runnable entry is done" + (" (blocked ones are listed above)"
                                                                if plan.count("blocked") else ""))
    if any(r.ok is None for r in results):
        hint = ["bench", "report", args.table]
        if getattr(args, "spec", None):
            hint += ["--spec", str(args.spec)]
        if datasets:
            hint += ["--datasets", ",".join(plan.datasets)]
        if profile:
            hint += ["--profile", plan.profile]
        if seeds is not None:
            hint += ["--seeds", *map(str, plan.seeds)]
        print(f"submitted {len(results)} job(s); when they finish: {shlex.join(hint)}")
        return 0
    failed = [r for r in results if r.ok is False]
    print(f"ran {sum(bool(r.ok) for r in results)} of {len(plan.todo)} run(s)"
          + (f", {len(failed)} failed" if failed else "") + f"; {plan.count('done')} already done"
          + (f"; {plan.count('blocked')} blocked" if plan.count("blocked") else ""))
    if not getattr(args, "no_report", False):
        _report(spec, args, plan)
    if failed:
        raise BenchError(f"{len(failed)} run(s) failed: " + "; ".join(
            f"{r.run.row} on {r.run.dataset} seed {r.run.seed} (log {_rel(r.log)})" for r in failed[:5])
            + ("; ..." if len(failed) > 5 else "") + ". Fix and re-run the same command: finished runs are kept")
    return 0


def _report(spec: Any, args: argparse.Namespace, plan: Plan) -> None:
    from .fsutil import check_writable
    from .paths import results_root
    from .report import write_table

    out = check_writable(Path(args.out) if getattr(args, "out", None) else results_root() / "tables")
    files, data = write_table(spec, out, plan.datasets, plan.profile, plan.seeds)
    for note in data.notes:
        print(f"bench: note: {note}", file=sys.stderr)
    if not getattr(args, "quiet", False):
        print(files[1].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(f) for f in files))

"""From run directories to one tidy frame: which runs feed each cell, and what the cell says.

Selection rule for a cell (row × dataset), the same for every metric of that cell:

1. complete runs only (``DONE`` present) under ``<results>/runs/<dataset>/<method>/``, on the spec's split;
2. the row's method, and for DSN the row's variant (``config.variant``; ``ours`` alone means "full");
3. profile at least the one asked (paper > quick > smoke); runs marked ``smoke: true`` (``--limit`` or the
   smoke profile) only when a smoke or quick report is asked for; a cell uses the best profile it has;
4. seeds among those asked (deterministic methods, ``trainable: false``, need one run: any seed);
5. one run per seed, the latest (by ``DONE``'s finish time);
6. mean and sample std (ddof 1) over the seeds' per-run means; for a delta table (table2), the per-seed
   differences from the reference row (the full model), paired by seed.

A cell with no admissible run stays missing; nothing is ever filled in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BenchError
from ..paths import results_root
from .spec import Row, TableSpec, published_values

PROFILE_RANK = {"smoke": 0, "quick": 1, "paper": 2}
PROTOCOL_KEYS = ("dataset_version", "split_fingerprint", "n_images", "resolution_rule", "gt_format", "quantisation",
                 "psnr_space", "ssim_impl", "gt_mean", "tta", "fivek_input_mode")
# flag -> why it is marked; the renderers give each one a footnote symbol
FLAGS = ("profile", "substitute", "partial", "seeds")


@dataclass(frozen=True)
class MetricValue:
    mean: float
    std: float
    n: int
    higher_is_better: bool | None
    version: str


@dataclass
class RunRecord:
    run_dir: Path
    run_id: str
    method: str
    variant: str | None
    dataset: str
    split: str
    seed: int
    profile: str
    smoke: bool
    trainable: bool
    faithful: bool
    partial: bool
    finished: str
    metrics: dict[str, MetricValue]
    protocol: dict[str, Any]
    weights_source: str = "none"   # config.yaml weights.source: none | user | official | trained here
    sealed: bool = True            # False: finished before runs were sealed (bench/records.py), not checked
    weights_verified: bool = True  # False: --weights matched no training or import record (config weights.verified)

    def rel_dir(self) -> str:
        try:
            return self.run_dir.relative_to(results_root()).as_posix()
        except ValueError:
            return self.run_dir.as_posix()


def _bool(x: Any) -> bool | None:
    if isinstance(x, bool) or x is None:
        return x
    s = str(x).strip().lower()
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(s)


def _float(x: str) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def read_run(run_dir: Path) -> RunRecord | None:
    """A complete run's record (checked against its seal, bench/records.py), or None if ``run_dir`` has no DONE.

    A record that does not match its seal is refused in one line naming the file (``metrics.csv`` is re-derived
    from ``per_image.csv`` when that matches the seal); the PNGs are not hashed here (the table reads none)."""
    from ..records import dir_lock, read_config, read_metrics_rows, verify_run

    done = run_dir / "DONE"
    if not done.exists():
        return None
    with dir_lock(run_dir, "run", shared=True):        # never read a record half-way through `bench eval`
        checked = verify_run(run_dir, outputs=False)
        cfg = read_config(run_dir / "config.yaml")
        metric_rows = read_metrics_rows(checked)
    finished = str(checked.done.get("finished", ""))
    metrics = {}
    for r in metric_rows:
        if not r.get("metric"):
            continue
        n = _float(r.get("n"))
        metrics[r["metric"]] = MetricValue(_float(r.get("mean")), _float(r.get("std")),
                                           0 if math.isnan(n) else int(n), _bool(r.get("higher_is_better")),
                                           str(r.get("metric_version", "")))
    protocol = cfg.get("protocol") or {}
    variant = (cfg.get("config") or {}).get("variant") if isinstance(cfg.get("config"), dict) else None
    return RunRecord(
        run_dir=run_dir, run_id=str(cfg.get("run_id", run_dir.name)), method=str(cfg.get("method", "")),
        variant=None if variant is None else str(variant), dataset=str(cfg.get("dataset", "")),
        split=str(cfg.get("split", "")), seed=int(cfg.get("seed", 0) or 0), profile=str(cfg.get("profile", "")),
        smoke=bool(cfg.get("smoke", False)), trainable=bool(cfg.get("trainable", False)),
        faithful=_bool(protocol.get("faithful", True)) is not False,
        partial=bool(_bool(protocol.get("partial_dataset", False))), finished=finished, metrics=metrics,
        protocol=protocol, weights_source=str((cfg.get("weights") or {}).get("source") or "none"),
        sealed=checked.sealed, weights_verified=(cfg.get("weights") or {}).get("verified") is not False,
    )


def scan_runs(datasets: list[str], root: Path | None = None) -> list[RunRecord]:
    root = (root or results_root()) / "runs"
    out = []
    for ds in datasets:
        for done in sorted((root / ds).glob("*/*/DONE")):
            rec = read_run(done.parent)
            if rec is not None:
                out.append(rec)
    return out


def unsealed_note(records: list[RunRecord]) -> str:
    """A note (stderr) on runs finished before runs were sealed, whose files could not be checked."""
    unsealed = sorted(r.rel_dir() for r in records if not r.sealed)
    if not unsealed:
        return ""
    return (f"{len(unsealed)} run(s) finished before runs were sealed are used unsealed (their files are not "
            f"checked; `bench eval RUN_DIR` seals one): " + ", ".join(unsealed[:3]) + (" …" if len(unsealed) > 3 else ""))


def record_notes(records: list[RunRecord]) -> list[str]:
    """Notes for the table on runs whose weights could not be checked against a record."""
    notes = []
    unverified = sorted(r.rel_dir() for r in records if not r.weights_verified)
    if unverified:
        notes.append(f"{len(unverified)} run(s) use --weights files that match no training or import record "
                     f"(unverified): " + ", ".join(unverified[:5]) + (" …" if len(unverified) > 5 else ""))
    return notes


def _variant_ok(rec: RunRecord, row: Row) -> bool:
    want = row.variant
    if want is None:
        return True
    have = rec.variant
    if have is not None and ":" in have:
        have = have.partition(":")[2]
    return (have or "full") == want


def admitted(rec: RunRecord, profile: str) -> bool:
    if _bool(rec.protocol.get("uses_ground_truth_at_test", False)):
        return False  # oracle numbers (e.g. KinD ratio=gt) never share a column with GT-free ones
    if rec.weights_source == "official":
        return False  # released checkpoints are not retrained by the protocol: bench report table1-official
    rank = PROFILE_RANK.get(rec.profile)
    if rank is None or rank < PROFILE_RANK[profile]:
        return False
    return not rec.smoke or profile != "paper"


@dataclass
class Selection:
    runs: list[RunRecord]  # one per seed, sorted by seed
    expected: int  # seeds asked of this row
    alternatives: int  # admitted complete runs not used (other tiers, older runs of a seed)
    why_missing: str = ""

    @property
    def flags(self) -> list[str]:
        f = []
        if any(r.profile != "paper" or r.smoke for r in self.runs):
            f.append("profile")
        if any(not r.faithful for r in self.runs):
            f.append("substitute")
        if any(r.partial for r in self.runs):
            f.append("partial")
        if self.runs and len(self.runs) < self.expected:
            f.append("seeds")
        return f


def select(records: list[RunRecord], row: Row, dataset: str, split: str, profile: str, seeds: list[int]) -> Selection:
    cands = [r for r in records if r.method == row.method and _variant_ok(r, row) and r.dataset == dataset
             and r.split == split]
    ok = [r for r in cands if admitted(r, profile)]
    trainable = any(r.trainable for r in cands)
    if trainable:
        ok = [r for r in ok if r.seed in seeds]
    elif any(r.seed in seeds for r in ok):
        ok = [r for r in ok if r.seed in seeds]
    expected = len(seeds) if trainable or not cands else 1  # no runs: we cannot tell, so "as asked"
    if not ok:
        why = ""
        if cands:
            profiles = sorted({f"{r.profile}{' smoke' if r.smoke else ''}" for r in cands})
            seeds_seen = sorted({r.seed for r in cands})
            why = (f"{len(cands)} complete run(s) not admitted (profiles: {', '.join(profiles)}; "
                   f"seeds: {', '.join(map(str, seeds_seen))})")
        return Selection([], expected, 0, why)
    best = max((PROFILE_RANK[r.profile], not r.smoke) for r in ok)
    tier = [r for r in ok if (PROFILE_RANK[r.profile], not r.smoke) == best]
    by_seed: dict[int, RunRecord] = {}
    for r in sorted(tier, key=lambda r: (r.finished, r.run_id)):
        by_seed[r.seed] = r  # latest wins
    runs = [by_seed[s] for s in sorted(by_seed)]
    return Selection(runs, expected, len(ok) - len(runs))


def _delta(runs: list[RunRecord], ref: list[RunRecord], metric: str) -> tuple[float, float, dict[str, Any]]:
    """Variant − reference. Paired by seed where seeds are shared: the mean and std of the per-seed differences
    (variant seeds without a reference run are left out); with no shared seed, the difference of the means
    (std left empty, n_paired 0)."""
    ref_runs = {r.seed: r for r in ref if metric in r.metrics}
    val = lambda r: r.metrics[metric].mean  # noqa: E731
    paired = [r for r in runs if r.seed in ref_runs]
    if paired:
        var_mean, _ = _stats([val(r) for r in paired])
        ref_mean, _ = _stats([val(ref_runs[r.seed]) for r in paired])
        mean, std = _stats([val(r) - val(ref_runs[r.seed]) for r in paired])
    else:
        var_mean, _ = _stats([val(r) for r in runs])
        ref_mean, _ = _stats([val(r) for r in ref_runs.values()])
        mean, std = var_mean - ref_mean, math.nan
    return mean, std, {"variant_mean": var_mean, "reference_mean": ref_mean, "n_paired": len(paired)}


def _stats(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


@dataclass
class TableData:
    """Everything the renderers need: the tidy frame plus its provenance."""

    spec: TableSpec
    frame: Any  # pandas.DataFrame, one row per table row × dataset × metric
    sources: Any  # pandas.DataFrame, one row per run behind a cell
    datasets: list[str]
    metrics: list[str]
    profile: str
    seeds: list[int]
    protocol: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reference_cells: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    rule: Any = None  # the VerdictRule the frame's verdicts were decided by (bench/report/verdict.py)


def _higher_is_better(metric: str, runs: list[RunRecord]) -> bool | None:
    seen = {r.metrics[metric].higher_is_better for r in runs if metric in r.metrics}
    if len(seen) > 1:
        seen.discard(None)
    if len(seen) > 1:
        raise BenchError(f"runs disagree on whether higher {metric} is better")
    if seen:
        return seen.pop()
    try:
        from ..metrics import METRICS

        return METRICS[metric].higher_is_better if metric in METRICS else None
    except ImportError:  # pragma: no cover
        return None


def _check_versions(cells: dict[tuple[str, str], list[tuple[str, RunRecord]]], spec: TableSpec) -> None:
    """One metric version per column, or a clear refusal naming the runs of each version."""
    for (dataset, metric), entries in cells.items():
        versions: dict[str, list[str]] = {}
        for label, rec in entries:
            versions.setdefault(rec.metrics[metric].version, []).append(f"{label} ({rec.rel_dir()})")
        if len(versions) > 1:
            detail = "; ".join(f"version {v}: " + ", ".join(sorted(set(w))[:4]) + (" …" if len(set(w)) > 4 else "")
                               for v, w in sorted(versions.items()))
            raise BenchError(
                f"{spec.name}: column {dataset} × {metric} mixes metric versions ({detail}). Versions are never "
                f"mixed in one column: re-score the older runs with `bench eval RUN_DIR --metrics {metric}` "
                f"(or re-run them), or leave them out with --seeds/--profile")


def collect(spec: TableSpec, datasets: list[str] | None = None, profile: str | None = None,
            seeds: list[int] | None = None, records: list[RunRecord] | None = None,
            tolerance: dict[str, float] | None = None) -> TableData:
    import pandas as pd

    from .verdict import VerdictRule

    rule = VerdictRule.from_spec(spec.raw.get("verdict"), tolerance)

    datasets = list(datasets or spec.datasets)
    profile = profile or spec.profile
    if profile not in PROFILE_RANK:
        raise BenchError(f"unknown profile {profile!r}; choose smoke, quick or paper")
    seeds = list(seeds if seeds is not None else spec.seeds)
    records = scan_runs(datasets) if records is None else records
    published = published_values(spec)
    notes: list[str] = []
    for ds in datasets:
        if not any(r.dataset == ds for r in records):
            notes.append(f"no complete runs at all for dataset {ds} (under <results>/runs/{ds})")

    ref_row = None
    if spec.kind == "delta":
        ref_row = Row(spec.reference_row, spec.reference_row, "reference", False)
    selections: dict[tuple[str, str], Selection] = {}
    for row in spec.rows + ([ref_row] if ref_row else []):
        for ds in datasets:
            sel = select(records, row, ds, spec.split, profile, seeds)
            selections[(row.key, ds)] = sel
            if sel.why_missing:
                notes.append(f"{row.label} on {ds}: {sel.why_missing}")

    used = list({id(r): r for sel in selections.values() for r in sel.runs}.values())
    notes += record_notes(used)
    if unsealed_note(used):
        from ..records import notice

        notice(unsealed_note(used))
    labels = {r.key: r.label for r in spec.rows}
    by_column: dict[tuple[str, str], list[tuple[str, RunRecord]]] = {}
    for (key, ds), sel in selections.items():
        for rec in sel.runs:
            for metric in spec.metrics:
                if metric in rec.metrics:
                    by_column.setdefault((ds, metric), []).append((labels.get(key, key), rec))
    _check_versions(by_column, spec)

    rows_out: list[dict[str, Any]] = []
    reference_cells: dict[tuple[str, str], dict[str, Any]] = {}
    hib = {m: _higher_is_better(m, [r for _, r in sum(by_column.values(), [])]) for m in spec.metrics}
    for ds in datasets:
        ref_sel = selections.get((spec.reference_row, ds)) if ref_row else None
        for metric in spec.metrics:
            if ref_sel is not None:
                vals = [r.metrics[metric].mean for r in ref_sel.runs if metric in r.metrics]
                m, s = _stats(vals)
                reference_cells[(ds, metric)] = {"mean": m, "std": s, "n": len(vals),
                                                 "flags": ref_sel.flags, "row": spec.reference_row}
            for row in spec.rows:
                rows_out.append(_cell(spec, row, ds, metric, selections[(row.key, ds)], ref_sel, hib[metric],
                                      published, rule))
    sources = [src for (key, ds), sel in selections.items() for src in _sources(spec, key, ds, sel)]

    frame = pd.DataFrame(rows_out)
    frame["rank"] = _ranks(frame, spec) if len(frame) else []
    src_cols = ["table", "row", "label", "dataset", "role", "seed", "run_id", "run_dir", "profile", "smoke",
                "faithful", "partial_dataset", "finished", "alternatives", "checkpoint_source", "checkpoint_sha256",
                "trained_on", "selected_on"]
    src_cols += [c for m in spec.metrics for c in (m, f"{m}_version")]
    source_frame = pd.DataFrame(sources, columns=src_cols)
    order = {"row": {k: i for i, k in enumerate([r.key for r in spec.rows] + [spec.reference_row or ""])},
             "dataset": {d: i for i, d in enumerate(datasets)}}
    if len(source_frame):
        source_frame = source_frame.sort_values(
            ["dataset", "row", "seed"], key=lambda s: s.map(order[s.name]) if s.name in order else s,
            kind="stable").reset_index(drop=True)
    protocol = _protocol(selections, datasets)
    return TableData(spec, frame, source_frame, datasets, list(spec.metrics), profile, seeds, protocol, notes,
                     reference_cells, rule)


WEIGHTS_LABELS = {"trained": "trained here", "user": "user file", "none": "no learned weights",
                  "official": "official checkpoint"}


def _cell(spec: TableSpec, row: Row, ds: str, metric: str, sel: Selection, ref_sel: Selection | None,
          hib: bool | None, published: dict, rule) -> dict[str, Any]:
    """One row of the tidy frame: a table row × dataset × metric."""
    runs = [r for r in sel.runs if metric in r.metrics]
    vals = [r.metrics[metric].mean for r in runs]
    mean, std = _stats(vals)
    flags = list(sel.flags)
    extra: dict[str, Any] = {}
    if spec.kind == "delta":
        mean, std, extra = _delta(runs, ref_sel.runs if ref_sel else [], metric)
        flags += [f for f in (ref_sel.flags if ref_sel else []) if f not in flags and runs]
        flags = [f for f in FLAGS if f in flags]
    paper_col, _ = spec.paper_column(ds)
    pub = published.get((row.key, paper_col, metric)) if paper_col else None
    versions = {r.metrics[metric].version for r in runs}
    n_images = sorted({r.metrics[metric].n for r in runs})
    from .verdict import decide

    verdict, why = decide(metric, mean, std, len(vals), pub[0] if pub else None, flags if runs else [],
                          spec.comparable(ds), spec.paper_column(ds)[1], rule)
    weights = sorted({WEIGHTS_LABELS.get(r.weights_source, r.weights_source)
                      + ("" if r.weights_verified else " (unverified)") for r in runs})
    return {
        "table": spec.name, "group": row.group, "row": row.key, "label": row.label, "method": row.method,
        "variant": row.variant or "", "dataset": ds, "dataset_label": spec.dataset_label(ds), "metric": metric,
        "metric_label": spec.metric_label(metric), "higher_is_better": hib,
        "metric_version": versions.pop() if versions else "", "mean": mean, "std": std, "n": len(vals),
        "seeds_asked": sel.expected, "seeds": ";".join(str(r.seed) for r in runs),
        "n_images": ";".join(map(str, n_images)),
        "profile": ";".join(sorted({r.profile + (" smoke" if r.smoke else "") for r in runs})),
        "flags": ";".join(flags if runs else []), **extra, "paper_column": paper_col or "",
        "published": pub[0] if pub else math.nan, "published_decimals": pub[1] if pub else math.nan,
        "delta_vs_paper": round(mean - pub[0], 9) + 0.0 if pub and not math.isnan(mean) else math.nan,
        "verdict": verdict, "verdict_reason": why, "comparable_images": spec.comparable(ds),
        "weights": "; ".join(weights), "rankable": row.rank,
    }


def _sources(spec: TableSpec, key: str, ds: str, sel: Selection) -> list[dict[str, Any]]:
    """The runs behind one cell, one row each."""
    role = "reference" if spec.kind == "delta" and key == spec.reference_row else "cell"
    label = next((r.label for r in spec.rows if r.key == key), key)
    out = []
    for rec in sel.runs:
        ckpt = rec.protocol.get("checkpoint") if isinstance(rec.protocol.get("checkpoint"), dict) else {}
        src = {"table": spec.name, "row": key, "label": label, "dataset": ds, "role": role, "seed": rec.seed,
               "run_id": rec.run_id, "run_dir": rec.rel_dir(), "profile": rec.profile, "smoke": rec.smoke,
               "faithful": rec.faithful, "partial_dataset": rec.partial, "finished": rec.finished,
               "alternatives": sel.alternatives, "checkpoint_source": ckpt.get("source", ""),
               "checkpoint_sha256": ckpt.get("sha256") or "", "trained_on": rec.protocol.get("trained_on") or "",
               "selected_on": rec.protocol.get("selected_on") or ""}
        for metric in spec.metrics:
            mv = rec.metrics.get(metric)
            src[metric] = mv.mean if mv else math.nan
            src[f"{metric}_version"] = mv.version if mv else ""
        out.append(src)
    return out


def _ranks(frame, spec: TableSpec) -> list[int]:
    """1 = best, 2 = second best per column (dataset × metric), among rankable rows; ties share a rank.

    Values are compared as displayed (rounded to the column's decimals), so equal-looking cells share a rank.
    """
    ranks = [0] * len(frame)
    if not spec.highlight:
        return ranks
    for (_, metric), idx in frame.groupby(["dataset", "metric"], sort=False).groups.items():
        sub = frame.loc[idx]
        hib = sub["higher_is_better"].iloc[0]
        if hib is None or (isinstance(hib, float) and math.isnan(hib)):
            continue
        digits = spec.decimals_for(metric)
        vals = {i: round(v, digits) for i, v, ok in zip(sub.index, sub["mean"], sub["rankable"])
                if ok and not math.isnan(v)}
        distinct = sorted(set(vals.values()), reverse=bool(hib))
        for i, v in vals.items():
            pos = distinct.index(v)
            if pos < 2:
                ranks[frame.index.get_loc(i)] = pos + 1
    return ranks


def _protocol(selections: dict[tuple[str, str], Selection], datasets: list[str]) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for ds in datasets:
        card: dict[str, set[str]] = {}
        for (_, d), sel in selections.items():
            if d != ds:
                continue
            for rec in sel.runs:
                for key in PROTOCOL_KEYS:
                    val = rec.protocol.get(key)
                    if val is not None:
                        card.setdefault(key, set()).add(str(val))
        out[ds] = {k: sorted(v) for k, v in card.items()}
    return out

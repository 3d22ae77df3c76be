"""``bench compare RUN_A RUN_B``: paired per-image statistics of two complete runs on the same images.

Both runs are checked against their seals (bench/records.py) and read under their shared locks. The comparison
is refused in one line when it would not be paired: different datasets, splits or split versions, different
image sets (paired by image id), a metric one run lacks, or metric versions that differ. The statistics and
their conventions are those of :mod:`bench.paired_stats` (``Δ = B − A``).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import BenchError
from .subcommand import add_subcommand

EPILOG = """\
examples:
  bench compare results/runs/lol/lime/57fd48c78707 results/runs/lol/ours/0123abcd4567
  bench compare RUN_A RUN_B --metric psnr ssim --resamples 20000 --seed 1 --out cmp/lime-vs-ours

Δ = B − A per image (paired by image id); W/T/L counts images where B is better/tied/worse in the metric's
direction. --out FILE writes FILE as JSON (.json), CSV (.csv) or Markdown (.md); any other name gets all
three (FILE.json, FILE.csv, FILE.md)."""

CSV_FIELDS = ["metric", "metric_version", "n", "mean_a", "mean_b", "mean_diff", "sd_diff", "ci_low", "ci_high",
              "level", "resamples", "seed", "wilcoxon_statistic", "wilcoxon_p", "wilcoxon_n", "wilcoxon_method",
              "wilcoxon_note", "wins", "ties", "losses", "tie_tolerance", "higher_is_better", "mdd", "alpha",
              "power", "a_label", "b_label", "a_run_dir", "b_run_dir"]


@dataclass
class RunValues:
    """A verified complete run's identity and its per-image values per metric."""

    run_dir: Path
    config: dict[str, Any]
    ids: list[str]                              # per_image.csv order
    values: dict[str, dict[str, float]]         # metric -> image id -> value
    versions: dict[str, str]                    # metric -> metric_version (metrics.csv)
    higher_is_better: dict[str, bool | None]
    sealed: bool

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset", ""))

    @property
    def split(self) -> str:
        return str(self.config.get("split", ""))

    def protocol(self, key: str) -> str:
        proto = self.config.get("protocol")
        return str((proto or {}).get(key) or "") if isinstance(proto, dict) else ""

    def label(self) -> dict[str, Any]:
        cfg = self.config
        inner = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
        variant = inner.get("variant")
        weights = cfg.get("weights") if isinstance(cfg.get("weights"), dict) else {}
        return {"method": str(cfg.get("method", "")), "variant": None if variant is None else str(variant),
                "seed": cfg.get("seed"), "weights_source": str(weights.get("source") or "none"),
                "run_id": str(cfg.get("run_id", self.run_dir.name)), "run_dir": str(self.run_dir),
                "profile": str(cfg.get("profile", "")), "smoke": bool(cfg.get("smoke", False)),
                "sealed": self.sealed}

    def label_text(self) -> str:
        lab = self.label()
        name = lab["method"] + (f":{lab['variant']}" if lab["variant"] not in (None, "", "full") else "")
        return (f"{name} (seed {lab['seed']}, weights {lab['weights_source']}, run {lab['run_id']}"
                + (", unsealed" if not self.sealed else "") + ")")


def _bool(x: Any) -> bool | None:
    s = str(x).strip().lower()
    return {"true": True, "1": True, "false": False, "0": False}.get(s)


def load_run(run_dir: Path, role: str = "run") -> RunValues:
    """A complete run, checked against its seal, with the per-image values of every metric it scored."""
    from .metrics import METRICS
    from .records import dir_lock, read_config, read_csv_rows, read_metrics_rows, verify_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BenchError(f"{role} {run_dir} is not a run directory")
    if not (run_dir / "DONE").is_file():
        raise BenchError(f"{role} {run_dir} is not a complete run (no DONE); finish it with the same `bench run` first")
    with dir_lock(run_dir, "run", shared=True):        # never read a record half-way through `bench eval`
        checked = verify_run(run_dir, outputs=False)
        cfg = read_config(run_dir / "config.yaml")
        summary = read_metrics_rows(checked)
        per_image = read_csv_rows(run_dir / "per_image.csv")
    versions = {r["metric"]: str(r.get("metric_version", "")) for r in summary if r.get("metric")}
    hib: dict[str, bool | None] = {}
    for r in summary:
        if r.get("metric"):
            known = METRICS[r["metric"]].higher_is_better if r["metric"] in METRICS else None
            have = _bool(r.get("higher_is_better"))
            hib[r["metric"]] = known if have is None else have
    ids: list[str] = []
    seen: set[str] = set()
    values: dict[str, dict[str, float]] = {m: {} for m in versions}
    for row in per_image:
        image = row.get("id") or ""
        if not image:
            raise BenchError(f"{run_dir / 'per_image.csv'} has a row without an image id")
        if image in seen:
            raise BenchError(f"{run_dir / 'per_image.csv'} lists image {image!r} twice")
        seen.add(image)
        ids.append(image)
        for m in versions:
            if m not in row:
                continue
            try:
                values[m][image] = float(row[m])
            except (TypeError, ValueError):
                raise BenchError(f"{run_dir / 'per_image.csv'}: {m} of image {image!r} is not a number "
                                 f"({row[m]!r})") from None
    for m in list(values):
        if len(values[m]) != len(ids):     # summarised but not a per-image column: not usable for pairing
            values.pop(m)
    return RunValues(run_dir, cfg, ids, values, versions, hib, checked.sealed)


def check_pairable(a: RunValues, b: RunValues) -> list[str]:
    """The shared image ids in A's order, or a one-line refusal when the runs are not on the same images."""
    if (a.dataset, a.split) != (b.dataset, b.split):
        raise BenchError(f"the runs are on different data: A on {a.dataset}:{a.split}, B on {b.dataset}:{b.split}; "
                         f"paired statistics need the same images")
    for key in ("dataset_version", "split_fingerprint"):
        va, vb = a.protocol(key), b.protocol(key)
        if va and vb and va != vb:
            raise BenchError(f"the runs are on different versions of {a.dataset}:{a.split} ({key} {va[:16]} vs "
                             f"{vb[:16]}); paired statistics need the same images")
    in_a, in_b = set(a.ids), set(b.ids)
    only_a = [i for i in a.ids if i not in in_b]
    only_b = [i for i in b.ids if i not in in_a]
    if only_a or only_b:
        example = f"{only_a[0]!r} only in A" if only_a else f"{only_b[0]!r} only in B"
        raise BenchError(f"the runs score different images: A has {len(a.ids)}, B has {len(b.ids)}, "
                         f"{len(only_a) + len(only_b)} not in both (e.g. {example}); a --limit run pairs only "
                         f"with a run of the same --limit")
    return list(a.ids)


def choose_metrics(a: RunValues, b: RunValues, asked: Sequence[str] | None) -> list[str]:
    """The metrics asked (default: every metric both runs scored), each present in both with one version."""
    from .errors import unknown_name
    from .metrics import METRICS

    if asked:
        names = list(dict.fromkeys(asked))
    else:
        common = [m for m in a.values if m in b.values]
        names = [m for m in METRICS if m in common] + [m for m in common if m not in METRICS]
        if not names:
            raise BenchError(f"the runs share no metric (A: {', '.join(a.values) or 'none'}; B: "
                             f"{', '.join(b.values) or 'none'})")
    for m in names:
        for role, run in (("A", a), ("B", b)):
            if m not in run.values:
                if m not in METRICS and m not in a.values and m not in b.values:
                    raise unknown_name("metric", m, list(METRICS))
                have = ", ".join(run.values) or "none"
                raise BenchError(f"metric {m} is not in run {role} {run.run_dir} (it has {have}); add it with "
                                 f"`bench eval {run.run_dir} --metrics {m}`")
        if a.versions[m] != b.versions[m]:
            raise BenchError(f"metric {m}: run A has version {a.versions[m]}, run B version {b.versions[m]}; versions "
                             f"are never compared: re-score the older run with `bench eval RUN_DIR --metrics {m}`")
        if a.higher_is_better.get(m) != b.higher_is_better.get(m):
            raise BenchError(f"metric {m}: the runs disagree on whether higher is better")
    return names


def compare_runs(run_a: Path, run_b: Path, metrics: Sequence[str] | None = None, resamples: int = 10_000,
                 seed: int = 0, tie_tolerance: float = 0.0) -> dict[str, Any]:
    """The comparison as a JSON-able document (``results``: one entry per metric)."""
    from .paired_stats import compare_values, conventions

    a, b = load_run(run_a, "RUN_A"), load_run(run_b, "RUN_B")
    ids = check_pairable(a, b)
    names = choose_metrics(a, b, metrics)
    results = []
    for m in names:
        va = [a.values[m][i] for i in ids]
        vb = [b.values[m][i] for i in ids]
        try:
            res = compare_values(va, vb, a.higher_is_better.get(m), resamples=resamples, seed=seed,
                                 tie_tolerance=tie_tolerance)
        except BenchError as e:
            bad = next((i for i, x, y in zip(ids, va, vb) if not (math.isfinite(x) and math.isfinite(y))), None)
            if bad is None:
                raise
            raise BenchError(f"metric {m} of image {bad!r} is not finite in "
                             f"{'A' if not math.isfinite(a.values[m][bad]) else 'B'} (an output identical to its "
                             f"reference has PSNR inf); paired statistics need finite values") from e
        results.append({"metric": m, "metric_version": a.versions[m], **res.as_dict(),
                        "differences": {i: y - x for i, x, y in zip(ids, va, vb)}})
    return {"sign": "delta = B - A per image", "conventions": conventions(tie_tolerance, resamples, seed),
            "dataset": a.dataset, "split": a.split, "n_images": len(ids), "resamples": resamples, "seed": seed,
            "tie_tolerance": tie_tolerance, "a": a.label(), "b": b.label(), "a_label": a.label_text(),
            "b_label": b.label_text(), "results": results}


# --- renderings ------------------------------------------------------------------------------------------
def _digits(metric: str) -> int:
    return 2 if "psnr" in metric else 4


def _wtl(r: dict[str, Any]) -> str:
    return f"{r['wins']}/{r['ties']}/{r['losses']}"


def markdown(doc: dict[str, Any]) -> str:
    from .paired_stats import fmt_num, fmt_p

    lines = [f"A: {doc['a_label']}  ({doc['a']['run_dir']})", f"B: {doc['b_label']}  ({doc['b']['run_dir']})",
             f"data: {doc['dataset']}:{doc['split']}, {doc['n_images']} images paired by id", "",
             "| metric | n | mean A | mean B | mean Δ | 95 % CI | Wilcoxon p | W/T/L | MDD@80 % |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    notes = []
    for r in doc["results"]:
        k = _digits(r["metric"])
        arrow = {True: "↑", False: "↓"}.get(r["higher_is_better"], "")
        p = fmt_p(r["wilcoxon_p"])
        if r["wilcoxon_note"]:
            notes.append(f"{r['metric']}: Wilcoxon p not computed: {r['wilcoxon_note']}")
            p += f" [{len(notes)}]"
        elif r["wilcoxon_method"]:
            p += f" ({r['wilcoxon_method']}, n={r['wilcoxon_n']})"
        ci = f"[{fmt_num(r['ci_low'], k + 1)}, {fmt_num(r['ci_high'], k + 1)}]"
        lines.append(f"| {r['metric']}{arrow} (v{r['metric_version']}) | {r['n']} | {fmt_num(r['mean_a'], k)} | "
                     f"{fmt_num(r['mean_b'], k)} | {fmt_num(r['mean_diff'], k + 1)} | {ci} | {p} | {_wtl(r)} | "
                     f"{fmt_num(r['mdd'], k + 1)} |")
    lines += ["", f"conventions: {doc['conventions']}"]
    if any(r["higher_is_better"] is None for r in doc["results"]):
        lines.append("a metric without a better direction counts W/T/L as B higher/tied/lower.")
    lines += [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


def csv_text(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in doc["results"]:
        w.writerow({**{k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()},
                    "a_label": doc["a_label"], "b_label": doc["b_label"], "a_run_dir": doc["a"]["run_dir"],
                    "b_run_dir": doc["b"]["run_dir"]})
    return buf.getvalue()


def _plain(value: Any) -> Any:
    """JSON without NaN/inf (not JSON): non-finite floats become null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_outputs(doc: dict[str, Any], out: Path, md: str) -> list[Path]:
    """``--out``: the format by suffix (.json, .csv, .md), or all three for any other name (atomic writes)."""
    from .fsutil import write_json, write_text

    writers = {".json": lambda p: write_json(p, _plain(doc)), ".csv": lambda p: write_text(p, csv_text(doc)),
               ".md": lambda p: write_text(p, md)}
    out = Path(out)
    targets = [out] if out.suffix in writers else [out.with_name(out.name + s) for s in writers]
    if out.parent and not out.parent.is_dir():
        raise BenchError(f"--out {out}: folder {out.parent} does not exist")
    for path in targets:
        writers[path.suffix](path)
    return targets


# --- the command ---------------------------------------------------------------------------------------
def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add the ``compare`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    kw: dict[str, Any] = dict(
        help="paired per-image statistics of two complete runs on the same images",
        description="Compare two complete runs image by image: mean difference (B − A), paired bootstrap CI,\n"
                    "Wilcoxon signed-rank p, wins/ties/losses and the minimum detectable difference at 80 % power.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p = add_subcommand(subparsers, "compare", parents, **kw)
    p.add_argument("run_a", type=Path, metavar="RUN_A", help="run directory A (the reference)")
    p.add_argument("run_b", type=Path, metavar="RUN_B", help="run directory B (Δ = B − A)")
    p.add_argument("--metric", "--metrics", dest="metric", nargs="+", metavar="NAME",
                   help="metrics to compare (default: every metric both runs scored)")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's numpy Generator (default 0)")
    p.add_argument("--tie-tolerance", type=float, default=0.0, metavar="EPS",
                   help="|Δ| <= EPS counts as a tie (default 0: bit-for-bit equal values)")
    p.add_argument("--out", type=Path, metavar="FILE", help="also write the result (FILE.json/.csv/.md)")
    p.set_defaults(fn=cmd_compare)
    return p


def cmd_compare(args: argparse.Namespace) -> int:
    doc = compare_runs(args.run_a, args.run_b, args.metric, args.resamples, args.seed, args.tie_tolerance)
    md = markdown(doc)
    print(md, end="")
    if getattr(args, "out", None):
        print("wrote " + ", ".join(str(p) for p in write_outputs(doc, args.out, md)))
    return 0

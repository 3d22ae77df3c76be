"""``bench report table1-official``: the authors' released checkpoints, scored here, beside their published figures.

Rows are complete test-split runs whose weights are official (``--weights official:M`` or an official file:
``config.yaml`` ``weights.source: official``); Table 1 itself never admits them (they are not retrained by the
paper's protocol). Per method, checkpoint, dataset and 8-bit conversion the latest run is shown with:

* the checkpoint (its ``manifests/weights.yaml`` entry, or "unverified") and what it was trained on;
* our PSNR/SSIM, the figure published for that checkpoint (``manifests/reference/official_checkpoints.csv``,
  with its citation) when it was measured on this dataset's test images, and Δ = ours − published; figures of
  the checkpoint on test sets no dataset here holds are listed below the table, without Δ;
* a contamination flag when the checkpoint's training data overlap the dataset's test images (from the
  manifest's ``contamination``): ``yes`` (known overlap) or ``?`` (unknown);
* the 8-bit conversion used and the one the official test script uses.

Writes ``table1-official.csv`` (tidy), ``.md`` and ``.tex`` into the tables folder.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BenchError
from ..fsutil import read_yaml, write_text
from ..paths import manifests_root, results_root
from .collect import read_run

__all__ = ["NAME", "REFERENCE", "published", "official_rows", "write_official_table"]

NAME = "table1-official"
REFERENCE = "official_checkpoints.csv"
METRICS = ("psnr", "ssim")
DECIMALS = {"psnr": 2, "ssim": 3}


def published(path: Path | None = None) -> list[dict[str, str]]:
    """The published figures of official checkpoints (see manifests/reference/README.md)."""
    path = path or manifests_root() / "reference" / REFERENCE
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (r.get("method") or "").strip() and not r["method"].startswith("#")]
    for r in rows:
        for key in ("method", "checkpoint", "test_set", "metric", "value", "citation"):
            if not (r.get(key) or "").strip():
                raise BenchError(f"{path}: a row of {r.get('method')} has no {key}")
    return rows


@dataclass
class OfficialRow:
    method: str
    display: str
    checkpoint: str
    verified: bool
    trained_on: str
    dataset: str
    n_images: int
    run_dir: str
    quantize: str
    official_quantize: str
    contamination: str             # "" | "yes: ..." | "unknown: ..."
    ours: dict[str, float] = field(default_factory=dict)
    published: dict[str, dict[str, str]] = field(default_factory=dict)
    elsewhere: list[dict[str, str]] = field(default_factory=list)   # figures of this checkpoint on other test sets

    @property
    def flag(self) -> str:
        if not self.contamination:
            return ""
        return "yes" if self.contamination.startswith("yes") else "?"


def _facts(cfg: dict[str, Any]) -> dict[str, Any]:
    from ..weights import manifest_checkpoints

    official = ((cfg.get("weights") or {}).get("official")) or {}
    label = str(official.get("checkpoint") or official.get("label") or "unverified")
    facts = dict(manifest_checkpoints().get(label, {}))
    facts.update({k: v for k, v in official.items() if k in ("trained_on", "contamination") and v})
    return {"label": label, "verified": bool(official.get("verified")), **facts}


def official_rows(datasets: list[str] | None = None, root: Path | None = None) -> list[OfficialRow]:
    root = (root or results_root()) / "runs"
    refs = published()
    latest: dict[tuple[str, ...], tuple[Any, OfficialRow]] = {}
    for done in sorted(root.glob("*/*/*/DONE")):
        rec = read_run(done.parent)
        if rec is None or rec.split != "test" or (datasets and rec.dataset not in datasets):
            continue
        cfg = read_yaml(done.parent / "config.yaml") or {}
        if (cfg.get("weights") or {}).get("source") != "official":
            continue
        facts = _facts(cfg)
        contamination = (facts.get("contamination") or {}).get(rec.dataset, "")
        if not facts["verified"] and not contamination:
            contamination = "unknown: the weights match no checkpoint of manifests/weights.yaml"
        ot = cfg.get("official_test") or {}
        row = OfficialRow(
            method=rec.method, display=str(cfg.get("display_name") or rec.method), checkpoint=facts["label"],
            verified=facts["verified"], trained_on=str(facts.get("trained_on") or "unknown"), dataset=rec.dataset,
            n_images=int((rec.protocol or {}).get("n_images") or 0), run_dir=rec.rel_dir(),
            quantize=str(cfg.get("quantize") or "round"), official_quantize=str(ot.get("official_quantize") or "?"),
            contamination=str(contamination), ours={m: rec.metrics[m].mean for m in METRICS if m in rec.metrics})
        for r in refs:
            if r["method"] == rec.method and r["checkpoint"] == row.checkpoint:
                if r.get("dataset") == rec.dataset:
                    row.published[r["metric"]] = r
                else:
                    row.elsewhere.append(r)
        key = (rec.method, row.checkpoint, rec.dataset, row.quantize)
        if key not in latest or (rec.finished, rec.run_id) > latest[key][0]:
            latest[key] = ((rec.finished, rec.run_id), row)   # type: ignore[assignment]
    return [v[1] for _, v in sorted(latest.items())]


def _f(x: Any, d: int, signed: bool = False) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(v) else (f"{v:+.{d}f}" if signed else f"{v:.{d}f}")


def _delta(row: OfficialRow, metric: str) -> float:
    pub = row.published.get(metric)
    if pub is None or metric not in row.ours:
        return math.nan
    return row.ours[metric] - float(pub["value"])


def tidy_csv(rows: list[OfficialRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "checkpoint", "verified", "trained_on", "dataset", "n_images", "metric", "ours",
                "published", "delta", "citation", "contamination", "quantize", "official_quantize", "run_dir"])
    for r in rows:
        for m in METRICS:
            pub = r.published.get(m, {})
            d = _delta(r, m)
            w.writerow([r.method, r.checkpoint, r.verified, r.trained_on, r.dataset, r.n_images, m,
                        "" if m not in r.ours else f"{r.ours[m]:.6f}", pub.get("value", ""),
                        "" if math.isnan(d) else f"{d:.6f}", pub.get("citation", ""), r.contamination, r.quantize,
                        r.official_quantize, r.run_dir])
    return buf.getvalue()


def _citations(rows: list[OfficialRow]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        for m in METRICS:
            c = r.published.get(m, {}).get("citation")
            if c and c not in seen:
                seen.append(c)
    return seen


def markdown(rows: list[OfficialRow]) -> str:
    cites = _citations(rows)
    lines = ["# Official checkpoints, scored by dsn-bench", "",
             "The authors' released weights, imported with `bench weights import official` and run on the test split "
             "here. Not Table 1: these models were trained by their authors on their own data, so a row compares a "
             "released model with the number published for it, not the methods under one protocol.", "",
             "| method | checkpoint | trained on | dataset (n) | PSNR | published | Δ | SSIM | published | Δ | "
             "contaminated | 8-bit (official) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for m in METRICS:
            pub = r.published.get(m)
            ref = "" if pub is None else f" [{cites.index(pub['citation']) + 1}]"
            cells += [_f(r.ours.get(m), DECIMALS[m] + 2), (_f(pub["value"], DECIMALS[m]) + ref) if pub else "–",
                      _f(_delta(r, m), DECIMALS[m], signed=True)]
        ck = r.checkpoint if r.verified or r.checkpoint == "unverified" else f"{r.checkpoint} (unverified)"
        q = r.quantize + ("" if r.quantize == r.official_quantize else f" ({r.official_quantize})")
        lines.append(f"| {r.display} | {ck} | {r.trained_on} | {r.dataset} ({r.n_images}) | " + " | ".join(cells)
                     + f" | {r.flag or 'no'} | {q} |")
    if not rows:
        lines.append("| – | no complete test run with official weights | | | | | | | | | | |")
    lines += ["", "Contaminated: **yes** = the checkpoint's training data contain test images of this dataset "
              "(its score is not a held-out score); **?** = overlap unknown; no = none known."]
    for note in dict.fromkeys(f"- {r.display} on {r.dataset}: {r.contamination}" for r in rows if r.contamination):
        lines.append(note)
    other = [(r, e) for r in rows for e in r.elsewhere]
    if other:
        lines += ["", "Published for these checkpoints on test sets no dataset here holds (no Δ):"]
        lines += list(dict.fromkeys(f"- {r.display} ({r.checkpoint}): {e['metric'].upper()} {e['value']} on "
                                    f"{e['test_set']} [{e['citation']}]" for r, e in other))
    lines += ["", "8-bit: the conversion this run used, with the official test script's in brackets where it "
              "differs (`bench run --quantize truncate|round` chooses)."]
    if cites:
        lines += ["", "Published figures:"] + [f"{i + 1}. {c}" for i, c in enumerate(cites)]
    lines += ["", "Runs: " + "; ".join(f"{r.display} {r.dataset}: `{r.run_dir}`" for r in rows)]
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("Δ", r"$\Delta$"), ("−", "-")):
        s = s.replace(a, b)
    return s


def latex(rows: list[OfficialRow]) -> str:
    out = [r"\begin{table}[t]", r"\centering", r"\small",
           r"\caption{Official checkpoints scored with dsn-bench beside their published figures "
           r"(contaminated: training data overlap the test images).}", r"\label{tab:table1-official}",
           r"\begin{tabular}{llllrrrrc}", r"\toprule",
           r"Method & Checkpoint & Dataset & $n$ & PSNR & pub. & SSIM & pub. & contam. \\", r"\midrule"]
    for r in rows:
        pub = {m: _f(r.published[m]["value"], DECIMALS[m]) if m in r.published else "--" for m in METRICS}
        out.append(" & ".join([_tex(r.display), _tex(r.checkpoint), _tex(r.dataset), str(r.n_images),
                               _f(r.ours.get("psnr"), 2), pub["psnr"], _f(r.ours.get("ssim"), 3), pub["ssim"],
                               r.flag or "no"]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def write_official_table(out: Path, datasets: list[str] | None = None) -> tuple[list[Path], list[OfficialRow]]:
    rows = official_rows(datasets)
    files = {f"{NAME}.csv": tidy_csv(rows), f"{NAME}.md": markdown(rows), f"{NAME}.tex": latex(rows)}
    for name, text in files.items():
        write_text(out / name, text)
    return [out / n for n in files], rows

"""``bench study status`` and ``bench study export``: progress, and the votes CSV that Table 3 reads.

The export has the columns ``bench report table3 --votes`` needs -- ``rater, rater_group, image, category,
shown, chosen`` (``shown``: the method names in display order joined by "|"; ``chosen``: the chosen method's
harness name) -- followed by ``position`` (1-based place of the trial in the rater's order), ``choice``
(1-based display position chosen), ``shown_at``, ``voted_at`` (UTC), ``decision_ms`` and ``trial``.
Beside it goes ``<csv stem>.table3.yaml``: the paper's Table 3 spec with this study's methods, groups and
categories, for ``bench report table3 --votes votes.csv --spec votes.table3.yaml``.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..fsutil import read_yaml, write_text, write_yaml
from ..paths import manifests_root
from .create import DB_FILE, load_study
from .store import rater_label, read_all

COLUMNS = ["rater", "rater_group", "image", "category", "shown", "chosen", "position", "choice", "shown_at",
           "voted_at", "decision_ms", "trial"]
PAPER_METHODS = ["csrnet", "deepupe", "deeplpf", "ours"]


def _read(path: Path):
    db = path / DB_FILE
    if not db.exists():
        return [], [], []
    return read_all(db)


def status(name: str | Path) -> dict[str, Any]:
    path, doc = load_study(name)
    raters, assignments, votes = _read(path)
    n_trials = len(doc["trials"])
    per_rater = Counter(v["rater_id"] for v in votes)
    groups: dict[str, dict[str, int]] = {g: {"raters": 0, "complete": 0, "votes": 0} for g in doc["groups"]}
    for r in raters:
        g = groups.setdefault(r["grp"], {"raters": 0, "complete": 0, "votes": 0})
        g["raters"] += 1
        g["votes"] += per_rater[r["id"]]
        g["complete"] += per_rater[r["id"]] >= n_trials
    expected = len(raters) * n_trials
    return {
        "study": doc["name"], "folder": str(path), "dataset": doc["dataset"], "split": doc["split"],
        "methods": [m["name"] for m in doc["methods"]], "trials_per_rater": n_trials, "raters": len(raters),
        "complete_raters": sum(g["complete"] for g in groups.values()), "votes": len(votes),
        "expected_votes": expected, "completion": len(votes) / expected if expected else 0.0,
        "last_vote": max((v["voted_at"] for v in votes), default=None), "groups": groups,
    }


def status_text(st: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = [[g, v["raters"], v["complete"], v["votes"]] for g, v in st["groups"].items()]
    rows.append(["all", st["raters"], st["complete_raters"], st["votes"]])
    return (f"study {st['study']} ({st['folder']})\n"
            f"data {st['dataset']}:{st['split']}, methods {', '.join(st['methods'])}, "
            f"{st['trials_per_rater']} trials per rater\n\n"
            + tabulate(rows, headers=["group", "raters", "complete", "votes"], tablefmt="github") + "\n\n"
            f"votes {st['votes']} of {st['expected_votes']} expected from the raters who joined "
            f"({100 * st['completion']:.1f} %); last vote {st['last_vote'] or '-'}\n")


def export_rows(name: str | Path) -> list[dict[str, Any]]:
    path, doc = load_study(name)
    raters, assignments, votes = _read(path)
    trials = {t["id"]: t for t in doc["trials"]}
    group = {r["id"]: r["grp"] for r in raters}
    assigned = {(a["rater_id"], a["trial"]): a for a in assignments}
    rows = []
    for v in votes:
        a = assigned[(v["rater_id"], v["trial"])]
        t = trials[v["trial"]]
        shown = json.loads(v["shown"])
        rows.append({
            "rater": rater_label(v["rater_id"]), "rater_group": group[v["rater_id"]], "image": t["image"],
            "category": t["category"], "shown": "|".join(shown), "chosen": v["chosen"],
            "position": a["position"] + 1, "choice": v["choice"] + 1, "shown_at": a["first_shown_at"] or "",
            "voted_at": v["voted_at"], "decision_ms": "" if v["decision_ms"] is None else v["decision_ms"],
            "trial": v["trial"],
        })
    rows.sort(key=lambda r: (r["rater"], r["position"]))
    return rows


def table3_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The paper's Table 3 spec re-aimed at this study: its methods, groups, categories (and the published
    numbers only when the methods are the paper's four)."""
    base_path = manifests_root() / "tables" / "table3.yaml"
    base = dict(read_yaml(base_path) or {}) if base_path.exists() else {"name": "table3", "kind": "user_study"}
    methods = [m["name"] for m in doc["methods"]]
    if sorted(methods) == sorted(PAPER_METHODS):
        methods = list(PAPER_METHODS)
        ref = base.get("reference")
        base["reference"] = str((base_path.parent / ref).resolve()) if ref else None
    else:
        base.pop("reference", None)
        base["method_labels"] = {m["name"]: m["display_name"] for m in doc["methods"]}
        base["method_aliases"] = {}
    if base.get("reference") is None:
        base.pop("reference", None)
    cats = list(dict.fromkeys(t["category"] for t in doc["trials"]))
    base.update(
        name="table3", kind="user_study", methods=methods, rater_groups=list(doc["groups"]),
        title=f"Table 3 (study {doc['name']}): share of preferred results",
        caption=(f"Percentage of choices per method and rater group in the blind forced-choice study "
                 f"{doc['name']} on {doc['dataset']}:{doc['split']}: each rater chose the best of "
                 f"{len(methods)} results per photo."),
        label=f"tab:study-{doc['name']}",
    )
    if doc.get("categorized"):
        base["categories"] = cats
    else:
        base.pop("categories", None)
    return base


def export(name: str | Path, out: Path | None = None) -> tuple[Path, Path, int]:
    """Write the votes CSV (default ``<study>/votes.csv``) and ``<stem>.table3.yaml`` beside it; returns
    (csv path, spec path, number of votes)."""
    path, doc = load_study(name)
    rows = export_rows(name)
    csv_path = Path(out) if out else path / "votes.csv"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(csv_path, buf.getvalue())
    spec_path = csv_path.with_name(f"{csv_path.stem}.table3.yaml")
    write_yaml(spec_path, table3_spec(doc))
    return csv_path, spec_path, len(rows)


"""Table specs (``manifests/tables/*.yaml``) and the published numbers (``manifests/reference/*.csv``)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BenchError
from ..fsutil import read_yaml
from ..paths import manifests_root

TABLES = ("table1", "table2", "table3")


@dataclass(frozen=True)
class Row:
    key: str  # "lime", "ours", "ours:no_rl"
    label: str
    group: str
    rank: bool = True  # takes part in bold/underline

    @property
    def method(self) -> str:
        return self.key.partition(":")[0]

    @property
    def variant(self) -> str | None:
        """DSN variant asked for: "full" for plain ``ours``, the part after ":" for ``ours:x``, else None."""
        method, sep, variant = self.key.partition(":")
        if sep:
            return variant
        return "full" if method == "ours" else None


@dataclass
class TableSpec:
    name: str
    kind: str  # absolute | delta | user_study
    path: Path
    title: str = ""
    caption: str = ""
    label: str = ""
    reference: Path | None = None
    split: str = "test"
    profile: str = "paper"
    seeds: list[int] = field(default_factory=lambda: [0])
    datasets: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim"])
    decimals: dict[str, int] = field(default_factory=dict)
    show_std: bool = True
    highlight: bool = True
    metric_labels: dict[str, str] = field(default_factory=dict)
    dataset_labels: dict[str, str] = field(default_factory=dict)
    paper_columns: dict[str, dict[str, str]] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    reference_row: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # the whole YAML, for table3's extra keys

    def decimals_for(self, metric: str) -> int:
        return int(self.decimals.get(metric, self.decimals.get("default", 3)))

    def metric_label(self, metric: str) -> str:
        return self.metric_labels.get(metric, metric.upper())

    def dataset_label(self, dataset: str) -> str:
        return self.dataset_labels.get(dataset, dataset)

    def paper_column(self, dataset: str) -> tuple[str | None, str | None]:
        entry = self.paper_columns.get(dataset) or {}
        return entry.get("column"), entry.get("caveat")

    def comparable(self, dataset: str) -> bool:
        """Whether the dataset's test images are the paper's (``paper_columns.<ds>.comparable``, default true)."""
        return (self.paper_columns.get(dataset) or {}).get("comparable", True) is not False


def spec_path(table: str) -> Path:
    return manifests_root() / "tables" / f"{table}.yaml"


def load_spec(table: str | None = None, path: Path | None = None) -> TableSpec:
    path = Path(path) if path else spec_path(table or "")
    if not path.exists():
        raise BenchError(f"no table spec {path}; the specs are manifests/tables/table1|table2|table3.yaml")
    doc = read_yaml(path) or {}
    for key in ("name", "kind"):
        if key not in doc:
            raise BenchError(f"{path}: missing key {key!r}")
    if doc["kind"] not in ("absolute", "delta", "user_study"):
        raise BenchError(f"{path}: kind must be absolute, delta or user_study, not {doc['kind']!r}")
    rows, groups = [], []
    for g in doc.get("groups") or []:
        groups.append(g["name"])
        for r in g.get("rows") or []:
            rows.append(Row(str(r["key"]), str(r.get("label", r["key"])), g["name"], bool(g.get("rank", True))))
    keys = [r.key for r in rows]
    if len(set(keys)) != len(keys):
        raise BenchError(f"{path}: a row key appears twice")
    ref = doc.get("reference")
    spec = TableSpec(
        name=str(doc["name"]), kind=doc["kind"], path=path, title=str(doc.get("title", "")),
        caption=" ".join(str(doc.get("caption", "")).split()), label=str(doc.get("label", f"tab:{doc['name']}")),
        reference=(path.parent / ref).resolve() if ref else None, split=str(doc.get("split", "test")),
        profile=str(doc.get("profile", "paper")), seeds=[int(s) for s in doc.get("seeds", [0])],
        datasets=[str(d) for d in doc.get("datasets", [])], metrics=[str(m) for m in doc.get("metrics", [])],
        decimals={str(k): int(v) for k, v in (doc.get("decimals") or {}).items()} if isinstance(
            doc.get("decimals"), dict) else {"default": int(doc.get("decimals", 3))},
        show_std=bool(doc.get("show_std", True)), highlight=bool(doc.get("highlight", True)),
        metric_labels=dict(doc.get("metric_labels") or {}), dataset_labels=dict(doc.get("dataset_labels") or {}),
        paper_columns=dict(doc.get("paper_columns") or {}), rows=rows, groups=groups,
        reference_row=doc.get("reference_row"), raw=doc,
    )
    if spec.kind == "delta" and not spec.reference_row:
        raise BenchError(f"{path}: a delta table needs reference_row (the row every delta is taken from)")
    return spec


def load_reference(spec: TableSpec) -> list[dict[str, str]]:
    """Rows of the published-numbers CSV, or [] when the spec names none."""
    if spec.reference is None:
        return []
    if not spec.reference.exists():
        raise BenchError(f"{spec.path}: reference file {spec.reference} not found")
    with open(spec.reference, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def published_values(spec: TableSpec) -> dict[tuple[str, str, str], tuple[float, int]]:
    """(row key, paper column, metric) -> (published value, decimals printed)."""
    out = {}
    for r in load_reference(spec):
        out[(r["row"], r["column"], r["metric"])] = (float(r["value"]), int(r.get("decimals") or 3))
    return out

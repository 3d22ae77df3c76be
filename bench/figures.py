"""``bench figure NAME``: the paper's figures, drawn from run outputs only (specs in ``manifests/figures/``).

Three kinds of figure:

- ``grid``: qualitative comparison like the paper's Figs. 1 and 5-9 -- one line per chosen image ID, panels
  input, each method's output, ground truth; the method name (and optionally its per-image score) under
  each panel; optional zoomed insets (a box drawn on every panel, its crop enlarged in a corner);
- ``distribution``: per-image metric values per method (box plot with every image as a point and the mean
  as a diamond) from ``per_image.csv`` -- what a mean over 100 images hides;
- ``cost``: quality against cost -- the table's metric against trainable parameters (``config.yaml``
  ``trainable_parameters``) and against runtime: the median latency of the cost table
  (``results/tables/cost.csv``, ``bench perf methods``: every method timed alike on one machine), or, for a
  method the table lacks, the median ``runtime_ms`` of its runs' ``per_image.csv`` (said in a note).

Which runs feed a figure is decided exactly as for the tables: :func:`bench.report.collect.select` on the
runs found by :func:`bench.report.collect.scan_runs`, with the rows, split, profile and seeds of the table
spec the figure names (overridable in the figure spec and on the command line). A grid shows the output of
the lowest selected seed (``seed:`` picks another); distributions average each image over the selected
seeds; the cost plot's y is the table cell (mean over seeds). ``<name>.sources.csv`` beside the figure names
every run and file behind it.

Files are ``<results>/figures/<name>.pdf`` and ``.png``. They are byte-stable: matplotlib's own defaults
(not the user's matplotlibrc), the bundled DejaVu Sans, no creation date or software tag (a
``SOURCE_DATE_EPOCH`` in the environment is honoured as the PDF's date), a fixed jitter seed.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import BenchError, unknown_name
from .subcommand import add_subcommand

KINDS = ("grid", "distribution", "cost")
COST_AXES = ("parameters", "runtime")
PALETTE = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB", "#000000")
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "dsn-bench",
    "pdf.compression": 6,
}

EPILOG = """\
examples:
  bench figure --list
  bench figure demo-grid demo-distribution demo-cost
  bench figure fig7                       # LOL, low-light methods (needs runs on lol)
  bench figure table1-cost --datasets lol-485-15 --profile quick
  bench figure fig1 --images 004512 004650 --out paper/figures

Specs: manifests/figures/NAME.yaml (kind grid | distribution | cost). Runs are picked as `bench report`
picks them for the table the spec names; NAME.sources.csv lists every run and file behind the figure."""


# --- specs ----------------------------------------------------------------------------------------
@dataclass
class Inset:
    box: tuple[float, float, float, float]  # x, y, width, height as fractions of the image (origin top left)
    loc: str = "lower right"
    size: float = 0.45  # inset width as a fraction of the panel width
    color: str = "#FFD400"


@dataclass
class FigureSpec:
    name: str
    kind: str
    path: Path
    table: Any  # bench.report.spec.TableSpec
    rows: list[Any]  # bench.report.spec.Row
    datasets: list[str]
    profile: str
    seeds: list[int]
    title: str = ""
    caption: str = ""
    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim"])
    images: list[str] = field(default_factory=list)
    insets: dict[str, Inset] = field(default_factory=dict)
    seed: int | None = None  # grid: which seed's outputs of trainable methods (default: the lowest selected)
    show_metric: str | None = None  # grid: print this per-image score under each panel
    letters: bool = True  # grid: "(a) Input", "(b) ..."
    missing: str = "skip"  # grid: rows without a run: skip, or blank (an empty, labelled panel)
    columns_per_line: int | None = None
    panel_width: float = 1.5  # inches
    input_label: str = "Input"
    gt_label: str = "GT"
    x: list[str] = field(default_factory=lambda: list(COST_AXES))
    dpi: int = 200

    @property
    def split(self) -> str:
        return self.table.split


def figure_dir() -> Path:
    from .paths import manifests_root

    return manifests_root() / "figures"


def figure_names() -> list[str]:
    folder = figure_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _rows(doc: dict[str, Any], table: Any, where: str) -> list[Any]:
    from .report.spec import Row

    by_key = {r.key: r for r in table.rows}
    if table.reference_row and table.reference_row not in by_key:
        by_key[table.reference_row] = Row(table.reference_row, "ours", "reference", False)
    items = doc.get("rows")
    if items is None:
        return list(by_key.values())
    out = []
    for item in items:
        key, label = (str(item.get("key")), item.get("label")) if isinstance(item, dict) else (str(item), None)
        if key in by_key:
            base = by_key[key]
            out.append(Row(base.key, str(label or base.label), base.group, base.rank))
        else:
            out.append(Row(key, str(label or key), "other", False))
    if len({r.key for r in out}) != len(out):
        raise BenchError(f"{where}: a row appears twice")
    return out


def load_figure_spec(name: str | None = None, path: Path | None = None, datasets: Sequence[str] | None = None,
                     profile: str | None = None, seeds: Sequence[int] | None = None,
                     images: Sequence[str] | None = None) -> FigureSpec:
    from .fsutil import read_yaml
    from .report.collect import PROFILE_RANK
    from .report.spec import load_spec

    if path is None:
        if name not in figure_names():
            raise unknown_name("figure", str(name), figure_names() or ["(no specs in manifests/figures)"])
        path = figure_dir() / f"{name}.yaml"
    path = Path(path)
    doc = read_yaml(path) or {}
    where = str(path)
    kind = doc.get("kind")
    if kind not in KINDS:
        raise BenchError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    ref = doc.get("table", "table1")
    table = load_spec(None, (path.parent / ref).resolve()) if str(ref).endswith(".yaml") else load_spec(str(ref))
    ds = list(datasets or doc.get("datasets") or ([doc["dataset"]] if doc.get("dataset") else table.datasets))
    prof = profile or str(doc.get("profile", table.profile))
    if prof not in PROFILE_RANK:
        raise BenchError(f"unknown profile {prof!r}; choose smoke, quick or paper")
    insets = {}
    for pid, raw in (doc.get("insets") or {}).items():
        raw = {"box": raw} if isinstance(raw, (list, tuple)) else dict(raw)
        box = tuple(float(v) for v in raw.get("box", ()))
        if len(box) != 4 or not all(0 <= v <= 1 for v in box) or box[2] <= 0 or box[3] <= 0 \
                or box[0] + box[2] > 1 or box[1] + box[3] > 1:
            raise BenchError(f"{where}: inset of {pid}: box is [x, y, width, height] as fractions inside the image")
        insets[str(pid)] = Inset(box, str(raw.get("loc", "lower right")), float(raw.get("size", 0.45)),
                                 str(raw.get("color", "#FFD400")))
    spec = FigureSpec(
        name=str(doc.get("name", path.stem)), kind=kind, path=path, table=table, rows=_rows(doc, table, where),
        datasets=[str(d) for d in ds], profile=prof,
        seeds=[int(s) for s in (seeds if seeds is not None else doc.get("seeds", table.seeds))],
        title=str(doc.get("title", "")), caption=" ".join(str(doc.get("caption", "")).split()),
        metrics=[str(m) for m in doc.get("metrics", [doc["metric"]] if doc.get("metric") else ["psnr", "ssim"])],
        images=[str(i) for i in (images or doc.get("images") or [])], insets=insets,
        seed=None if doc.get("seed") is None else int(doc["seed"]),
        show_metric=doc.get("show_metric"), letters=bool(doc.get("letters", True)),
        missing=str(doc.get("missing", "skip")),
        columns_per_line=None if doc.get("columns_per_line") is None else int(doc["columns_per_line"]),
        panel_width=float(doc.get("panel_width", 1.5)), input_label=str(doc.get("input_label", "Input")),
        gt_label=str(doc.get("gt_label", "GT")), x=[str(v) for v in doc.get("x", list(COST_AXES))],
        dpi=int(doc.get("dpi", 200)),
    )
    if spec.missing not in ("skip", "blank"):
        raise BenchError(f"{where}: missing must be skip or blank")
    if kind == "grid":
        if len(spec.datasets) != 1:
            raise BenchError(f"{where}: a grid shows one dataset, not {', '.join(spec.datasets)}")
        if not spec.images:
            raise BenchError(f"{where}: a grid needs images: [ID, ...] (test-split IDs of {spec.datasets[0]})")
    if kind == "cost" and (not spec.x or any(x not in COST_AXES for x in spec.x)):
        raise BenchError(f"{where}: x must list {' and/or '.join(COST_AXES)}")
    if not spec.seeds:
        raise BenchError(f"{where}: no seeds")
    return spec


# --- selection (the report's rule) ----------------------------------------------------------------
@dataclass
class Chosen:
    row: Any
    dataset: str
    runs: list[Any]  # RunRecord, one per seed
    color: str


def choose(spec: FigureSpec, dataset: str, records: list[Any] | None = None) -> tuple[list[Chosen], list[str]]:
    """The runs behind each row on ``dataset`` (rows without one are returned with ``runs=[]``) and notes."""
    from .report.collect import scan_runs, select

    records = scan_runs([dataset]) if records is None else records
    groups = list(dict.fromkeys([r.group for r in spec.rows]))
    out, missing = [], []
    for row in spec.rows:
        sel = select(records, row, dataset, spec.split, spec.profile, spec.seeds)
        if not sel.runs:
            missing.append(row.label + (f" ({sel.why_missing})" if sel.why_missing else ""))
        out.append(Chosen(row, dataset, sel.runs, PALETTE[groups.index(row.group) % len(PALETTE)]))
    notes = [f"no admissible run on {dataset} (profile {spec.profile} or better) for: {', '.join(missing)}"] \
        if missing else []
    return out, notes


def _per_image(run_dir: Path) -> list[dict[str, str]]:
    from .records import read_csv_rows

    path = run_dir / "per_image.csv"
    if not path.exists():
        raise BenchError(f"run {run_dir} has no per_image.csv")
    return read_csv_rows(path)   # checked against the run's seal when the run was collected


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


# --- drawing helpers ------------------------------------------------------------------------------
class _Style:
    def __enter__(self):
        import matplotlib as mpl

        self._ctx = mpl.rc_context()
        self._ctx.__enter__()
        mpl.rcdefaults()  # not the user's matplotlibrc: figures must not depend on the machine
        mpl.rcParams.update(STYLE)
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _pdf_date() -> Any:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return None
    import datetime

    try:
        return datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
    except ValueError:
        raise BenchError(f"SOURCE_DATE_EPOCH={epoch!r} is not an integer") from None


def save(fig: Any, out: Path, name: str, dpi: int) -> list[Path]:
    """Write ``name.pdf`` and ``name.png`` byte-stably (no dates or software tags in the metadata)."""
    from .fsutil import write_bytes

    files = []
    for fmt, meta in (("pdf", {"Creator": "dsn-bench", "Producer": None, "CreationDate": _pdf_date()}),
                      ("png", {"Software": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta)
        write_bytes(out / f"{name}.{fmt}", buf.getvalue())
        files.append(out / f"{name}.{fmt}")
    return files


SOURCE_COLUMNS = ["figure", "kind", "panel", "row", "label", "dataset", "seed", "run_id", "run_dir", "profile",
                  "smoke", "image", "file", "sha256", "metric", "value", "trainable_parameters",
                  "runtime_ms_median", "runtime_source", "device"]


def _source_row(spec: FigureSpec, **kw: Any) -> dict[str, Any]:
    row = {c: "" for c in SOURCE_COLUMNS}
    row.update(figure=spec.name, kind=spec.kind)
    row.update({k: ("" if v is None else v) for k, v in kw.items()})
    return row


def _run_fields(rec: Any) -> dict[str, Any]:
    return {"seed": rec.seed, "run_id": rec.run_id, "run_dir": rec.rel_dir(), "profile": rec.profile,
            "smoke": rec.smoke}


def _sources_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SOURCE_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _metric_label(spec: FigureSpec, metric: str) -> str:
    from .metrics import METRICS

    hib = METRICS[metric].higher_is_better if metric in METRICS else None
    return spec.table.metric_label(metric) + {True: "↑", False: "↓", None: ""}[hib]


# --- grid -----------------------------------------------------------------------------------------
def _open_dataset(name: str) -> Any:
    from .data.manifest import load_manifest, locked

    return locked(load_manifest(name))


def _grid(spec: FigureSpec) -> tuple[Any, list[dict[str, Any]], list[str]]:
    from .fsutil import sha256_file
    from .imageio import read_rgb

    ds = spec.datasets[0]
    chosen, notes = choose(spec, ds)
    if not any(c.runs for c in chosen):
        raise BenchError(f"figure {spec.name}: no complete runs on {ds} for any of its rows "
                         f"(profile {spec.profile} or better); make them with `bench reproduce "
                         f"{spec.table.name} --datasets {ds} --profile {spec.profile}`")
    m = _open_dataset(ds)
    by_id = {p.id: p for p in m.split(spec.split)}
    for pid in spec.images:
        if pid not in by_id:
            raise unknown_name(f"image of {ds}:{spec.split}", pid, list(by_id))
    fp = m.fingerprint(spec.split)

    # one run per row: the asked seed, else the lowest selected one
    columns: list[tuple[str, Any, Any]] = [("input", spec.input_label, None)]
    for c in chosen:
        if not c.runs:
            if spec.missing == "blank":
                columns.append(("missing", c.row.label, c.row))
            continue
        runs = [r for r in c.runs if spec.seed is None or r.seed == spec.seed or not r.trainable]
        if not runs:
            notes.append(f"{c.row.label} on {ds}: no selected run has seed {spec.seed}")
            if spec.missing == "blank":
                columns.append(("missing", c.row.label, c.row))
            continue
        rec = runs[0]
        if rec.protocol.get("split_fingerprint") not in (None, fp):
            raise BenchError(f"run {rec.rel_dir()} was made on another build of {ds}:{spec.split} (fingerprint "
                             f"{str(rec.protocol.get('split_fingerprint'))[:12]}, now {fp[:12]})")
        columns.append(("output", c.row.label, (c.row, rec, {r["id"]: r for r in _per_image(rec.run_dir)})))
    columns.append(("gt", spec.gt_label, None))

    ncol = len(columns)
    cpl = min(spec.columns_per_line or ncol, ncol)
    lines_per_image = math.ceil(ncol / cpl)
    pw = spec.panel_width
    label_h = 0.34 if spec.show_metric else 0.22
    gap, margin = 0.04, 0.04
    title_h = 0.28 if spec.title else 0.0
    images = {pid: (read_rgb(m.file_path(by_id[pid].low)), read_rgb(m.file_path(by_id[pid].high)))
              for pid in spec.images}
    line_heights = []
    for pid in spec.images:
        h, w = images[pid][0].shape[:2]
        line_heights += [pw * h / w + label_h] * lines_per_image
    width = 2 * margin + cpl * pw + (cpl - 1) * gap
    height = 2 * margin + title_h + sum(line_heights) + gap * (len(line_heights) - 1)
    fig = _new_figure(width, height)
    if spec.title:
        fig.text(0.5, 1 - (margin + title_h / 2) / height, spec.title, ha="center", va="center", fontsize=9)

    sources: list[dict[str, Any]] = []
    image_top = margin + title_h
    for pid in spec.images:
        low, high = images[pid]
        h, w = low.shape[:2]
        pair = by_id[pid]
        panel_h = pw * h / w
        for j, (role, label, payload) in enumerate(columns):
            li, col = divmod(j, cpl)
            top = image_top + li * (panel_h + label_h + gap)
            ax = fig.add_axes([(margin + col * (pw + gap)) / width, 1 - (top + panel_h) / height, pw / width,
                               panel_h / height])
            ax.set_axis_off()
            text = f"({_letter(j)}) {label}" if spec.letters else label
            if role == "input":
                img, file, sha = low, f"{ds}:{pair.low}", pair.low_sha256 or sha256_file(m.file_path(pair.low))
                sources.append(_source_row(spec, panel=_letter(j), row="input", label=label, dataset=ds, image=pid,
                                           file=file, sha256=sha))
            elif role == "gt":
                img, file = high, f"{ds}:{pair.high}"
                sources.append(_source_row(spec, panel=_letter(j), row="gt", label=label, dataset=ds, image=pid,
                                           file=file, sha256=pair.high_sha256 or sha256_file(m.file_path(pair.high))))
            elif role == "missing":
                img = None
                text += "\n(no run)"
                sources.append(_source_row(spec, panel=_letter(j), row=payload.key, label=label, dataset=ds,
                                           image=pid, value="missing"))
            else:
                row, rec, per_image = payload
                out_path = rec.run_dir / "outputs" / f"{pid}.png"
                if not out_path.is_file():
                    raise BenchError(f"run {rec.rel_dir()} has no output for {pid}")
                img = read_rgb(out_path)
                sha = sha256_file(out_path)
                recorded = per_image.get(pid, {}).get("output_sha256")
                if recorded and recorded != sha:
                    raise BenchError(f"{out_path} does not match the hash its run recorded")
                value = _float(per_image.get(pid, {}).get(spec.show_metric)) if spec.show_metric else math.nan
                if spec.show_metric and not math.isnan(value):
                    digits = spec.table.decimals_for(spec.show_metric)
                    text += f"\n{spec.table.metric_label(spec.show_metric)} {value:.{digits}f}"
                sources.append(_source_row(spec, panel=_letter(j), row=row.key, label=label, dataset=ds, image=pid,
                                           file=f"{rec.rel_dir()}/outputs/{pid}.png", sha256=sha,
                                           metric=spec.show_metric or "", value=value if spec.show_metric else "",
                                           **_run_fields(rec)))
            if img is None:
                ax.add_patch(_rect((0, 0), 1, 1, fc="#EEEEEE", ec="#BBBBBB", lw=0.5, transform=ax.transAxes))
            else:
                ax.imshow(img, interpolation="none")
                _inset(ax, img, spec.insets.get(pid))
            ax.text(0.5, -0.02, text, transform=ax.transAxes, ha="center", va="top", fontsize=6.5, linespacing=1.1)
        image_top += lines_per_image * (panel_h + label_h + gap)
    return fig, sources, notes


def _letter(i: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[i] if i < 26 else f"a{i - 26}"


def _rect(xy, w, h, **kw):
    from matplotlib.patches import Rectangle

    return Rectangle(xy, w, h, **kw)


def _inset(ax: Any, img: Any, inset: Inset | None) -> None:
    if inset is None:
        return
    H, W = img.shape[:2]
    x, y, bw, bh = inset.box
    x0, y0 = int(round(x * W)), int(round(y * H))
    x1, y1 = max(x0 + 1, int(round((x + bw) * W))), max(y0 + 1, int(round((y + bh) * H)))
    crop = img[y0:y1, x0:x1]
    ax.add_patch(_rect((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=inset.color, lw=0.8))
    iw = inset.size
    ih = iw * (crop.shape[0] / crop.shape[1]) * (W / H)
    if ih > 0.6:
        iw, ih = iw * 0.6 / ih, 0.6
    left = 0.0 if "left" in inset.loc else 1.0 - iw
    bottom = 1.0 - ih if "upper" in inset.loc else 0.0
    sub = ax.inset_axes([left, bottom, iw, ih])
    sub.imshow(crop, interpolation="nearest")
    sub.set_xticks([])
    sub.set_yticks([])
    for side in sub.spines.values():
        side.set_visible(True)
        side.set_edgecolor(inset.color)
        side.set_linewidth(1.0)


# --- distribution ---------------------------------------------------------------------------------
def _distribution(spec: FigureSpec) -> tuple[Any, list[dict[str, Any]], list[str]]:
    import numpy as np

    per_ds = {}
    notes: list[str] = []
    for ds in spec.datasets:
        chosen, n = choose(spec, ds)
        notes += n
        per_ds[ds] = [c for c in chosen if c.runs]
    if not any(per_ds.values()):
        raise BenchError(f"figure {spec.name}: no complete runs on {', '.join(spec.datasets)} "
                         f"(profile {spec.profile} or better); make them with `bench reproduce {spec.table.name} "
                         f"--datasets {','.join(spec.datasets)} --profile {spec.profile}`")
    nrow, ncol = len(spec.datasets), len(spec.metrics)
    nmeth = max(len(v) for v in per_ds.values()) or 1
    fig = _new_figure(max(3.0, 0.42 * nmeth + 0.9) * ncol, 2.5 * nrow + (0.3 if spec.title else 0))
    if spec.title:
        fig.suptitle(spec.title, fontsize=9)
    rng = np.random.default_rng(0)
    sources: list[dict[str, Any]] = []
    for i, ds in enumerate(spec.datasets):
        chosen = per_ds[ds]
        for j, metric in enumerate(spec.metrics):
            ax = fig.add_subplot(nrow, ncol, i * ncol + j + 1)
            data, labels, colors = [], [], []
            for c in chosen:
                values: dict[str, list[float]] = {}
                for rec in c.runs:
                    rows = _per_image(rec.run_dir)
                    if rows and metric not in rows[0]:
                        continue
                    for r in rows:
                        values.setdefault(r["id"], []).append(_float(r[metric]))
                    sources.append(_source_row(spec, panel=f"{ds}/{metric}", row=c.row.key, label=c.row.label,
                                               dataset=ds, metric=metric, value=rec.metrics[metric].mean
                                               if metric in rec.metrics else "", **_run_fields(rec)))
                if not values:
                    notes.append(f"{c.row.label} on {ds}: runs have no {metric} column")
                    continue
                data.append(np.array([np.mean(v) for _, v in sorted(values.items())], dtype=float))
                labels.append(c.row.label)
                colors.append(c.color)
            if not data:
                ax.text(0.5, 0.5, f"no {metric} values", transform=ax.transAxes, ha="center", va="center")
                ax.set_axis_off()
                continue
            pos = np.arange(1, len(data) + 1)
            finite = [d[np.isfinite(d)] for d in data]
            bp = ax.boxplot(finite, positions=pos, widths=0.55, showfliers=False, patch_artist=True,
                            medianprops={"color": "black", "lw": 0.9}, whiskerprops={"lw": 0.7},
                            capprops={"lw": 0.7}, boxprops={"lw": 0.7})
            for patch, col in zip(bp["boxes"], colors):
                patch.set_facecolor(col)
                patch.set_alpha(0.35)
            for p, d, col in zip(pos, finite, colors):
                jitter = rng.uniform(-0.16, 0.16, size=len(d))
                ax.scatter(p + jitter, d, s=7, color=col, alpha=0.85, lw=0, zorder=3)
                if len(d):
                    ax.scatter([p], [float(np.mean(d))], marker="D", s=16, color="white", edgecolor="black",
                               lw=0.7, zorder=4)
            ax.set_xticks(pos, labels, rotation=40, ha="right", rotation_mode="anchor")
            n_img = sorted({len(d) for d in finite})
            ax.set_title(f"{spec.table.dataset_label(ds)}: {_metric_label(spec, metric)} per image "
                         f"(n = {', '.join(map(str, n_img))})")
            ax.grid(axis="y", lw=0.3, alpha=0.5)
            ax.set_xlim(0.4, len(data) + 0.6)
    fig.tight_layout()
    return fig, sources, notes


# --- quality against cost -------------------------------------------------------------------------
def _table_runtime(cost: dict[str, dict[str, str]], method: str) -> tuple[float | None, set[str]]:
    """(median ms at the table's first size, {device}) of a method in the cost table, or (None, set())."""
    row = cost.get(method)
    size = next((k[3:] for k in (row or {}) if k.startswith("ms_") and not k.startswith("ms_iqr_")), None)
    t = _float(row.get(f"ms_{size}")) if row and size else math.nan
    if not math.isfinite(t):
        return None, set()
    return t, {f"{row.get('device') or '?'}, {size.replace('x', '×')}, cost table"}  # the axis label says so


def _cost(spec: FigureSpec) -> tuple[Any, list[dict[str, Any]], list[str]]:
    import numpy as np

    from .records import read_config

    from .cost_table import read_cost_table
    from .paths import results_root

    metric = spec.metrics[0]
    notes: list[str] = []
    legend_room = 0.0
    cost_path = results_root() / "tables" / "cost.csv"
    cost = read_cost_table(cost_path)          # `bench perf methods`: every method timed the same way
    fallback: list[str] = []
    points: dict[str, list[dict[str, Any]]] = {}
    sources: list[dict[str, Any]] = []
    for ds in spec.datasets:
        chosen, n = choose(spec, ds)
        notes += n
        pts = []
        for c in chosen:
            runs = [r for r in c.runs if metric in r.metrics]
            if not runs:
                continue
            params = {int(read_config(r.run_dir / "config.yaml").get("trainable_parameters") or 0) for r in runs}
            median, devices = _table_runtime(cost, c.row.method)
            runtime_source = "cost table" if median is not None else "runs"
            if median is None:                     # not in the cost table: the runs' own per-image times
                times = []
                for rec in runs:
                    for r in _per_image(rec.run_dir):
                        t = _float(r.get("runtime_ms"))
                        if math.isfinite(t):
                            times.append(t)
                        if r.get("device"):
                            devices.add(r["device"].split(":")[0])
                median = float(np.median(times)) if times else math.nan
                if "runtime" in spec.x:
                    fallback.append(c.row.label)
            value = float(np.mean([r.metrics[metric].mean for r in runs]))
            pts.append({"label": c.row.label, "color": c.color, "group": c.row.group, "value": value, "params": max(params),
                        "runtime": median, "devices": devices})
            for rec in runs:
                sources.append(_source_row(spec, panel=ds, row=c.row.key, label=c.row.label, dataset=ds,
                                           metric=metric, value=rec.metrics[metric].mean,
                                           trainable_parameters=max(params), runtime_ms_median=median,
                                           runtime_source=runtime_source, device=";".join(sorted(devices)),
                                           **_run_fields(rec)))
        points[ds] = pts
    if fallback:
        notes.append(f"runtimes of {', '.join(sorted(set(fallback)))} are the runs' own per-image times, not the "
                     f"cost table ({cost_path} has no such rows; `bench perf methods` measures every method alike)")
    if not any(points.values()):
        raise BenchError(f"figure {spec.name}: no complete runs with {metric} on {', '.join(spec.datasets)} "
                         f"(profile {spec.profile} or better); make them with `bench reproduce {spec.table.name} "
                         f"--datasets {','.join(spec.datasets)} --profile {spec.profile}`")
    nrow, ncol = len(spec.datasets), len(spec.x)
    fig = _new_figure(3.2 * ncol, 2.6 * nrow + (0.3 if spec.title else 0))
    if spec.title:
        fig.suptitle(spec.title, fontsize=9)
    for i, ds in enumerate(spec.datasets):
        pts = points[ds]
        for j, axis in enumerate(spec.x):
            ax = fig.add_subplot(nrow, ncol, i * ncol + j + 1)
            key = "params" if axis == "parameters" else "runtime"
            shown = [p for p in pts if math.isfinite(p[key])]
            for p in shown:
                ax.scatter([p[key]], [p["value"]], s=22, color=p["color"], edgecolor="black", lw=0.4, zorder=3)
                ax.annotate(p["label"], (p[key], p["value"]), xytext=(4, 3), textcoords="offset points", fontsize=6.5)
            if axis == "parameters":
                _parameter_axis(ax, max([p["params"] for p in shown] or [0]))
            else:
                if shown and min(p[key] for p in shown) > 0:
                    ax.set_xscale("log")
                devices = sorted(set().union(*[p["devices"] for p in shown])) if shown else []
                if len(devices) > 1:
                    notes.append(f"{ds}: runtimes were measured on different devices ({', '.join(devices)})")
                ax.set_xlabel(f"median runtime per image (ms, {' / '.join(devices) or 'device unknown'})")
            ax.set_ylabel(f"{_metric_label(spec, metric)} (mean over seeds)")
            ax.set_title(f"{spec.table.dataset_label(ds)}: {spec.table.metric_label(metric)} against "
                         f"{'parameters' if axis == 'parameters' else 'runtime'}")
            ax.grid(lw=0.3, alpha=0.5)
            if i == 0 and j == 0:
                groups = {p["group"]: p["color"] for p in shown}
                if len(groups) > 1:
                    from matplotlib.lines import Line2D

                    # below the panels: inside them it hides points
                    fig.legend([Line2D([], [], ls="", marker="o", color=c, markeredgecolor="black", markersize=4)
                                for c in groups.values()], list(groups), loc="lower center", frameon=False,
                               fontsize=6.5, ncol=min(3, len(groups)))
                    legend_room = 0.13
            if shown:
                lo, hi = min(p["value"] for p in shown), max(p["value"] for p in shown)
                pad = max(0.08 * (hi - lo), 0.02 * max(abs(hi), 1e-3))
                ax.set_ylim(lo - pad, hi + 2 * pad)
    fig.tight_layout(rect=(0, legend_room, 1, 1))
    return fig, sources, notes


def _parameter_axis(ax: Any, largest: int) -> None:
    """Symmetric-log x axis from 0 (methods without learned weights) up past the largest model."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    top = 10 ** max(5, math.ceil(math.log10(max(largest, 1))) + 1)
    ax.set_xscale("symlog", linthresh=1e3, linscale=0.5)
    ax.set_xlim(-400, top)
    ticks = [0.0] + [10.0 ** k for k in range(3, int(round(math.log10(top))) + 1)]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.xaxis.set_major_formatter(FuncFormatter(_si))
    ax.set_xlabel("trainable parameters (0: no learned weights)")


def _si(x: float, _pos: Any = None) -> str:
    if x == 0:
        return "0"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:g}{suffix}"
    return f"{x:g}"


# --- entry points ---------------------------------------------------------------------------------
def render(spec: FigureSpec, out: Path) -> tuple[list[Path], list[str]]:
    """Draw ``spec`` into ``out``: ``[pdf, png, sources.csv]`` and notes on what was left out."""
    from .fsutil import check_writable, write_text

    out = check_writable(out)
    with _Style():
        fig, sources, notes = {"grid": _grid, "distribution": _distribution, "cost": _cost}[spec.kind](spec)
        files = save(fig, out, spec.name, spec.dpi)
    write_text(out / f"{spec.name}.sources.csv", _sources_csv(sources))
    return files + [out / f"{spec.name}.sources.csv"], notes


def _split_list(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add the ``figure`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    kw: dict[str, Any] = dict(
        help="draw the paper's figures from runs (grids, per-image distributions, quality vs cost)",
        description="Draw figures from complete runs, as specified in manifests/figures/NAME.yaml, into\n"
                    "<results>/figures as PDF and PNG, with NAME.sources.csv naming every run behind them.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p = add_subcommand(subparsers, "figure", parents, **kw)
    p.add_argument("names", nargs="*", metavar="NAME", help="figure spec names (manifests/figures/NAME.yaml), or all")
    p.add_argument("--list", action="store_true", help="list the figure specs")
    p.add_argument("--profile", choices=["smoke", "quick", "paper"], help="lowest profile admitted")
    p.add_argument("--datasets", nargs="+", metavar="NAME", help="datasets instead of the spec's")
    p.add_argument("--seeds", nargs="+", metavar="SEED", help="seeds admitted (default: the spec's)")
    p.add_argument("--images", nargs="+", metavar="ID", help="grid: image IDs instead of the spec's")
    p.add_argument("--spec", type=Path, metavar="YAML", help="a figure spec file instead of NAME")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: <results>/figures)")
    p.set_defaults(fn=cmd_figure)
    return p


def cmd_figure(args: argparse.Namespace) -> int:
    from .paths import results_root

    if getattr(args, "list", False):
        from .fsutil import read_yaml

        for name in figure_names():
            doc = read_yaml(figure_dir() / f"{name}.yaml") or {}
            print(f"{name:<24} {doc.get('kind', '?'):<13} {' '.join(str(doc.get('title', '')).split())}")
        return 0
    names = list(getattr(args, "names", None) or [])
    if names == ["all"]:
        names = figure_names()
    specs_from = [(None, Path(args.spec))] if getattr(args, "spec", None) else [(n, None) for n in names]
    if not specs_from:
        raise BenchError("name a figure (bench figure --list shows them) or pass --spec YAML")
    seeds = _split_list(getattr(args, "seeds", None))
    try:
        seeds_i = None if seeds is None else [int(s) for s in seeds]
    except ValueError:
        raise BenchError(f"--seeds takes integers, got {' '.join(seeds or [])!r}") from None
    out = Path(args.out) if getattr(args, "out", None) else results_root() / "figures"
    failed = []
    for name, path in specs_from:
        try:
            spec = load_figure_spec(name, path, _split_list(getattr(args, "datasets", None)),
                                    getattr(args, "profile", None), seeds_i,
                                    _split_list(getattr(args, "images", None)))
            files, notes = render(spec, out)
        except BenchError as e:
            if len(specs_from) == 1:
                raise
            print(f"bench: error: {name}: {e}", file=sys.stderr)  # the other figures still get drawn
            failed.append(str(name))
            continue
        for note in notes:
            print(f"bench: note: {spec.name}: {note}", file=sys.stderr)
        print("wrote " + ", ".join(str(f) for f in files))
    if failed:
        raise BenchError(f"{len(failed)} of {len(specs_from)} figure(s) not drawn: {', '.join(failed)} (see above)")
    return 0

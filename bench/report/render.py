"""Plain-text renderers of a :class:`TableData`: tidy CSV, sources CSV, Markdown and the comparison view."""

from __future__ import annotations

import math
from typing import Any

from .collect import TableData

MISSING = "–"
# flag -> (Markdown symbol, LaTeX symbol, explanation)
MARKS: dict[str, tuple[str, str, str]] = {
    "profile": ("†", r"\dag", "not the paper schedule: a quick or smoke profile run, or a --limit (smoke) subset"),
    "substitute": ("‡", r"\ddag", "a substitute stood in for an original component (protocol.faithful: false, "
                   "e.g. DSN's fallback encoder instead of VGG-16); see the sources file"),
    "partial": ("§", r"\S", "measured on a partial dataset (protocol.partial_dataset: true)"),
    "seeds": ("¶", r"\P", "fewer seeds than asked; the n column of the CSV says how many"),
}
CSV_FLOAT = "%.10g"


def isnan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt(x: Any, digits: int, signed: bool = False) -> str:
    if isnan(x):
        return MISSING
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if abs(x) < 0.5 * 10.0**-digits:
        x = 0.0  # no "-0.00"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def cell_text(r: dict[str, Any], data: TableData) -> tuple[str, str]:
    """(value text with ± std, marks) of one frame row; value is "–" when missing."""
    spec = data.spec
    digits = spec.decimals_for(r["metric"])
    signed = spec.kind == "delta"
    if isnan(r["mean"]):
        return MISSING, ""
    text = fmt(r["mean"], digits, signed)
    if spec.show_std and r["n"] >= 2 and not isnan(r["std"]):
        text += f" ± {fmt(r['std'], digits)}"
    return text, "".join(MARKS[f][0] for f in str(r["flags"]).split(";") if f)


def better(hib: Any) -> bool | None:
    """True/False from a frame cell (numpy bools included); None for no direction or unknown."""
    if hib is None or (isinstance(hib, float) and math.isnan(hib)):
        return None
    return bool(hib)


def arrow(hib: Any) -> str:
    return {True: "↑", False: "↓", None: ""}[better(hib)]


def columns(data: TableData) -> list[tuple[str, str]]:
    return [(ds, m) for ds in data.datasets for m in data.metrics]


def grid(data: TableData) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(row key, dataset, metric) -> frame row as a dict."""
    return {(r["row"], r["dataset"], r["metric"]): r for r in data.frame.to_dict("records")}


def header_label(data: TableData, ds: str, metric: str) -> str:
    hib = data.frame.loc[data.frame["metric"] == metric, "higher_is_better"]
    return f"{data.spec.dataset_label(ds)} {data.spec.metric_label(metric)}{arrow(hib.iloc[0] if len(hib) else None)}"


def used_flags(data: TableData) -> list[str]:
    seen = {f for fl in data.frame["flags"] for f in str(fl).split(";") if f}
    for ref in data.reference_cells.values():
        seen.update(ref["flags"])
    return [f for f in MARKS if f in seen]


def protocol_lines(data: TableData) -> list[str]:
    """The protocol card of the runs behind the table: shared values once, per-dataset values per dataset."""
    cards = {ds: card for ds, card in data.protocol.items() if card}
    if not cards:
        return ["Protocol: no runs."]
    per_ds_keys = ("dataset_version", "split_fingerprint", "n_images")
    shared: dict[str, str] = {}
    keys = sorted({k for card in cards.values() for k in card} - set(per_ds_keys))
    mixed = []
    for k in keys:
        vals = {v for card in cards.values() for v in card.get(k, [])}
        if len(vals) == 1:
            shared[k] = vals.pop()
        else:
            mixed.append(k)
    lines = ["Protocol: " + "; ".join(f"{k} {v}" for k, v in shared.items()) + "."]
    for ds, card in cards.items():
        bits = [f"{'/'.join(card.get('dataset_version', [ds]))} {data.spec.split} split"]
        if card.get("split_fingerprint"):
            bits.append("sha256 " + "/".join(v[:12] for v in card["split_fingerprint"]))
        if card.get("n_images"):
            bits.append("/".join(card["n_images"]) + " images")
        bits += [f"{k} {' | '.join(card[k])}" for k in mixed if k in card]
        lines.append(f"{data.spec.dataset_label(ds)}: " + ", ".join(bits) + ".")
    for ds, card in cards.items():
        for k, v in card.items():
            if len(v) > 1:
                lines.append(f"Warning: the runs behind {ds} differ in {k}: {' | '.join(v)}.")
    return lines


def selection_line(data: TableData) -> str:
    return (f"Cells: complete runs on the {data.spec.split} split, profile {data.profile} or better, "
            f"seeds {', '.join(map(str, data.seeds))} (deterministic methods: one run); latest run per seed; "
            f"mean ± std (ddof 1) over seeds.")


def footnotes(data: TableData, missing: str = "no admissible run (never filled in)",
              highlight: bool = True) -> list[str]:
    out = [f"{MARKS[f][0]} {MARKS[f][2]}." for f in used_flags(data)]
    out.append(f"{MISSING} {missing}.")
    if data.spec.highlight and highlight:
        ranked = [g for g in data.spec.groups if any(r.group == g and r.rank for r in data.spec.rows)]
        unranked = [g for g in data.spec.groups if g not in ranked]
        out.append("Bold: best, underlined: second best per column"
                   + (f" (not ranked: {', '.join(unranked)})" if unranked else "") + ".")
    return out


def reference_line(data: TableData) -> str:
    """For a delta table: the full model's absolute values the deltas are taken from."""
    if data.spec.kind != "delta":
        return ""
    bits = []
    for (ds, m), ref in data.reference_cells.items():
        digits = data.spec.decimals_for(m)
        val = fmt(ref["mean"], digits)
        if ref["n"] >= 2:
            val += f" ± {fmt(ref['std'], digits)}"
        marks = "".join(MARKS[f][0] for f in ref["flags"])
        bits.append(f"{data.spec.dataset_label(ds)} {m.upper()} {val}{marks} (n={ref['n']})")
    return f"Differences are from `{data.spec.reference_row}` (full model): " + "; ".join(bits) + "."


# --- Markdown --------------------------------------------------------------------------------------
def _md_value(r: dict[str, Any], data: TableData) -> str:
    text, marks = cell_text(r, data)
    if text != MISSING:
        if r["rank"] == 1:
            text = f"**{text}**"
        elif r["rank"] == 2:
            text = f"<u>{text}</u>"
    return text + marks


def markdown(data: TableData) -> str:
    from tabulate import tabulate

    spec, g = data.spec, grid(data)
    cols = columns(data)
    headers = ["Method"] + [header_label(data, ds, m) for ds, m in cols]
    body = []
    for group in spec.groups:
        body.append([f"*{group}*"] + [""] * len(cols))
        for row in (r for r in spec.rows if r.group == group):
            body.append([row.label] + [_md_value(g[(row.key, ds, m)], data) for ds, m in cols])
    parts = [f"## {spec.title or spec.name}", "", spec.caption, "",
             tabulate(body, headers=headers, tablefmt="github", disable_numparse=True, colalign=("left",) +
                      ("right",) * len(cols)), ""]
    ref = reference_line(data)
    lines = footnotes(data) + ([ref] if ref else []) + [selection_line(data)] + protocol_lines(data)
    lines += [f"{spec.dataset_label(ds)}: not the paper's test images ({spec.paper_column(ds)[1] or 'see the spec'})"
              f"; compare with the published column at your own risk (verdicts in {spec.name}.compare.md)."
              for ds in data.datasets if spec.paper_column(ds)[0] and not spec.comparable(ds)]
    parts += [f"- {t}" for t in lines]
    if data.notes:
        parts += ["", "Notes:", ""] + [f"- {n}" for n in data.notes]
    return "\n".join(parts) + "\n"


def compare_markdown(data: TableData) -> str:
    """Each measured cell beside the published value and the difference (measured − published)."""
    from tabulate import tabulate

    spec, g = data.spec, grid(data)
    cols = columns(data)
    headers = ["Method", "Weights"]
    for ds, m in cols:
        base = header_label(data, ds, m)
        headers += [f"{base} ours", f"{base} paper", f"{base} Δ", f"{base} verdict"]
    body = []
    for group in spec.groups:
        body.append([f"*{group}*", ""] + [""] * (4 * len(cols)))
        for row in (r for r in spec.rows if r.group == group):
            weights = sorted({w for ds, m in cols for w in str(g[(row.key, ds, m)].get("weights") or "").split("; ")
                              if w})
            line = [row.label, "; ".join(weights) or MISSING]
            for ds, m in cols:
                r = g[(row.key, ds, m)]
                digits = spec.decimals_for(m)
                text, marks = cell_text(r, data)
                pub_digits = digits if isnan(r["published_decimals"]) else int(r["published_decimals"])
                line += [text + marks, fmt(r["published"], pub_digits, spec.kind == "delta"),
                         fmt(r["delta_vs_paper"], digits, True), r.get("verdict") or MISSING]
            body.append(line)
    mapping = []
    for ds in data.datasets:
        col, caveat = spec.paper_column(ds)
        if not col:
            mapping.append(f"- {ds}: no published column to compare with (verdicts: not comparable)")
            continue
        same = spec.comparable(ds)
        mapping.append(f"- {ds}: compared with the paper's {col} column" + (f" ({caveat})" if caveat else "")
                       + ("" if same else "; **not the paper's test images, so no cell here gets a "
                          "reproduction verdict**"))
    what = "difference of differences" if spec.kind == "delta" else "measured − published"
    parts = [f"## {spec.title or spec.name} (measured vs published)", "",
             f"Published values from `{_rel(spec.reference)}`; Δ = {what}.", ""] + mapping + [
        "", tabulate(body, headers=headers, tablefmt="github", disable_numparse=True,
                     colalign=("left", "left") + ("right", "right", "right", "left") * len(cols)), ""]
    lines = [data.rule.caption(data.metrics, {"psnr": " dB", "psnr_y": " dB"})] if data.rule else []
    lines += footnotes(data, "not measured (no admissible run), or not published", highlight=False)
    lines.append("Weights: `trained here` by this harness's training command, `user file` given with --weights, "
                 "`no learned weights` for classical methods; the authors' released checkpoints never enter "
                 "this table (`bench report table1-official`).")
    lines.append(selection_line(data))
    lines += protocol_lines(data)
    parts += [f"- {t}" for t in lines]
    return "\n".join(parts) + "\n"


def _rel(path) -> str:
    from ..paths import REPO_ROOT

    if path is None:
        return "(none)"
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


# --- CSV -------------------------------------------------------------------------------------------
def tidy_csv(data: TableData) -> str:
    frame = data.frame.drop(columns=["rankable"])
    return frame.to_csv(index=False, float_format=CSV_FLOAT, lineterminator="\n")


def sources_csv(data: TableData) -> str:
    return data.sources.to_csv(index=False, float_format=CSV_FLOAT, lineterminator="\n")

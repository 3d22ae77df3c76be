"""The cost table (``results/tables/cost.{csv,md,tex}``) from ``bench perf methods``'s per-method results, and
its reader for the quality-against-cost figure."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from .fsutil import write_text

PER_SIZE = ("macs", "macs_conv_linear", "ms", "ms_iqr", "peak_mib", "runs")
TAIL = ["device", "threads", "torch", "precision", "peak_memory", "adapter_version"]


def sizes_of(results: list[dict[str, Any]]) -> list[str]:
    """The measured sizes ("600x400", width first), in the order asked (the JSON files sort their keys)."""
    asked = [f"{w}x{h}" for r in results for h, w in (r.get("settings") or {}).get("sizes", [])]
    return list(dict.fromkeys(asked + [size for r in results for size in r.get("sizes", {})]))


def columns(sizes: list[str]) -> list[str]:
    return ["method", "display", "family", "params"] + [f"{k}_{s}" for s in sizes for k in PER_SIZE] + TAIL


def rows(results: list[dict[str, Any]], machine: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        row: dict[str, Any] = {"method": r["method"], "display": r["display"], "family": r["family"],
                               "params": r["params"], "device": machine.get("gpu") or machine["device"],
                               "threads": r.get("threads"), "torch": machine.get("torch"),
                               "precision": ";".join(f"{k}={v}" for k, v in sorted(r.get("precision", {}).items())),
                               "adapter_version": r.get("version")}
        for size, s in r.get("sizes", {}).items():
            row[f"macs_{size}"] = s.get("macs")
            row[f"macs_conv_linear_{size}"] = (s["macs_conv"] + s["macs_linear"]) if "macs_conv" in s else None
            row[f"ms_{size}"] = s.get("ms_median")
            row[f"ms_iqr_{size}"] = s.get("ms_iqr")
            row[f"runs_{size}"] = s.get("runs")
            row[f"peak_mib_{size}"] = None if s.get("peak_bytes") is None else s["peak_bytes"] / 2**20
            row["peak_memory"] = s.get("peak_method")
        out.append(row)
    return out


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


def _g(x: Any) -> str:
    return f"{x / 1e9:.2f}" if _num(x) else "–"


def _ms(med: Any, iqr: Any) -> str:
    if not _num(med):
        return "–"
    digits = 0 if med >= 100 else 1 if med >= 10 else 2
    return f"{med:.{digits}f} ± {iqr:.{digits}f}" if _num(iqr) else f"{med:.{digits}f}"


def _params(x: Any) -> str:
    return f"{x / 1e6:.3f} M" if _num(x) and x else "0"


def _mib(x: Any) -> str:
    return f"{x:.0f}" if _num(x) else "–"


def csv_text(table: list[dict[str, Any]], sizes: list[str]) -> str:
    buf = io.StringIO()
    cols = columns(sizes)
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in table:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r[k]))
                    for k in cols})
    return buf.getvalue()


def _x(size: str) -> str:
    return size.replace("x", "×")


def _caption(machine: dict[str, Any], table: list[dict[str, Any]], sizes: list[str]) -> list[str]:
    where = machine.get("gpu") or f"{machine.get('cpu')} ({machine.get('cpus')} CPUs)"
    runs = sorted({str(r.get(f"runs_{s}")) for r in table for s in sizes if r.get(f"runs_{s}")})
    return [
        f"Measured on {where}, torch {machine.get('torch')}, {machine.get('threads')} torch threads, one method at "
        f"a time, each in a fresh process; default configs, random initial weights.",
        f"Params: trainable parameters of the built network. GMACs per {_x(sizes[0]) if sizes else ''} image: PyTorch's FlopCounterMode "
        "(convolutions and matrix products, attention included; no elementwise work), and the convolution + "
        "nn.Linear part, comparable with thop-style module counters. NumPy methods (LIME, EFF) have none.",
        f"Latency: `bench run`'s enhancement call (pad, inference, quantise) after one warm-up pass; median ± IQR "
        f"over {'/'.join(runs) or '?'} timed passes (3 when a method needs over a minute). Peak: memory one pass "
        f"needed above what the process held before it ({table[0].get('peak_memory') if table else '?'}).",
    ]


def _cells(r: dict[str, Any], sizes: list[str]) -> list[str]:
    """Params, then per size: GMACs (first size: also the conv+linear part), latency, peak."""
    cells = [_params(r["params"])]
    for i, s in enumerate(sizes):
        cells.append(_g(r.get(f"macs_{s}")))
        if i == 0:
            cells.append(_g(r.get(f"macs_conv_linear_{s}")))
        cells += [_ms(r.get(f"ms_{s}"), r.get(f"ms_iqr_{s}")), _mib(r.get(f"peak_mib_{s}"))]
    return cells


def _headers(sizes: list[str], times: str = "×") -> list[str]:
    out = ["Params"]
    for i, s in enumerate(sizes):
        x = s.replace("x", times)
        out.append(f"GMACs {x}")
        if i == 0:
            out.append("conv+linear GMACs")
        out += [f"ms {x}", f"peak MiB {x}"]
    return out


def markdown(table: list[dict[str, Any]], machine: dict[str, Any], sizes: list[str]) -> str:
    from tabulate import tabulate

    body = [[r["display"]] + _cells(r, sizes) for r in table]
    headers = ["Method"] + _headers(sizes)
    text = tabulate(body, headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=("left",) + ("right",) * (len(headers) - 1))
    lines = _caption(machine, table, sizes)
    return "\n".join(["## Cost of each method", "", text, ""] + [f"- {c}" for c in lines]) + "\n"


def tex(table: list[dict[str, Any]], machine: dict[str, Any], sizes: list[str]) -> str:
    from .report.latex import escape

    headers = ["Method"] + _headers(sizes, "$\\times$")
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "r" * (len(headers) - 1) + "}",
             r"\toprule", " & ".join(h if "$" in h else escape(h) for h in headers) + r" \\", r"\midrule"]
    for r in table:
        cells = [escape(r["display"])] + [escape(c) for c in _cells(r, sizes)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              r"\caption{" + escape(" ".join(_caption(machine, table, sizes)).replace("`", "")) + "}",
              r"\label{tab:cost}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_cost_table(results: list[dict[str, Any]], machine: dict[str, Any], out: Path) -> list[Path]:
    table, sizes = rows(results, machine), sizes_of(results)
    files = {"cost.csv": csv_text(table, sizes), "cost.md": markdown(table, machine, sizes),
             "cost.tex": tex(table, machine, sizes)}
    for name, text in files.items():
        write_text(out / name, text)
    return [out / n for n in files]


def read_cost_table(path: Path) -> dict[str, dict[str, str]]:
    """method -> row of a written ``cost.csv`` ({} when there is none)."""
    from .fsutil import read_text

    if not path.is_file():
        return {}
    return {r["method"]: r for r in csv.DictReader(io.StringIO(read_text(path, "cost table")))}

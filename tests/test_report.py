"""`bench report table1|table2`: selection of runs, aggregation, marks, and the CSV/Markdown/LaTeX renderings.

The run directories are fabricated in tmp in the schema `bench run` writes (config.yaml, metrics.csv,
per_image.csv, DONE). The renderings of a fixed set of them are compared with files in tests/golden/;
after an intended change of the output, regenerate those with

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_report.py tests/test_study_stats.py

and review the diff of tests/golden/ before committing it.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.cli import build_parser
from bench.errors import BenchError
from bench.paths import REPO_ROOT, results_root
from bench.report import cmd_report, register
from bench.report.latex import check_balanced, standalone

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
SMALL = GOLDEN / "small.yaml"
FINISHED = "2026-01-0{}T00:00:00+00:00"


# --- fabricated runs -------------------------------------------------------------------------------
def make_run(dataset: str, method: str, values: dict[str, float], *, seed: int = 0, profile: str = "paper",
             limit: int | None = None, trainable: bool = True, variant: str | None = None, faithful: bool | None = None,
             partial: bool = False, version: int | dict[str, int] = 1, day: int = 1, run_id: str | None = None,
             done: bool = True, split: str = "test", n: int = 4) -> Path:
    """Write one run directory as `bench run` does; ``values`` are the metrics' means."""
    run_id = run_id or f"{method}-{variant or 'x'}-{seed}-{profile}-{limit}-{day}".replace(":", "-")
    d = results_root() / "runs" / dataset / method / run_id
    d.mkdir(parents=True)
    config = {} if variant is None else {"variant": variant}
    protocol = {"dataset_version": f"{dataset}@1", "split": split, "split_fingerprint": "ab" * 32, "n_images": n,
                "resolution_rule": "native", "gt_format": "PNG", "quantisation": "clamp, x255, round half-even, PNG",
                "psnr_space": "RGB", "ssim_impl": "wang_rgb_mean", "gt_mean": "off", "tta": "off",
                "checkpoint": {"source": "none"}, "trained_on": None, "selected_on": None, "fivek_input_mode": None,
                "partial_dataset": partial}
    if faithful is not None:
        protocol["faithful"] = faithful
    doc = {"run_id": run_id, "method": method, "display_name": method, "family": "supervised", "method_version": 1,
           "trainable": trainable, "config": config, "profile": profile, "seed": seed, "dataset": dataset,
           "split": split, "limit": limit, "smoke": limit is not None or profile == "smoke",
           "metrics": list(values), "weights": {"source": "none"}, "trainable_parameters": 0, "protocol": protocol,
           "identity": {"method": method, "seed": seed, "profile": profile}}
    (d / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    lower = {"lpips"}
    with open(d / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["metric", "mean", "std", "stderr", "n", "higher_is_better", "metric_version"])
        for m, v in values.items():
            ver = version.get(m, 1) if isinstance(version, dict) else version
            w.writerow([m, repr(float(v)), "0.5", "0.25", n, m not in lower, ver])
    with open(d / "per_image.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "height", "width", "runtime_ms", "device", "output_sha256", "gt_sha256", *values])
        for i in range(n):
            off = 0.1 * (i - (n - 1) / 2)
            w.writerow([f"img{i}", 8, 8, "1.0", "cpu", "0" * 64, "1" * 64, *(repr(v + off) for v in values.values())])
    if done:
        (d / "DONE").write_text(f'{{"finished": "{FINISHED.format(day)}", "n_images": {n}}}\n')
    return d


def small_runs() -> None:
    """The fixed synthetic set behind the golden files of the `small` spec."""
    for ds, base in (("lol", 0.0), ("fivek", 2.0)):
        make_run(ds, "identity", {"psnr": 7.77 + base, "ssim": 0.191, "lpips": 0.05}, trainable=False)
    make_run("lol", "lime", {"psnr": 16.9, "ssim": 0.55, "lpips": 0.3}, trainable=False)
    make_run("fivek", "lime", {"psnr": 14.3, "ssim": 0.73, "lpips": 0.3}, trainable=False, profile="quick")
    for s, (p, q) in enumerate([(13.0, 0.47), (13.2, 0.48), (13.4, 0.49)]):
        make_run("lol", "zero-dce", {"psnr": p, "ssim": q, "lpips": 0.41}, seed=s)
        make_run("fivek", "zero-dce", {"psnr": p - 0.7, "ssim": q + 0.2, "lpips": 0.4}, seed=s, partial=True)
    for s, (p, q) in enumerate([(19.5, 0.86), (19.6, 0.87), (19.7, 0.85)]):
        make_run("lol", "csrnet", {"psnr": p, "ssim": q, "lpips": 0.25}, seed=s, faithful=False)
        make_run("fivek", "csrnet", {"psnr": p + 4.5, "ssim": 0.878, "lpips": 0.2}, seed=s, faithful=False)
    for s, (p, q) in enumerate([(20.6, 0.826), (20.7, 0.83)]):
        make_run("lol", "ours", {"psnr": p, "ssim": q, "lpips": 0.22}, seed=s, variant="no_rl")
        make_run("fivek", "ours", {"psnr": p + 2.7, "ssim": 0.888, "lpips": 0.19}, seed=s, variant="ours:no_rl")
    for s, (p, q) in enumerate([(21.7, 0.83), (21.8, 0.835), (21.9, 0.84)]):
        make_run("lol", "ours", {"psnr": p, "ssim": q, "lpips": 0.2}, seed=s, variant="full", day=3)
        make_run("fivek", "ours", {"psnr": p + 2.5, "ssim": 0.9, "lpips": 0.15}, seed=s, day=3)
    # never used: an older run of seed 0, an incomplete one, a --limit run and a smoke-profile run
    make_run("lol", "ours", {"psnr": 5.0, "ssim": 0.1, "lpips": 0.9}, seed=0, variant="full", day=1)
    make_run("lol", "ours", {"psnr": 99.0, "ssim": 0.99, "lpips": 0.01}, seed=1, variant="full", day=4, done=False)
    make_run("lol", "ours", {"psnr": 98.0, "ssim": 0.98, "lpips": 0.01}, seed=2, variant="full", day=5, limit=1)
    make_run("lol", "ours", {"psnr": 97.0, "ssim": 0.97, "lpips": 0.01}, seed=0, variant="full", day=6,
             profile="smoke")


def table2_runs() -> None:
    for s, (p, q) in enumerate([(21.7, 0.83), (21.8, 0.835), (21.9, 0.84)]):
        make_run("lol", "ours", {"psnr": p, "ssim": q}, seed=s, variant="full", day=2)
        make_run("lol", "ours", {"psnr": p - 1.0 + 0.05 * s, "ssim": q - 0.02}, seed=s, variant="l1_loss", day=2)
    for s in (0, 1):
        make_run("lol", "ours", {"psnr": 20.0 + 0.1 * s, "ssim": 0.81}, seed=s, variant="haar", day=2)
    make_run("lol", "ours", {"psnr": 20.6, "ssim": 0.83}, seed=0, variant="no_rl", day=2)
    make_run("lol", "ours", {"psnr": 21.9, "ssim": 0.845}, seed=1, variant="two_round_rl", day=2)  # better than ours


# --- helpers ---------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
    register(p.add_subparsers(dest="cmd", required=True), [quiet])
    return p


def report(*argv: str, out: Path | None = None) -> Path:
    out = out or results_root() / "tables"
    args = parser().parse_args(["report", *argv, "-q", "--out", str(out)])
    assert cmd_report(args) == 0
    return out


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"no golden file {path}; create it with UPDATE_GOLDEN=1 (see this module's docstring)"
    want = path.read_text(encoding="utf-8")
    if text != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True), f"golden/{name}", "now"))
        pytest.fail(f"{name} differs from its golden file (UPDATE_GOLDEN=1 to accept):\n{diff}")


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def cell(path: Path, row: str, dataset: str, metric: str) -> dict[str, str]:
    hits = [r for r in rows(path) if (r["row"], r["dataset"], r["metric"]) == (row, dataset, metric)]
    assert len(hits) == 1
    return hits[0]


def md_row(md: str, label: str) -> list[str]:
    for line in md.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if parts and parts[0] == label:
            return parts[1:]
    raise AssertionError(f"no row {label!r}")


# --- golden files ------------------------------------------------------------------------------------
def test_golden_small_table():
    small_runs()
    out = report("table1", "--spec", str(SMALL))
    for suffix in ("csv", "md", "tex", "sources.csv", "compare.md"):
        check_golden(f"small.{suffix}", (out / f"small.{suffix}").read_text(encoding="utf-8"))


def test_golden_table2_deltas():
    table2_runs()
    out = report("table2")
    for suffix in ("csv", "md", "tex", "sources.csv", "compare.md"):
        check_golden(f"table2.{suffix}", (out / f"table2.{suffix}").read_text(encoding="utf-8"))


# --- LaTeX ---------------------------------------------------------------------------------------------
def _compile(tex: str, tmp: Path) -> None:
    engine = shutil.which("tectonic") or shutil.which("pdflatex")
    if not engine:
        return
    src = tmp / "doc.tex"
    src.write_text(standalone(tex), encoding="utf-8")
    cmd = [engine, src.name] if "tectonic" in engine else [engine, "-interaction=nonstopmode", "-halt-on-error",
                                                            src.name]
    res = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_latex_is_balanced(tmp_path):
    small_runs()
    table2_runs()
    out = report("table1", "--spec", str(SMALL))
    report("table2")
    for name in ("small.tex", "table2.tex"):
        tex = (out / name).read_text(encoding="utf-8")
        assert check_balanced(tex) == [], name
        assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 1
        assert r"Ours \& variants" in tex or name == "table2.tex"
        assert not any(ord(ch) > 127 for ch in tex), "non-ASCII left in the LaTeX"


@pytest.mark.skipif(not (shutil.which("tectonic") or shutil.which("pdflatex")), reason="no pdflatex/tectonic on PATH")
def test_latex_compiles(tmp_path):
    small_runs()
    out = report("table1", "--spec", str(SMALL))
    _compile((out / "small.tex").read_text(encoding="utf-8"), tmp_path)


def test_balance_checker_catches_errors():
    assert check_balanced(r"\begin{table}{x}\end{table}") == []
    assert check_balanced(r"\begin{table}\textbf{x\end{table}")
    assert check_balanced(r"\begin{table}\end{tabular}")
    assert check_balanced(r"50\% \{ \}") == []


# --- highlighting ---------------------------------------------------------------------------------------
def test_bold_and_underline_higher_and_lower_is_better():
    small_runs()
    out = report("table1", "--spec", str(SMALL))
    csv_path = out / "small.csv"
    # PSNR (higher is better) on LOL: ours 21.80 best, w/o RL 20.65 second
    assert cell(csv_path, "ours", "lol", "psnr")["rank"] == "1"
    assert cell(csv_path, "ours:no_rl", "lol", "psnr")["rank"] == "2"
    # SSIM on LOL: CSRNet 0.860 beats ours 0.835 (like DRBN in the paper)
    assert cell(csv_path, "csrnet", "lol", "ssim")["rank"] == "1"
    assert cell(csv_path, "ours", "lol", "ssim")["rank"] == "2"
    # LPIPS (lower is better): Input's 0.05 is lowest but Input is not ranked; ours 0.20 best, w/o RL 0.22 second
    assert cell(csv_path, "identity", "lol", "lpips")["rank"] == "0"
    assert cell(csv_path, "ours", "lol", "lpips")["rank"] == "1"
    assert cell(csv_path, "ours:no_rl", "lol", "lpips")["rank"] == "2"
    assert cell(csv_path, "ours:no_rl", "lol", "lpips")["higher_is_better"] == "False"
    md = (out / "small.md").read_text(encoding="utf-8")
    assert "LOL LPIPS↓" in md and "LOL PSNR↑" in md
    ours = md_row(md, "ours")
    assert ours[0] == "**21.80 ± 0.10**" and ours[1] == "<u>0.835 ± 0.005</u>" and ours[2] == "**0.200 ± 0.000**"
    assert md_row(md, "Input")[2] == "0.050"
    tex = (out / "small.tex").read_text(encoding="utf-8")
    assert r"\textbf{21.80}\,{\scriptsize$\pm$0.10}" in tex
    assert r"\underline{0.835}" in tex and r"LPIPS$\downarrow$" in tex


def test_ties_share_the_rank():
    make_run("lol", "lime", {"psnr": 17.001}, trainable=False)
    make_run("lol", "zero-dce", {"psnr": 16.999}, trainable=False)
    make_run("lol", "csrnet", {"psnr": 15.0}, trainable=False)
    out = report("table1", "--spec", str(SMALL))
    assert [cell(out / "small.csv", k, "lol", "psnr")["rank"] for k in ("lime", "zero-dce", "csrnet")] == \
        ["1", "1", "2"]


# --- marks -------------------------------------------------------------------------------------------
def test_substitute_partial_and_seed_marks_in_all_formats():
    small_runs()
    out = report("table1", "--spec", str(SMALL))
    c = out / "small.csv"
    assert cell(c, "csrnet", "lol", "psnr")["flags"] == "substitute"
    assert cell(c, "zero-dce", "fivek", "psnr")["flags"] == "partial"
    assert cell(c, "ours:no_rl", "lol", "psnr")["flags"] == "seeds"
    assert cell(c, "lime", "lol", "psnr")["flags"] == ""  # deterministic: one run is all it needs
    assert cell(c, "ours", "lol", "psnr")["flags"] == ""
    md = (out / "small.md").read_text(encoding="utf-8")
    assert md_row(md, "CSRNet")[0] == "19.60 ± 0.10‡"
    assert md_row(md, "Zero-DCE")[3] == "12.50 ± 0.20§"
    assert md_row(md, "w/o RL")[0] == "<u>20.65 ± 0.07</u>¶"
    for sym in "‡§¶":
        assert any(line.startswith(f"- {sym} ") for line in md.splitlines()), sym
    tex = (out / "small.tex").read_text(encoding="utf-8")
    assert r"19.60\,{\scriptsize$\pm$0.10}\textsuperscript{\ddag}" in tex
    assert r"\textsuperscript{\S}" in tex and r"\textsuperscript{\P}" in tex
    assert r"\textsuperscript{\ddag} a substitute" in tex
    compare = (out / "small.compare.md").read_text(encoding="utf-8")
    assert "19.60 ± 0.10‡" in compare


def test_smoke_and_quick_runs_are_left_out_of_a_paper_report_and_marked_in_a_quick_one():
    small_runs()
    out = report("table1", "--spec", str(SMALL))
    c = out / "small.csv"
    lime_fivek = cell(c, "lime", "fivek", "psnr")
    assert lime_fivek["mean"] == "" and lime_fivek["n"] == "0"  # only a quick-profile run exists
    md = (out / "small.md").read_text(encoding="utf-8")
    assert "LIME on fivek: 1 complete run(s) not admitted (profiles: quick" in md
    assert cell(c, "ours", "lol", "psnr")["mean"] == "21.8"  # the --limit and smoke runs of ours are left out

    out = report("table1", "--spec", str(SMALL), "--profile", "quick", out=results_root() / "quick")
    c = out / "small.csv"
    lime_fivek = cell(c, "lime", "fivek", "psnr")
    assert lime_fivek["flags"] == "profile" and float(lime_fivek["mean"]) == pytest.approx(14.3)
    # paper runs still win over a --limit run where both exist
    assert cell(c, "ours", "lol", "psnr")["flags"] == "" and cell(c, "ours", "lol", "psnr")["mean"] == "21.8"
    md = (out / "small.md").read_text(encoding="utf-8")
    assert md_row(md, "LIME")[3] == "14.30†" and "- † not the paper schedule" in md
    assert r"14.30\textsuperscript{\dag}" in (out / "small.tex").read_text(encoding="utf-8")


def test_a_limit_run_alone_is_smoke_and_marked():
    make_run("lol", "lime", {"psnr": 10.0, "ssim": 0.5}, trainable=False, limit=2)
    out = report("table1", "--spec", str(SMALL))
    assert cell(out / "small.csv", "lime", "lol", "psnr")["mean"] == ""
    out = report("table1", "--spec", str(SMALL), "--profile", "smoke", out=results_root() / "smoke")
    got = cell(out / "small.csv", "lime", "lol", "psnr")
    assert got["flags"] == "profile" and got["profile"] == "paper smoke"


def test_missing_cells_are_shown_missing_never_filled():
    small_runs()
    out = report("table1", "--spec", str(SMALL), "--datasets", "lol,fivek,lol-485-15")
    c = out / "small.csv"
    miss = cell(c, "ours", "lol-485-15", "psnr")
    assert miss["mean"] == "" and miss["std"] == "" and miss["n"] == "0" and miss["flags"] == ""
    assert miss["published"] == "21.71" and miss["delta_vs_paper"] == ""
    md = (out / "small.md").read_text(encoding="utf-8")
    assert md_row(md, "ours")[-3:] == ["–", "–", "–"]
    assert "no complete runs at all for dataset lol-485-15" in md
    tex = (out / "small.tex").read_text(encoding="utf-8")
    assert tex.splitlines()[[i for i, line in enumerate(tex.splitlines()) if line.startswith("ours &")][0]].endswith(
        "& -- & -- & -- \\\\")
    compare = (out / "small.compare.md").read_text(encoding="utf-8")
    assert "lol-485-15: compared with the paper's LOL column (a different test split)" in compare
    # a row with no published value shows "–" in the paper column, and gets no reproduction verdict
    zero = md_row(compare, "Zero-DCE")
    assert zero[0] == "no learned weights" and zero[2] == "–" and zero[4] == "not comparable"
    assert md_row(compare, "ours")[-12:-8] == ["–", "21.71", "–", "–"]    # lol-485-15 PSNR: not measured


# --- versions, seeds, selection -------------------------------------------------------------------------
def test_mixed_metric_versions_in_a_column_are_refused():
    make_run("lol", "lime", {"psnr": 16.9, "ssim": 0.5}, trainable=False)
    make_run("lol", "zero-dce", {"psnr": 13.0, "ssim": 0.5}, trainable=False, version={"psnr": 2})
    with pytest.raises(BenchError, match=r"lol × psnr mixes metric versions \(version 1: LIME.*version 2: Zero-DCE"):
        report("table1", "--spec", str(SMALL))


def test_mixed_versions_across_seeds_of_one_cell_are_refused():
    make_run("lol", "zero-dce", {"psnr": 13.0}, seed=0)
    make_run("lol", "zero-dce", {"psnr": 13.2}, seed=1, version=2)
    with pytest.raises(BenchError, match="mixes metric versions"):
        report("table1", "--spec", str(SMALL))
    out = report("table1", "--spec", str(SMALL), "--seeds", "0")  # leaving the odd seed out is a way through
    assert cell(out / "small.csv", "zero-dce", "lol", "psnr")["metric_version"] == "1"


def test_seeds_are_aggregated_mean_std_n():
    small_runs()
    out = report("table1", "--spec", str(SMALL))
    got = cell(out / "small.csv", "zero-dce", "lol", "psnr")
    assert float(got["mean"]) == pytest.approx(13.2) and float(got["std"]) == pytest.approx(0.2)
    assert got["n"] == "3" and got["seeds"] == "0;1;2" and got["seeds_asked"] == "3" and got["n_images"] == "4"
    ours = cell(out / "small.csv", "ours", "lol", "ssim")
    assert float(ours["mean"]) == pytest.approx(0.835) and float(ours["std"]) == pytest.approx(0.005)
    # the latest complete run of seed 0 (day 3) is used, not the older one (day 1) nor the incomplete one
    src = [r for r in rows(out / "small.sources.csv") if r["row"] == "ours" and r["dataset"] == "lol"]
    assert [r["seed"] for r in src] == ["0", "1", "2"]
    assert all(r["finished"].startswith("2026-01-03") for r in src)
    assert src[0]["alternatives"] == "1" and src[0]["run_dir"].startswith("runs/lol/ours/")
    # --seeds: fewer seeds asked, no ¶
    out = report("table1", "--spec", str(SMALL), "--seeds", "0", "1", out=results_root() / "two")
    got = cell(out / "small.csv", "ours:no_rl", "lol", "psnr")
    assert got["n"] == "2" and got["flags"] == "" and float(got["std"]) == pytest.approx(math.sqrt(0.005))


def test_sources_name_every_run_behind_every_cell():
    small_runs()
    out = report("table1", "--spec", str(SMALL))
    src = rows(out / "small.sources.csv")
    tidy = rows(out / "small.csv")
    for r in tidy:
        n = int(r["n"])
        behind = [s for s in src if s["row"] == r["row"] and s["dataset"] == r["dataset"]]
        assert len(behind) == n or r["metric"] != "psnr"
        for s in behind:
            assert (results_root() / s["run_dir"] / "DONE").exists()


def test_variants_are_told_apart():
    make_run("lol", "ours", {"psnr": 21.0}, variant="full")
    make_run("lol", "ours", {"psnr": 20.0}, variant="ours:no_rl")
    make_run("lol", "ours", {"psnr": 19.0}, variant="haar")
    out = report("table1", "--spec", str(SMALL), "--seeds", "0")
    assert cell(out / "small.csv", "ours", "lol", "psnr")["mean"] == "21"
    assert cell(out / "small.csv", "ours:no_rl", "lol", "psnr")["mean"] == "20"


def test_a_run_without_variant_is_the_full_model():
    make_run("lol", "ours", {"psnr": 21.0})
    out = report("table1", "--spec", str(SMALL), "--seeds", "0")
    assert cell(out / "small.csv", "ours", "lol", "psnr")["mean"] == "21"
    assert cell(out / "small.csv", "ours:no_rl", "lol", "psnr")["mean"] == ""


def test_table2_deltas_pair_seeds_and_inherit_the_reference_marks():
    table2_runs()
    out = report("table2")
    c = out / "table2.csv"
    l1 = cell(c, "ours:l1_loss", "lol", "psnr")
    assert float(l1["mean"]) == pytest.approx(-0.95) and float(l1["std"]) == pytest.approx(0.05)
    assert float(l1["reference_mean"]) == pytest.approx(21.8) and l1["n_paired"] == "3"
    assert float(l1["published"]) == -0.98 and float(l1["delta_vs_paper"]) == pytest.approx(0.03)
    haar = cell(c, "ours:haar", "lol", "psnr")
    assert haar["flags"] == "seeds" and haar["n_paired"] == "2"
    assert cell(c, "ours:two_round_rl", "lol", "psnr")["rank"] == "1"  # +0.10: the best "drop"
    assert cell(c, "ours:resblk", "lol", "psnr")["mean"] == ""
    md = (out / "table2.md").read_text(encoding="utf-8")
    assert md_row(md, "L2 → L1 loss")[0] == "<u>-0.95 ± 0.05</u>" and "LOL ΔPSNR↑" in md
    assert "Differences are from `ours` (full model): LOL PSNR 21.80 ± 0.10 (n=3)" in md
    # a substitute full model marks every delta taken from it
    for d in (results_root() / "runs" / "lol" / "ours").iterdir():
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        if cfg["config"].get("variant") == "full":
            cfg["protocol"]["faithful"] = False
            (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = report("table2", out=results_root() / "sub")
    assert cell(out / "table2.csv", "ours:l1_loss", "lol", "psnr")["flags"] == "substitute"
    assert cell(out / "table2.csv", "ours:resblk", "lol", "psnr")["flags"] == ""


def test_protocol_goes_into_the_caption():
    small_runs()
    out = report("table1", "--spec", str(SMALL))
    tex = (out / "small.tex").read_text(encoding="utf-8")
    caption = next(line for line in tex.splitlines() if line.startswith(r"\caption{"))
    assert r"psnr\_space RGB" in caption and r"ssim\_impl wang\_rgb\_mean" in caption and "gt\\_mean off" in caption
    assert "LOL: lol@1 test split, sha256 abababababab, 4 images" in caption


# --- CLI -------------------------------------------------------------------------------------------------
def test_help_has_examples_and_choices(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["report", "--help"])
    text = capsys.readouterr().out
    assert "bench report table1 --datasets demo --profile paper" in text and "--votes" in text
    with pytest.raises(SystemExit):
        parser().parse_args(["report", "table9"])


def test_register_works_with_the_bench_cli_parser_wrapper():
    """bench.cli wraps add_parser to pass parents=[quiet] itself; register must not pass them twice."""
    args = build_parser().parse_args(["report", "table1", "-q", "--datasets", "demo", "lol", "--seeds", "0,1"])
    assert args.quiet and args.datasets == ["demo", "lol"] and args.fn is cmd_report


def test_cli_runs_when_bench_cli_has_the_command(capsys):
    from bench import cli

    try:
        cli.build_parser().parse_args(["report", "table1"])
    except SystemExit:
        pytest.skip("bench/cli.py does not register `report` yet")
    small_runs()
    assert cli.main(["report", "table1", "--spec", str(SMALL)]) == 0
    assert "| LIME" in capsys.readouterr().out


def test_table3_without_votes_is_a_clear_error():
    with pytest.raises(BenchError, match="needs --votes FILE"):
        report("table3")


def test_unknown_profile_and_bad_seeds():
    with pytest.raises(SystemExit):
        parser().parse_args(["report", "table1", "--profile", "full"])
    with pytest.raises(BenchError, match="--seeds takes integers"):
        report("table1", "--seeds", "a")


# --- the real specs and published numbers ---------------------------------------------------------------------
HARNESS = {"identity", "lime", "eff", "zero-dce", "retinexnet", "enlightengan", "drbn", "kind", "hdrnet", "dpe",
           "distort-recover", "white-box", "csrnet", "deepupe", "deeplpf", "ours"}
VARIANTS = ["l1_loss", "psnr_loss", "one_way", "no_attention", "resblk", "se_resblk", "densenet", "no_rl",
            "two_round_rl", "four_ib", "haar"]


def test_table1_spec_and_reference_agree():
    from bench.report.spec import load_spec, published_values

    spec = load_spec("table1")
    assert [r.method for r in spec.rows if r.method not in HARNESS] == []
    assert spec.datasets == ["lol", "fivek"] and spec.metrics == ["psnr", "ssim"]
    groups = {g: [r.key for r in spec.rows if r.group == g] for g in spec.groups}
    assert list(groups.values())[1:] == [
        ["zero-dce", "retinexnet", "lime", "enlightengan", "eff", "drbn", "kind"],
        ["hdrnet", "dpe", "distort-recover", "white-box", "csrnet"], ["deepupe", "deeplpf"], ["ours:no_rl", "ours"]]
    pub = published_values(spec)
    assert len(pub) == 16 * 4
    assert {k[0] for k in pub} == {r.key for r in spec.rows} - {"identity"}
    assert pub[("ours", "LOL", "psnr")] == (21.71, 2) and pub[("ours", "FiveK", "ssim")] == (0.9, 3)
    assert pub[("deeplpf", "LOL", "psnr")][0] == 16.58  # the corrected row
    # the paper's claims: ours best except SSIM on LOL, where DRBN (0.847) is
    for col, metric in (("LOL", "psnr"), ("FiveK", "psnr"), ("FiveK", "ssim")):
        assert max(pub, key=lambda k: pub[k][0] if k[1:] == (col, metric) else -1)[0] == "ours"
    assert max(pub, key=lambda k: pub[k][0] if k[1:] == ("LOL", "ssim") else -1)[0] == "drbn"


def test_table2_spec_and_reference_agree():
    from bench.report.spec import load_reference, load_spec

    spec = load_spec("table2")
    assert [r.key for r in spec.rows] == [f"ours:{v}" for v in VARIANTS]
    ref = load_reference(spec)
    assert len(ref) == 22 and {r["row"] for r in ref} == {f"ours:{v}" for v in VARIANTS}
    for r in ref:  # implied absolute values are the full model's LOL row plus the delta
        base = 21.71 if r["metric"] == "psnr" else 0.834
        assert float(r["implied_absolute"]) == pytest.approx(base + float(r["value"]))
    no_rl = {r["metric"]: float(r["implied_absolute"]) for r in ref if r["row"] == "ours:no_rl"}
    assert no_rl == {"psnr": 20.63, "ssim": 0.826}  # = the "w/o RL" row of Table 1


def test_table3_reference_counts_round_to_the_percentages():
    from bench.report.spec import load_reference, load_spec

    ref = load_reference(load_spec("table3"))
    for r in ref:
        assert f"{100 * int(r['implied_count']) / int(r['n_votes']):.2f}" == r["percent"]
    for g, n in (("expert", 250), ("amateur", 750)):
        assert sum(int(r["implied_count"]) for r in ref if r["rater_group"] == g) == n


def test_demo_runs_report(tmp_path, monkeypatch):
    """The real demo runs, when this checkout has them (read-only: the output goes to tmp)."""
    real = REPO_ROOT / "results"
    if not list((real / "runs" / "demo").glob("*/*/DONE")):
        pytest.skip("no demo runs in this checkout")
    monkeypatch.setenv("BENCH_RESULTS", str(real))
    out = report("table1", "--datasets", "demo", "--profile", "paper", out=tmp_path)
    md = (out / "table1.md").read_text(encoding="utf-8")
    assert "demo PSNR↑" in md and md_row(md, "ours") == ["–", "–"]


def test_tolerance_option_changes_the_verdicts_in_the_csv_and_the_caption():
    small_runs()
    out = report("table1", "--spec", str(SMALL))
    assert cell(out / "small.csv", "ours", "lol", "psnr")["verdict"] == "reproduced"      # +0.09 ≤ 0.3
    out = report("table1", "--spec", str(SMALL), "--tolerance", "psnr=0.05", out=results_root() / "t2")
    ours = cell(out / "small.csv", "ours", "lol", "psnr")
    assert ours["verdict"] == "within noise" and "2σ of 3 seeds" in ours["verdict_reason"]   # 2σ = 0.2
    assert "PSNR 0.05 dB" in (out / "small.compare.md").read_text(encoding="utf-8")

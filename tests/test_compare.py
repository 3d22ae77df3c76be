"""`bench compare` on real runs, its refusals, and the paired statistics of `bench report` (tableN.stats.*).

The runs of `bench compare` are made here with real cheap methods (identity and LIME on the demo set, built
once per module); the table runs are fabricated in the schema `bench run` writes (see tests/test_report.py).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bench.cli import main
from bench.paths import results_root
from test_paired_stats import _loop_percentile_ci, _solve


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def built_runs(tmp_path_factory, built_demo):
    """Real runs on the demo set: identity and LIME on test (2 images) and train (5), identity on 3 of train."""
    root = tmp_path_factory.mktemp("compare_runs")
    old = {k: os.environ.get(k) for k in ("BENCH_DATA", "BENCH_RESULTS")}
    os.environ["BENCH_DATA"] = str(root / "data")
    os.environ["BENCH_RESULTS"] = str(root / "results")
    shutil.copytree(built_demo, root / "data", dirs_exist_ok=True)
    try:
        from bench.run import RunSpec, execute

        runs = {
            "id_test": execute(RunSpec("identity", "demo", progress=False)).run_dir,
            "lime_test": execute(RunSpec("lime", "demo", progress=False)).run_dir,
            "id_train": execute(RunSpec("identity", "demo", split="train", progress=False)).run_dir,
            "lime_train": execute(RunSpec("lime", "demo", split="train", progress=False)).run_dir,
            "id_train3": execute(RunSpec("identity", "demo", split="train", limit=3, progress=False)).run_dir,
        }
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {k: v.relative_to(root / "results") for k, v in runs.items()}, root / "results"


@pytest.fixture
def runs(built_runs, demo):
    """This test's copies of the built runs, under its own $BENCH_RESULTS (the seals travel with them)."""
    rel, src = built_runs
    shutil.copytree(src, results_root(), dirs_exist_ok=True)
    return {k: results_root() / v for k, v in rel.items()}


def _values(run: Path, metric: str) -> dict[str, float]:
    return {r["id"]: float(r[metric]) for r in _rows(run / "per_image.csv")}


# --- bench compare end to end --------------------------------------------------------------------------
def test_compare_two_real_runs_end_to_end(runs, capsys, tmp_path):
    a, b = runs["id_train"], runs["lime_train"]
    out = tmp_path / "cmp" / "id-vs-lime"
    out.parent.mkdir()
    assert main(["-q", "compare", str(a), str(b), "--resamples", "3000", "--seed", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| metric | n | mean A | mean B | mean Δ | 95 % CI | Wilcoxon p | W/T/L | MDD@80 % |" in printed
    assert "A: identity (seed 0, weights none, run " in printed and "B: lime (seed 0" in printed
    assert "Δ = B − A per image" in printed and "3000 resamples, numpy default_rng seed 5" in printed
    doc = json.loads(out.with_name("id-vs-lime.json").read_text())
    assert doc["dataset"] == "demo" and doc["split"] == "train" and doc["n_images"] == 5
    assert doc["a"]["run_id"] == a.name and doc["b"]["method"] == "lime" and doc["b"]["weights_source"] == "none"
    for res in doc["results"]:
        m = res["metric"]
        va, vb = _values(a, m), _values(b, m)
        ids = list(va)
        d = np.array([vb[i] - va[i] for i in ids])
        assert res["n"] == 5 and res["mean_diff"] == pytest.approx(d.mean(), rel=1e-12)
        assert res["mean_a"] == pytest.approx(np.mean(list(va.values())), rel=1e-12)
        assert [res["ci_low"], res["ci_high"]] == pytest.approx(_loop_percentile_ci(d, 3000, 5), rel=1e-12)
        assert (res["wins"], res["ties"], res["losses"]) == (int((d > 0).sum()), int((d == 0).sum()),
                                                            int((d < 0).sum()))
        assert res["mdd"] == pytest.approx(_solve(5) * d.std(ddof=1), rel=1e-6)
        assert res["wilcoxon_p"] is None and "5 non-tied image(s) < 6" in res["wilcoxon_note"]  # 5 images only
        assert res["differences"] == pytest.approx({i: vb[i] - va[i] for i in ids})
        assert res["metric_version"] == "1" and res["resamples"] == 3000 and res["seed"] == 5
    csv_rows = _rows(out.with_name("id-vs-lime.csv"))
    assert [r["metric"] for r in csv_rows] == ["psnr", "ssim"]
    assert float(csv_rows[0]["mean_diff"]) == pytest.approx(doc["results"][0]["mean_diff"], rel=1e-15)
    assert out.with_name("id-vs-lime.md").read_text() == printed.split("wrote ")[0]


def test_compare_a_run_with_itself_is_all_ties(runs, capsys):
    a = runs["lime_test"]
    assert main(["-q", "compare", str(a), str(a), "--metric", "ssim"]) == 0
    text = capsys.readouterr().out
    assert "| 0/2/0 |" in text and "Wilcoxon p not computed: all differences are ties" in text


def test_compare_with_a_wilcoxon_p_on_the_real_lol_pairs(shared_data, fake_methods, capsys, tmp_path):
    """15 real LOL eval15 pairs: identity vs a gain of 3; the p is scipy's on the per-image differences."""
    from bench.data.prepare import prepare
    from bench.run import RunSpec, execute

    prepare("lol-485-15", shared_data / "lol_v1", split="test", progress=False)
    a = execute(RunSpec("identity", "lol-485-15", progress=False)).run_dir
    b = execute(RunSpec("gain", "lol-485-15", overrides={"gain": "3"}, progress=False)).run_dir
    out = tmp_path / "lol.json"
    assert main(["-q", "compare", str(a), str(b), "--metric", "psnr", "--out", str(out)]) == 0
    res = json.loads(out.read_text())["results"][0]
    va, vb = _values(a, "psnr"), _values(b, "psnr")
    d = np.array([vb[i] - va[i] for i in va])
    assert res["n"] == res["wilcoxon_n"] == 15 and res["wilcoxon_method"] == "exact"
    assert res["wilcoxon_p"] == pytest.approx(stats.wilcoxon(d, method="exact").pvalue, rel=1e-12)
    assert res["wins"] + res["losses"] == 15
    assert "(exact, n=15)" in capsys.readouterr().out


# --- refusals ----------------------------------------------------------------------------------------
def _refused(argv: list[str], capsys, pattern: str) -> str:
    assert main(["-q", "compare", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and pattern in err, err
    return err


def test_compare_refusals(runs, capsys):
    a, b = str(runs["id_train"]), str(runs["lime_train"])
    _refused([str(runs["id_test"]), b], capsys, "different data: A on demo:test, B on demo:train")
    err = _refused([str(runs["id_train3"]), b], capsys, "score different images: A has 3, B has 5")
    assert "'skimage-" in err and "only in B" in err
    _refused([a, b, "--metric", "psnr_y"], capsys, "metric psnr_y is not in run A")
    _refused([a, b, "--metric", "psnrr"], capsys, "did you mean 'psnr'")
    _refused([a, str(runs["id_train"].parent)], capsys, "is not a complete run (no DONE)")
    _refused([a, str(runs["id_train"] / "nope")], capsys, "is not a run directory")


def test_compare_refuses_an_incomplete_run_and_a_damaged_one(runs, capsys):
    partial = runs["lime_train"].with_name("unfinished")
    shutil.copytree(runs["lime_train"], partial)
    (partial / "DONE").unlink()
    _refused([str(runs["id_train"]), str(partial)], capsys, "not a complete run (no DONE)")
    per_image = runs["lime_train"] / "per_image.csv"
    per_image.write_text(per_image.read_text().replace("\n", "\r\n"))
    _refused([str(runs["id_train"]), str(runs["lime_train"])], capsys, "per_image.csv does not match the seal")


def test_compare_refuses_different_metric_versions(runs, capsys):
    from bench.records import reseal

    b = runs["lime_train"]
    metrics = b / "metrics.csv"
    lines = metrics.read_text().splitlines(True)
    lines[1] = lines[1].rsplit(",", 1)[0] + ",2\n"          # psnr re-scored by a newer metric version
    metrics.write_text("".join(lines))
    reseal(b)
    _refused([str(runs["id_train"]), str(b), "--metric", "psnr"], capsys,
             "metric psnr: run A has version 1, run B version 2")


def test_compare_bad_options(runs, capsys):
    a, b = str(runs["id_train"]), str(runs["lime_train"])
    _refused([a, b, "--resamples", "0"], capsys, "--resamples must be at least 1")
    _refused([a, b, "--tie-tolerance", "-1"], capsys, "tie tolerance")


# --- tableN.stats.{md,csv} -------------------------------------------------------------------------------
def _table_runs(rng) -> dict[tuple[str, int], dict[str, float]]:
    """Fabricated table runs with varied per-image PSNR on 8 images: ours (3 seeds), lime, zero-dce (2 seeds)."""
    from test_report import make_run

    ids = [f"img{i}" for i in range(8)]
    base = rng.normal(20, 2, size=8)
    made: dict[tuple[str, int], dict[str, float]] = {}
    plan = [("ours", s, 0.0, "full") for s in range(3)] + [("lime", 0, -0.8, None)] + \
        [("zero-dce", s, -0.05, None) for s in range(2)]
    for method, seed, shift, variant in plan:
        vals = base + shift + rng.normal(0, 0.4, size=8)
        d = make_run("lol", method, {"psnr": float(vals.mean())}, seed=seed, variant=variant, n=8,
                     trainable=method != "lime")
        with open(d / "per_image.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["id", "psnr"])
            w.writerows([i, repr(float(v))] for i, v in zip(ids, vals))
        made[(method, seed)] = dict(zip(ids, vals.tolist()))
    return made


def _holm_by_hand(ps: list[float]) -> list[float]:
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def test_report_writes_paired_stats_with_holm(tmp_path, capsys):
    from test_report import SMALL

    made = _table_runs(np.random.default_rng(11))
    out = tmp_path / "tables"
    assert main(["-q", "report", "table1", "--spec", str(SMALL), "--datasets", "lol", "--out", str(out)]) == 0
    assert "small.stats.md" in capsys.readouterr().out
    rows = [r for r in _rows(out / "small.stats.csv") if r["metric"] == "psnr"]
    assert "ours" not in {r["row"] for r in rows}          # the reference is not tested against itself
    by_row = {r["row"]: r for r in rows}
    ref = {i: np.mean([made[("ours", s)][i] for s in range(3)]) for i in made[("ours", 0)]}  # seeds averaged
    ps = {}
    for key, seeds in (("lime", [0]), ("zero-dce", [0, 1])):
        cell = {i: np.mean([made[(key, s)][i] for s in seeds]) for i in ref}
        d = np.array([cell[i] - ref[i] for i in ref])
        r = by_row[key]
        assert int(r["n"]) == 8 and r["seeds"] == ";".join(map(str, seeds)) and r["reference_seeds"] == "0;1;2"
        assert float(r["mean_diff"]) == pytest.approx(d.mean(), rel=1e-12)
        assert (int(r["wins"]), int(r["ties"]), int(r["losses"])) == (int((d > 0).sum()), 0, int((d < 0).sum()))
        ps[key] = stats.wilcoxon(d, method="exact").pvalue
        assert float(r["wilcoxon_p"]) == pytest.approx(ps[key], rel=1e-12) and r["family_size"] == "2"
    want = dict(zip(ps, _holm_by_hand(list(ps.values()))))
    for key, p in want.items():
        assert float(by_row[key]["holm_p"]) == pytest.approx(p, rel=1e-12)
    for key in ("identity", "csrnet", "ours:no_rl"):        # cells without runs: a note, no numbers
        assert by_row[key]["note"] == "no admitted runs in this cell" and by_row[key]["holm_p"] == ""
    md = (out / "small.stats.md").read_text()
    assert "## LOL — psnr↑ (reference `ours`, seeds 0;1;2)" in md and "averaged per image over its seeds" in md
    assert "Δ = row − reference" in md


def test_report_stats_reference_option_and_unknown_key(tmp_path, capsys):
    from test_report import SMALL

    _table_runs(np.random.default_rng(3))
    out = tmp_path / "tables"
    assert main(["-q", "report", "table1", "--spec", str(SMALL), "--datasets", "lol", "--out", str(out),
                 "--stats-reference", "lime"]) == 0
    rows = [r for r in _rows(out / "small.stats.csv") if r["metric"] == "psnr"]
    assert {r["reference"] for r in rows} == {"lime"} and "lime" not in {r["row"] for r in rows}
    assert "ours" in {r["row"] for r in rows}
    capsys.readouterr()
    assert main(["-q", "report", "table1", "--spec", str(SMALL), "--out", str(out), "--stats-reference", "lmie"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'lime'" in err


def test_report_stats_say_why_when_images_do_not_pair(tmp_path):
    from bench.report import write_table
    from bench.report.spec import load_spec
    from test_report import SMALL, make_run

    _table_runs(np.random.default_rng(5))
    make_run("lol", "csrnet", {"psnr": 19.0}, n=3)           # scores 3 images, the reference 8
    files, _ = write_table(load_spec(path=SMALL), tmp_path, ["lol"])
    assert [f.name for f in files][-2:] == ["small.stats.md", "small.stats.csv"]
    row = next(r for r in _rows(tmp_path / "small.stats.csv") if (r["row"], r["metric"]) == ("csrnet", "psnr"))
    assert row["note"].startswith("this row scores 3 images, the reference 8") and row["n"] == ""
    lpips = [r for r in _rows(tmp_path / "small.stats.csv") if r["metric"] == "lpips"]
    assert all(r["n"] == "" and r["note"] for r in lpips)   # no lpips runs at all: every row says why
    assert not any(math.isfinite(float(r["holm_p"])) for r in lpips if r["holm_p"])

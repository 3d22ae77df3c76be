"""``bench figure``: grids, per-image distributions and quality-cost plots from runs, traceable and byte-stable."""

from __future__ import annotations

import csv
import hashlib
import statistics
from pathlib import Path

import pytest
import yaml
from PIL import Image

from bench import registry
from bench.cli import build_parser
from bench.errors import BenchError
from bench.figures import cmd_figure, figure_names, load_figure_spec, render
from bench.paths import results_root
from bench.report.collect import scan_runs, select
from bench.report.spec import Row, load_spec
from bench.run import RunSpec, execute


def run(method: str, **kw) -> Path:
    return execute(RunSpec(method, "demo", progress=False, **{"profile": "smoke", **kw})).run_dir


@pytest.fixture
def runs(demo, fake_methods):
    """identity, gain (smoke and quick: the figure must take quick, as the report does), fitgain seeds 0 and 1."""
    return {"identity": run("identity"), "gain_smoke": run("gain"), "gain": run("gain", profile="quick"),
            "fitgain0": run("fitgain", seed=0), "fitgain1": run("fitgain", seed=1)}


def write_specs(tmp_path: Path, **figure) -> Path:
    """A small table spec and one figure spec naming it; returns the figure spec's path."""
    table = {"name": "small", "kind": "absolute", "split": "test", "profile": "smoke", "seeds": [0, 1],
             "datasets": ["demo"], "metrics": ["psnr", "ssim"], "decimals": {"psnr": 2, "ssim": 3},
             "groups": [{"name": "reference", "rank": False, "rows": [{"key": "identity", "label": "Input"}]},
                        {"name": "methods", "rows": [{"key": "gain", "label": "Gain"},
                                                     {"key": "fitgain", "label": "FitGain"},
                                                     {"key": "nothere", "label": "Not here"}]}]}
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(table))
    doc = {"table": "small.yaml", "dataset": "demo", **figure}
    path = tmp_path / f"{figure['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def sources(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_files(files: list[Path], min_kb: float = 8) -> tuple[int, int]:
    pdf, png, src = files
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > min_kb * 1024
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > min_kb * 1024
    assert src.name.endswith(".sources.csv")
    with Image.open(png) as im:
        assert im.mode in ("RGBA", "RGB")
        return im.size


GRID = dict(name="grid", kind="grid", title="small grid", images=["skimage-coffee", "mpl-grace_hopper"],
            rows=["gain", "fitgain", "nothere"], show_metric="psnr", missing="blank", columns_per_line=3,
            panel_width=1.5, dpi=100, insets={"skimage-coffee": {"box": [0.3, 0.2, 0.3, 0.4]}})


# --- grids ----------------------------------------------------------------------------------------
def test_grid_files_sources_and_byte_stability(runs, tmp_path):
    spec = load_figure_spec(path=write_specs(tmp_path, **GRID))
    files, notes = render(spec, tmp_path / "a")
    w, h = check_files(files)
    # 5 panels (input, gain, fitgain, "no run", gt) at 3 a line: 3 panels wide, 2 lines per image
    assert w == pytest.approx(100 * (2 * 0.04 + 3 * 1.5 + 2 * 0.04), abs=2)
    assert 400 < h < 1400
    assert any("Not here" in n for n in notes)
    rows = sources(files[2])
    assert [r["row"] for r in rows if r["image"] == "skimage-coffee"] == ["input", "gain", "fitgain", "nothere", "gt"]
    for r in rows:
        if r["run_dir"]:
            run_dir = results_root() / r["run_dir"]
            assert (run_dir / "DONE").exists()
            assert sha(results_root() / r["file"]) == r["sha256"]
    out = {r["row"]: r for r in rows if r["image"] == "mpl-grace_hopper"}
    assert out["gain"]["run_dir"] == runs["gain"].relative_to(results_root()).as_posix()  # quick beats smoke
    assert out["fitgain"]["seed"] == "0"  # the lowest selected seed
    assert out["nothere"]["value"] == "missing" and not out["nothere"]["run_dir"]
    assert out["input"]["file"] == "demo:low/mpl-grace_hopper.png" and out["gt"]["sha256"]
    per_image = {r["id"]: r for r in csv.DictReader(open(runs["gain"] / "per_image.csv"))}
    assert float(out["gain"]["value"]) == pytest.approx(float(per_image["mpl-grace_hopper"]["psnr"]))
    again, _ = render(spec, tmp_path / "b")
    assert [sha(f) for f in files] == [sha(f) for f in again]


def test_grid_uses_the_report_selection_and_a_chosen_seed(runs, tmp_path):
    spec = load_figure_spec(path=write_specs(tmp_path, **{**GRID, "seed": 1, "missing": "skip"}))
    files, _ = render(spec, tmp_path / "out")
    rows = {r["row"]: r for r in sources(files[2]) if r["image"] == "skimage-coffee"}
    assert set(rows) == {"input", "gain", "fitgain", "gt"}
    assert rows["fitgain"]["run_dir"] == runs["fitgain1"].relative_to(results_root()).as_posix()
    sel = select(scan_runs(["demo"]), Row("gain", "Gain", "methods"), "demo", "test", "smoke", [0, 1])
    assert rows["gain"]["run_id"] == sel.runs[0].run_id


def test_grid_errors_are_clear(demo, fake_methods, tmp_path):
    spec = load_figure_spec(path=write_specs(tmp_path, **GRID))
    with pytest.raises(BenchError, match="bench reproduce small --datasets demo --profile smoke"):
        render(spec, tmp_path / "out")
    run("gain")
    bad = load_figure_spec(path=write_specs(tmp_path, **{**GRID, "images": ["skimage-cofee"]}))
    with pytest.raises(BenchError, match="did you mean 'skimage-coffee'"):
        render(bad, tmp_path / "out")
    with pytest.raises(BenchError, match="box is"):
        load_figure_spec(path=write_specs(tmp_path, **{**GRID, "insets": {"x": [0.8, 0, 0.5, 0.5]}}))
    with pytest.raises(BenchError, match="one dataset"):
        load_figure_spec(path=write_specs(tmp_path, **GRID), datasets=["demo", "lol"])


# --- distributions and quality against cost -------------------------------------------------------
def test_distribution(runs, tmp_path):
    spec = load_figure_spec(path=write_specs(tmp_path, name="dist", kind="distribution", datasets=["demo"],
                                             metrics=["psnr", "ssim"]))
    files, notes = render(spec, tmp_path / "a")
    w, h = check_files(files)
    assert 400 < w < 3000 and 300 < h < 2000
    rows = sources(files[2])
    # one line per run and metric: identity, gain (quick), fitgain seeds 0 and 1
    assert sorted((r["row"], r["seed"], r["metric"]) for r in rows) == sorted(
        (k, s, m) for k, s in (("identity", "0"), ("gain", "0"), ("fitgain", "0"), ("fitgain", "1"))
        for m in ("psnr", "ssim"))
    assert all((results_root() / r["run_dir"] / "DONE").exists() for r in rows)
    again, _ = render(spec, tmp_path / "b")
    assert [sha(f) for f in files] == [sha(f) for f in again]


def test_quality_against_cost(runs, tmp_path):
    spec = load_figure_spec(path=write_specs(tmp_path, name="cost", kind="cost", datasets=["demo"], metric="psnr"))
    files, _ = render(spec, tmp_path / "a")
    check_files(files)
    rows = sources(files[2])
    fit = [r for r in rows if r["row"] == "fitgain"]
    assert len(fit) == 2 and {r["trainable_parameters"] for r in fit} == {"1"}
    times = [float(r["runtime_ms"]) for d in (runs["fitgain0"], runs["fitgain1"])
             for r in csv.DictReader(open(d / "per_image.csv"))]
    assert float(fit[0]["runtime_ms_median"]) == pytest.approx(statistics.median(times))
    assert {r["trainable_parameters"] for r in rows if r["row"] != "fitgain"} == {"0"}
    assert fit[0]["device"] == "cpu" and fit[0]["runtime_source"] == "runs"
    again, _ = render(spec, tmp_path / "b")
    assert [sha(f) for f in files] == [sha(f) for f in again]


def test_quality_against_cost_reads_the_cost_table(runs, tmp_path):
    """With `bench perf methods`'s table present, every method's runtime is its latency there."""
    from bench.cost_table import write_cost_table

    results = [{"method": "identity", "display": "Input", "family": "reference", "params": 0, "version": 1,
                "threads": 2, "settings": {"sizes": [[400, 600]]},
                "sizes": {"600x400": {"ms_median": 0.5, "ms_iqr": 0.1, "runs": 5, "peak_bytes": 0,
                                      "peak_method": "rss"}}}]
    write_cost_table(results, {"device": "cpu", "torch": "x", "threads": 2, "cpu": "test", "cpus": 2},
                     results_root() / "tables")
    spec = load_figure_spec(path=write_specs(tmp_path, name="cost", kind="cost", datasets=["demo"], metric="psnr"))
    files, notes = render(spec, tmp_path / "a")
    rows = {r["row"]: r for r in sources(files[2])}
    assert rows["identity"]["runtime_source"] == "cost table" and float(rows["identity"]["runtime_ms_median"]) == 0.5
    assert rows["fitgain"]["runtime_source"] == "runs"           # not in the table: its own runs, said in a note
    assert any("fitgain" in n.lower() and "cost table" in n for n in notes)


def test_source_date_epoch_is_honoured(runs, tmp_path, monkeypatch):
    spec = load_figure_spec(path=write_specs(tmp_path, name="cost", kind="cost", datasets=["demo"], metric="psnr"))
    plain, _ = render(spec, tmp_path / "a")
    assert b"CreationDate" not in plain[0].read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1634000000")
    dated, _ = render(spec, tmp_path / "b")
    assert b"D:20211012" in dated[0].read_bytes()
    assert sha(dated[0]) == sha(render(spec, tmp_path / "c")[0][0])


# --- shipped specs and the command ----------------------------------------------------------------
def test_shipped_specs_load():
    names = figure_names()
    assert {"demo-grid", "demo-distribution", "demo-cost", "fig1", "fig5", "fig6", "fig7", "fig8", "fig9",
            "table1-distribution", "table1-cost"} <= set(names)
    for name in names:
        spec = load_figure_spec(name)
        assert spec.rows and spec.datasets
        if spec.kind == "grid":
            from bench.data.manifest import load_manifest

            ids = {p.id for p in load_manifest(spec.datasets[0]).split(spec.split)}
            assert set(spec.images) <= ids, name


def test_shipped_demo_figures(demo, tmp_path, capsys):
    """The demo figures from real runs: identity and the cheap deterministic Table 1 methods registered now."""
    spec = load_spec("table1")
    cheap = [r.method for r in spec.rows if r.method in registry.METHODS and r.method != "identity"
             and not registry.load_method_class(r.method).trainable][:2]
    if not cheap:
        pytest.skip("no deterministic Table 1 method besides identity is registered")
    for method in ["identity", *cheap]:
        run(method)
    args = build_parser().parse_args(["figure", "demo-grid", "demo-distribution", "demo-cost", "--out", str(tmp_path)])
    assert args.fn(args) == 0
    for name in ("demo-grid", "demo-distribution", "demo-cost"):
        size = check_files([tmp_path / f"{name}.pdf", tmp_path / f"{name}.png", tmp_path / f"{name}.sources.csv"])
        assert min(size) > 300
        for r in sources(tmp_path / f"{name}.sources.csv"):
            if r["run_dir"]:
                assert (results_root() / r["run_dir"] / "DONE").exists()
    grid_rows = {r["row"] for r in sources(tmp_path / "demo-grid.sources.csv")}
    assert set(cheap) <= grid_rows and "identity" not in grid_rows
    # several names: a figure without runs is reported, the others are still drawn
    (tmp_path / "demo-cost.png").unlink()
    args = build_parser().parse_args(["figure", "demo-cost", "fig7", "--out", str(tmp_path)])
    with pytest.raises(BenchError, match="1 of 2 figure"):
        args.fn(args)
    assert (tmp_path / "demo-cost.png").exists() and "fig7" in capsys.readouterr().err


def test_cli_list_and_register_wrapper(capsys):
    # bench's own parser: its add_parser wrapper passes -q itself (bench.subcommand)
    args = build_parser().parse_args(["figure", "fig7", "-q", "--datasets", "lol-485-15", "--profile", "quick"])
    assert args.names == ["fig7"] and args.fn is cmd_figure and args.quiet
    args = build_parser().parse_args(["figure", "--list"])
    assert args.fn(args) == 0
    assert "demo-grid" in capsys.readouterr().out
    args = build_parser().parse_args(["figure", "fig77"])
    with pytest.raises(BenchError, match="did you mean 'fig7'"):
        args.fn(args)

"""``bench perf dsn`` end to end at toy sizes: every section runs, the inference paths agree, and a partial
re-run replaces only its own section.  Timings are never asserted (benchmarks, not tests)."""

import json

from bench.cli import main

TINY = ["perf", "dsn", "--device", "cpu", "--sizes", "9x13", "--runs", "2", "--warmup", "1",
        "--crop", "8", "--steps", "1", "--mem-sizes", "14x18,28x36", "--tile", "12", "--overlap", "4",
        "--mem-blocks", "1"]


def test_perf_dsn_runs_every_section_then_merges_a_partial_rerun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path))
    assert main(TINY) == 0
    res = json.loads((tmp_path / "perf" / "dsn_cpu.json").read_text())
    assert set(res["sections"]) == {"enhance", "train", "tiling"}
    paths = res["enhance"]["9x13"]
    assert {"eager", "inference_mode", "channels_last", "in_place", "ours"} <= set(paths)
    assert paths["in_place"]["max_abs_diff_vs_eager"] == 0.0          # the in-place path is bit-identical
    assert paths["ours"]["channels_last"] and paths["ours"]["fast"]     # bench run's CPU path
    assert 0 < paths["ours"]["max_abs_diff_vs_eager"] < 1e-4
    # bench run's CPU allocator setting, measured in a spawned worker: same bits, state recorded
    assert paths["ours_heap"]["bit_identical_to_ours"] and paths["ours_heap"]["allocator"] == "reuse_heap"
    alloc = paths["allocator"]
    assert "default" in alloc["parent"] and "VmRSS" in alloc["worker"]["rss_mib"]
    assert "mallopt" in alloc["worker"]["allocator"] or "unavailable" in alloc["worker"]["allocator"]
    assert "channels_last_heap" in res["conv_peak"]["9x13"]
    assert res["conv_peak"]["9x13"]["measurements"] == 2                # before and after the passes
    # the worker is set up like a `bench run` process: huge pages asked for before its torch started
    from bench.large_pages import offered

    lp = alloc["worker"]["large_pages"]
    assert lp["variable"] == "THP_MEM_ALLOC_ENABLE"
    assert lp["torch_huge_page_path"] is offered()
    rows = res["tiling"]["sizes"]
    assert [r["size"] for r in rows] == ["14x18", "28x36"]
    # the same 12x12 tile at 4x the pixels: the tiled peak grows only by the output buffer
    assert rows[1]["tiled_peak_mib"] - rows[0]["tiled_peak_mib"] < 2 * rows[1]["output_buffer_mib"] + 0.05
    assert rows[1]["whole_peak_mib"] > 2 * rows[1]["tiled_peak_mib"]
    md = (tmp_path / "perf" / "dsn_cpu.md").read_text()
    assert "| 9x13 | ours |" in md and "## Training step" in md and "| 28x36 |" in md
    assert "| 9x13 | ours_heap |" in md and "allocator state and RSS" in md

    before = res["sections"]["enhance"]
    assert main(TINY[:4] + ["--sections", "tiling", "--mem-sizes", "14x18,20x24", "--tile", "12",
                            "--overlap", "4", "--mem-blocks", "1"]) == 0
    again = json.loads((tmp_path / "perf" / "dsn_cpu.json").read_text())
    assert again["sections"]["enhance"] == before and again["enhance"] == res["enhance"]
    assert [r["size"] for r in again["tiling"]["sizes"]] == ["14x18", "20x24"]
    assert "| 9x13 | ours |" in (tmp_path / "perf" / "dsn_cpu.md").read_text()


def test_perf_dsn_refuses_an_unknown_section(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path))
    assert main(["perf", "dsn", "--device", "cpu", "--sections", "enhance,speed"]) == 2
    assert "unknown perf dsn section speed" in capsys.readouterr().err
    assert not (tmp_path / "perf").exists()


def test_perf_dsn_paths_subset(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path))
    assert main(TINY[:4] + ["--sizes", "9x13", "--runs", "1", "--warmup", "0", "--sections", "enhance",
                            "--paths", "ours,ours_heap"]) == 0
    res = json.loads((tmp_path / "perf" / "dsn_cpu.json").read_text())
    assert {k for k, v in res["enhance"]["9x13"].items() if isinstance(v, dict) and "median_s" in v} == {
        "eager", "ours", "ours_heap"}
    assert main(TINY[:4] + ["--sections", "enhance", "--paths", "ours,fastest"]) == 2
    assert "unknown perf dsn path fastest" in capsys.readouterr().err


def test_the_reference_keeps_each_variants_faster_measurement():
    from bench.perf_dsn import best_of

    def m(**tf):
        out = {k: {"median_s": 1 / v, "tflops": v} for k, v in tf.items()}
        best = max(tf, key=tf.get)
        return {**out, "tflops": tf[best], "best_layout": best, "gmac": 1.0}

    a = m(nchw=0.2, channels_last=0.30, channels_last_heap=0.31)
    b = m(nchw=0.25, channels_last=0.28, channels_last_heap=0.33)
    r = best_of(a, b)
    assert (r["nchw"]["tflops"], r["channels_last"]["tflops"], r["channels_last_heap"]["tflops"]) == (0.25, 0.30, 0.33)
    assert r["tflops"] == 0.33 and r["best_layout"] == "channels_last_heap" and r["measurements"] == 2
    assert r["tflops_default_allocator"] == 0.30
    assert best_of(b, a)["tflops"] == 0.33

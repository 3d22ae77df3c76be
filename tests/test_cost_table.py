"""``bench perf methods``: the cost table, on three cheap methods, with MACs checked against hand counts."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from bench.cli import main
from bench.paths import results_root

# Zero-DCE's seven 3×3 convolutions (DCE-Net: 3→32, three 32→32, then 64→32, 64→32, 64→24 on the
# concatenated skips): multiply-accumulates per pixel, biases not counted
ZERO_DCE_MACS_PER_PIXEL = 9 * (3 * 32 + 3 * 32 * 32 + 2 * 64 * 32 + 64 * 24)


def _rows():
    with open(results_root() / "tables" / "cost.csv", newline="", encoding="utf-8") as f:
        return {r["method"]: r for r in csv.DictReader(f)}


def test_cost_table_of_three_methods(capsys):
    assert ZERO_DCE_MACS_PER_PIXEL == 79_200
    args = ["-q", "perf", "methods", "--methods", "identity,lime,zero-dce", "--sizes", "32x48,16x16",
            "--runs", "2", "--warmup", "0", "--threads", "1"]
    assert main(args) == 0
    rows = _rows()
    assert list(rows) == ["identity", "lime", "zero-dce"]
    z = rows["zero-dce"]
    assert int(z["params"]) == 79_416                      # 79,200 weights + 216 biases
    assert int(z["macs_48x32"]) == ZERO_DCE_MACS_PER_PIXEL * 32 * 48
    assert int(z["macs_conv_linear_48x32"]) == ZERO_DCE_MACS_PER_PIXEL * 32 * 48   # convolutions only
    assert int(z["macs_16x16"]) == ZERO_DCE_MACS_PER_PIXEL * 16 * 16
    for name in ("identity", "lime"):                       # no torch network: no MACs, but the other columns
        assert rows[name]["macs_48x32"] == "" and rows[name]["params"] == "0"
    for r in rows.values():
        assert float(r["ms_48x32"]) > 0 and float(r["ms_iqr_48x32"]) >= 0 and r["runs_48x32"] == "2"
        assert float(r["peak_mib_48x32"]) >= 0 and r["threads"] == "1" and r["precision"] == "amp=off"
    md = (results_root() / "tables" / "cost.md").read_text(encoding="utf-8")
    assert "| Zero-DCE" in md and "48×32" in md and "1 torch threads" in md
    from bench.report.latex import check_balanced

    assert check_balanced((results_root() / "tables" / "cost.tex").read_text(encoding="utf-8")) == []
    raw = json.loads((results_root() / "perf" / "methods_cpu-1t.json").read_text(encoding="utf-8"))
    assert [m["method"] for m in raw["methods"]] == ["identity", "lime", "zero-dce"]

    # a re-run with the same settings reuses every result; --force measures again
    cached = results_root() / "perf" / "methods" / "cpu-1t" / "zero-dce.json"
    before = json.loads(cached.read_text(encoding="utf-8"))["finished"], cached.stat().st_mtime_ns
    # each child allocates as a `bench run` process does: huge pages asked for before its torch started
    from bench.large_pages import offered

    pages = json.loads(cached.read_text(encoding="utf-8"))["large_pages"]
    assert pages["torch_huge_page_path"] is offered()
    assert main(args) == 0
    assert (json.loads(cached.read_text(encoding="utf-8"))["finished"], cached.stat().st_mtime_ns) == before
    assert main(args[:-6] + ["--runs", "3", "--warmup", "0", "--threads", "1"]) == 0   # other settings: measured
    assert json.loads(cached.read_text(encoding="utf-8"))["settings"]["runs"] == 3


def test_dsn_macs_from_flop_counter_match_the_reference_count():
    """DSN's CPU path runs most convolutions as oneDNN's fused op; it must count as the convolution it is."""
    from bench.cost_measure import count_macs, synthetic_low
    from bench.enhance import enhance_one
    from bench.perf_dsn import MAC_PER_PIXEL
    from bench.registry import load_method_class

    cls = load_method_class("ours")
    m = cls(cls.Config())
    m.setup(torch.device("cpu"), None)
    low = synthetic_low(16, 24)
    counts = count_macs(lambda: enhance_one(m, low, torch.device("cpu")), [m.model])
    # the channel attention's 1×1 layers act on pooled vectors: a per-image constant on top of per-pixel work
    assert 0 <= counts["macs"] - MAC_PER_PIXEL * 16 * 24 < 0.01 * MAC_PER_PIXEL * 16 * 24
    assert counts["macs_conv"] == counts["macs"] and counts["macs_linear"] == 0


def test_linear_layers_are_counted_apart_from_other_matrix_products():
    from bench.cost_measure import count_macs

    lin = torch.nn.Linear(8, 4)
    x = torch.randn(5, 8)
    counts = count_macs(lambda: (lin(x), x @ x.T), [lin])
    assert counts["macs_linear"] == 5 * 4 * 8
    assert counts["macs"] == 5 * 4 * 8 + 5 * 5 * 8       # FlopCounterMode sees the attention-like product too
    assert counts["macs_conv"] == 0


@pytest.mark.parametrize("bad, msg", [("--sizes=12x600", "at least 16"), ("--sizes=abc", "HEIGHTxWIDTH"),
                                      ("--methods=nope", "unknown method")])
def test_bad_options_are_one_line(bad, msg, capsys):
    assert main(["-q", "perf", "methods", bad]) != 0
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1

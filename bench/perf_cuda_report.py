"""The Markdown report of ``bench perf gpu-bench`` (bench/perf_cuda.py), from its results dict."""

from __future__ import annotations

from typing import Any


def _f(v: Any, fmt: str = ".3g") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else "–"


def _step_row(name: str, r: dict[str, Any]) -> str:
    if "median_s" not in r:
        return f"| {name} | {r.get('skipped') or r.get('error', '')} | | | | | |"
    extra = r.get("compile_fallback") or r.get("optimizer_fallback") or ""
    return (f"| {name} | {r['steps_per_s']:.2f} | {r['median_s'] * 1e3:.1f} (IQR {r['iqr_s'] * 1e3:.1f}) | "
            f"{_f(r.get('peak_memory_gib'), '.2f')} | {_f(r.get('loss_rel_diff_vs_fp32'), '.1e')} | "
            f"{r['first_step_s']:.1f} | {extra} |")


def report_lines(res: dict[str, Any]) -> list[str]:
    smoke = res.get("cpu_smoke")
    dev = res.get("gpu") or f"CPU {res.get('cpu')}, {res.get('torch_threads')} threads"
    cfg = res["config"]
    lines = [f"# bench perf gpu-bench ({dev})", ""]
    if smoke:
        lines += ["**CPU SMOKE RUN** (`--cpu-smoke`): toy sizes on the CPU, to check the script end to end. "
                  "None of these numbers is a GPU figure.", ""]
    lines += [f"torch {res['torch']}; paper step = batch 2 of {cfg['crop']}² crops, both directions, sum-reduced L2, "
              f"Adam 2e-4 (wd 1e-5), clip 10, {cfg['n_blocks']} blocks; fp32 = TF32 off; {cfg['warmup']} warm-up + "
              f"{cfg['steps']} timed steps per setting; loss diff = max relative difference to fp32 over the same "
              "steps (same initial weights and batches)."]
    for name, why in res.get("skipped", {}).items():
        lines.append(f"- section {name} skipped: {why}")
    for name, why in res.get("errors", {}).items():
        lines.append(f"- section {name} failed: {why}")
    if "steps" in res:
        lines += ["", "## Paper training step", "",
                  "| setting | steps/s | median ms | peak GiB | loss diff vs fp32 | first step s | note |",
                  "|---|---|---|---|---|---|---|"]
        lines += [_step_row(n, r) for n, r in res["steps"].items()]
    if "enhance" in res:
        e = res["enhance"]
        lines += ["", f"## Enhancement at {e['size']} (batch 1, in-place inference path; model: {e['model']})", "",
                  "| precision | median ms | PSNR of 8-bit output vs fp32 (photo / noise) |", "|---|---|---|"]
        for p in ("fp32", "tf32", "bf16"):
            r = e.get(p)
            if r is None:
                continue
            if "ms" not in r:
                lines.append(f"| {p} | {r.get('skipped', '')} | |")
                continue
            ps = r.get("psnr_8bit_vs_fp32_db", {})
            lines.append(f"| {p} | {r['ms']:.1f} | {_f(ps.get('photo'), '.1f')} / {_f(ps.get('noise'), '.1f')} dB |")
    if "memory" in res:
        m = res["memory"]
        lines += ["", "## Training memory options (fp32)", ""]
        if "skipped" in m:
            lines.append(m["skipped"])
        else:
            lines += ["| memory | peak GiB | median ms | loss diff vs full |", "|---|---|---|---|"]
            for mode, r in m.items():
                if "median_s" not in r:
                    lines.append(f"| {mode} | {r.get('error', '')} | | |")
                else:
                    lines.append(f"| {mode} | {_f(r.get('peak_memory_gib'), '.2f')} | {r['median_s'] * 1e3:.1f} | "
                                 f"{_f(r.get('loss_rel_diff_vs_full'), '.1e')} |")
    if "accuracy" in res:
        a = res["accuracy"]
        lines += ["", f"## Accuracy: fp32 vs bf16 training on the demo set ({a['iterations']} iterations, "
                      f"{a['crop']}² crops, seed {a['seed']}, {a['n_train']} train / {a['n_test']} test images, "
                      "fp32 inference)", "",
                  f"test PSNR fp32 {a['fp32']['psnr_db']:.3f} dB, bf16 {a['bf16']['psnr_db']:.3f} dB: "
                  f"Δ = {a['delta_psnr_bf16_minus_fp32_db']:+.3f} dB"]
    if "long" in res:
        lg = res["long"]
        lines += ["", "## Long run", ""]
        if "timed_total_s" in lg:
            lines.append(f"{lg['steps_measured']} paper steps with {lg['setting']} (the fastest setting within "
                         f"tolerance: loss diff ≤ {lg['tolerance']['loss_rtol']:g}, bf16 demo |ΔPSNR| ≤ "
                         f"{lg['tolerance']['psnr_tol_db']:g} dB): measured {lg['timed_total_s']:.1f} s "
                         f"(median step {lg['median_s'] * 1e3:.1f} ms)")
        else:
            lines.append(lg.get("skipped") or lg.get("error", ""))
    if "projection" in res:
        lines += ["", "**Projections** (from the measured steps above, not measurements; data loading, validation "
                      "and checkpoints excluded):"]
        for k, p in res["projection"].items():
            lines.append(f"- {k}: {p['iterations']:,} iterations ≈ {p['hours']:.2f} h ({p['from']})")
    return lines

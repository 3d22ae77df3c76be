"""The Markdown report of ``bench perf dsn`` (``results/perf/dsn_<device>.md``) from its results dict."""

from __future__ import annotations

from typing import Any

from .perf_dsn import HEAP


def _measured(res: dict[str, Any], name: str) -> str:
    meta = res.get("sections", {}).get(name)
    return f"measured {meta['measured_at']}" if meta else ""


def _rss(process: dict[str, Any]) -> str:
    mib = process["rss_mib"]
    return f"RSS {mib.get('VmRSS', float('nan')):.0f} MiB (high-water {mib.get('VmHWM', float('nan')):.0f})"


def _enhance_lines(res: dict[str, Any]) -> list[str]:
    lines = ["## Convolution throughput (3x3 64->128 + 128->64, batch 1, fp32)", "", _measured(res, "enhance"), "",
             "| size | NCHW TFLOP/s | channels_last TFLOP/s | NCHW, bench run's process | "
             "channels_last, bench run's process | "
             "reference |", "|---|---|---|---|---|---|"]
    for size, cp in res["conv_peak"].items():
        heap = [f"{cp[k]['tflops']:.3g}" if k in cp else "" for k in ("nchw" + HEAP, "channels_last" + HEAP)]
        lines.append(f"| {size} | {cp['nchw']['tflops']:.3g} | {cp['channels_last']['tflops']:.3g} | "
                     f"{heap[0]} | {heap[1]} | {cp['tflops']:.3g} ({cp['best_layout']}) |")
    if any("channels_last" + HEAP in cp for cp in res["conv_peak"].values()):
        n = max(cp.get("measurements", 1) for cp in res["conv_peak"].values())
        lines += ["", "reference = the best fp32 throughput measured in either process (this one: PyTorch's and "
                  "glibc's defaults; bench run's process: a spawned worker with huge pages, bench/large_pages.py, "
                  "and heap reuse, bench/dsn/allocator.py), round-robin"
                  + (", timed before and after the enhancement passes at each size (each variant's faster median)"
                     if n > 1 else "")]
    lines += ["", "## Enhancement: plain eager forward vs our inference path (fp32, batch 1)", "",
              "| size | path | median ms | IQR ms | TFLOP/s | of conv peak | speed-up vs eager | max abs diff |",
              "|---|---|---|---|---|---|---|---|"]
    order = ("eager", "inference_mode", "benchmark", "channels_last", "in_place", "ours", "ours" + HEAP)
    for size, e in res["enhance"].items():
        for name in sorted((k for k in e if isinstance(e[k], dict) and "median_s" in e[k]
                            and k != "tf32_not_protocol"), key=lambda k: (order + (k,)).index(k)):
            s = e[name]
            lines.append(f"| {size} | {name} | {s['median_s'] * 1e3:.1f} | {s['iqr_s'] * 1e3:.1f} | "
                         f"{s['tflops']:.3g} | {s['of_conv_peak'] * 100:.0f}% | {s['speedup_vs_eager']:.2f}x | "
                         f"{s['max_abs_diff_vs_eager']:.1e} |")
        if "tf32_not_protocol" in e:
            t = e["tf32_not_protocol"]
            lines.append(f"| {size} | TF32 (not protocol) | {t['median_s'] * 1e3:.1f} | {t['iqr_s'] * 1e3:.1f} | "
                         f"{t['tflops']:.3g} | | {t['speedup_vs_ours']:.2f}x vs ours | |")
    ours = {k: v["ours"] for k, v in res["enhance"].items()}
    p = next(iter(ours.values()))
    ours.update({f"{k} ours_heap": v["ours" + HEAP] for k, v in res["enhance"].items() if "ours" + HEAP in v})
    lines += ["", "paths: eager = plain forward under no_grad; in_place = DSN.set_fast_inference in NCHW (in-place "
              "PReLU, attention product and residual sums; bit-identical); ours = what `bench run` uses: "
              f"{p['grad']}, in place {'on' if p.get('fast') else 'off'}, cudnn.benchmark "
              f"{'on' if p['benchmark'] else 'off'}, channels_last {'on' if p['channels_last'] else 'off'}"
              + (" with the PReLU fused into the convolutions (oneDNN post-op)" if p["channels_last"] and p.get("fast")
                 and not res["device"].startswith("cuda") else "")
              + ("; ours_heap = ours in a process set up as `bench run` sets up its own (the worker: huge pages "
                 "for tensors of 2 MiB or more, THP_MEM_ALLOC_ENABLE=1, bench/large_pages.py; glibc mallopt "
                 "M_MMAP_THRESHOLD 128 MiB, M_TRIM_THRESHOLD -1, bench/dsn/allocator.py) — what `bench run` does "
                 "on CPU; ours is the same path in a plain PyTorch process (glibc's and PyTorch's defaults)"
                 if "ours" + HEAP in next(iter(res["enhance"].values())) else ""), "",
              "; ".join(f"{size}: {s['of_conv_peak'] * 100:.0f}% of the conv peak (target 90%), "
                        f"{s['speedup_vs_eager']:.2f}x eager" for size, s in ours.items())]
    alloc = [(size, e["allocator"]) for size, e in res["enhance"].items() if "allocator" in e]
    if alloc:
        lines += ["", "allocator state and RSS after each size (parent: defaults; worker: bench run's settings):", ""]
        for size, a in alloc:
            par, wk = a["parent"], a["worker"]
            setting = wk["allocator"].get("mallopt") or wk["allocator"]
            if "large_pages" in wk:
                lp = wk["large_pages"]
                setting = (f"{setting}, {lp['variable']}={lp['value']} (torch's huge-page path "
                           f"{'on' if lp.get('torch_huge_page_path') else 'off'}, "
                           f"{lp.get('anon_huge_pages_mib', float('nan')):.0f} MiB in huge pages)")
            lines.append(f"- {size}: parent {next(iter(k for k in par if k != 'rss_mib'))}, {_rss(par)}; "
                         f"worker {setting}, {_rss(wk)}")
    return lines


def _train_lines(res: dict[str, Any]) -> list[str]:
    tr = res["train_step"]
    lines = ["## Training step", "", _measured(res, "train"), "",
             f"batch 2 of {tr['crop']}² crops, both directions, Adam + clip, fp32: median "
             f"{tr['fp32']['median_s'] * 1e3:.1f} ms (IQR {tr['fp32']['iqr_s'] * 1e3:.1f} ms, "
             f"{tr['fp32']['runs']} runs)"
             + (f", peak {tr['fp32']['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in tr["fp32"] else "")]
    if "tf32_speedup" in tr:
        lines.append(f"TF32 (not protocol): {tr['tf32_speedup']:.2f}x the fp32 step")
    src = tr.get("projected_from_crop", tr["crop"])
    how = "" if src == 180 else f" (the {src}² step scaled by pixels to 180²)"
    lines += [f"projected paper schedule, fp32{how}: {k}: {v:.1f} h"
              for k, v in tr["projected_training_hours_fp32"].items()]
    return lines


def _tiling_lines(res: dict[str, Any]) -> list[str]:
    ti = res["tiling"]
    cuda = res["device"].startswith("cuda")
    meter = "torch.cuda.max_memory_allocated" if cuda else "live CPU tensor bytes"
    lines = [f"## Tiled inference (tile {ti['tile']}, overlap {ti['overlap']}, {ti['global_passes']} "
             f"global-statistics pass; model: {ti['model']})", "", _measured(res, "tiling"), "",
             f"peak = {meter} during the call, inputs and weights excluded"
             + ("" if cuda else "; tiled timings include the meter's per-op overhead"), "",
             "| size | tiled peak MiB | of which output buffer | bytes per tile pixel | whole peak MiB | tiled s | "
             "whole s | PSNR(tiled, whole) 8-bit | float | pixels differing | |ΔPSNR| bound at 30 dB | "
             "whole vs D(E(x)) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ti["sizes"]:
        wp = "OOM" if r.get("whole_peak_mib") is None else f"{r['whole_peak_mib']:.1f}"
        lines.append(f"| {r['size']} | {r['tiled_peak_mib']:.1f} | {r['output_buffer_mib']:.1f} | "
                     f"{r['tiled_peak_bytes_per_tile_pixel']:.0f} ({r['tile_shape']} tiles) | {wp} | "
                     f"{r['tiled_s']:.2f} | {r.get('whole_s', float('nan')):.2f} | "
                     f"{r.get('psnr_tiled_vs_whole_8bit_db', float('nan')):.1f} dB | "
                     f"{r.get('psnr_tiled_vs_whole_float_db', float('nan')):.1f} dB | "
                     f"{r.get('pixels_differing_8bit', '')} | "
                     f"{r.get('delta_psnr_bound_db_at_30db', float('nan')):.2g} dB | "
                     f"{r.get('whole_vs_DE_psnr_db', float('nan')):.1f} dB |")
    return lines


def report_lines(res: dict[str, Any]) -> list[str]:
    dev = res.get("gpu") or f"CPU {res['cpu']}, {res['torch_threads']} threads"
    lines = [f"# bench perf dsn ({dev})", "",
             f"torch {res['torch']}; fp32 = TF32 convolutions off (PyTorch's default for cuDNN convs is TF32 "
             f"{'on' if res['pytorch_default_conv_tf32'] else 'off'}); MACs/pixel {res['macs_per_pixel']:,}; "
             "FLOPs = 2 x MACs."]
    for key, fn in (("enhance", _enhance_lines), ("train_step", _train_lines), ("tiling", _tiling_lines)):
        if key in res:
            lines += [""] + fn(res)
    return lines

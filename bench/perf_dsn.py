"""``bench perf dsn``: DSN's cost on this machine, measured the way protocol.md §5 asks.

Enhancement: batch 1, fp32, whole image, ≥10 warm-up passes, then the median and IQR of timed passes
with CUDA synchronisation around each. Training: the paper's step (batch 2 of 180² crops, the
enhancement and degradation passes, sum-reduced L2 both ways, Adam, grad-norm clip 10), from which
the paper schedules' wall time is projected. Where the device is CUDA, plain fp32 is measured side by
side with TF32 convolutions, and the ratio printed. Results go to ``results/perf/dsn_<device>.{json,md}``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from .fsutil import write_json, write_text
from .paths import results_root
from .provenance import device_info

# multiply-accumulates per pixel of one enhancement pass (dsn_reference.md §1.6)
MAC_PER_PIXEL = 11_578_752
PAPER_ITERATIONS = {"lol (250 epochs x 200 it)": 50_000, "fivek (200 epochs x 2250 it)": 450_000}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(runs):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _stats(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=4) if len(times) >= 4 else [min(times), statistics.median(times), max(times)]
    return {"median_s": statistics.median(times), "iqr_s": q[2] - q[0], "runs": len(times)}


def measure(device: torch.device, height: int, width: int, warmup: int, runs: int, train_steps: int,
            crop: int = 180) -> dict[str, Any]:
    from .dsn.model import DSN

    torch.manual_seed(0)
    model = DSN().to(device)
    for p in model.parameters():  # non-zero tails: time a network that does real work
        if p.requires_grad:
            p.data.normal_(0, 0.01)
    x = torch.rand(1, 3, height, width, device=device)
    model.eval()

    def infer():
        with torch.no_grad():
            model.enhance(x)

    result: dict[str, Any] = {"size": f"{width}x{height}", **device_info(device)}
    result["enhance_fp32"] = _stats(_timed(infer, device, warmup, runs))
    tmac = MAC_PER_PIXEL * height * width / 1e12
    result["enhance_tmac"] = tmac
    result["enhance_fp32"]["tflops"] = 2 * tmac / result["enhance_fp32"]["median_s"]

    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=1e-5)
    low = torch.rand(2, 3, crop, crop, device=device)
    high = torch.rand(2, 3, crop, crop, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        fwd = ((model.enhance(low) - high) ** 2).sum(dim=(1, 2, 3)).mean()
        bwd = ((model.degrade(high) - low) ** 2).sum(dim=(1, 2, 3)).mean()
        (fwd + bwd).backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 10.0)
        opt.step()

    result["train_step_fp32"] = _stats(_timed(step, device, max(2, warmup // 2), train_steps))
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = True
        result["enhance_tf32"] = _stats(_timed(infer, device, warmup, runs))
        result["train_step_tf32"] = _stats(_timed(step, device, max(2, warmup // 2), train_steps))
        result["tf32_speedup_enhance"] = result["enhance_fp32"]["median_s"] / result["enhance_tf32"]["median_s"]
        result["tf32_speedup_train"] = result["train_step_fp32"]["median_s"] / result["train_step_tf32"]["median_s"]
        torch.backends.cudnn.allow_tf32 = False
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    step_s = result["train_step_fp32"]["median_s"]
    result["projected_training_hours_fp32"] = {k: n * step_s / 3600 for k, n in PAPER_ITERATIONS.items()}
    return result


def run_perf_dsn(args) -> int:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the official training script
    h, w = (int(v) for v in args.size.lower().split("x"))
    cpu = device.type == "cpu"
    res = measure(device, h, w, warmup=1 if cpu else 10, runs=args.runs or (2 if cpu else 50),
                  train_steps=args.steps or (2 if cpu else 30), crop=args.crop)
    out = results_root() / "perf"
    tag = "cuda" if device.type == "cuda" else "cpu"
    write_json(out / f"dsn_{tag}.json", res)
    lines = [f"# bench perf dsn ({res.get('gpu', res['cpu'])})", "",
             f"enhancement {res['size']} fp32: median {res['enhance_fp32']['median_s'] * 1000:.1f} ms "
             f"(IQR {res['enhance_fp32']['iqr_s'] * 1000:.1f} ms, {res['enhance_fp32']['runs']} runs), "
             f"{res['enhance_tmac']:.2f} TMAC, {res['enhance_fp32']['tflops']:.1f} TFLOP/s",
             f"training step (batch 2, {args.crop}² crops, both directions) fp32: median "
             f"{res['train_step_fp32']['median_s'] * 1000:.1f} ms"]
    if "enhance_tf32" in res:
        lines += [f"TF32 vs fp32 (same run): enhancement {res['tf32_speedup_enhance']:.2f}x, "
                  f"training {res['tf32_speedup_train']:.2f}x; peak memory {res['peak_memory_gib']:.1f} GiB"]
    lines += [f"projected paper schedule, fp32: {k}: {v:.1f} h" for k, v in res["projected_training_hours_fp32"].items()]
    write_text(out / f"dsn_{tag}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0

"""``bench perf dsn-memory``: the training memory options of DSN (``--set memory=full|blocks|reversible``,
bench/dsn/memory.py) measured on the CPU.

1. **Peak memory of one paper step**: batch 2 of ``--crop``² (default 180), both directions, the configured
   sum-reduced L2, grad-norm clip 10 and an Adam update -- the Trainer's sequence around ``DSNMethod.step_fn``.
   Each setting runs in its own process, so the peak is that step's: after a warm-up step on 8² crops (Adam's
   moments, the gradients, the thread pool) the gradients are dropped, the resident set size is read
   (``/proc/self/statm``), one step runs, and the step's peak is ``ru_maxrss`` minus that. Also recorded: the
   bytes autograd keeps for backward after the forward (distinct storages seen by a saved-tensor hook). Every
   child runs under an address-space limit (``RLIMIT_AS``: its size before the step plus a cap, by default
   min(12 GiB, available memory - 4 GiB)), so a step that does not fit fails its allocation instead of
   swapping or being OOM-killed; it is then reported as "did not fit in the cap", never estimated. The same
   settings are also measured at smaller crops (64 and 128) to show how the peak scales.
2. **Step time** at 2×64² crops: the three settings interleaved step by step in one process (same model,
   same batch), median of ``--steps`` (default 3) after ``--warmup`` (default 1) steps each, and the ratio to
   ``full``.

``--sections peak|time`` measures one part and keeps the other from the last results file. Threads: ``--jobs``
(default 2). Results: ``results/perf/dsn_memory_cpu.{json,md}``. On 2 cores a 180² step
takes about a minute per setting; run it on idle cores (shared cores make the times noise).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

MODES = ("full", "blocks", "reversible")
SCALING_CROPS = (64, 128)
TIME_CROP = 64
GIB = 2**30


# ------------------------------------------------------------------------------------------------ child side
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # KiB on Linux


def _setup(mode: str, threads: int):
    import torch

    from .dsn.adapter import DSNConfig, DSNMethod

    torch.set_num_threads(threads)
    config = DSNConfig(memory=mode, encoder="fallback")   # the tensors' values do not change the cost
    config.validate()
    method = DSNMethod(config)
    method.device = torch.device("cpu")
    model = method.fresh_model(0)
    if model.memory != mode:
        raise RuntimeError(f"the model was built with memory={model.memory!r}, not {mode!r}")
    model.train()
    params = list(model.trainable_parameters())
    opt = torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    step_fn = method.step_fn(model)

    def step(batch) -> float:
        opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = step_fn(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        return time.perf_counter() - t0

    return model, opt, step, config


def _batch(crop: int, seed: int = 0):
    import torch

    from .training import Batch

    g = torch.Generator().manual_seed(seed)
    high = torch.rand(2, 3, crop, crop, generator=g)
    return Batch(low=(high * 0.3).contiguous(), high=high, ids=["a", "b"])


def _saved_bytes(model, step_fn_batch) -> int:
    """What autograd keeps for backward after the forward of both directions (distinct storages)."""
    import torch

    from .dsn.losses import quantize_ste

    kept: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        kept[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        b = step_fn_batch
        loss = model.enhance(b.low).sum() + model.degrade(quantize_ste(b.high)).sum()
    del loss
    return sum(kept.values())


def child_peak(mode: str, crop: int, threads: int, cap: int) -> dict[str, Any]:
    import gc

    model, opt, step, _ = _setup(mode, threads)
    step(_batch(8))
    opt.zero_grad(set_to_none=True)
    batch = _batch(crop)
    gc.collect()
    rss0, max0 = _rss(), _maxrss()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + cap
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    out: dict[str, Any] = {"memory": mode, "crop": crop, "batch": 2, "rss_before_gib": rss0 / GIB,
                           "cap_gib": cap / GIB, "kept_for_backward_gib": None}
    try:
        seconds = step(batch)
    except (MemoryError, RuntimeError) as e:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        out.update(fits=False, error=first[:200], peak_rss_reached_gib=_maxrss() / GIB)
        return out
    max1 = _maxrss()
    opt.zero_grad(set_to_none=True)
    try:   # after the step, whose peak is taken: this forward keeps as much as the step's did
        out["kept_for_backward_gib"] = _saved_bytes(model, batch) / GIB
    except (MemoryError, RuntimeError):
        pass
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    out.update(fits=True, seconds=seconds, peak_rss_gib=max1 / GIB, step_peak_gib=(max1 - rss0) / GIB,
               peak_before_step_gib=max0 / GIB,
               lower_bound=max1 <= max0)   # the step never rose above the earlier peak: its figure is a bound
    return out


def child_time(crop: int, threads: int, warmup: int, steps: int) -> dict[str, Any]:
    import torch

    from .dsn.memory import MEMORY_MODES

    model, opt, step, _ = _setup("full", threads)
    batch = _batch(crop)
    times: dict[str, list[float]] = {m: [] for m in MEMORY_MODES}
    for i in range(warmup + steps):
        for mode in MEMORY_MODES:   # interleaved: a change of the machine's load hits every setting alike
            model.set_memory(mode)
            t = step(batch)
            if i >= warmup:
                times[mode].append(t)
    res: dict[str, Any] = {"crop": crop, "batch": 2, "warmup": warmup, "steps": steps, "threads": torch.get_num_threads()}
    for mode, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        res[mode] = {"median_s": statistics.median(ts), "iqr_s": q[2] - q[0], "times_s": ts}
    for mode in MEMORY_MODES:
        res[mode]["ratio_to_full"] = res[mode]["median_s"] / res["full"]["median_s"]
    return res


def _child_main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    kind = spec.pop("kind")
    res = child_peak(**spec) if kind == "peak" else child_time(**spec)
    print("RESULT " + json.dumps(res), flush=True)


# ------------------------------------------------------------------------------------------------ parent side
def _run_child(spec: dict[str, Any], threads: int, timeout: float = 1800) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-c", "import sys; from bench.perf_dsn_memory import _child_main; _child_main(sys.argv[1:])",
           json.dumps(spec)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {**{k: v for k, v in spec.items() if k != "kind"}, "fits": False,
                "error": f"child exited {p.returncode}: {tail[:200]}"}
    return json.loads(lines[-1][len("RESULT "):])


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _machine(threads: int) -> dict[str, Any]:
    import torch

    with open("/proc/meminfo") as f:
        total = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemTotal:"))
    return {"torch": torch.__version__, "threads": threads, "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "memory_total_gib": total / GIB, "platform": platform.platform(),
            "python": platform.python_version()}


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def report_lines(res: dict[str, Any]) -> list[str]:
    m = res["machine"]
    when = res.get("sections_measured") or {}
    stamp = ", ".join(f"{k} {v}" for k, v in when.items()) or res["measured"]
    lines = ["# DSN training memory options (CPU)", "",
             f"Measured {stamp} with torch {m['torch']}, {m['threads']} threads, {m['cores']} cores "
             f"({m['cpu']}), {m['memory_total_gib']:.1f} GiB RAM. `bench perf dsn-memory`; options in "
             "bench/dsn/memory.py.", "",
             f"## Peak memory of one training step (batch 2, both directions, L2 sum, clip {res['grad_clip']:g}, Adam)", "",
             "Step peak = process peak RSS during the step minus the RSS before it (weights, Adam moments and the "
             "runtime already resident); each setting in its own process, under an address-space cap.", "",
             "| memory | crop | step peak (GiB) | process peak RSS (GiB) | kept for backward after forward (GiB) | step (s) |",
             "|---|---|---|---|---|---|"]
    for r in res["peak"]:
        if r.get("fits"):
            bound = " (lower bound)" if r.get("lower_bound") else ""
            lines.append(f"| {r['memory']} | 2×{r['crop']}² | {_fmt(r['step_peak_gib'])}{bound} | {_fmt(r['peak_rss_gib'])} | "
                         f"{_fmt(r.get('kept_for_backward_gib'), 3)} | {_fmt(r.get('seconds'), 1)} |")
        else:
            lines.append(f"| {r['memory']} | 2×{r['crop']}² | not measured: did not fit in the {_fmt(r.get('cap_gib'), 1)} GiB "
                         f"cap ({r.get('error', '')}) | - | {_fmt(r.get('kept_for_backward_gib'), 3)} | - |")
    t = res.get("time")
    if t and "error" in t:
        lines += ["", f"Step time at 2×{TIME_CROP}²: not measured ({t['error']})"]
    elif t:
        lines += ["", f"## Step time at 2×{t['crop']}² (interleaved, median of {t['steps']} after {t['warmup']} warm-up each)", "",
                  "| memory | median (s) | IQR (s) | ratio to full |", "|---|---|---|---|"]
        for mode in MODES:
            lines.append(f"| {mode} | {t[mode]['median_s']:.2f} | {t[mode]['iqr_s']:.2f} | {t[mode]['ratio_to_full']:.2f} |")
    return lines


def run_perf_dsn_memory(args) -> int:
    from .errors import BenchError
    from .fsutil import write_json, write_text
    from .paths import results_root

    if getattr(args, "device", "auto") == "cuda":
        raise BenchError("bench perf dsn-memory measures the CPU (resident memory); use --device cpu or auto")
    threads = int(getattr(args, "jobs", None) or 2)
    crop = int(getattr(args, "crop", None) or 180)
    steps = int(getattr(args, "steps", None) or 3)
    warmup = int(getattr(args, "warmup", None) or 1)
    cap = int(min(12 * GIB, max(1 * GIB, _mem_available() - 4 * GIB)))
    sections = [x.strip() for x in (getattr(args, "sections", None) or "peak,time").split(",") if x.strip()]
    if not sections or any(x not in ("peak", "time") for x in sections):
        raise BenchError("bench perf dsn-memory --sections: a comma-separated subset of peak,time")
    from .dsn.adapter import DSNConfig

    out = results_root() / "perf"
    res: dict[str, Any] = {"peak": [], "time": None}
    if set(sections) != {"peak", "time"} and (out / "dsn_memory_cpu.json").is_file():
        try:   # the section not measured now is kept from the last run
            res.update(json.loads((out / "dsn_memory_cpu.json").read_text()))
        except (OSError, ValueError):
            pass
        res.setdefault("sections_measured", {k: res.get("measured") for k in ("peak", "time") if res.get(k)})
    res.update({"measured": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": _machine(threads), "cap_gib": cap / GIB,
                "grad_clip": DSNConfig().grad_clip})
    for name in sections:
        res[name] = [] if name == "peak" else None
        res.setdefault("sections_measured", {})[name] = res["measured"]

    def save() -> None:
        write_json(out / "dsn_memory_cpu.json", res)
        write_text(out / "dsn_memory_cpu.md", "\n".join(report_lines(res)) + "\n")

    crops = [c for c in SCALING_CROPS if c < crop] + [crop] if "peak" in sections else []
    for c in crops:
        for mode in MODES:
            print(f"[perf dsn-memory] peak: memory={mode} at 2x{c}^2 (cap {cap / GIB:.1f} GiB)", flush=True)
            r = _run_child({"kind": "peak", "mode": mode, "crop": c, "threads": threads, "cap": cap}, threads)
            res["peak"].append(r)
            save()
    if "time" in sections:
        print(f"[perf dsn-memory] time: 2x{TIME_CROP}^2, {warmup}+{steps} steps per setting", flush=True)
        res["time"] = _run_child({"kind": "time", "crop": TIME_CROP, "threads": threads, "warmup": warmup,
                                  "steps": steps}, threads)
        save()
    print("\n".join(report_lines(res)))
    return 0

"""``bench perf gpu-bench``: DSN's paper training step on one GPU, prepared to run in under 8 minutes (H200).

Sections, in this order, each saved (atomically) as soon as it is measured, so a timeout loses nothing:

1. ``steps``: steps/s of the paper step (batch 2, 180² crops, both directions, sum-reduced L2, Adam 2e-4 with
   weight decay 1e-5, clip 10 -- the Trainer's code path through :class:`bench.train_speed.TrainSpeed`) for
   fp32 (TF32 forced off), TF32 and bf16 autocast, each NCHW and channels-last, eager; peak
   ``torch.cuda.max_memory_allocated`` per setting; and the largest relative loss difference to fp32 over the
   same steps (same initial weights, same batches).
2. ``enhance``: enhancement ms at 400×600 per precision, and the PSNR of each precision's 8-bit output against
   fp32's on the same images (a real underexposed photo and blurred noise; fan-in-scaled random weights so the
   network really mixes pixels).
3. ``memory``: peak memory and step time per ``DSNConfig.memory`` option (full | blocks | reversible; skipped
   with a note when this checkout's DSNConfig has no ``memory``).
4. ``accuracy``: on the embedded demo set, ``--accuracy-iters`` iterations of ``ours`` in fp32 and in bf16 from
   the same seed (``bench.dsn.adapter.DSNMethod.train``, the real Trainer), PSNR on its test split.
5. ``compile``: ``torch.compile`` (mode ``default``) of the fastest eager settings, while the time budget lasts.
6. ``long``: the measured wall time of ``--long-steps`` (1,000) paper steps with the fastest setting *within
   tolerance* -- relative loss difference to fp32 ≤ ``--loss-rtol`` (1e-2) and, for bf16, demo-set
   |ΔPSNR| ≤ ``--psnr-tol`` (0.1 dB) when measured -- and from it the *projected* paper schedules: LOL 250
   epochs × ceil(400/2) = 50,000 iterations, FiveK 200 × ceil(4500/2) = 450,000 (``epoch_schedule``).

A global budget (``--budget-s``, default 450 s of measuring) skips what no longer fits, with a note. Results:
``results/perf/dsn_cuda_bench.{json,md}`` (not ``dsn_cuda.*``, which ``bench perf dsn --device cuda`` rewrites
whole). ``--cpu-smoke`` runs every section on the CPU at toy sizes (24² crops, 3 steps, 64×96 images) and
writes ``dsn_cuda_cpu_smoke.*``, labelled as a smoke run: its numbers are not GPU figures.
"""

from __future__ import annotations

import gc
import math
import time
from typing import Any, Callable

import torch

from .amp import Amp
from .perf_cuda_report import report_lines
from .perf_dsn import _random_model, _stats, _sync, _test_noise, _test_photo
from .train_speed import TrainSpeed, compile_unavailable, set_tf32, tf32_state

PRECISIONS = ("fp32", "tf32", "bf16")
SECTIONS = ("steps", "enhance", "memory", "accuracy", "compile", "long")
SCHEDULES = {"lol": (400, 250), "fivek": (4500, 200)}   # n_train, epochs (bench/dsn/adapter.py profiles)
CONFIGS = {
    "cuda": {"crop": 180, "n_blocks": 8, "warmup": 3, "steps": 10, "size": (400, 600), "runs": 20,
             "accuracy_iters": 200, "accuracy_crop": 180, "long_steps": 1000, "budget_s": 450.0},
    "cpu": {"crop": 24, "n_blocks": 8, "warmup": 1, "steps": 3, "size": (64, 96), "runs": 2,
            "accuracy_iters": 2, "accuracy_crop": 24, "long_steps": 3, "budget_s": 600.0},
}


def paper_step(device: torch.device, *, crop: int = 180, n_blocks: int = 8, precision: str = "fp32",
               channels_last: bool = False, compile: str = "off", optimizer_impl: str = "default",
               memory: str = "full", n_batches: int = 4) -> tuple[Callable[[], float], dict[str, Any]]:
    """One paper training step as a closure (returns the loss), built the way the Trainer builds it."""
    from .dsn.losses import l2_loss, quantize_ste
    from .dsn.model import DSN
    from .training import Batch, TrainSettings

    torch.manual_seed(0)
    model = DSN(n_blocks=n_blocks).to(device)
    if memory != "full":
        model.set_memory(memory)
    settings = TrainSettings(iterations=1, lr=2e-4, amp="bf16" if precision == "bf16" else "off",
                             channels_last=channels_last, compile=compile, optimizer_impl=optimizer_impl,
                             tf32=precision == "tf32")
    speed, amp = TrainSpeed(settings, device), Amp(settings.amp, device)
    speed.prepare_model(model)
    params = list(model.trainable_parameters())
    opt = speed.adam(params, lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-5)
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(n_batches):   # smooth, dark-ish crops and brighter targets: the same for every setting
        high = torch.nn.functional.avg_pool2d(torch.rand(2, 3, crop + 4, crop + 4, generator=g), 5, 1)
        batches.append(speed.prepare_batch(Batch((high * 0.3).to(device), high.to(device), ["a", "b"])))

    def forward(b):
        return l2_loss(model.enhance(b.low), b.high) + l2_loss(model.degrade(quantize_ste(b.high)), b.low)

    fwd = speed.compile_step(forward)
    model.train()
    count = [0]

    def step() -> float:
        b = batches[count[0] % len(batches)]
        count[0] += 1
        opt.zero_grad(set_to_none=True)
        with amp.autocast():
            loss = fwd(b)
        amp.backward(loss)
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        amp.step(opt)
        return float(loss.detach())

    return step, {**speed.describe(), "precision": precision, "memory": memory}


def _measure_steps(device: torch.device, cfg: dict[str, Any], **opts: Any) -> dict[str, Any]:
    """Warm up, time ``steps`` steps one by one; peak memory, per-step losses, first-step (compile) time."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    before = tf32_state()
    try:
        set_tf32(opts.get("precision") == "tf32")
        torch.backends.cudnn.benchmark = device.type == "cuda"
        step, info = paper_step(device, crop=cfg["crop"], n_blocks=cfg["n_blocks"], **opts)
        losses, times = [], []
        for i in range(cfg["warmup"] + cfg["steps"]):
            _sync(device)
            t0 = time.perf_counter()
            losses.append(step())
            _sync(device)
            times.append(time.perf_counter() - t0)
        out = {**info, **_stats(times[cfg["warmup"]:]), "first_step_s": times[0], "losses": losses,
               "timed_total_s": sum(times[cfg["warmup"]:])}
        out["steps_per_s"] = 1.0 / out["median_s"]
        if device.type == "cuda":
            out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        return out
    finally:
        set_tf32(*before)


def _rel(losses: list[float], ref: list[float]) -> float:
    return max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, ref))


def _safe(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except Exception as e:   # an OOM or a compiler failure is a result too
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"}


def section_steps(device: torch.device, cfg: dict[str, Any], res: dict[str, Any]) -> None:
    rows = res.setdefault("steps", {})
    for precision in PRECISIONS:
        for cl in (False, True):
            name = f"{precision}{'+cl' if cl else ''}"
            if precision == "tf32" and device.type != "cuda":
                rows[name] = {"skipped": "TF32 exists on CUDA only"}
                continue
            rows[name] = _safe(lambda: _measure_steps(device, cfg, precision=precision, channels_last=cl))
    ref = rows["fp32"].get("losses")
    for row in rows.values():
        if ref and row.get("losses"):
            row["loss_rel_diff_vs_fp32"] = _rel(row["losses"], ref)


def section_compile(device: torch.device, cfg: dict[str, Any], res: dict[str, Any], left: Callable[[], float]) -> None:
    rows = res["steps"]
    reason = compile_unavailable(device)
    eager = sorted((n for n, r in rows.items() if "median_s" in r and "+compile" not in n),
                   key=lambda n: rows[n]["median_s"])
    ref = rows["fp32"].get("losses")
    keep = cfg["long_steps"] * rows[eager[0]]["median_s"] if eager else 0.0   # what the long section needs
    for name in eager[:2]:
        key = name + "+compile"
        if reason is not None:
            rows[key] = {"skipped": reason}
            continue
        if left() < keep + 180:
            rows[key] = {"skipped": f"time budget ({left():.0f} s left, {keep:.0f} s kept for the long run; "
                                    "compiling the step takes minutes)"}
            continue
        r = rows[name]
        rows[key] = _safe(lambda: _measure_steps(device, cfg, precision=r["precision"],
                                                 channels_last=r["channels_last"], compile="default"))
        if ref and rows[key].get("losses"):
            rows[key]["loss_rel_diff_vs_fp32"] = _rel(rows[key]["losses"], ref)


def section_memory(device: torch.device, cfg: dict[str, Any], res: dict[str, Any]) -> None:
    from .dsn.adapter import DSNConfig

    out: dict[str, Any] = {}
    if not hasattr(DSNConfig(), "memory"):
        res["memory"] = {"skipped": "this checkout's DSNConfig has no `memory` option"}
        return
    from .dsn.memory import MEMORY_MODES

    small = {**cfg, "warmup": 1, "steps": max(2, cfg["steps"] // 2)}
    for mode in MEMORY_MODES:
        out[mode] = _safe(lambda: _measure_steps(device, small, precision="fp32", memory=mode))
    ref = out.get("full", {}).get("losses")
    for row in out.values():
        if ref and row.get("losses"):
            row["loss_rel_diff_vs_full"] = _rel(row["losses"], ref)
    res["memory"] = out


def section_enhance(device: torch.device, cfg: dict[str, Any], res: dict[str, Any]) -> None:
    from .amp import inference
    from .imageio import quantize
    from .metrics import psnr_rgb
    from .perf_dsn import _timed

    h, w = cfg["size"]
    model = _random_model(device, n_blocks=cfg["n_blocks"], fan_in_scale=0.45)
    model.set_fast_inference(True, channels_last=False)
    images = {"photo": _test_photo(h, w).to(device), "noise": _test_noise(h, w).to(device)}
    outs: dict[str, dict[str, Any]] = {}
    rows: dict[str, Any] = {"size": f"{h}x{w}", "model": "random, conv weights N(0, (0.45/sqrt(fan_in))^2)"}
    before = tf32_state()
    try:
        for precision in PRECISIONS:
            if precision == "tf32" and device.type != "cuda":
                rows[precision] = {"skipped": "TF32 exists on CUDA only"}
                continue
            set_tf32(precision == "tf32")
            mode = "bf16" if precision == "bf16" else "off"

            def run(x=images["photo"]) -> torch.Tensor:
                with torch.inference_mode():
                    return inference(model.enhance, x, mode)

            rows[precision] = _stats(_timed(run, device, 2 if device.type == "cuda" else 1, cfg["runs"]))
            rows[precision]["ms"] = rows[precision]["median_s"] * 1e3
            with torch.inference_mode():
                outs[precision] = {k: quantize(inference(model.enhance, x, mode)) for k, x in images.items()}
    finally:
        set_tf32(*before)
    for precision, q in outs.items():
        rows[precision]["psnr_8bit_vs_fp32_db"] = {k: psnr_rgb(q[k], outs["fp32"][k]) for k in q}
    res["enhance"] = rows


def section_accuracy(device: torch.device, cfg: dict[str, Any], res: dict[str, Any], workdir: Any) -> None:
    from .dsn.adapter import DSNMethod
    from .imageio import quantize, to_tensor
    from .methods.base import build_config
    from .metrics import psnr_rgb
    from .run import _train_pairs, open_dataset

    m = open_dataset("demo", progress=False)
    train, test = _train_pairs(m, "train"), _train_pairs(m, "test")
    out: dict[str, Any] = {"dataset": "demo", "n_train": len(train), "n_test": len(test),
                           "iterations": cfg["accuracy_iters"], "crop": cfg["accuracy_crop"], "seed": 0}
    for amp in ("off", "bf16"):
        t0 = time.perf_counter()
        sets = {"schedule": "fixed", "iterations": str(cfg["accuracy_iters"]), "milestones": "", "val_every": "0",
                "checkpoint_every": "0", "crop": str(cfg["accuracy_crop"]), "amp": amp,
                "n_blocks": str(cfg["n_blocks"])}
        method = DSNMethod(build_config(DSNMethod, "paper", sets, "demo"))
        method.setup(device)
        method.train(train, [], workdir / f"accuracy_{amp}", seed=0, progress=False)
        scores = [psnr_rgb(quantize(method.enhance(to_tensor(p.load_low()).to(device))), p.load_high()) for p in test]
        key = "fp32" if amp == "off" else "bf16"
        out[key] = {"psnr_db": sum(scores) / len(scores), "per_image_db": scores,
                    "seconds": time.perf_counter() - t0}
        del method
    out["delta_psnr_bf16_minus_fp32_db"] = out["bf16"]["psnr_db"] - out["fp32"]["psnr_db"]
    res["accuracy"] = out


def fastest_within_tolerance(res: dict[str, Any], loss_rtol: float, psnr_tol: float) -> str | None:
    acc = res.get("accuracy", {})
    bf16_ok = "delta_psnr_bf16_minus_fp32_db" not in acc or abs(acc["delta_psnr_bf16_minus_fp32_db"]) <= psnr_tol
    ok = [n for n, r in res.get("steps", {}).items() if "median_s" in r
          and r.get("loss_rel_diff_vs_fp32", 0.0) <= loss_rtol and (r["precision"] != "bf16" or bf16_ok)]
    return min(ok, key=lambda n: res["steps"][n]["median_s"]) if ok else None


def section_long(device: torch.device, cfg: dict[str, Any], res: dict[str, Any], args: dict[str, Any],
                 left: Callable[[], float]) -> None:
    name = fastest_within_tolerance(res, args["loss_rtol"], args["psnr_tol"])
    if name is None:
        res["long"] = {"skipped": "no setting within tolerance was measured"}
        return
    r = res["steps"][name]
    n = cfg["long_steps"]
    fits = int(max(0.0, left() - 30 - r.get("first_step_s", 0.0)) / r["median_s"])
    if fits < n and device.type == "cuda":
        n = max(10, fits)    # what the budget allows; labelled with the number actually run
    out = _safe(lambda: _measure_steps(device, {**cfg, "steps": n}, precision=r["precision"],
                                       channels_last=r["channels_last"], compile=r.get("compile", "off")))
    out.pop("losses", None)
    out.update(setting=name, steps_measured=n,
               tolerance={"loss_rtol": args["loss_rtol"], "psnr_tol_db": args["psnr_tol"]})
    res["long"] = out
    if out.get("timed_total_s"):
        per = out["timed_total_s"] / n
        res["projection"] = {}
        for k, (n_train, epochs) in SCHEDULES.items():
            its = epochs * math.ceil(n_train / 2)
            res["projection"][k] = {"iterations": its, "hours": its * per / 3600,
                                    "from": f"{name}: {n} measured steps, {per * 1e3:.1f} ms each on average"}


def run_gpu_bench(args: Any) -> int:
    import shutil
    import tempfile
    from datetime import datetime, timezone
    from pathlib import Path

    from .errors import BenchError
    from .fsutil import write_json, write_text
    from .paths import results_root
    from .provenance import device_info

    smoke = bool(getattr(args, "cpu_smoke", False))
    sections = [s.strip() for s in (getattr(args, "sections", None) or ",".join(SECTIONS)).split(",") if s.strip()]
    if not sections or any(s not in SECTIONS for s in sections):
        raise BenchError(f"unknown gpu-bench section in {','.join(sections) or '(none)'}; "
                         f"choose from {', '.join(SECTIONS)}")
    if not smoke and not torch.cuda.is_available():
        raise BenchError("bench perf gpu-bench needs a CUDA device; use --cpu-smoke to exercise it on the CPU")
    device = torch.device("cpu" if smoke else "cuda")
    cfg = dict(CONFIGS[device.type])
    for key, attr in (("crop", "crop"), ("steps", "steps"), ("warmup", "warmup"), ("accuracy_iters", "accuracy_iters"),
                      ("long_steps", "long_steps"), ("budget_s", "budget_s")):
        if getattr(args, attr, None) is not None:
            cfg[key] = getattr(args, attr)
    tol = {"loss_rtol": getattr(args, "loss_rtol", None) or 1e-2, "psnr_tol": getattr(args, "psnr_tol", None) or 0.1}
    out_dir = results_root() / "perf"
    stem = "dsn_cuda_cpu_smoke" if smoke else "dsn_cuda_bench"
    start = time.perf_counter()
    left = lambda: cfg["budget_s"] - (time.perf_counter() - start)  # noqa: E731
    res: dict[str, Any] = {**device_info(device), "torch": torch.__version__, "cpu_smoke": smoke,
                           "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
                           "tolerance": tol, "sections": {}}

    def save(name: str) -> None:
        res["sections"][name] = {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                 "elapsed_s": time.perf_counter() - start}
        write_json(out_dir / f"{stem}.json", res)
        write_text(out_dir / f"{stem}.md", "\n".join(report_lines(res)) + "\n")
        print(f"[gpu-bench] {name} done at {time.perf_counter() - start:.0f} s", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="gpu_bench_"))
    flags = set_tf32(False), torch.backends.cudnn.benchmark   # fp32 = TF32 off unless a row says otherwise
    try:
        for name, fn, need in (("steps", lambda: section_steps(device, cfg, res), 0),
                               ("enhance", lambda: section_enhance(device, cfg, res), 20),
                               ("memory", lambda: section_memory(device, cfg, res), 30),
                               ("accuracy", lambda: section_accuracy(device, cfg, res, workdir), 120),
                               ("compile", lambda: section_compile(device, cfg, res, left), 0),
                               ("long", lambda: section_long(device, cfg, res, tol, left), 0)):
            if name not in sections or (name in ("compile", "long") and "steps" not in res):
                continue
            if not smoke and left() < need:
                res.setdefault("skipped", {})[name] = f"time budget ({left():.0f} s left)"
                save(name)
                continue
            print(f"[gpu-bench] {name} ({left():.0f} s of budget left)", flush=True)
            try:
                fn()
            except Exception as e:   # record and go on: later sections still run
                res.setdefault("errors", {})[name] = f"{type(e).__name__}: {str(e).strip()[:300]}"
            save(name)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        set_tf32(*flags[0])
        torch.backends.cudnn.benchmark = flags[1]
    print("\n".join(report_lines(res)))
    return 0

"""``bench perf dsn``: DSN's cost on this machine, measured the way protocol.md §5 asks, in one run.

Sections (all on the same device, in one process):

1. **Convolution throughput** of this machine: DSN's dominant layer shapes (3×3, 64→128 and 128→64,
   stride 1, batch 1) at each timed resolution, timed exactly like the enhancement -> TFLOP/s. The best
   of NCHW and channels_last is the reference ("measured fp32 convolution throughput").
2. **Enhancement** at each size (default 200×300 and 400×600 on CUDA): the same module through
   - ``eager``: a plain ``torch.no_grad()`` forward, default flags (cudnn.benchmark off, NCHW);
   - ``inference_mode``; ``+cudnn.benchmark``; ``+channels_last`` (model and input);
   - ``in_place``: :meth:`bench.dsn.model.DSN.set_fast_inference` in NCHW (in-place PReLU, attention
     product and residual sums while autograd is off; bit-identical to eager);
   - ``ours``: ``bench run``'s inference path (``torch.inference_mode``, in place, cudnn.benchmark on CUDA,
     channels_last with the PReLU fused into the convolutions on CPU; ``--channels-last on|off`` overrides),
     in this process, which keeps PyTorch's and glibc's defaults (``bench perf`` does not ask for huge pages);
   - ``ours_heap`` (CPU): the same path in a process set up as ``bench run`` sets up its own -- huge pages
     for big tensors asked for before torch starts (:mod:`bench.large_pages`) and the heap reuse that DSN's
     CPU setup applies by default (:func:`bench.dsn.allocator.reuse_heap`). Both are process-wide and
     sticky, so it runs in a spawned worker process, driven round-robin with this process's paths; the
     worker also times the convolution reference pair, and the reference is the best throughput measured in
     either process, timed before and after the enhancement passes at each size. Allocator and huge-page
     state and RSS of both processes are recorded. ``--paths`` measures a subset (``eager`` always).
   Reported: median and IQR, FLOP/s (FLOPs = 2 × MACs, MACs counted by ``macs_per_pixel``), the
   ratio to the measured convolution throughput, and each path's speed-up over ``eager``.
3. **Training step** at batch 2 of crop² (both directions, sum-reduced L2, Adam, clip 10) and the
   paper schedules' projected wall time (from a step of crop², scaled by pixels to 180² when the crop is
   smaller). The paper's 2×180² step keeps ~17 GiB of activations for the backward pass (H200: 16.8 GiB),
   which does not fit a 24 GB CPU machine next to the allocator's overhead, so the CPU default crop is 96.
4. **Tiled inference memory**: the same tile at two image sizes (default 400×600 and 1200×1800, tile
   384 so that both images cut into full 384² tiles; ``bench run``'s default tile is 512): peak
   memory of the tiled path and of the whole image (CUDA: ``max_memory_allocated``; CPU: live tensor
   bytes, :class:`bench.tiling.TensorMemoryMeter`), and PSNR(tiled, whole) of the 8-bit outputs where
   both fit, with the bound it implies on |ΔPSNR| against any reference.

Precision: every "fp32" number here has TF32 convolutions **off** (PyTorch's default for cuDNN convs is
TF32 on, which silently made earlier "fp32" CUDA numbers TF32); TF32 is measured apart, and flagged.

Weights: random (the timings do not depend on them). The tiled-vs-whole gap uses fan-in-scaled random
convolutions (``--gap-scale``, 0.45 for 8 blocks: the output is ~15 dB from D(E(x)), so the network
really mixes pixels) unless ``--weights FILE`` gives a checkpoint of ``ours``.

CPU defaults are the same sizes with fewer repeats; on 2 cores the whole run takes about half an hour (one
600×400 enhancement ≈ 20 s on our path, 37 s eager; the 1200×1800 tiled pass ≈ 15 min). Each section is
written as soon as it is measured, and ``--sections enhance|train|tiling`` (comma-separated) measures part
of it: the sections measured replace those of the last results file for the same machine and torch, the
others are kept, each stamped with its own time. The CPU's tiled timings include the memory meter's per-op overhead. On a loaded machine CPU timings are
noise (two OpenMP threads competing for two busy cores slow convolutions down 10-50x); run it on idle
cores. Results: ``results/perf/dsn_<device>.{json,md}``.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from .amp import conv_tf32, set_conv_tf32
from .fsutil import write_json, write_text
from .large_pages import child_environment
from .paths import results_root
from .dsn.allocator import allocator_state
from .provenance import device_info

# multiply-accumulates per pixel of one enhancement pass (dsn_reference.md §1.6)
MAC_PER_PIXEL = 11_578_752
PAPER_ITERATIONS = {"lol (250 epochs x 200 it)": 50_000, "fivek (200 epochs x 2250 it)": 450_000}
CLI_DEFAULT_SIZE = "400x600"

DEFAULTS = {
    "cuda": {"sizes": [(200, 300), (400, 600)], "mem_sizes": [(400, 600), (1200, 1800)], "tile": 384,
             "overlap": 96, "crop": 180, "warmup": 10, "runs": 50, "steps": 30, "mem_blocks": 8, "gap_scale": 0.45},
    "cpu": {"sizes": [(200, 300), (400, 600)], "mem_sizes": [(400, 600), (1200, 1800)], "tile": 384,
            "overlap": 96, "crop": 96, "warmup": 1, "runs": 3, "steps": 2, "mem_blocks": 8, "gap_scale": 0.45},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, warmup: int, runs: int) -> list[float]:
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


def _timed_interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int,
                       runs: int) -> dict[str, list[float]]:
    """Time several variants round-robin (the start rotating each round), so a change in machine load
    hits all of them alike; each call is synchronised and timed on its own."""
    for fn in fns.values():
        for _ in range(warmup):
            (fn.timed if isinstance(fn, _Remote) else fn)()
    _sync(device)
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        for n in names[r % len(names):] + names[:r % len(names)]:
            if isinstance(fns[n], _Remote):      # timed inside the worker, without the pipe
                times[n].append(fns[n].timed())
                continue
            _sync(device)
            t0 = time.perf_counter()
            fns[n]()
            _sync(device)
            times[n].append(time.perf_counter() - t0)
    return times


def _stats(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=4) if len(times) >= 4 else [min(times), statistics.median(times), max(times)]
    return {"median_s": statistics.median(times), "iqr_s": q[2] - q[0], "runs": len(times)}


@contextlib.contextmanager
def _flags(benchmark: bool | None = None, tf32: bool | None = None) -> Iterator[None]:
    """Temporarily set cudnn.benchmark / conv TF32, restoring both."""
    old_b, old_t = torch.backends.cudnn.benchmark, conv_tf32()
    try:
        if benchmark is not None:
            torch.backends.cudnn.benchmark = benchmark
        if tf32 is not None:
            set_conv_tf32(tf32)
        yield
    finally:
        torch.backends.cudnn.benchmark = old_b
        set_conv_tf32(old_t)


def _random_model(device: torch.device, n_blocks: int = 8, std: float | None = 0.01, fan_in_scale: float | None = None):
    """A DSN with every trainable tensor random (timings), or every conv fan-in scaled (the tiling gap)."""
    from .dsn.model import DSN

    torch.manual_seed(0)
    model = DSN(n_blocks=n_blocks)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.requires_grad:
                continue
            if fan_in_scale is not None:
                if p.ndim == 4:
                    p.copy_(torch.randn(p.shape, generator=g) * fan_in_scale * p[0].numel() ** -0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------------
# the heap worker: variants in a process allocating like bench run's (large pages + heap reuse; both sticky)
# ------------------------------------------------------------------------------------------------
HEAP = "_heap"        # suffix of the variants measured in the worker (ours_heap, nchw_heap, channels_last_heap)


def _rss_mib() -> dict[str, float]:
    from .memstat import status_kib

    return {k: v / 1024 for k in ("VmRSS", "VmHWM") if (v := status_kib(k)) is not None}


def _heap_worker_main(conn, model_bytes: bytes, threads: int) -> None:
    """The child: apply reuse_heap() first (as ``bench run``'s CPU setup does), then serve commands."""
    import io

    from .dsn.allocator import reuse_heap
    from .large_pages import state as large_pages_state

    state = reuse_heap()
    torch.set_num_threads(threads)
    model = torch.load(io.BytesIO(model_bytes), weights_only=False)
    fns: dict[str, Callable[[], Any]] = {}
    while True:
        cmd, *args = conn.recv()
        try:
            if cmd == "quit":
                conn.send((True, None))
                return
            if cmd == "state":
                reply: Any = {"allocator": state, "large_pages": large_pages_state(), "rss_mib": _rss_mib()}
            elif cmd == "conv":
                fns.update({k + HEAP: v for k, v in _conv_fns(torch.device("cpu"), *args).items()})
                reply = None
            elif cmd == "enhance":
                fns.update({k + HEAP: v for k, v in _enhance_fns(model, torch.device("cpu"), *args).items()})
                reply = None
            elif cmd == "time":
                t0 = time.perf_counter()
                fns[args[0]]()
                reply = time.perf_counter() - t0
            elif cmd == "output":
                reply = fns[args[0]]()
            elif cmd == "drop":
                fns.clear()
                reply = None
            else:
                raise ValueError(f"unknown command {cmd!r}")
            conn.send((True, reply))
        except Exception as e:  # noqa: BLE001 -- reported to the parent, which raises it
            conn.send((False, f"{type(e).__name__}: {e}"))


class HeapWorker:
    """A spawned child process set up like a ``bench run`` process (huge pages asked for before its torch
    started, then :func:`bench.dsn.allocator.reuse_heap`) that runs the ``ours`` path and the convolution
    reference there, driven round-robin with the parent's own variants. The parent keeps PyTorch's and
    glibc's defaults, so "without" and "with" are measured side by side."""

    def __init__(self, model: torch.nn.Module):
        import io
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        buf = io.BytesIO()
        torch.save(model, buf)
        self.proc = ctx.Process(target=_heap_worker_main, args=(child, buf.getvalue(), torch.get_num_threads()),
                                daemon=True)
        # the child allocates like a `bench run` process: huge pages asked for before its torch starts
        saved = dict(os.environ)
        os.environ.update(child_environment())
        try:
            self.proc.start()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        child.close()

    def call(self, *msg: Any) -> Any:
        self.conn.send(msg)
        ok, value = self.conn.recv()
        if not ok:
            raise RuntimeError(f"heap worker: {value}")
        return value

    def remote(self, name: str) -> "_Remote":
        return _Remote(self, name)

    def close(self) -> None:
        try:
            self.call("quit")
        except (OSError, EOFError):
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=10)


class _Remote:
    """A variant that lives in the heap worker: calling it returns its output, ``timed()`` its time there."""

    def __init__(self, worker: HeapWorker, name: str):
        self.worker, self.name = worker, name

    def __call__(self) -> Any:
        return self.worker.call("output", self.name)

    def timed(self) -> float:
        return self.worker.call("time", self.name)


# ------------------------------------------------------------------------------------------------
# 1. convolution throughput
# ------------------------------------------------------------------------------------------------
def _conv_fns(device: torch.device, h: int, w: int) -> dict[str, Callable[[], Any]]:
    import copy

    torch.manual_seed(0)
    c1 = torch.nn.Conv2d(64, 128, 3, padding=1).to(device)
    c2 = torch.nn.Conv2d(128, 64, 3, padding=1).to(device)
    fns: dict[str, Callable[[], Any]] = {}
    for layout in ("nchw", "channels_last"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        a, b = copy.deepcopy(c1).to(memory_format=fmt), copy.deepcopy(c2).to(memory_format=fmt)
        x = torch.rand(1, 64, h, w, device=device).contiguous(memory_format=fmt)
        for tf32 in ([False, True] if device.type == "cuda" else [False]):
            def run(a=a, b=b, x=x, tf32=tf32) -> None:
                with _flags(benchmark=True, tf32=tf32), torch.inference_mode():
                    b(a(x))

            fns[layout + ("_tf32" if tf32 else "")] = run
    return fns


def measure_conv_peak(device: torch.device, h: int, w: int, warmup: int, runs: int,
                      worker: HeapWorker | None = None) -> dict[str, Any]:
    """The reference pair in both layouts; with ``worker`` also in bench run's settings (``*_heap``), interleaved.
    The reference (``tflops``) is the best fp32 throughput measured, whichever allocator gave it."""
    macs = h * w * (64 * 128 * 9) * 2
    out: dict[str, Any] = {"shapes": "3x3 64->128 then 128->64, stride 1, batch 1", "gmac": macs / 1e9}
    fns: dict[str, Any] = _conv_fns(device, h, w)
    if worker is not None:
        worker.call("conv", h, w)
        fns.update({k + HEAP: worker.remote(k + HEAP) for k in ("nchw", "channels_last")})
    for name, t in _timed_interleaved(fns, device, warmup, runs).items():
        out[name] = {**_stats(t), "tflops": 2 * macs / statistics.median(t) / 1e12}
    if worker is not None:
        worker.call("drop")
    return _pick_reference(out)


def _pick_reference(out: dict[str, Any]) -> dict[str, Any]:
    """Set the reference (``tflops``, ``best_layout``): the best fp32 variant measured, either process."""
    fp32 = [k for k in ("nchw", "channels_last", "nchw" + HEAP, "channels_last" + HEAP) if k in out]
    best = max(fp32, key=lambda k: out[k]["tflops"])
    out["tflops"], out["best_layout"] = out[best]["tflops"], best
    out["tflops_default_allocator"] = max(out["nchw"]["tflops"], out["channels_last"]["tflops"])
    return out


#: the reference pair is timed this many times (at least), before and after the enhancement at each size
REFERENCE_RUNS = 10


def best_of(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two measurements of the reference (before and after the enhancement passes): each variant keeps the
    faster one, so machine drift during the long passes can only raise the reference, never flatter a ratio."""
    out = {**a, "measurements": 2}
    for k, v in b.items():
        if isinstance(v, dict) and "tflops" in v and v["tflops"] > a[k]["tflops"]:
            out[k] = v
    return _pick_reference(out)


# ------------------------------------------------------------------------------------------------
# 2. enhancement: eager vs our inference path
# ------------------------------------------------------------------------------------------------
def inference_paths(device: torch.device, channels_last: bool | None = None) -> dict[str, dict[str, Any]]:
    """The compared paths: grad mode, in-place inference (DSN.set_fast_inference), cudnn.benchmark, memory
    format. ``ours`` is what ``bench run`` does (channels-last by default on CPU only; ``channels_last``
    overrides that, e.g. to try it on CUDA)."""
    cuda = device.type == "cuda"
    ours_cl = (not cuda) if channels_last is None else channels_last
    paths = {
        "eager": {"grad": "no_grad", "fast": False, "benchmark": False, "channels_last": False},
        "inference_mode": {"grad": "inference_mode", "fast": False, "benchmark": False, "channels_last": False},
        "channels_last": {"grad": "inference_mode", "fast": False, "benchmark": cuda, "channels_last": True},
        "in_place": {"grad": "inference_mode", "fast": True, "benchmark": cuda, "channels_last": False},
        "ours": {"grad": "inference_mode", "fast": True, "benchmark": cuda, "channels_last": ours_cl},
    }
    if cuda:
        paths["benchmark"] = {"grad": "inference_mode", "fast": False, "benchmark": True, "channels_last": False}
    else:   # bench run's CPU path: ours in a worker set up like bench run's process (large pages + heap reuse)
        paths["ours" + HEAP] = {**paths["ours"], "allocator": "reuse_heap"}
    return paths


def _enhance_fns(model: torch.nn.Module, device: torch.device, x: torch.Tensor,
                 paths: dict[str, dict[str, Any]]) -> dict[str, Callable[[], torch.Tensor]]:
    import copy

    models = {key: copy.deepcopy(model).set_fast_inference(key[0], channels_last=key[1])
              for key in {(p["fast"], p["channels_last"]) for p in paths.values()}}
    fns: dict[str, Callable[[], torch.Tensor]] = {}
    for name, p in paths.items():
        m = models[(p["fast"], p["channels_last"])]
        xi = x.contiguous(memory_format=torch.channels_last) if p["channels_last"] else x
        grad = torch.inference_mode if p["grad"] == "inference_mode" else torch.no_grad

        def run(m=m, xi=xi, grad=grad, bench=p["benchmark"]) -> torch.Tensor:
            with _flags(benchmark=bench, tf32=False), grad():
                return m.enhance(xi)

        fns[name] = run
    return fns


def measure_enhance(model: torch.nn.Module, device: torch.device, h: int, w: int, warmup: int, runs: int,
                    macs_per_pixel: int, conv_tflops: float, channels_last: bool | None = None,
                    worker: HeapWorker | None = None, only: list[str] | None = None) -> dict[str, Any]:
    """The paths of :func:`inference_paths` (``only``: a subset; ``eager`` always), round-robin; the
    ``*_heap`` ones run in ``worker`` (left out without one)."""
    x = torch.rand(1, 3, h, w, device=device)
    flops = 2 * macs_per_pixel * h * w
    res: dict[str, Any] = {"size": f"{h}x{w}", "gflop": flops / 1e9}
    paths = {k: p for k, p in inference_paths(device, channels_last).items()
             if (only is None or k in only or k == "eager") and (worker is not None or not k.endswith(HEAP))}
    local = {k: p for k, p in paths.items() if not k.endswith(HEAP)}
    fns: dict[str, Any] = _enhance_fns(model, device, x, local)
    if worker is not None:
        remote = {k[:-len(HEAP)]: p for k, p in paths.items() if k.endswith(HEAP)}
        worker.call("enhance", x, remote)
        fns.update({k + HEAP: worker.remote(k + HEAP) for k in remote})
    fns = {k: fns[k] for k in paths}
    times = _timed_interleaved(fns, device, warmup, runs)
    outputs = {name: fns[name]() for name in paths}
    ref = outputs["eager"].float()
    for name, p in paths.items():
        s = _stats(times[name])
        s["tflops"] = flops / s["median_s"] / 1e12
        s["of_conv_peak"] = s["tflops"] / conv_tflops if conv_tflops else float("nan")
        s["max_abs_diff_vs_eager"] = float((outputs[name].float() - ref).abs().max())
        if name.endswith(HEAP) and name[:-len(HEAP)] in outputs:   # the allocator never changes a bit
            s["bit_identical_to_" + name[:-len(HEAP)]] = bool(torch.equal(outputs[name], outputs[name[:-len(HEAP)]]))
        s.update(p)
        res[name] = s
    for name in paths:
        res[name]["speedup_vs_eager"] = res["eager"]["median_s"] / res[name]["median_s"]
    if worker is not None:
        worker.call("drop")
        res["allocator"] = {"parent": {**allocator_state(), "rss_mib": _rss_mib()}, "worker": worker.call("state")}
    if device.type == "cuda":
        def run_tf32() -> None:
            with torch.inference_mode():
                model.enhance(x)

        with _flags(benchmark=True, tf32=True):
            s = _stats(_timed(run_tf32, device, warmup, runs))
        s["tflops"] = flops / s["median_s"] / 1e12
        s["speedup_vs_ours"] = res["ours"]["median_s"] / s["median_s"]
        res["tf32_not_protocol"] = s
    return res


# ------------------------------------------------------------------------------------------------
# 3. training step
# ------------------------------------------------------------------------------------------------
def measure_train(model: torch.nn.Module, device: torch.device, crop: int, warmup: int, steps: int) -> dict[str, Any]:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-4, weight_decay=1e-5)
    low = torch.rand(2, 3, crop, crop, device=device)
    high = torch.rand(2, 3, crop, crop, device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        fwd = ((model.enhance(low) - high) ** 2).sum(dim=(1, 2, 3)).mean()
        bwd = ((model.degrade(high) - low) ** 2).sum(dim=(1, 2, 3)).mean()
        (fwd + bwd).backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()

    res: dict[str, Any] = {"crop": crop, "batch": 2}
    with _flags(benchmark=device.type == "cuda", tf32=False):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        res["fp32"] = _stats(_timed(step, device, warmup, steps))
        if device.type == "cuda":
            res["fp32"]["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if device.type == "cuda":
        with _flags(benchmark=True, tf32=True):
            res["tf32_not_protocol"] = _stats(_timed(step, device, warmup, steps))
        res["tf32_speedup"] = res["fp32"]["median_s"] / res["tf32_not_protocol"]["median_s"]
    model.eval()
    step_s = res["fp32"]["median_s"]
    scale = (180 / crop) ** 2 if crop < 180 else 1.0   # convolution cost grows with the pixels
    res["projected_from_crop"] = 180 if scale == 1.0 else crop
    res["projected_training_hours_fp32"] = {k: n * step_s * scale / 3600 for k, n in PAPER_ITERATIONS.items()}
    return res


# ------------------------------------------------------------------------------------------------
# 4. tiled inference memory and the tiled-vs-whole gap
# ------------------------------------------------------------------------------------------------
def _peak(device: torch.device, fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    from .tiling import TensorMemoryMeter

    if device.type == "cuda":
        torch.cuda.empty_cache()
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        y = fn()
        _sync(device)
        return y, torch.cuda.max_memory_allocated(device) - base
    with TensorMemoryMeter() as meter:
        y = fn()
    return y, meter.peak


PHOTO = "skimage coffee (a demo test image) resized, underexposed as the demo set (seed 0)"


def _test_photo(h: int, w: int) -> torch.Tensor:
    """A real underexposed photo at h x w, so a trained network meets what it was trained for."""
    import numpy as np
    import skimage.data
    from PIL import Image

    from .data.underexpose import underexpose

    img = np.asarray(Image.fromarray(skimage.data.coffee()).resize((w, h), Image.BICUBIC))
    low, _ = underexpose(img, seed=0)
    return torch.from_numpy(np.ascontiguousarray(low)).permute(2, 0, 1)[None].float() / 255


def _test_noise(h: int, w: int) -> torch.Tensor:
    """Blurred noise at 0.4 brightness: content everywhere, for random-weight networks."""
    g = torch.Generator().manual_seed(h * 10007 + w)
    return F.avg_pool2d(torch.rand(1, 3, h + 4, w + 4, generator=g), 5, 1) * 0.4


def psnr_bound(q_db: float, p_db: float = 30.0) -> float:
    """Largest |ΔPSNR| that outputs Q dB apart can show against any reference scored P dB by one of them:
    20·log10(1 + 10^((P − Q)/20)) (triangle inequality on the RMSE)."""
    if math.isinf(q_db):
        return 0.0
    return 20 * math.log10(1 + 10 ** ((p_db - q_db) / 20))


def measure_tiling(device: torch.device, sizes: list[tuple[int, int]], tile: int, overlap: int, n_blocks: int,
                   gap_scale: float, weights: str | None = None, global_passes: int = 1) -> dict[str, Any]:
    import numpy as np

    from .imageio import quantize
    from .tiling import enhance_tiled, global_pool_modules

    if weights:
        from pathlib import Path

        from .dsn.adapter import DSNMethod
        from .methods.base import build_config

        method = DSNMethod(build_config(DSNMethod, "paper", {}, ""))
        method.setup(device, Path(weights))
        from .fsutil import sha256_file

        model = method.model
        source = f"checkpoint {weights} (sha256 {sha256_file(Path(weights))[:12]}); input: {PHOTO}"
    else:
        model = _random_model(device, n_blocks=n_blocks, fan_in_scale=gap_scale).set_fast_inference(True)
        source = f"random, conv weights N(0, ({gap_scale}/sqrt(fan_in))^2), n_blocks={n_blocks}"
    pools = global_pool_modules(model)
    res: dict[str, Any] = {"tile": tile, "overlap": overlap, "global_passes": global_passes, "model": source,
                           "n_blocks": model.n_blocks, "sizes": []}
    with _flags(benchmark=device.type == "cuda", tf32=False), torch.inference_mode():
        for h, w in sizes:
            x = (_test_photo(h, w) if weights else _test_noise(h, w)).to(device)
            row: dict[str, Any] = {"size": f"{h}x{w}", "pixels": h * w}
            t0 = time.perf_counter()
            yt, peak_t = _peak(device, lambda: enhance_tiled(model.enhance, x, tile, overlap, global_pools=pools,
                                                              global_passes=global_passes))
            _sync(device)
            row["tiled_s"] = time.perf_counter() - t0
            row["tiled_peak_mib"] = peak_t / 2**20
            th, tw = min(tile, h), min(tile, w)
            row["tile_shape"] = f"{th}x{tw}"
            row["tiled_peak_bytes_per_tile_pixel"] = (peak_t - x.numel() * 4) / (th * tw)
            row["output_buffer_mib"] = x.numel() * 4 / 2**20
            try:
                t0 = time.perf_counter()
                yw, peak_w = _peak(device, lambda: model.enhance(x))
                _sync(device)
                row["whole_s"] = time.perf_counter() - t0
                row["whole_peak_mib"] = peak_w / 2**20
            except torch.OutOfMemoryError:
                row["whole_peak_mib"] = None
                yw = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if yw is not None:
                qt, qw = quantize(yt), quantize(yw)
                mse = float(np.mean((qt.astype(np.float64) - qw.astype(np.float64)) ** 2))
                fmse = float(((yt - yw) ** 2).mean())
                row["psnr_tiled_vs_whole_8bit_db"] = float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)
                row["psnr_tiled_vs_whole_float_db"] = float("inf") if fmse == 0 else 10 * math.log10(1 / fmse)
                row["pixels_differing_8bit"] = int((qt != qw).any(axis=2).sum())
                row["max_abs_diff_float"] = float((yt - yw).abs().max())
                row["delta_psnr_bound_db_at_30db"] = psnr_bound(row["psnr_tiled_vs_whole_float_db"])
                row["whole_vs_DE_psnr_db"] = _psnr_float(yw, model.reconstruct(x))
            res["sizes"].append(row)
            del yt
    return res


def _psnr_float(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


# ------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------
def _parse_sizes(text: str | None) -> list[tuple[int, int]] | None:
    if not text:
        return None
    out = []
    for part in str(text).split(","):
        h, w = (int(v) for v in part.strip().lower().split("x"))
        out.append((h, w))
    return out


SECTIONS = ("enhance", "train", "tiling")


def measure_all(device: torch.device, cfg: dict[str, Any], channels_last: bool | None = None,
                weights: str | None = None, progress: Callable[[str], None] = print,
                sections: tuple[str, ...] = SECTIONS,
                section_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Measure the chosen sections; each result carries the config and time it was measured with, and
    ``section_done(results so far)`` runs after each one (so a later failure loses nothing measured)."""
    from datetime import datetime, timezone

    from .dsn.model import macs_per_pixel

    res: dict[str, Any] = {**device_info(device), "torch": torch.__version__,
                           "pytorch_default_conv_tf32": conv_tf32(), "sections": {}}
    model = _random_model(device)
    mpp = res["macs_per_pixel"] = macs_per_pixel(model)

    def stamp(name: str, keys: tuple[str, ...]) -> None:
        res["sections"][name] = {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                 "config": {k: cfg[k] for k in keys}}
        if section_done is not None:
            section_done(res)

    if "enhance" in sections:
        res["conv_peak"], res["enhance"] = {}, {}
        only = cfg.get("paths")
        # CPU: bench run's process settings (bench/large_pages.py, bench/dsn/allocator.py) are process-wide
        # and sticky, so they are measured in a spawned worker, round-robin with this plain process's variants
        worker = HeapWorker(model) if device.type == "cpu" and (only is None or "ours" + HEAP in only) else None
        try:
            ref_runs = max(cfg["runs"], REFERENCE_RUNS)
            for h, w in cfg["sizes"]:
                progress(f"conv throughput at {h}x{w}")
                before = measure_conv_peak(device, h, w, cfg["warmup"], ref_runs, worker)
                progress(f"enhancement paths at {h}x{w}")
                enh = measure_enhance(model, device, h, w, cfg["warmup"], cfg["runs"], mpp, before["tflops"],
                                      channels_last, worker, only)
                progress(f"conv throughput at {h}x{w}, again")
                cp = best_of(before, measure_conv_peak(device, h, w, cfg["warmup"], ref_runs, worker))
                for s in enh.values():
                    if isinstance(s, dict) and "of_conv_peak" in s:
                        s["of_conv_peak"] = s["tflops"] / cp["tflops"]
                res["conv_peak"][f"{h}x{w}"], res["enhance"][f"{h}x{w}"] = cp, enh
        finally:
            if worker is not None:
                worker.close()
        stamp("enhance", ("sizes", "warmup", "runs", "paths"))
    if "train" in sections:
        progress(f"training step at 2x{cfg['crop']}^2")
        res["train_step"] = measure_train(model, device, cfg["crop"], max(1, cfg["warmup"] // 2), cfg["steps"])
        stamp("train", ("crop", "steps"))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if "tiling" in sections:
        progress(f"tiled memory at {cfg['mem_sizes']} with tile {cfg['tile']}")
        res["tiling"] = measure_tiling(device, cfg["mem_sizes"], cfg["tile"], cfg["overlap"], cfg["mem_blocks"],
                                       cfg["gap_scale"], weights)
        stamp("tiling", ("mem_sizes", "tile", "overlap", "mem_blocks", "gap_scale"))
    return res


def merge_results(previous: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Sections measured now replace the same sections of an earlier run on the same machine and torch; the
    others are kept (with their own measurement times), so sections can be (re)measured one at a time."""
    if not previous or any(previous.get(k) != new.get(k) for k in ("device", "gpu", "cpu", "torch_threads", "torch")):
        return new
    keys = {"enhance": ("conv_peak", "enhance"), "train": ("train_step",), "tiling": ("tiling",)}
    out = dict(previous)
    out.update({k: v for k, v in new.items() if k not in ("sections", "conv_peak", "enhance", "train_step", "tiling")})
    out["sections"] = {**previous.get("sections", {}), **new["sections"]}
    for name in new["sections"]:
        for k in keys[name]:
            out[k] = new[k]
    return out


def run_perf_dsn(args) -> int:
    import json

    from .perf_dsn_report import report_lines

    from .errors import BenchError

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = dict(DEFAULTS["cuda" if device.type == "cuda" else "cpu"])
    sizes = _parse_sizes(getattr(args, "sizes", None))
    if sizes is None and getattr(args, "size", CLI_DEFAULT_SIZE) not in (None, CLI_DEFAULT_SIZE):
        sizes = _parse_sizes(args.size)
    if sizes:
        cfg["sizes"] = sizes
    if _parse_sizes(getattr(args, "mem_sizes", None)):
        cfg["mem_sizes"] = _parse_sizes(args.mem_sizes)
    for key in ("tile", "overlap", "mem_blocks", "gap_scale", "crop", "runs", "steps", "warmup"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    cfg["paths"] = None
    if getattr(args, "paths", None):
        cfg["paths"] = [p.strip() for p in args.paths.split(",") if p.strip()]
        known = inference_paths(device)
        unknown = [p for p in cfg["paths"] if p not in known]
        if unknown:
            raise BenchError(f"unknown perf dsn path {', '.join(unknown)}; choose from {', '.join(known)}")
    sections = tuple(s.strip() for s in (getattr(args, "sections", None) or ",".join(SECTIONS)).split(",") if s.strip())
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        raise BenchError(f"unknown perf dsn section {', '.join(bad) or '(none)'}; choose from {', '.join(SECTIONS)}")
    cl = {"auto": None, "on": True, "off": False}[getattr(args, "channels_last", None) or "auto"]
    out = results_root() / "perf"
    tag = "cuda" if device.type == "cuda" else "cpu"
    previous = None
    if (out / f"dsn_{tag}.json").exists() and set(sections) != set(SECTIONS):
        try:
            previous = json.loads((out / f"dsn_{tag}.json").read_text())
        except (OSError, ValueError):
            previous = None

    report: list[str] = []

    def save(partial: dict[str, Any]) -> None:
        merged = merge_results(previous, partial)
        write_json(out / f"dsn_{tag}.json", merged)
        report[:] = report_lines(merged)
        write_text(out / f"dsn_{tag}.md", "\n".join(report) + "\n")

    measure_all(device, cfg, channels_last=cl, weights=getattr(args, "weights", None),
                progress=lambda s: print(f"[perf dsn] {s}", flush=True), sections=sections, section_done=save)
    print("\n".join(report))   # every section was saved as it finished
    return 0

"""One method's cost on this machine, measured in a process of its own (``bench perf methods`` runs one per
method, so each peak-memory figure starts from a clean process and no method warms another's caches).

What is measured, for the default config as ``bench run`` builds it (random initial weights: the cost of a
network does not depend on its values, and no download is needed):

- **parameters**: ``trainable_parameters()`` of the built network;
- **MACs** of one pass at each size, from PyTorch's own :class:`torch.utils.flop_counter.FlopCounterMode`
  (MACs = FLOPs / 2; it counts convolutions and matrix products, attention products included, but no
  elementwise work), and the **convolution/linear-only** part of it: convolution ops plus ``nn.Linear``
  layers, what module-hook counters such as thop report (they miss attention products and functional
  matmuls). Only torch work is seen: NumPy/SciPy methods (LIME, EFF) get none;
- **latency** of ``bench run``'s enhancement call (:func:`bench.enhance.enhance_one`: pad, inference mode,
  check, crop, quantise) after warm-up: median and IQR over the timed passes, torch threads recorded; on
  CUDA synchronised, TF32 off for convolutions and matrix products (recorded), bf16 autocast optional;
- **peak memory** of one pass above what the process held before it: CPU, the resident-set high-water
  mark (``VmHWM``, reset through ``/proc/self/clear_refs`` just before the pass, after ``malloc_trim`` has
  returned the heap's free pages; it sees NumPy too);
  CUDA, ``max_memory_allocated`` minus the bytes allocated before.

Run as ``python -m bench.cost_measure SETTINGS_JSON OUT_JSON``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SIZES = ((400, 600), (256, 256))      # H×W: LOL's 600×400 (width × height) and a square 256²


def synthetic_low(h: int, w: int) -> np.ndarray:
    """A deterministic under-exposed picture (smooth shading, edges, texture, sensor noise): iterative
    methods see structure as they would in a photograph, not a constant."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.5 + 0.4 * np.sin(6 * xx + 2 * yy), 0.5 + 0.4 * np.cos(5 * yy), 0.3 + 0.5 * xx * yy], 2)
    base *= 0.6 + 0.4 * ((np.floor(xx * 12) + np.floor(yy * 8)) % 2)[..., None]
    low = 0.18 * base + rng.normal(0, 0.01, base.shape)
    return (np.clip(low, 0, 1) * 255 + 0.5).astype(np.uint8)


# --- memory ----------------------------------------------------------------------------------------
def peak_bytes(fn, device) -> tuple[int | None, str]:
    """Peak bytes one call of ``fn`` needed above what was held before it, and how that was measured."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, "cuda max_memory_allocated"
    from .memstat import malloc_trim, reset_peak, status_kib

    trimmed = malloc_trim()
    rss = status_kib("VmRSS")
    if rss is None or not reset_peak():
        return None, "unavailable (no /proc/self/clear_refs)"
    fn()
    hwm = status_kib("VmHWM")
    how = "RSS high-water mark above the RSS before" + (", heap trimmed first" if trimmed else "")
    return (None if hwm is None else max(0, hwm - rss) * 1024), how


# --- MACs ------------------------------------------------------------------------------------------
def _conv_formula():
    """FlopCounterMode formula for oneDNN's fused convolution (DSN's CPU path runs its PReLU as the
    convolution's post-op), so the fused op counts as the convolution it is."""
    from torch.utils.flop_counter import conv_flop_count

    def formula(x_shape, w_shape, *args, out_shape=None, **kwargs):
        return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)
    return formula


def count_macs(run_once, model_modules) -> dict[str, int]:
    """MACs of one call of ``run_once``: FlopCounterMode's total, its convolution part, and nn.Linear's."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    custom = {}
    op = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
    if op is not None:
        custom[op] = _conv_formula()      # the registry is keyed by overload packet
    linear_macs = [0]

    def hook(mod, inp, out):
        linear_macs[0] += int(out.numel()) * int(mod.in_features)
    handles = [m.register_forward_hook(hook) for mod in model_modules for m in mod.modules()
               if isinstance(m, torch.nn.Linear)]
    try:
        with FlopCounterMode(display=False, custom_mapping=custom) as fc:
            run_once()
    finally:
        for h in handles:
            h.remove()
    by_op = fc.get_flop_counts().get("Global", {})
    conv = sum(v for k, v in by_op.items() if "conv" in str(k))
    return {"macs": int(fc.get_total_flops()) // 2, "macs_conv": int(conv) // 2, "macs_linear": linear_macs[0]}


def _modules(method) -> list:
    import torch

    seen, out = set(), []
    for value in vars(method).values():
        if isinstance(value, torch.nn.Module) and id(value) not in seen:
            seen.add(id(value))
            out.append(value)
    return out


# --- one method ------------------------------------------------------------------------------------
def measure_method(settings: dict[str, Any]) -> dict[str, Any]:
    import torch

    from .amp import autocast, conv_tf32, set_conv_tf32
    from .enhance import enhance_one
    from .registry import load_method_class

    torch.set_num_threads(int(settings["threads"]))
    device = torch.device(settings["device"])
    precision: dict[str, Any] = {"amp": settings.get("amp", "off")}
    if device.type == "cuda":
        set_conv_tf32(False)
        torch.backends.cuda.matmul.allow_tf32 = False
        precision.update(conv_tf32=conv_tf32(), matmul_tf32=bool(torch.backends.cuda.matmul.allow_tf32))
    cls = load_method_class(settings["method"])
    method = cls(cls.Config())
    torch.manual_seed(0)
    t0 = time.perf_counter()
    method.setup(device, None)
    setup_s = time.perf_counter() - t0
    out: dict[str, Any] = {"method": cls.name, "display": cls.display_name, "family": cls.family,
                           "version": int(cls.version), "trainable": bool(cls.trainable),
                           "params": int(method.trainable_parameters()), "setup_s": setup_s,
                           "weights": "random initial weights, default config", "precision": precision,
                           "threads": torch.get_num_threads(), "sizes": {}}
    if device.type == "cpu":
        from .large_pages import state as large_pages_state

        out["large_pages"] = large_pages_state()
    modules = _modules(method)
    for h, w in [tuple(s) for s in settings["sizes"]]:
        low = synthetic_low(h, w)

        def once():
            torch.manual_seed(0)
            with autocast(precision["amp"], device.type):
                return enhance_one(method, low, device)[1]
        rec: dict[str, Any] = {}
        for _ in range(int(settings["warmup"])):
            once()
        times = []
        for _ in range(int(settings["runs"])):
            times.append(once())
            if len(times) >= 3 and sum(times) > 1000 * float(settings["budget_s"]):
                break              # slow methods (DSN: ~20 s a pass on 2 cores) stop at 3 passes
        q = np.percentile(times, [25, 75])
        rec.update(ms_median=statistics.median(times), ms_iqr=float(q[1] - q[0]), runs=len(times),
                   ms_all=[round(t, 3) for t in times])
        peak, how = peak_bytes(once, device)
        rec.update(peak_bytes=peak, peak_method=how)
        if modules:
            rec.update(count_macs(once, modules))
        out["sizes"][f"{w}x{h}"] = rec
    return out


def main(argv: list[str]) -> int:
    settings = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result = measure_method(settings)
    Path(argv[1]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

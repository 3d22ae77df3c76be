"""``bench perf methods``: the cost table of every registered method, measured one way on one machine.

Each method is measured in a child process of its own (:mod:`bench.cost_measure`, one after the other, never
two at once), so peak memory starts from a clean process and thread settings are the same for all. A
finished method's result is kept under ``results/perf/methods/<machine>/<method>.json`` and reused by a
re-run with the same settings (``--force`` re-measures), so an interrupted run resumes; the table is written
once every asked method has a result: ``results/tables/cost.{csv,md,tex}`` and the raw
``results/perf/methods_<machine>.json``. The quality-against-cost figure reads ``cost.csv``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import BenchError
from .fsutil import canonical_hash, write_json, write_text
from .large_pages import child_environment
from .paths import results_root


def _machine(device: str, threads: int) -> str:
    return f"{device}-{threads}t"


def _settings(args, method: str, device: str, threads: int) -> dict[str, Any]:
    from .cost_measure import SIZES

    sizes = SIZES if not getattr(args, "sizes", None) else [_hw(s) for s in args.sizes.split(",")]
    return {"method": method, "device": device, "threads": threads, "sizes": [list(s) for s in sizes],
            "warmup": 1 if args.warmup is None else int(args.warmup), "runs": 5 if args.runs is None else int(args.runs),
            "budget_s": 60.0, "amp": getattr(args, "amp", None) or "off"}


def _hw(text: str) -> tuple[int, int]:
    """'400x600' -> (400, 600): H×W, as ``bench perf dsn --sizes`` (the table names it 600×400, width first)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BenchError(f"--sizes takes HEIGHTxWIDTH values such as 400x600,256x256, got {text!r}") from None
    if min(h, w) < 16:
        raise BenchError(f"--sizes {text}: each side must be at least 16 pixels")
    return h, w


def _resolve_device(name: str) -> str:
    if name in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if name == "cuda":
            raise BenchError("--device cuda: no CUDA device is visible to torch")
    return "cpu"


def _measure_child(settings: dict[str, Any], log_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        s_path, o_path = Path(tmp) / "settings.json", Path(tmp) / "out.json"
        s_path.write_text(json.dumps(settings), encoding="utf-8")
        # the child allocates as a `bench run` process does (huge pages asked for before torch starts)
        env = {**child_environment(), "OMP_NUM_THREADS": str(settings["threads"])}
        proc = subprocess.run([sys.executable, "-m", "bench.cost_measure", str(s_path), str(o_path)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not o_path.exists():
            log = log_dir / f"{settings['method']}.err.log"
            write_text(log, proc.stdout + proc.stderr)
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise BenchError(f"measuring {settings['method']} failed ({last}); full output in {log}")
        return json.loads(o_path.read_text(encoding="utf-8"))


def run_perf_methods(args) -> int:
    from tqdm import tqdm

    from .cost_table import write_cost_table
    from .registry import METHODS, canonical

    device = _resolve_device(getattr(args, "device", "auto") or "auto")
    threads = int(getattr(args, "threads", None) or min(os.cpu_count() or 1, 16))
    names = list(METHODS) if not getattr(args, "methods", None) else \
        list(dict.fromkeys(canonical(n.strip()) for n in args.methods.split(",") if n.strip()))
    machine = _machine(device, threads)
    cache = results_root() / "perf" / "methods" / machine
    results = []
    bar = tqdm(names, desc="cost", unit="method", disable=bool(getattr(args, "quiet", False)))
    for name in bar:
        bar.set_postfix_str(name)
        settings = _settings(args, name, device, threads)
        key = canonical_hash(settings)
        path = cache / f"{name}.json"
        if path.exists() and not getattr(args, "force", False):
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                old = {}
            if old.get("settings_key") == key:
                results.append(old)
                continue
        t0 = time.perf_counter()
        res = _measure_child(settings, cache)
        res.update(settings_key=key, settings=settings, measured_s=round(time.perf_counter() - t0, 1),
                   finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        write_json(path, res)
        results.append(res)
    import torch

    machine_info = {"machine": machine, "device": device, "threads": threads, "torch": torch.__version__,
                    "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "gpu": torch.cuda.get_device_name() if device == "cuda" else None}
    write_json(results_root() / "perf" / f"methods_{machine}.json", {"machine": machine_info, "methods": results})
    files = write_cost_table(results, machine_info, results_root() / "tables")
    if not getattr(args, "quiet", False):
        print(files[1].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0

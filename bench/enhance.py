"""The enhancement stage of a run: the harness side of the adapter contract for one image (pad, call under the
memory policy, check, crop, quantise, time) and the loop over a split that logs each finished image to
``enhance.csv`` as it goes, so an interrupted run resumes with exactly the images whose PNG proves them."""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .data.manifest import Manifest, Pair
from .errors import BenchError
from .fsutil import canonical_hash, sha256_file, write_json, write_text
from .imageio import pad_to_multiple, quantize, read_rgb, to_tensor, write_png
from .methods.base import Method
from .tiling import TilePolicy, enhance_with_policy

__all__ = ["image_seed", "enhance_one", "enhance_stage"]

log = logging.getLogger("bench.run")


def image_seed(seed: int, pid: str) -> int:
    return int(canonical_hash([seed, pid])[:8], 16)


def enhance_one(method: Method, low: np.ndarray, device: torch.device, reference: np.ndarray | None = None,
                policy: TilePolicy | None = None, quantize_mode: str = "round") -> tuple[np.ndarray, float, dict[str, Any]]:
    """The harness side of the adapter contract: pad, call (under the memory policy, in inference mode),
    check, crop, quantise; time the call. Returns the image, the milliseconds and the policy's record."""
    x, h, w = pad_to_multiple(to_tensor(low).to(device), method.pad_multiple)
    kwargs = {}
    if method.needs_reference_at_test:
        if reference is None:
            raise BenchError(f"{method.name} with these options needs the ground truth at test time; "
                             "the dataset split has no reference images")
        kwargs["reference"] = pad_to_multiple(to_tensor(reference).to(device), method.pad_multiple)[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    y, info = enhance_with_policy(method, x, policy, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = (time.perf_counter() - t0) * 1000.0
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(x.shape):
        raise RuntimeError(f"{method.name}.enhance returned shape {getattr(y, 'shape', None)}, expected {tuple(x.shape)}")
    if not torch.isfinite(y).all():
        raise RuntimeError(f"{method.name}.enhance returned non-finite values")
    return quantize(y[..., :h, :w], quantize_mode), elapsed, info


_ENHANCE_FIELDS = ["id", "height", "width", "runtime_ms", "device", "tiled", "fallback", "output_sha256"]


def _read_log(path: Path) -> tuple[list[str], list[dict[str, str]], bool]:
    """(header, rows, clean) of ``enhance.csv``. Damaged bytes (a torn row, garbage) never stop a resume: the
    text is decoded leniently and ``clean`` is False, so the caller keeps only rows whose PNG proves them."""
    data = path.read_bytes()
    try:
        text, clean = data.decode("utf-8"), True
    except UnicodeDecodeError:
        text, clean = data.decode("utf-8", "replace"), False
    if text and not text.endswith("\n"):
        clean = False                      # a torn last row: the next append would be glued to it
    try:
        reader = csv.reader(io.StringIO(text.replace("\x00", ""), newline=""))
        header = next(reader, [])
        rows = [dict(zip(header, r)) for r in reader if len(r) == len(header)]
    except csv.Error:
        return [], [], False
    return header, rows, clean


def _done_ids(path: Path, outputs: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    _, rows, _ = _read_log(path)
    # a row only counts if its PNG is there with the recorded bytes (a crash may have cut either)
    done: dict[str, dict[str, str]] = {}
    for r in rows:
        pid, sha = r.get("id") or "", r.get("output_sha256") or ""
        png = outputs / f"{pid}.png"
        if sha and pid and "/" not in pid and pid not in done and png.is_file() and sha256_file(png) == sha:
            done[pid] = r
    return done


def enhance_stage(method: Method, m: Manifest, pairs: list[Pair], run_dir: Path, device: torch.device,
                  seed: int, progress: bool, policy: TilePolicy | None = None, quantize_mode: str = "round") -> None:
    outputs = run_dir / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "enhance.csv"
    done = _done_ids(log_path, outputs)
    if done:
        log.info("resuming: %d of %d images already enhanced", len(done), len(pairs))
    write_header = not log_path.exists() or log_path.stat().st_size == 0
    if not write_header:
        header, rows, clean = _read_log(log_path)
        if not clean or header != _ENHANCE_FIELDS or len(rows) != len(done) or {r.get("id") for r in rows} != set(done):
            # drop rows whose outputs were lost (and torn or damaged bytes), so the log only lists finished images
            _rewrite_log(log_path, list(done.values()))
    todo = [p for p in pairs if p.id not in done]
    warmed: set[tuple[int, ...]] = set()
    with open(log_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_ENHANCE_FIELDS)
        if write_header:
            writer.writeheader()
        for p in tqdm(todo, desc=f"enhance {method.name}", unit="img", disable=not progress):
            low = read_rgb(m.file_path(p.low))
            reference = read_rgb(m.file_path(p.high)) if method.needs_reference_at_test and p.high else None
            if device.type == "cuda" and low.shape not in warmed:
                # one untimed call per new image shape: cudnn.benchmark autotuning and allocator growth
                # stay out of runtime_ms (harness_design.md §6: "after warm-up")
                enhance_one(method, low, device, reference, policy, quantize_mode)
                warmed.add(low.shape)
            torch.manual_seed(image_seed(seed, p.id))
            out, ms, info = enhance_one(method, low, device, reference, policy, quantize_mode)
            if info["tiled"] or info["fallback"] != "none":
                log.info("%s: %s", p.id, info)
            record = method.image_record()
            if record is not None:
                write_json(run_dir / "records" / f"{p.id}.json", record)
            dest = outputs / f"{p.id}.png"
            write_png(dest, out)
            writer.writerow({"id": p.id, "height": out.shape[0], "width": out.shape[1], "runtime_ms": f"{ms:.3f}",
                             "device": info["device"], "tiled": int(info["tiled"]), "fallback": info["fallback"],
                             "output_sha256": sha256_file(dest)})
            f.flush()


def _rewrite_log(path: Path, rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_ENHANCE_FIELDS, restval="", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())

"""``bench run``: resolve a run's full identity, then enhance every image and score it.

A run directory ``results/runs/<dataset>/<method>/<run_id>/`` holds ``config.yaml`` (fully resolved),
``env.json``, ``outputs/<ID>.png``, ``enhance.csv`` (per-image timing, appended as images finish so
an interrupted run resumes), ``per_image.csv``, ``metrics.csv``, ``log.txt`` and, written last,
``DONE``. The run ID hashes everything that can change an output: method and adapter version,
resolved config, weights hash, dataset fingerprint and split, seed, profile and ``--limit``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data.manifest import Manifest, Pair, load_manifest, locked, verify_pairs
from .errors import BenchError
from .evaluate import evaluate_run
from .fsutil import canonical_hash, check_writable, sha256_file, write_json, write_text, write_yaml
from .imageio import QUANTIZE_MODES, quantize, read_rgb, to_tensor, write_png
from .methods.base import Method, TrainPair, build_config
from .metrics import resolve_metrics
from .paths import results_root
from .provenance import environment, now
from .records import (dir_lock, notice, read_json_record, read_metrics_rows, verify_run,
                      weights_provenance, write_done)
from .registry import canonical, load_method_class
from .tiling import TilePolicy, enhance_with_policy

log = logging.getLogger("bench.run")


@dataclass
class RunSpec:
    method: str
    dataset: str
    split: str = "test"
    profile: str = "paper"
    seed: int = 0
    overrides: dict[str, str] = field(default_factory=dict)
    weights: Path | str | None = None   # a file, or official:M[@ID] (bench weights import official)
    limit: int | None = None
    device: str = "auto"
    force: bool = False
    metrics: list[str] | None = None
    progress: bool = True
    tile: TilePolicy = field(default_factory=TilePolicy)   # --tile auto|off|N, --tile-overlap, --max-pixels
    quantize: str = "round"   # --quantize: the 8-bit conversion of the outputs (imageio.QUANTIZE_MODES)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda requested but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise BenchError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def open_dataset(name: str, progress: bool = True) -> Manifest:
    """The manifest as runs see it: with recorded hashes, building the demo set on first use."""
    m = load_manifest(name)
    if m.kind == "demo":
        from .data.demo import ensure_demo

        ensure_demo(m, progress=progress)
    return locked(m)


def image_seed(seed: int, pid: str) -> int:
    return int(canonical_hash([seed, pid])[:8], 16)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _train_pairs(m: Manifest, split: str) -> list[TrainPair]:
    return [TrainPair(p.id, m.file_path(p.low), m.file_path(p.high) if p.high else None)
            for p in m.split(split)] if split in m.splits else []


def train_identity(cls: type[Method], config: Any, m: Manifest, seed: int, profile: str) -> dict[str, Any]:
    """Everything that can change trained weights; its hash names the training run directory."""
    options = {k: v for k, v in dataclasses.asdict(config).items() if k not in cls.test_time_options}
    identity = {"method": cls.name, "version": cls.version, "config": options,
                "dataset": m.name, "train_fingerprint": m.fingerprint("train"), "seed": seed, "profile": profile}
    extra = cls(config).training_identity()
    if extra:
        identity["extra"] = extra
    return identity


def train_dir_for(cls: type[Method], config: Any, m: Manifest, seed: int, profile: str) -> Path:
    return results_root() / "train" / m.name / cls.name / canonical_hash(train_identity(cls, config, m, seed, profile))[:12]


def run_identity(name: str, cls: type[Method], config: Any, weights_sha256: str | None, m: Manifest, split: str,
                 seed: int, profile: str, limit: int | None = None, ids: list[str] | None = None) -> dict[str, Any]:
    """Everything that can change an output; its hash is the run ID (``bench reproduce`` predicts it too)."""
    return {"method": name, "method_version": cls.version, "config": dataclasses.asdict(config),
            "weights_sha256": weights_sha256, "dataset": m.name, "dataset_version": m.version,
            "fingerprint": m.fingerprint(split), "split": split, "seed": seed, "profile": profile,
            "limit": limit, "ids": ids}


def run_dir_for(identity: dict[str, Any]) -> Path:
    return results_root() / "runs" / identity["dataset"] / identity["method"] / canonical_hash(identity)[:12]


def user_weights(cls: type[Method], weights: Path | str) -> tuple[Path, dict[str, Any]]:
    """``--weights``: ``official:M[@ID]`` (a converted import, re-hashed) or a file. A file is official when it
    matches an official entry of manifests/weights.yaml for this method or is a state dict that is no checkpoint
    of this project (the adapter then loads it by its official layout)."""
    from .official.importer import resolve_official
    from .methods.torch_method import official_summary

    text = str(weights)
    if text.startswith("official:"):
        stored, record = resolve_official(text)
        if record.get("method") != cls.name:
            raise BenchError(f"--weights {text} holds {record.get('method')} weights, not {cls.name}")
        return stored, {"source": "official", "path": str(stored), "sha256": record["stored_sha256"],
                        "official": official_summary(record), "verified": True,   # re-hashed against its record
                        "verified_by": f"official import {record.get('method')}@{record.get('id')}"}
    path = Path(text).expanduser()
    if path.is_dir():
        raise BenchError(f"--weights {path} is a folder; import an official checkpoint folder first with "
                         f"bench weights import official --method {cls.name} {path}, then use --weights official:{cls.name}")
    if not path.is_file():
        raise BenchError(f"--weights {path} does not exist")
    sha = sha256_file(path)
    info: dict[str, Any] = {"source": "user", "path": str(path), "sha256": sha}
    from .weights import find_entry

    found = find_entry(None, sha, None)
    if found and found[1].get("method") == cls.name:
        info.update(source="official", manifest_id=found[0], verified=True,
                    verified_by=f"manifests/weights.yaml {found[0]}")
    else:
        info.update(weights_provenance(path, sha))   # refuses a file that differs from its training/import record
        if cls.trainable and _is_foreign_state_dict(path):
            info.update(source="official")
        if not info["verified"]:
            notice(f"--weights {path}: {info['unverified']}; the run is marked unverified")
    return path, info


def _is_foreign_state_dict(path: Path) -> bool:
    from .training import STATE_FORMAT, WEIGHTS_FORMAT, load_torch

    try:
        obj = load_torch(path)
    except BenchError:
        return False
    if isinstance(obj, dict) and obj.get("format") in (WEIGHTS_FORMAT, STATE_FORMAT):
        return (obj.get("meta") or {}).get("weights_source") == "official"
    return isinstance(obj, dict)


def official_pipeline(cls: type[Method]) -> tuple[dict[str, str], str, str]:
    """(config overrides, description, 8-bit conversion) of the official test script for official weights."""
    layout = cls.official_layout() if hasattr(cls, "official_layout") else None
    if layout is None:
        return {}, "", "round"
    return dict(layout.test_overrides), layout.test_pipeline, layout.official_quantize


def ensure_weights(cls: type[Method], method: Method, spec: RunSpec, m: Manifest,
                   device: torch.device) -> tuple[Path | None, dict[str, Any]]:
    """Weights for a trainable method: ``--weights``, else a finished matching training run, else train now."""
    if spec.weights is not None:
        return user_weights(cls, spec.weights)
    if not cls.trainable:
        return None, {"source": "none"}
    if "train" not in m.splits:
        raise BenchError(f"{cls.name} needs training but dataset {m.name} has no train split; pass --weights")
    identity = train_identity(cls, method.config, m, spec.seed, spec.profile)
    train_dir = train_dir_for(cls, method.config, m, spec.seed, spec.profile)
    ckpt_record = train_dir / "DONE"
    if ckpt_record.exists():
        with dir_lock(train_dir, "training directory", shared=True):   # works on read-only media too
            done = _train_done(ckpt_record)
    else:
        from .distributed import current

        dist = current()                     # several processes under torchrun: rank 0 writes (and locks)
        if dist.is_main():
            check_writable(train_dir)
        lock = dir_lock(train_dir, "training directory") if dist.is_main() else contextlib.nullcontext()
        with lock:                           # one training process per directory; a second one waits
            dist.barrier()
            if not ckpt_record.exists():     # (a process we waited for may have finished it)
                if dist.is_main():
                    write_yaml(train_dir / "config.yaml", identity)
                dist.barrier()
                log.info("training %s on %s (%s profile) into %s", cls.name, m.name, spec.profile, train_dir)
                seed_everything(spec.seed)
                method.setup(device, None)
                verify_or_fail(m, m.split("train"), spec.progress)
                ckpt = method.train(_train_pairs(m, "train"), _train_pairs(m, "val"), train_dir, spec.seed,
                                    spec.progress)
                if dist.is_main():
                    write_json(train_dir / "DONE", {"checkpoint": ckpt.name, "sha256": sha256_file(ckpt),
                                                    "finished": now()})
                dist.barrier()
            done = _train_done(ckpt_record)
    ckpt = train_dir / done["checkpoint"]
    if not ckpt.is_file():
        raise BenchError(f"checkpoint {ckpt} named by {ckpt_record} is missing; remove {ckpt_record} to train again")
    if sha256_file(ckpt) != done["sha256"]:
        raise BenchError(f"checkpoint {ckpt} does not match the hash recorded when it was trained")
    return ckpt, {"source": "trained", "train_run": str(train_dir), "path": str(ckpt), "sha256": done["sha256"],
                  "selected_on": getattr(method.config, "select", "last")}


def train_only(spec: RunSpec) -> tuple[Path, dict[str, Any]]:
    """``bench train``: the training half of ``bench run`` (reuses a finished matching training run)."""
    cls = load_method_class(spec.method)
    if not cls.trainable:
        raise BenchError(f"method {cls.name} has nothing to train ({cls.family})")
    m = open_dataset(spec.dataset, spec.progress)
    config = build_config(cls, spec.profile, spec.overrides, m.name)
    device = resolve_device(spec.device)
    ckpt, info = ensure_weights(cls, cls(config), spec, m, device)
    assert ckpt is not None
    return ckpt, info


def _train_done(path: Path) -> dict[str, Any]:
    """A training run's ``DONE`` (checkpoint name and sha256), or a one-line error naming it."""
    hint = ("; remove it and run the same command again: a finished training is not repeated, its checkpoint "
            "is hashed anew")
    done = read_json_record(path, hint)
    if not isinstance(done.get("checkpoint"), str) or not isinstance(done.get("sha256"), str) \
            or "/" in done["checkpoint"]:
        raise BenchError(f"{path} is damaged (no checkpoint name and sha256){hint}")
    return done


def verify_or_fail(m: Manifest, pairs: list[Pair], progress: bool) -> None:
    problems = verify_pairs(m, pairs, progress=progress)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        from .data.manifest import damaged_hint

        raise BenchError(f"dataset {m.name}: {'; '.join(problems[:3])}{more}; {damaged_hint(m)}")


def _pad(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


def enhance_one(method: Method, low: np.ndarray, device: torch.device, reference: np.ndarray | None = None,
                policy: TilePolicy | None = None, quantize_mode: str = "round") -> tuple[np.ndarray, float, dict[str, Any]]:
    """The harness side of the adapter contract: pad, call (under the memory policy, in inference mode),
    check, crop, quantise; time the call. Returns the image, the milliseconds and the policy's record."""
    x, h, w = _pad(to_tensor(low).to(device), method.pad_multiple)
    kwargs = {}
    if method.needs_reference_at_test:
        if reference is None:
            raise BenchError(f"{method.name} with these options needs the ground truth at test time; "
                             "the dataset split has no reference images")
        kwargs["reference"] = _pad(to_tensor(reference).to(device), method.pad_multiple)[0]
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


@dataclass
class RunResult:
    run_dir: Path
    reused: bool
    metrics: list[dict[str, Any]]


def protocol_card(m: Manifest, split: str, n: int, weights_info: dict[str, Any], provenance: dict[str, Any],
                  quantize_mode: str = "round") -> dict:
    from .imageio import QUANTIZE_MODES

    return {
        "dataset_version": f"{m.name}@{m.version}", "split": split, "split_fingerprint": m.fingerprint(split),
        "n_images": n, "resolution_rule": m.source.get("resolution_rule", "native"),
        "gt_format": m.source.get("gt_format", "as stored"), "quantisation": f"{quantize_mode}: {QUANTIZE_MODES[quantize_mode]}, PNG",
        "psnr_space": "RGB", "ssim_impl": "wang_rgb_mean", "gt_mean": "off", "tta": "off",
        "checkpoint": weights_info, "trained_on": weights_info.get("train_run") and f"{m.name}:train",
        "selected_on": weights_info.get("selected_on"), "fivek_input_mode": m.source.get("fivek_input_mode"),
        "partial_dataset": bool(m.extra.get("partial")), **provenance,
    }


def execute(spec: RunSpec) -> RunResult:
    cls = load_method_class(spec.method)
    name = canonical(spec.method)
    m = open_dataset(spec.dataset, spec.progress)
    config = build_config(cls, spec.profile, spec.overrides, m.name)
    device = resolve_device(spec.device)
    if device.type == "cuda":
        from .amp import set_conv_tf32

        set_conv_tf32(False)                    # the protocol is fp32: PyTorch lets cuDNN convolutions use TF32
        torch.backends.cudnn.benchmark = True   # autotuned convolutions (warmed up per image shape)
    pairs = m.split(spec.split)
    if spec.limit is not None:
        if spec.limit < 1:
            raise BenchError("--limit must be at least 1")
        pairs = pairs[: spec.limit]
    metrics = resolve_metrics(spec.metrics, m.paired)
    verify_or_fail(m, pairs, spec.progress)

    if spec.quantize not in QUANTIZE_MODES:
        raise BenchError(f"--quantize {spec.quantize}: choose {' or '.join(QUANTIZE_MODES)}")
    method = cls(config)
    weights, weights_info = ensure_weights(cls, method, spec, m, device)
    official_test: dict[str, Any] | None = None
    if weights_info.get("source") == "official":
        # the official test script's pipeline; the user's --set still wins
        overrides, pipeline, official_q = official_pipeline(cls)
        applied = {k: v for k, v in overrides.items() if k not in spec.overrides}
        if applied:
            config = build_config(cls, spec.profile, {**applied, **spec.overrides}, m.name)
            method = cls(config)
        official_test = {"pipeline": pipeline, "overrides_applied": applied, "official_quantize": official_q,
                         "quantize_used": spec.quantize}
        if official_q != spec.quantize:
            log.warning("%s's official test script converts to 8 bits by %s; this run uses %s (--quantize %s to "
                        "match it)", name, official_q, spec.quantize, official_q)
    identity = run_identity(name, cls, config, weights_info.get("sha256"), m, spec.split, spec.seed, spec.profile,
                            spec.limit, None if spec.limit is None else [p.id for p in pairs])
    if spec.tile.identity() is not None:      # a non-default memory policy can change outputs
        identity["tiling"] = spec.tile.identity()
    if spec.quantize != "round":               # so is the 8-bit conversion (round keeps the IDs of older runs)
        identity["quantize"] = spec.quantize
    run_dir = run_dir_for(identity)
    if (run_dir / "DONE").exists() and not spec.force:
        # reuse before any write: a finished run on read-only media is still usable
        with dir_lock(run_dir, "run", shared=True):
            return _reuse(run_dir)
    check_writable(run_dir.parent)
    run_dir.mkdir(parents=True, exist_ok=True)
    with dir_lock(run_dir, "run"):            # one writer per run directory; a second process waits
        if (run_dir / "DONE").exists() and not spec.force:
            return _reuse(run_dir)            # the process we waited for finished it
        return _execute_locked(spec, cls, name, m, config, device, pairs, metrics, method, weights, weights_info,
                               official_test, identity, run_dir)


def _reuse(run_dir: Path) -> RunResult:
    checked = verify_run(run_dir, outputs=True)
    if not checked.sealed:
        log.info("reusing %s, finished before runs were sealed (unsealed: its files are not checked)", run_dir)
    return RunResult(run_dir, True, read_metrics_rows(checked))


def _execute_locked(spec: RunSpec, cls: type[Method], name: str, m: Manifest, config: Any, device: torch.device,
                    pairs: list[Pair], metrics: list[Any], method: Method, weights: Path | None,
                    weights_info: dict[str, Any], official_test: dict[str, Any] | None, identity: dict[str, Any],
                    run_dir: Path) -> RunResult:
    run_id = run_dir.name
    if spec.force:
        (run_dir / "DONE").unlink(missing_ok=True)
        for stale in ("enhance.csv", "per_image.csv", "metrics.csv"):
            (run_dir / stale).unlink(missing_ok=True)
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("bench").addHandler(handler)
    logging.getLogger("bench").setLevel(logging.INFO)
    try:
        started = now()
        seed_everything(spec.seed)
        setup_info = method.setup(device, weights) or {}
        provenance = {**setup_info, **method.provenance()}
        if method.needs_reference_at_test:
            # an oracle: such numbers never share a column with ground-truth-free ones (protocol.md §4.4)
            provenance["uses_ground_truth_at_test"] = True
        config_doc = {
            "run_id": run_id, "method": name, "display_name": cls.display_name, "family": cls.family,
            "method_version": cls.version, "trainable": cls.trainable, "config": dataclasses.asdict(config),
            "profile": spec.profile, "seed": spec.seed, "dataset": m.name, "split": spec.split,
            "limit": spec.limit, "smoke": spec.limit is not None or spec.profile == "smoke",
            "metrics": [mt.name for mt in metrics], "weights": weights_info,
            "tiling": dataclasses.asdict(spec.tile), "tileable": bool(getattr(cls, "tileable", False)),
            "trainable_parameters": method.trainable_parameters(),
            "quantize": spec.quantize, "official_test": official_test,
            "protocol": protocol_card(m, spec.split, len(pairs), weights_info, provenance, spec.quantize),
            "identity": identity,
        }
        write_yaml(run_dir / "config.yaml", config_doc)
        env = environment(device)
        from .amp import conv_tf32

        env.update(conv_tf32=conv_tf32() if device.type == "cuda" else None,
                   cudnn_benchmark=torch.backends.cudnn.benchmark if device.type == "cuda" else None)
        env.update(seed=spec.seed, deterministic=torch.are_deterministic_algorithms_enabled(), started=started,
                   adapter_version=cls.version, weights_sha256=weights_info.get("sha256"),
                   dataset_fingerprint=identity["fingerprint"])
        write_json(run_dir / "env.json", env)
        log.info("run %s: %s on %s:%s (%d images) on %s", run_id, name, m.name, spec.split, len(pairs), device)
        enhance_stage(method, m, pairs, run_dir, device, spec.seed, spec.progress, spec.tile, spec.quantize)
        rows = evaluate_run(run_dir, metrics, m, pairs, progress=spec.progress)
        env.update(finished=now(), metric_versions={mt.name: mt.version for mt in metrics})
        write_json(run_dir / "env.json", env)
        write_done(run_dir, {"finished": env["finished"], "n_images": len(pairs),
                             "weights_sha256": weights_info.get("sha256")})   # sealed: bench/records.py
        log.info("done: %s", run_dir)
        return RunResult(run_dir, False, rows)
    except KeyboardInterrupt:
        log.error("run interrupted; finished images are kept and the same command resumes it")
        raise
    except BenchError as e:
        log.error("run failed: %s", e)
        raise
    except Exception:
        log.exception("run failed with an unexpected error")
        raise
    finally:
        logging.getLogger("bench").removeHandler(handler)
        handler.close()

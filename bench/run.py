"""``bench run``: resolve a run's full identity, then enhance every image and score it.

A run directory ``results/runs/<dataset>/<method>/<run_id>/`` holds ``config.yaml`` (fully resolved),
``env.json``, ``outputs/<ID>.png``, ``enhance.csv`` (per-image timing, appended as images finish so
an interrupted run resumes), ``per_image.csv``, ``metrics.csv``, ``log.txt`` and, written last,
``DONE``. The run ID hashes everything that can change an output: method and adapter version,
resolved config, weights hash, dataset fingerprint and split, seed, profile and ``--limit``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.manifest import Manifest, Pair, load_manifest, locked, verify_pairs
from .enhance import enhance_one, enhance_stage, image_seed  # noqa: F401  (all three importable from here too)
from .errors import BenchError
from .evaluate import evaluate_run
from .fsutil import canonical_hash, check_writable, sha256_file, write_json, write_yaml
from .imageio import QUANTIZE_MODES
from .methods.base import Method, TrainPair, build_config
from .metrics import resolve_metrics
from .paths import results_root
from .provenance import environment, now
from .records import dir_lock, read_json_record, read_metrics_rows, verify_run, write_done
from .registry import canonical, load_method_class
from .run_weights import official_pipeline, user_weights
from .tiling import TilePolicy

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


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _train_pairs(m: Manifest, split: str) -> list[TrainPair]:
    return [TrainPair(p.id, m.file_path(p.low), m.file_path(p.high) if p.high else None)
            for p in m.split(split)] if split in m.splits else []


def identity_config(cls: type[Method], config: Any) -> dict[str, Any]:
    """The config as identities see it: late options (``Method.late_options``) at their old value left out."""
    late = getattr(cls, "late_options", {}) or {}
    return {k: v for k, v in dataclasses.asdict(config).items() if not (k in late and v == late[k])}


def train_identity(cls: type[Method], config: Any, m: Manifest, seed: int, profile: str) -> dict[str, Any]:
    """Everything that can change trained weights; its hash names the training run directory."""
    options = {k: v for k, v in identity_config(cls, config).items() if k not in cls.test_time_options}
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
    return {"method": name, "method_version": cls.version, "config": identity_config(cls, config),
            "weights_sha256": weights_sha256, "dataset": m.name, "dataset_version": m.version,
            "fingerprint": m.fingerprint(split), "split": split, "seed": seed, "profile": profile,
            "limit": limit, "ids": ids}


def run_dir_for(identity: dict[str, Any]) -> Path:
    return results_root() / "runs" / identity["dataset"] / identity["method"] / canonical_hash(identity)[:12]




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

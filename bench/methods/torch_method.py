"""``TorchMethod``: what the PyTorch adapters share (build, weights loading, inference, checkpoint metadata).

The config is validated when the adapter is made (hook :meth:`TorchMethod.validate_config`). ``setup``
re-validates it (hook :meth:`TorchMethod.begin_setup`), builds the network with
:meth:`TorchMethod.build_model`, loads ``weights`` if given, moves the network to the device in eval mode,
lets the method ready it for inference (hook :meth:`TorchMethod.prepare_inference`) and returns
:meth:`provenance`.

Weights files, in order:

* this project's checkpoints (``bench.training.WEIGHTS_FORMAT``, ``weights_kind`` ``bench_checkpoint``, or a
  training state ``STATE_FORMAT``, ``bench_train_state``), whose ``meta.method`` must be this method (and, for
  methods trained in stages, which must be the combined file: ``combined_checkpoint``); hooks
  :meth:`check_checkpoint_meta` (refuse before loading) and :meth:`checkpoint_loaded` (read facts after);
* an official state dict (``official_state_dict``), recognised by a key ending in ``official_key_suffix``,
  with a ``module.`` (DataParallel) prefix stripped and then :meth:`convert_official_state_dict` applied;
* anything else is refused with a one-line BenchError naming ``official_description``.

The network's ``load_state_dict`` is strict (:meth:`load_model_state`); a mismatch is a one-line BenchError.
``weights_info`` records ``weights_kind`` and ``weights_sha256`` for the provenance.

``enhance`` runs :meth:`forward_enhance` (default: ``model(x)``) on the input as float32 on the device, in
eval mode (the previous train/eval mode is restored) without gradients, and returns the output clamped to
[0, 1] on the input's device.

Training helpers: :meth:`fresh_model` (seed, build on the device) and :meth:`run_trainer` (one
:class:`bench.training.Trainer` run over the network's trainable tensors, validating with ``enhance``), and
:meth:`checkpoint_meta` (the ``meta`` every checkpoint carries).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch

from ..errors import BenchError
from ..fsutil import jsonable, sha256_file
from ..training import STATE_FORMAT, WEIGHTS_FORMAT, Trainer, TrainSettings, load_torch, seed_all
from .base import Method

__all__ = ["TorchMethod", "TF_WEIGHTS", "official_import_facts", "official_summary", "flush_subnormal_"]

#: ``official_description`` of methods whose official weights are TensorFlow checkpoints.
TF_WEIGHTS = ("the official weights are TensorFlow checkpoints: convert them once with "
              "bench weights import official --method M CHECKPOINT_FOLDER, then use --weights official:M")


def flush_subnormal_(module: torch.nn.Module) -> int:
    """Set the subnormal values (0 < |x| < 1.18e-38) of ``module``'s float tensors to zero; return how many.

    Trained weights can hold many of them (2,048 of 9,216 in one conv of the released Zero-DCE file, a result
    of weight decay), and x86 CPUs multiply subnormals ~50x slower: one 600x400 Zero-DCE image took 23 s
    instead of 0.5 s. Their products are ~1e-37, far below the float32 resolution of any activation, so the
    outputs do not change (the official-output tests check this on the released files)."""
    n = 0
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                mask = (t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)
                k = int(mask.sum())
                if k:
                    t.masked_fill_(mask, 0.0)
                    n += k
    return n


def official_import_facts(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``weights_info`` facts of a file converted by ``bench weights import official`` (its ``meta``)."""
    return {"weights_source": "official", "official": official_summary(meta.get("official") or {})}


def official_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a run records of official weights: the import's label and id, and each source file's hash and
    manifest entry ("unverified" when it matches none)."""
    files = [{k: f.get(k) for k in ("part", "role", "path", "sha256", "manifest_id", "status") if k in f}
             for f in record.get("files") or []]
    verified = bool(files) and all(f.get("status") == "verified" for f in files)
    out: dict[str, Any] = {"label": record.get("label") or ("verified" if verified else "unverified"),
                           "verified": verified, "files": files}
    for key in ("id", "manifest_ids", "checkpoint", "trained_on", "contamination", "test_pipeline"):
        if record.get(key):
            out[key] = record[key]
    return out


class TorchMethod(Method):
    # A state-dict key suffix only the official release's weights have (None: official weights cannot be read).
    official_key_suffix: ClassVar[str | None] = None
    # Names those weights in the refusal ("an official X state dict (...)"), or, without an
    # ``official_key_suffix``, says why they cannot be read.
    official_description: ClassVar[str] = ""
    # Methods trained in stages: (meta key, value) of the combined weights file, e.g. ("stage", "all"); the
    # per-stage files (other values) are refused.
    combined_checkpoint: ClassVar[tuple[str, str] | None] = None
    # Keys of a checkpoint's ``meta`` copied into ``trained`` (the provenance of the loaded weights) on load.
    trained_meta_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any | None = None):
        super().__init__(config)
        self.validate_config()
        self.model: torch.nn.Module | None = None
        self.weights_info: dict[str, Any] = {"weights_kind": "none"}
        # facts about the training run behind the loaded weights, for the provenance (set by subclasses)
        self.trained: dict[str, Any] | None = None

    # ---- hooks ------------------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        """A freshly initialised network for this config."""
        raise NotImplementedError

    def validate_config(self) -> None:
        """Check (and normalise) the config; called by ``__init__`` and, by default, ``begin_setup``."""
        self.config.validate()

    def begin_setup(self) -> None:
        """First step of ``setup``: re-validate the config (it may have been edited since ``__init__``)."""
        self.validate_config()

    def forward_enhance(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The enhanced image for ``x`` (float32, on the device); ``enhance`` clamps it and adds no_grad/eval."""
        return self.model(x)  # type: ignore[misc]

    @classmethod
    def official_layout(cls) -> Any:
        """How the authors' released checkpoint maps into this network (a ``bench.official.layout.OfficialLayout``),
        or None when there is none to import. ``bench weights import official`` and raw official files use it."""
        return None

    def convert_official_state_dict(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """Official key names -> this network's (after the ``module.`` prefix is stripped); identity here."""
        return state_dict

    def check_checkpoint_meta(self, path: Path, meta: Mapping[str, Any]) -> None:
        """Refuse a checkpoint of this method that cannot serve (raise BenchError): here, a single stage's file
        of a method with a ``combined_checkpoint``."""
        if self.combined_checkpoint is not None:
            key, value = self.combined_checkpoint
            if meta.get(key) != value:
                raise BenchError(f"{path} holds only the {meta.get(key)!r} {key}; pass the combined "
                                 "model_final.pt of the training directory")

    def prepare_inference(self) -> None:
        """Last step of ``setup``, the network loaded, on its device and in eval mode; nothing here."""

    def official_import_loaded(self, record: Mapping[str, Any]) -> None:
        """Read facts from the record of a converted official checkpoint once it is loaded; nothing here."""

    def checkpoint_loaded(self, checkpoint: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """Read facts from a checkpoint of this project once its weights are loaded: here the
        ``trained_meta_keys`` of its meta, into ``trained``."""
        if self.trained_meta_keys:
            self.trained = {k: meta.get(k) for k in self.trained_meta_keys if k in meta}

    # ---- setup and weights ------------------------------------------------------------------
    def setup(self, device: torch.device, weights: Path | None = None) -> dict[str, Any]:
        self.device = torch.device(device)
        self.trained = None   # forget what earlier weights said
        self.begin_setup()
        self.model = self.build_model()
        self.weights_info = {"weights_kind": "none"}
        if weights is not None:
            self._load(Path(weights))
            flushed = flush_subnormal_(self.model)
            if flushed:
                self.weights_info["subnormal_values_flushed"] = flushed
        self.model.to(self.device).eval()
        self.prepare_inference()
        return self.provenance()

    def _load(self, path: Path) -> None:
        obj = load_torch(path)
        extra: dict[str, Any] = {}
        if isinstance(obj, Mapping) and obj.get("format") in (WEIGHTS_FORMAT, STATE_FORMAT):
            meta = obj.get("meta") or {}
            if meta.get("method") != self.name:
                raise BenchError(f"{path} holds weights of method {meta.get('method')!r}, not {self.name}")
            if meta.get("weights_source") == "official":   # converted by bench weights import official
                # no training meta to check: the import's layout checked every name and shape, and so does this load
                self.load_model_state(path, obj, "model")
                self.official_import_loaded(meta.get("official") or {})
                kind = "official_import"
                extra = official_import_facts(meta)
            else:
                self.check_checkpoint_meta(path, meta)
                self.load_model_state(path, obj, "model")
                self.checkpoint_loaded(obj, meta)
                kind = "bench_checkpoint" if obj["format"] == WEIGHTS_FORMAT else "bench_train_state"
                extra = {"weights_source": "trained_here"}
        else:
            extra = self.load_official(path, obj)
            kind = "official_state_dict"
        self.weights_info = {"weights_kind": kind, "weights_sha256": sha256_file(path), **extra}

    def load_official(self, path: Path, obj: Any) -> dict[str, Any]:
        """Load an official PyTorch state dict given as ``--weights`` (see the module doc), strictly through
        :meth:`official_layout` where the method has one, or refuse ``obj`` as no weights this method knows.
        Returns the provenance facts (``weights_source: official`` and the manifest entry the file matches)."""
        suffix = self.official_key_suffix
        if suffix is None or not (isinstance(obj, Mapping) and any(str(k).endswith(suffix) for k in obj)):
            raise BenchError(self.unrecognised_weights_message(path))
        layout = self.official_layout()
        if layout is not None and len(layout.parts) == 1 and layout.parts[0].format == "torch":
            from ..official.importer import read_part
            from ..official.layout import LayoutError, convert

            values, files, _ = read_part(layout.parts[0], path)
            try:
                state = convert(layout, self.model.state_dict(), {layout.parts[0].name: values})  # type: ignore[union-attr]
            except LayoutError as e:
                raise BenchError(f"{path}: {e}") from None
            self.load_model_state(path, state)
            return {"weights_source": "official", "official": official_summary({"files": files})}
        state_dict = {str(k).removeprefix("module."): v for k, v in obj.items()}
        self.load_model_state(path, self.convert_official_state_dict(state_dict))
        from ..official.importer import describe_file

        return {"weights_source": "official", "official": official_summary({"files": [describe_file(path, "state_dict")]})}

    def unrecognised_weights_message(self, path: Path) -> str:
        article = "an" if self.name[:1] in "aeiou" else "a"
        if self.official_key_suffix is None:
            return f"{path} is not {article} {self.name} checkpoint of this project ({self.official_description})"
        return f"{path} is neither {article} {self.name} checkpoint of this project nor {self.official_description}"

    def load_model_state(self, path: Path, state: Mapping[str, Any], key: str | None = None) -> None:
        """Strict ``load_state_dict`` of ``state[key]`` (or ``state``) into the network, errors as one line."""
        try:
            self.model.load_state_dict(state[key] if key is not None else state, strict=True)  # type: ignore[union-attr]
        except (RuntimeError, KeyError) as e:
            raise BenchError(f"{path}: {str(e).strip().splitlines()[0][:200]}") from None

    def weights_provenance(self) -> dict[str, Any]:
        """``weights_info`` plus, when the weights came from a training run here, what ``trained`` says of it."""
        out = dict(self.weights_info)
        if self.trained:
            out["trained"] = jsonable(self.trained)
        return out

    # ---- inference --------------------------------------------------------------------------
    def enhance(self, low: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("call setup() first")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.forward_enhance(low.to(self.device, torch.float32), **kwargs)
        finally:
            self.model.train(was_training)
        return out.clamp(0.0, 1.0).to(low.device)

    # ---- training ---------------------------------------------------------------------------
    def fresh_model(self, init_seed: int) -> torch.nn.Module:
        """Seed python/NumPy/torch with ``init_seed``, then build a freshly initialised network on the device."""
        seed_all(init_seed)
        self.model = self.build_model().to(self.device)
        return self.model

    def run_trainer(self, sampler: Any, step_fn: Callable[[Any], Mapping[str, Any]], out_dir: Path,
                    settings: TrainSettings, *, seed: int, meta: Mapping[str, Any], val_pairs: Sequence[Any] = (),
                    progress: bool = True, **options: Any) -> Path:
        """Train the network's trainable tensors with a :class:`bench.training.Trainer` (validation with
        ``enhance``; ``options`` go to the Trainer); return the weights file, the network left in eval mode."""
        model = self.model
        assert model is not None
        trainer = Trainer(model, [p for p in model.parameters() if p.requires_grad], sampler, step_fn, Path(out_dir),
                          settings, seed=seed, device=self.device, enhance_fn=self.enhance, val_pairs=val_pairs,
                          meta=meta, progress=progress, desc=f"train {self.name}", **options)
        ckpt = trainer.run()
        model.eval()
        return ckpt

    def checkpoint_meta(self, seed: int, **extra: Any) -> dict[str, Any]:
        """The ``meta`` of training checkpoints: method, version, the config as JSON data, seed, then ``extra``."""
        return {"method": self.name, "version": self.version, "config": jsonable(dataclasses.asdict(self.config)),
                "seed": int(seed), **extra}

"""Training speed options that do not change what is trained (``TrainSettings`` fields; DSN exposes them
as ``DSNConfig`` options). Every option is off by default, which is the paper's fp32 recipe.

``channels_last`` (DSN: ``channels_last_train``)
    Parameters (and so Adam's moments) and every batch in ``torch.channels_last``. Same maths, other
    convolution kernels: losses agree with NCHW to float tolerance, not bit for bit.
``compile``: ``off | default | reduce-overhead | max-autotune``
    ``torch.compile(step_fn, mode=...)``: the training step's forward passes and losses (AOTAutograd
    compiles the backward with them). **Used on CUDA only.** On any other device, or where ``torch.compile``
    or Triton is missing, the step runs eagerly: a warning is logged and the reason is recorded as
    ``compile_fallback`` in ``train_settings.json`` (``speed``). Compilation errors on CUDA are not hidden.
``optimizer_impl``: ``default | foreach | fused``
    ``torch.optim.Adam(foreach=True)`` or ``(fused=True)``; ``default`` is torch's own choice (the
    single-tensor loop on CPU, foreach on CUDA). On CPU, foreach is bit-identical to the default loop
    (measured: tests/test_train_speed.py); fused runs on CPU too (torch >= 2.4) and differs in the last
    float bits. Where torch refuses fused Adam for the device, foreach is used and the reason recorded as
    ``optimizer_fallback``.
``loader_workers``: int, 0 = serial
    :class:`PrefetchSampler`: the batch draws stay in the training thread, in the serial order; ``workers``
    threads cut, flip and stack the crops of the next ``2 * workers`` batches while the step runs (pinned
    host memory on CUDA, copied asynchronously). The batches are bit-identical to the serial sampler's and
    ``state_dict`` is the state before the next batch handed out, so resume stays exact. Samplers without
    ``plan_batch`` / ``make_batch`` (e.g. ``WholeImageSampler``) get one thread calling ``next_batch`` ahead.
``tf32``: bool
    TF32 for cuDNN convolutions and CUDA matmuls while training (False = the fp32 protocol: TF32 is forced
    *off*, PyTorch's default for convolutions being on). No effect on CPU (recorded as ``tf32_note``).

All options are part of ``TrainSettings.identity()``, so a checkpoint is never resumed under another setting.
"""

from __future__ import annotations

import collections
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Mapping

import torch

from .errors import BenchError, unknown_name

log = logging.getLogger("bench.train_speed")

__all__ = ["COMPILE_MODES", "OPTIMIZER_IMPLS", "SPEED_DEFAULTS", "check_speed_options", "compile_unavailable",
           "PrefetchSampler",
           "TrainSpeed", "set_tf32", "tf32_state"]

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
OPTIMIZER_IMPLS = ("default", "foreach", "fused")
#: the TrainSettings fields and their "off" values (left out of TrainSettings.identity() when off)
SPEED_DEFAULTS: dict[str, Any] = {"channels_last": False, "compile": "off", "optimizer_impl": "default",
                                  "loader_workers": 0, "tf32": False}


def check_speed_options(compile: str, optimizer_impl: str, loader_workers: int, who: str = "") -> None:
    """Validate the option values (device-independent); ``who`` names the method in the messages."""
    of = f" of {who}" if who else ""
    if compile not in COMPILE_MODES:
        raise unknown_name(f"compile mode{of}", compile, list(COMPILE_MODES))
    if optimizer_impl not in OPTIMIZER_IMPLS:
        raise unknown_name(f"optimizer_impl{of}", optimizer_impl, list(OPTIMIZER_IMPLS))
    if isinstance(loader_workers, bool) or not isinstance(loader_workers, int) or not 0 <= loader_workers <= 64:
        raise BenchError(f"{who + ': ' if who else ''}loader_workers must be an integer from 0 to 64, "
                         f"got {loader_workers!r}")


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` is not used for training on ``device`` (None: it is)."""
    if device.type != "cuda":
        return f"compile is used on CUDA only; on {device.type} the step runs eagerly"
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        import triton  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return f"triton is not importable ({type(e).__name__}); the step runs eagerly"
    return None


# ------------------------------------------------------------------------------------------------
# TF32
# ------------------------------------------------------------------------------------------------
def tf32_state() -> tuple[bool, bool]:
    """(cuDNN convolutions, CUDA matmuls) may use TF32."""
    from .amp import conv_tf32

    mm = torch.backends.cuda.matmul
    prec = getattr(mm, "fp32_precision", None)
    return conv_tf32(), (prec == "tf32") if prec is not None else bool(mm.allow_tf32)


def set_tf32(conv: bool, matmul: bool | None = None) -> tuple[bool, bool]:
    """Allow or forbid TF32 in convolutions and matmuls (``matmul`` defaults to ``conv``); returns the old state."""
    from .amp import set_conv_tf32

    before = tf32_state()
    set_conv_tf32(conv)
    matmul = conv if matmul is None else matmul
    mm = torch.backends.cuda.matmul
    if getattr(mm, "fp32_precision", None) is not None:   # the new API; mixing it with allow_tf32 is an error
        mm.fp32_precision = "tf32" if matmul else "ieee"
    else:
        mm.allow_tf32 = bool(matmul)
    return before


# ------------------------------------------------------------------------------------------------
# loader
# ------------------------------------------------------------------------------------------------
class PrefetchSampler:
    """Batches of ``sampler`` prepared ahead by ``workers`` threads, in exactly the serial order (module doc)."""

    def __init__(self, sampler: Any, workers: int, *, pin: bool = False):
        self.sampler, self.workers, self.pin = sampler, max(1, int(workers)), bool(pin)
        self.planned = hasattr(sampler, "plan_batch") and hasattr(sampler, "make_batch")
        self.depth = 2 * self.workers if self.planned else 1
        self._queue: collections.deque[tuple[dict[str, Any], Future]] = collections.deque()
        self._pool: ThreadPoolExecutor | None = None

    def __getattr__(self, name: str) -> Any:  # describe(), crop, iterations_per_epoch, ...
        if name == "sampler":
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def __len__(self) -> int:
        return len(self.sampler)

    def _fill(self) -> None:
        """Planned: draw (in this thread, in order) and hand the crops to the workers, ``depth`` batches ahead.
        Otherwise one ``next_batch`` runs ahead in the loader thread; the state before it is read once the
        previous draw has finished (the sampler is never used by two threads at once)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers if self.planned else 1, thread_name_prefix="bench-loader")
        while len(self._queue) < self.depth:
            if self.planned:
                state = self.sampler.state_dict()
                fut = self._pool.submit(self.sampler.make_batch, self.sampler.plan_batch(), self.pin)
            else:
                if self._queue:
                    self._queue[-1][1].result()
                state = self.sampler.state_dict()
                fut = self._pool.submit(self.sampler.next_batch)
            self._queue.append((state, fut))

    def next_batch(self) -> Any:
        self._fill()
        _, fut = self._queue.popleft()
        batch = fut.result()
        self._fill()            # keep the workers busy while the step runs
        return self.sampler.upload_batch(batch) if self.planned else batch

    def state_dict(self) -> dict[str, Any]:
        """The serial sampler's state before the next batch this one hands out."""
        if self._queue:
            return dict(self._queue[0][0])
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._drop()
        self.sampler.load_state_dict(state)

    def _drop(self) -> None:
        """Forget the batches drawn ahead and rewind the sampler to the first of them."""
        if not self._queue:
            return
        head = self._queue[0][0]
        for _, fut in self._queue:
            fut.cancel()
        for _, fut in self._queue:
            if not fut.cancelled():
                try:
                    fut.result()
                except Exception:   # a failed prefetch of a batch nobody takes
                    pass
        self._queue.clear()
        self.sampler.load_state_dict(head)

    def close(self) -> None:
        """Stop the threads; the wrapped sampler is left exactly where the serial one would be."""
        self._drop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


# ------------------------------------------------------------------------------------------------
# the options of one run
# ------------------------------------------------------------------------------------------------
class TrainSpeed:
    """What a :class:`bench.training.Trainer` does with the speed options of its ``TrainSettings``."""

    def __init__(self, settings: Any, device: torch.device | str):
        self.device = torch.device(device)
        self.channels_last = bool(getattr(settings, "channels_last", False))
        self.compile = str(getattr(settings, "compile", "off"))
        self.optimizer_impl = str(getattr(settings, "optimizer_impl", "default"))
        self.loader_workers = int(getattr(settings, "loader_workers", 0))
        self.tf32 = bool(getattr(settings, "tf32", False))
        check_speed_options(self.compile, self.optimizer_impl, self.loader_workers)
        self.notes: dict[str, str] = {}
        if self.compile != "off":
            reason = compile_unavailable(self.device)
            if reason is not None:
                self.notes["compile_fallback"] = reason
                log.warning("compile=%s: %s", self.compile, reason)
        if self.tf32 and self.device.type != "cuda":
            self.notes["tf32_note"] = f"tf32 has no effect on {self.device.type}"
        self._flags: tuple[bool, bool] | None = None
        self._prefetch: PrefetchSampler | None = None

    @property
    def compiled(self) -> bool:
        return self.compile != "off" and "compile_fallback" not in self.notes

    def describe(self) -> dict[str, Any]:
        """Recorded in ``train_settings.json`` (``speed``): the options and what they became on this device."""
        out: dict[str, Any] = {"channels_last": self.channels_last, "compile": self.compile,
                               "compiled": self.compiled, "optimizer_impl": self.optimizer_impl,
                               "loader_workers": self.loader_workers, "tf32": self.tf32}
        out.update(self.notes)
        return out

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.channels_last:
            model.to(memory_format=torch.channels_last)   # in place: the Parameter objects are kept
        return model

    def prepare_batch(self, batch: Any) -> Any:
        if not self.channels_last:
            return batch
        for name in ("low", "high"):
            t = getattr(batch, name, None)
            if isinstance(t, torch.Tensor) and t.dim() == 4:
                setattr(batch, name, t.contiguous(memory_format=torch.channels_last))
        return batch

    def compile_step(self, step: Callable[[Any], Mapping[str, Any]]) -> Callable[[Any], Mapping[str, Any]]:
        if not self.compiled:
            return step
        return torch.compile(step, mode=None if self.compile == "default" else self.compile)

    def adam(self, params: list[torch.nn.Parameter], **kw: Any) -> torch.optim.Adam:
        if self.optimizer_impl == "default":
            return torch.optim.Adam(params, **kw)
        if self.optimizer_impl == "fused":
            try:
                return torch.optim.Adam(params, fused=True, **kw)
            except (RuntimeError, ValueError, TypeError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
                self.notes["optimizer_fallback"] = f"fused Adam refused on {self.device.type} ({first}); foreach used"
                log.warning("optimizer_impl=fused: %s", self.notes["optimizer_fallback"])
        return torch.optim.Adam(params, foreach=True, **kw)

    def wrap_sampler(self, sampler: Any) -> Any:
        if self.loader_workers <= 0:
            return sampler
        self._prefetch = PrefetchSampler(sampler, self.loader_workers, pin=self.device.type == "cuda")
        return self._prefetch

    def enter(self) -> None:
        """Set the device flags for the run (TF32 on CUDA); :meth:`close` restores them."""
        if self.device.type == "cuda" and self._flags is None:
            self._flags = set_tf32(self.tf32)

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.close()
        if self._flags is not None:
            set_tf32(*self._flags)
            self._flags = None

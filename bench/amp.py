"""Mixed precision for training and inference: ``amp = "off" | "bf16" | "fp16"``.

One object, :class:`Amp`, holds the autocast context and (for fp16) the gradient scaler, so a training
loop changes in four places only::

    amp = Amp(settings.amp, device)
    with amp.autocast():
        terms = step_fn(batch)            # forward passes and losses
    amp.backward(terms["loss"])           # scaled for fp16
    amp.unscale_(optimizer)               # before gradient clipping (no-op unless fp16)
    clip_grad_norm_(params, max_norm)
    amp.step(optimizer)                   # skips the update when fp16 gradients overflowed

``off`` is an exact no-op: the loop computes bit-for-bit what it computed without this module.
``bf16`` autocasts convolutions and matrix products to bfloat16 (CUDA and CPU); it needs no scaler.
``fp16`` autocasts to float16 and scales the loss with ``torch.amp.GradScaler`` (whose state,
:meth:`Amp.state_dict`, belongs in a training checkpoint so a resumed run continues exactly).
Parameters, optimiser state and reductions stay float32 (autocast keeps ``sum``/``pow``/``exp`` in
float32), and :func:`inference` returns float32 outputs.

Reporting rule (protocol.md §5): fp32 is the protocol; runs and timings with ``amp != "off"`` are flagged.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Mapping

import torch

from .errors import BenchError

__all__ = ["AMP_MODES", "Amp", "amp_dtype", "autocast", "check_amp", "inference", "set_conv_tf32", "conv_tf32"]

AMP_MODES = ("off", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(mode: str, device: torch.device | str | None = None) -> str:
    """Validate an ``amp`` option (and that the device can run it); returns the mode."""
    if mode not in AMP_MODES:
        from .errors import unknown_name

        raise unknown_name("amp mode", mode, list(AMP_MODES))
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and mode == "bf16" and torch.cuda.is_available():
        if not torch.cuda.is_bf16_supported():
            raise BenchError("amp=bf16 needs a GPU with bfloat16 support (Ampere or later); use fp16 or off")
    if dev is not None and dev.type not in ("cuda", "cpu") and mode != "off":
        raise BenchError(f"amp={mode} is supported on cuda and cpu, not {dev.type}")
    return mode


def amp_dtype(mode: str) -> torch.dtype | None:
    return _DTYPES.get(check_amp(mode))


def autocast(mode: str, device_type: str) -> ContextManager[Any]:
    """``torch.autocast`` for a mode (a null context for ``off``)."""
    dtype = amp_dtype(mode)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def inference(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str = "off") -> torch.Tensor:
    """``fn(x)`` under the mode's autocast, returned as float32 (``off``: exactly ``fn(x)``)."""
    if mode == "off":
        return fn(x)
    with autocast(mode, x.device.type):
        y = fn(x)
    return y.float()


class Amp:
    """Autocast + gradient scaling for one training run (see the module doc)."""

    def __init__(self, mode: str = "off", device: torch.device | str = "cpu", *, init_scale: float = 2.0**16):
        self.mode = check_amp(mode, device)
        self.device = torch.device(device)
        self.dtype = amp_dtype(self.mode)
        self.scaler: torch.amp.GradScaler | None = None
        if self.mode == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type, init_scale=init_scale)
        self._unscaled = False
        self.skipped = 0       # optimiser steps skipped because fp16 gradients were not finite

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def autocast(self) -> ContextManager[Any]:
        return autocast(self.mode, self.device.type)

    def backward(self, loss: torch.Tensor) -> None:
        self._unscaled = False
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring fp16 gradients back to their true scale (call before clipping or reading norms)."""
        if self.scaler is not None and not self._unscaled:
            self.scaler.unscale_(optimizer)
            self._unscaled = True

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """``optimizer.step()``; with fp16 through the scaler. Returns False when the step was skipped."""
        if self.scaler is None:
            optimizer.step()
            return True
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        self._unscaled = False
        taken = self.scaler.get_scale() >= before  # the scale only drops when inf/NaN gradients were found
        if not taken:
            self.skipped += 1
        return taken

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "skipped": self.skipped,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if not state:
            return
        if state.get("mode", "off") != self.mode:
            raise BenchError(f"checkpoint was trained with amp={state.get('mode')}, this run uses amp={self.mode}")
        self.skipped = int(state.get("skipped", 0))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(dict(state["scaler"]))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"amp": self.mode}
        if self.scaler is not None:
            out.update(scale=float(self.scaler.get_scale()), skipped_steps=self.skipped)
        return out


# ------------------------------------------------------------------------------------------------
# TF32: a precision switch too (cuDNN convolutions default to TF32 on Ampere and later)
# ------------------------------------------------------------------------------------------------
def conv_tf32() -> bool:
    """Whether cuDNN convolutions may use TF32 (PyTorch's default is yes)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    prec = getattr(conv, "fp32_precision", None) if conv is not None else None
    if prec is not None:
        return prec == "tf32"
    return bool(torch.backends.cudnn.allow_tf32)


def set_conv_tf32(enabled: bool) -> bool:
    """Allow or forbid TF32 in cuDNN convolutions (new ``fp32_precision`` API where it exists, as mixing
    it with ``allow_tf32`` is an error); returns the previous setting."""
    before = conv_tf32()
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and getattr(conv, "fp32_precision", None) is not None:
        conv.fp32_precision = "tf32" if enabled else "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = bool(enabled)
    return before

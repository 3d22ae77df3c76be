"""DSN training losses (``dsn_reference.md`` section 2, decision D7; paper Eqs. 12-14 and Table 2).

All losses take ``pred`` and ``target`` of shape N×C×H×W (RGB in [0,1], raw network outputs: no
clamping, as in the official training) and return a scalar.

- :func:`l2_loss` -- the official ``ReconstructionLoss('l2')``: the **sum** of squared errors over
  C×H×W of each image, then the **mean over the batch** (= paper Eq. 12, the per-image squared norm
  averaged over images). Kept sum-reduced so that weight decay 1e-5 and gradient clipping at 10 keep
  the meaning they have in the official code (a per-pixel mean would shrink the loss, and hence the
  gradient, by 3·180·180 = 97,200 for a 180² crop).
- :func:`l1_loss` -- Table 2 "L2 -> L1": the sum of absolute errors over C×H×W, mean over the batch
  (the same reduction; IRN's ``ReconstructionLoss('l1')`` reduces the same way).
- :func:`psnr_loss` -- Table 2 "L2 -> PSNR loss" ("maximise PSNR", after DPE [7]). Our definition:
  ``-PSNR`` of each image, averaged over the batch, with PSNR on [0,1] data
  ``PSNR_i = 10·log10(1 / (MSE_i + eps))``, ``MSE_i`` the mean squared error over C×H×W of image i and
  ``eps = 1e-10`` (caps the loss at -100 dB instead of -inf for a perfect match). Note its gradient is
  ``(10/ln 10)·∇MSE_i / MSE_i``: at 20 dB it is roughly 200× smaller than the sum-L2 gradient of a
  180² crop, which makes the (coupled) weight decay relatively stronger and the clip at 10 act far less.
  The paper does not say how it balanced this; we keep the optimiser settings unchanged.
- :func:`quantize_ste` -- IRN's ``Quantization``: clamp to [0,1], round to a multiple of 1/255 in
  the forward pass, straight-through (identity) gradient. Applied to the normal-light image before
  the backward (degradation) term; a no-op on 8-bit data.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import torch

__all__ = ["LOSSES", "l2_loss", "l1_loss", "psnr_loss", "get_loss", "quantize_ste", "PSNR_EPS"]

PSNR_EPS = 1e-10


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"loss needs two N×C×H×W tensors of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum of squared error over C×H×W, mean over the batch (official ``ReconstructionLoss('l2')``)."""
    _check(pred, target)
    return (pred - target).pow(2).sum(dim=(1, 2, 3)).mean()


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum of absolute error over C×H×W, mean over the batch."""
    _check(pred, target)
    return (pred - target).abs().sum(dim=(1, 2, 3)).mean()


def psnr_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-PSNR (dB, [0,1] data, peak 1) of each image, mean over the batch; MSE over C×H×W plus 1e-10."""
    _check(pred, target)
    mse = (pred - target).pow(2).mean(dim=(1, 2, 3))
    return (10.0 / math.log(10.0) * torch.log(mse + PSNR_EPS)).mean()


LOSSES: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l2": l2_loss,
    "l1": l1_loss,
    "psnr": psnr_loss,
}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None


def quantize_ste(x: torch.Tensor) -> torch.Tensor:
    """Q(x): clamp to [0,1], round to 1/255 (forward); gradient passed straight through (backward)."""
    q = torch.round(x.clamp(0, 1) * 255.0) / 255.0
    return x + (q - x).detach()

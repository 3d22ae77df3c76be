"""EnlightenGAN's losses (official ``models/single_model.py`` and ``models/networks.py``).

- Global discriminator, relativistic LSGAN (``--use_ragan``):
  D: ½[(D(r) − E D(f) − 1)² + (D(f) − E D(r))²];  G: ½[(D(r) − E D(f))² + (D(f) − E D(r) − 1)²]
  (each square a mean over all outputs, the expectations means over the batch and positions).
- Local (patch) discriminator, plain LSGAN (``--hybrid_loss``) over 1 + 5 random 32² patches, averaged:
  D: ½[(D(r) − 1)² + D(f)²];  G: (D(f) − 1)².
- Self feature-preserving loss: MSE between instance-normalised VGG features of the output and of the *input*
  (not a reference), on the whole image plus the mean over the same patches (``--patch_vgg``).

Images are handled in the official [−1, 1] scale; the VGG module (``bench.vgg_features``) takes [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["ragan_d_loss", "ragan_g_loss", "lsgan_d_loss", "lsgan_g_loss", "sfp_loss", "crop_patches"]


def _mse_to(x: torch.Tensor, value: float) -> torch.Tensor:
    return F.mse_loss(x, torch.full_like(x, value))


def ragan_d_loss(pred_real: torch.Tensor, pred_fake: torch.Tensor) -> torch.Tensor:
    return (_mse_to(pred_real - pred_fake.mean(), 1.0) + _mse_to(pred_fake - pred_real.mean(), 0.0)) / 2


def ragan_g_loss(pred_real: torch.Tensor, pred_fake: torch.Tensor) -> torch.Tensor:
    return (_mse_to(pred_real - pred_fake.mean(), 0.0) + _mse_to(pred_fake - pred_real.mean(), 1.0)) / 2


def lsgan_d_loss(pred_real: torch.Tensor, pred_fake: torch.Tensor) -> torch.Tensor:
    return (_mse_to(pred_real, 1.0) + _mse_to(pred_fake, 0.0)) * 0.5


def lsgan_g_loss(pred_fake: torch.Tensor) -> torch.Tensor:
    return _mse_to(pred_fake, 1.0)


def sfp_loss(vgg: torch.nn.Module, out_pm1: torch.Tensor, inp_pm1: torch.Tensor, instance_norm: bool = True) -> torch.Tensor:
    """Self feature-preserving loss between two [−1, 1] images (features of the input are constants)."""
    f_out = vgg((out_pm1 + 1) / 2)
    with torch.no_grad():
        f_in = vgg((inp_pm1 + 1) / 2)
    if instance_norm:
        f_out, f_in = F.instance_norm(f_out), F.instance_norm(f_in)
    return torch.mean((f_out - f_in) ** 2)


def crop_patches(tensors: Sequence[torch.Tensor], offsets: Sequence[tuple[int, int]], size: int) -> list[list[torch.Tensor]]:
    """For each (top, left): the same ``size``² window of every tensor (all images of the batch alike)."""
    return [[t[..., top:top + size, left:left + size] for t in tensors] for top, left in offsets]

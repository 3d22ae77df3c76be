"""The DRBN stage-1 objective (official ``DRBL-stage1/src/trainer.py`` with its bundled ``pytorch_ssim``).

``ssim`` is the bundled ``pytorch_ssim`` SSIM: an 11x11 Gaussian window (sigma 1.5, normalised), applied per
channel as a 2-D convolution with **zero padding** of 5 ("same" size), C1 = 0.01^2, C2 = 0.03^2 (images in
[0, 1]), the SSIM map averaged over batch, channels and all pixels (borders included). The bundled module
returns ``-1 * mean``; here ``ssim`` returns the positive index and :func:`drbn_loss` negates it.

The stage-1 loss is the sum over the three band outputs of ``-SSIM(output_s, GT_s)``, where the GT at 1/2 and
1/4 scale is plain subsampling ``GT[..., ::2, ::2]`` / ``GT[..., ::4, ::4]`` (no low-pass filter), all with
weight 1. It lies in [-3, 3) and equals -3 exactly when every band matches. The trainer also builds an EDSR
``1*MSE`` loss object, but only for logging: it never enters the gradient (see SOURCE.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_window", "ssim", "drbn_loss", "C1", "C2"]

C1 = 0.01 ** 2
C2 = 0.03 ** 2


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> torch.Tensor:
    """The normalised 2-D Gaussian (outer product of the normalised 1-D one), size x size."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x ** 2) / (2.0 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype=dtype, device=device)


def ssim(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two N x C x H x W tensors (the bundled ``pytorch_ssim`` formula, zero-padded 'same')."""
    if img1.shape != img2.shape:
        raise ValueError(f"ssim: shapes differ {tuple(img1.shape)} vs {tuple(img2.shape)}")
    c = img1.shape[1]
    win = gaussian_window(window_size, sigma, img1.dtype, img1.device).expand(c, 1, window_size, window_size)
    pad = window_size // 2

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, padding=pad, groups=c)

    mu1, mu2 = filt(img1), filt(img2)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s11 = filt(img1 * img1) - mu1_sq
    s22 = filt(img2 * img2) - mu2_sq
    s12 = filt(img1 * img2) - mu12
    ssim_map = ((2 * mu12 + C1) * (2 * s12 + C2)) / ((mu1_sq + mu2_sq + C1) * (s11 + s22 + C2))
    return ssim_map.mean()


def drbn_loss(outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], target: torch.Tensor,
              weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict[str, torch.Tensor]:
    """The stage-1 loss: ``sum_s w_s * -SSIM(out_s, target[::s, ::s])`` for s = 1, 2, 4; returns the total
    (``loss``) and the three SSIM values (``ssim_s1``, ``ssim_s2``, ``ssim_s4``) for logging."""
    out1, out2, out4 = outputs
    s1 = ssim(out1, target)
    s2 = ssim(out2, target[..., 0::2, 0::2])
    s4 = ssim(out4, target[..., 0::4, 0::4])
    loss = -(weights[0] * s1 + weights[1] * s2 + weights[2] * s4)
    return {"loss": loss, "ssim_s1": s1.detach(), "ssim_s2": s2.detach(), "ssim_s4": s4.detach()}

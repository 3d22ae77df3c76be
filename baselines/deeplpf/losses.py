"""DeepLPF's loss (paper Eq. 8, official ``DeepLPFLoss``): L1 on normalised CIELab + 1e-3 · (1 − MS-SSIM) on L.

``rgb_to_lab`` follows the official ``util.ImageProcessing.rgb_to_lab`` (sRGB → linear with the 0.04045 knee,
the sRGB/D65 matrix, D65 white (0.950456, 1, 1.088754), the 6/29 cube-root knee, then L/100 and
(a/110 + 1)/2, (b/110 + 1)/2 so that every channel is roughly in [0, 1]; NaNs set to 0).

``ms_ssim`` follows the official ``compute_msssim``: a 5×5 Gaussian window (σ = 1.5, zero padding 2), C1 = 0.01²,
C2 = 0.03² (the L channel is in [0, 1]), 5 scales with 2×2 average pooling, weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), SSIM and contrast terms mapped to [0, 1] by (v + 1)/2, and the released
combination ``prod(cs[:4]^w[:4] · ssim[4]^w[4])`` (the last-scale SSIM term enters four times; upstream later
called this a bug and fixed it as a "v2" option). ``form="standard"`` gives ``prod(cs[:4]^w[:4]) · ssim[4]^w[4]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["rgb_to_lab", "ms_ssim", "deeplpf_loss", "MSSSIM_FORMS"]

MSSSIM_FORMS = ("official", "standard")
_RGB_TO_XYZ = torch.tensor([[0.412453, 0.212671, 0.019334],
                            [0.357580, 0.715160, 0.119193],
                            [0.180423, 0.072169, 0.950227]])
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])
_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def rgb_to_lab(img: torch.Tensor) -> torch.Tensor:
    """B×3×H×W RGB in [0, 1] -> B×3×H×W normalised Lab (official normalisation, see module doc)."""
    x = img.permute(0, 2, 3, 1)
    lin = torch.where(x <= 0.04045, x / 12.92, ((torch.clamp(x, min=1e-6) + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _RGB_TO_XYZ.to(img) / _WHITE.to(img)
    e = 6.0 / 29.0
    f = torch.where(xyz <= e ** 3, xyz / (3.0 * e ** 2) + 4.0 / 29.0, torch.clamp(xyz, min=1e-4) ** (1.0 / 3.0))
    fx, fy, fz = f.unbind(-1)
    lab = torch.stack([(116.0 * fy - 16.0) / 100.0,
                       (500.0 * (fx - fy) / 110.0 + 1.0) / 2.0,
                       (200.0 * (fy - fz) / 110.0 + 1.0) / 2.0], 1)
    return torch.nan_to_num(lab, nan=0.0)


def _window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    g = torch.tensor([math.exp(-((i - size // 2) ** 2) / (2 * sigma ** 2)) for i in range(size)], dtype=dtype,
                     device=device)
    g = g / g.sum()
    return (g[:, None] @ g[None, :]).view(1, 1, size, size)


def _ssim_cs(a: torch.Tensor, b: torch.Tensor, win: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pad = win.shape[-1] // 2
    conv = lambda t: F.conv2d(t, win, padding=pad)  # noqa: E731 (one channel)
    mu1, mu2 = conv(a), conv(b)
    s11 = conv(a * a) - mu1 ** 2
    s22 = conv(b * b) - mu2 ** 2
    s12 = conv(a * b) - mu1 * mu2
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))
    cs = (2 * s12 + c2) / (s11 + s22 + c2)
    return ssim_map.mean(), cs.mean()


def ms_ssim(a: torch.Tensor, b: torch.Tensor, window_size: int = 5, form: str = "official") -> torch.Tensor:
    """MS-SSIM of two 1×1×H×W single-channel images (official DeepLPF variant; module doc)."""
    if form not in MSSSIM_FORMS:
        raise ValueError(f"unknown MS-SSIM form {form!r}")
    win = _window(window_size, 1.5, a.device, a.dtype)
    w = torch.tensor(_MS_WEIGHTS, device=a.device, dtype=a.dtype)
    ssims, css = [], []
    for _ in range(len(_MS_WEIGHTS)):
        s, c = _ssim_cs(a, b, win)
        ssims.append(s)
        css.append(c)
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    ssims_t = (torch.stack(ssims) + 1) / 2
    css_t = (torch.stack(css) + 1) / 2
    p_cs, p_ssim = css_t ** w, ssims_t ** w
    if form == "official":
        return torch.prod(p_cs[:-1] * p_ssim[-1])
    return torch.prod(p_cs[:-1]) * p_ssim[-1]


def deeplpf_loss(pred: torch.Tensor, target: torch.Tensor, w_msssim: float = 1e-3, window_size: int = 5,
                 form: str = "official") -> dict[str, torch.Tensor]:
    """Per-image L1(Lab) + w · (1 − MS-SSIM(L)), averaged over the batch (the official loop over images)."""
    pred_lab, target_lab = rgb_to_lab(pred), rgb_to_lab(target)
    l1 = pred.new_zeros(())
    ssim_loss = pred.new_zeros(())
    n = pred.shape[0]
    for i in range(n):
        l1 = l1 + F.l1_loss(pred_lab[i], target_lab[i])
        ssim_loss = ssim_loss + (1.0 - ms_ssim(pred_lab[i:i + 1, 0:1], target_lab[i:i + 1, 0:1], window_size, form))
    l1, ssim_loss = l1 / n, ssim_loss / n
    return {"loss": l1 + w_msssim * ssim_loss, "loss_lab_l1": l1, "loss_msssim": ssim_loss}

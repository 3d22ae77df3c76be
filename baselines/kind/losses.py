"""KinD's training losses as the three official training scripts define them (every term a ``reduce_mean``).

``gradient`` is the official ``utils.gradient``: |conv2d(x, k, 'SAME')| with the 2×2 kernel k = [[0, 0], [-1, 1]]
(its transpose for y), then **min-max normalised over the whole tensor** (batch and channels together):
(g - min g) / (max g - min g + 1e-4). TF's "SAME" padding for a 2×2 kernel adds one zero row/column at the
bottom/right, so ``gx[i, j] = x[i+1, j+1] - x[i+1, j]`` and ``gy[i, j] = x[i+1, j+1] - x[i, j+1]`` (absolute),
with zeros beyond the border.

- Decomposition (``decomposition_net_train.py``)::

      loss = |R_h I_h - S_h| + |R_l I_l - S_l| + 0.01 |R_l - R_h| + 0.2 mutual(I_l, I_h)
             + 0.15 input_mutual(I_h, S_h) + 0.15 input_mutual(I_l, S_l)
      mutual(a, b) = mean((gx a + gx b) exp(-10 (gx a + gx b)) + (same in y))
      input_mutual(I, S) = mean(|gx I / max(gx gray(S), 0.01)| + (same in y))

- Restoration (``reflectance_restoration_net_train.py``), target = R_high ** 1.2::

      loss = mean((out - target)^2) + grad(gray(out), gray(target)) + 1 - mean_c SSIM(out_c, target_c)
      grad(a, b) = mean((gx a - gx b)^2 + (gy a - gy b)^2)

  with the official ``tf_ssim``: 11×11 Gaussian window (σ 1.5), "VALID" convolution, C1 = 0.01², C2 = 0.03².

- Adjustment (``adjustment_net_train.py``): ``mean((out - target)^2) + grad(out, target)`` on 1-channel maps.

``gray`` is ``tf.image.rgb_to_grayscale`` (0.2989, 0.5870, 0.1140).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["DecomWeights", "gray", "raw_gradient", "gradient", "mutual_i_loss", "mutual_i_input_loss",
           "decom_loss", "gaussian_window", "tf_ssim", "grad_loss", "restoration_loss", "adjust_loss",
           "adjust_ratio_maps", "RATIO_EPS"]

TF_GRAY = (0.2989, 0.5870, 0.1140)
RATIO_EPS = 1e-4        # the official "+ 0.0001" in every ratio


@dataclass(frozen=True)
class DecomWeights:
    equal_r: float = 0.01
    i_mutual: float = 0.2
    i_input: float = 0.15


def gray(x: torch.Tensor) -> torch.Tensor:
    """``tf.image.rgb_to_grayscale``: N×3×H×W → N×1×H×W."""
    w = torch.tensor(TF_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def raw_gradient(x: torch.Tensor, direction: str) -> torch.Tensor:
    """|conv2d(x, [[0,0],[-1,1]] (x) or its transpose (y), 'SAME')| per channel, before normalisation."""
    p = F.pad(x, (0, 1, 0, 1))           # TF "SAME" for a 2×2 kernel: one zero row/column at the bottom/right
    if direction == "x":
        g = p[..., 1:, 1:] - p[..., 1:, :-1]
    elif direction == "y":
        g = p[..., 1:, 1:] - p[..., :-1, 1:]
    else:
        raise ValueError(f"direction must be 'x' or 'y', not {direction!r}")
    return g.abs()


def gradient(x: torch.Tensor, direction: str) -> torch.Tensor:
    """The official ``gradient``: ``raw_gradient`` min-max normalised over the whole tensor."""
    g = raw_gradient(x, direction)
    lo, hi = g.min(), g.max()
    return (g - lo) / (hi - lo + 1e-4)


def mutual_i_loss(i_low: torch.Tensor, i_high: torch.Tensor) -> torch.Tensor:
    total = 0.0
    for d in ("x", "y"):
        s = gradient(i_low, d) + gradient(i_high, d)
        total = total + s * torch.exp(-10.0 * s)
    return torch.mean(total)


def mutual_i_input_loss(i_map: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    g_img = gray(image)
    total = 0.0
    for d in ("x", "y"):
        total = total + (gradient(i_map, d) / gradient(g_img, d).clamp_min(0.01)).abs()
    return torch.mean(total)


def decom_loss(r_low: torch.Tensor, i_low: torch.Tensor, r_high: torch.Tensor, i_high: torch.Tensor,
               low: torch.Tensor, high: torch.Tensor, w: DecomWeights = DecomWeights()) -> dict[str, torch.Tensor]:
    """``loss_Decom`` and its terms (I maps are 1-channel; R·I broadcasts as the official 3× concat)."""
    t = {
        "recon_low": torch.mean((r_low * i_low - low).abs()),
        "recon_high": torch.mean((r_high * i_high - high).abs()),
        "equal_r": torch.mean((r_low - r_high).abs()),
        "i_mutual": mutual_i_loss(i_low, i_high),
        "i_input_high": mutual_i_input_loss(i_high, high),
        "i_input_low": mutual_i_input_loss(i_low, low),
    }
    loss = (t["recon_high"] + t["recon_low"] + w.equal_r * t["equal_r"] + w.i_mutual * t["i_mutual"]
            + w.i_input * t["i_input_high"] + w.i_input * t["i_input_low"])
    return {"loss": loss, **t}


def gaussian_window(size: int = 11, sigma: float = 1.5, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """The official ``_tf_fspecial_gauss``: exp(-(x²+y²)/(2σ²)) on the grid -size//2+1 .. size//2, normalised."""
    r = torch.arange(-size // 2 + 1, size // 2 + 1, dtype=torch.float64)
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def tf_ssim(a: torch.Tensor, b: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The official ``tf_ssim`` of two N×1×H×W maps (range 1, 'VALID' windows), averaged over everything."""
    win = gaussian_window(size, sigma, dtype=a.dtype, device=a.device).view(1, 1, size, size)
    c1, c2 = 0.01**2, 0.03**2
    f = lambda z: F.conv2d(z, win)  # noqa: E731
    mu1, mu2 = f(a), f(b)
    s11 = f(a * a) - mu1 * mu1
    s22 = f(b * b) - mu2 * mu2
    s12 = f(a * b) - mu1 * mu2
    ssim = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 * mu1 + mu2 * mu2 + c1) * (s11 + s22 + c2))
    return ssim.mean()


def grad_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.mean((gradient(a, "x") - gradient(b, "x")) ** 2 + (gradient(a, "y") - gradient(b, "y")) ** 2)


def restoration_loss(out: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``loss_restoration`` (target = decomposed R_high ** 1.2)."""
    mse = torch.mean((out - target) ** 2)
    grad = grad_loss(gray(out), gray(target))
    ssim = sum(tf_ssim(out[:, c:c + 1], target[:, c:c + 1]) for c in range(3)) / 3.0
    return {"loss": mse + grad + (1.0 - ssim), "mse": mse, "grad": grad, "ssim": ssim}


def adjust_loss(out: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``loss_adjust``."""
    mse = torch.mean((out - target) ** 2)
    grad = grad_loss(out, target)
    return {"loss": mse + grad, "mse": mse, "grad": grad}


def adjust_ratio_maps(i_low: torch.Tensor, i_high: torch.Tensor, swap: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The official adjustment-net batch: per patch ``ratio = mean(I_low / (I_high + 1e-4))``; the
    brightening example is (input I_low, ratio map 1/ratio + 1e-4, target I_high); where ``swap`` is true the
    darkening example (input I_high, ratio map ratio, target I_low) is used instead. Returns
    (input, ratio map, target), all N×1×h×w."""
    ratio = (i_low / (i_high + RATIO_EPS)).mean(dim=(1, 2, 3), keepdim=True)
    up = (1.0 / ratio + RATIO_EPS).expand_as(i_low)
    down = ratio.expand_as(i_low)
    s = swap.view(-1, 1, 1, 1).to(torch.bool)
    return (torch.where(s, i_high, i_low), torch.where(s, down, up), torch.where(s, i_low, i_high))

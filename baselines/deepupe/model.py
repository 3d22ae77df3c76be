"""DeepUPE (Wang et al., CVPR 2019): the HDRNet network predicting an illumination map, and its losses.

Network (official ``dvlab-research/DeepUPE`` ``main/models.py``, an edited copy of HDRNet's ``HDRNetCurves``):
HDRNet's splat path, **12 global 3×3 convs** (stride 2 at the 1st and the 7th, 64 channels each) before the
same FC 256 → 128 → 64, **6 local 3×3 convs** (the first with bias and ReLU, the other five linear and bias-free),
fusion, 1×1 prediction into a 16×16×8 grid of 3×4 affine matrices, HDRNet's curve guide, and the grid sliced and
applied to the full-resolution input. Everything is built by ``baselines.hdrnet.model.HDRNetModel`` with the
layout below; the bilateral pieces come from ``baselines.hdrnet.bilateral``. 998,816 parameters.

The sliced output is the **illumination S** (official ``main/run.py``): the network output clipped to [0, 1] and
cast to 8 bits, then ``S = clip(S, I, 1)`` and the result is ``F = I / S`` (so ``F ≤ 1``).
:func:`illumination_output` does this; ``quantize=False`` drops the 8-bit cast (used inside the training losses).

Losses (the official repository has no training code; the adapter's default is ``ports``):

- ``paper``: ``ω_r·L_r + ω_s·L_s + ω_c·L_c`` with (ω_r, ω_s, ω_c) = (1, 2, 1) (not verified) where
  ``L_r = ‖I − S∘F̂‖²`` (F̂ the reference), ``L_s = Σ_c w_x (∂_x S)² + w_y (∂_y S)²`` with
  ``w = (|∂ log I|^θ + ε)^-1``, θ = 1.2, ε = 1e-4, and ``L_c`` the angle between the RGB vectors of the output
  ``F = I / clip(S, I, 1)`` and F̂ (see :func:`paper_losses` for the normalisation and gradient choices);
- ``ports``: the public PyTorch ports' objective: ``F = clip(I / (S + 1e-4), 0, 1)``, MSE(F, F̂) + 0.2 (1 − cos) +
  0.05 TV, the TV weighted by 1.5 / (|∂ log(I + 1e-4)|^1.2 + 1e-4) (see :func:`ports_losses`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DEEPUPE_GLOBAL_STRIDES", "DEEPUPE_N_LOCAL", "illumination_output", "color_angle", "paper_losses",
           "ports_losses", "LOSSES", "DEFAULT_WEIGHTS"]

#: 12 global convs, stride 2 at the 1st and the 7th (official ``main/models.py``)
DEEPUPE_GLOBAL_STRIDES: tuple[int, ...] = (2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1)
#: 6 local convs
DEEPUPE_N_LOCAL = 6
LOSSES = ("paper", "ports")
#: loss name -> default (reconstruction/MSE, smoothness/TV, colour) weights
DEFAULT_WEIGHTS: dict[str, tuple[float, float, float]] = {"paper": (1.0, 2.0, 1.0), "ports": (1.0, 0.05, 0.2)}
DIVISION_FLOOR = 1e-8


def illumination_output(low: torch.Tensor, s: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """``F = I / clip(S, I, 1)`` (official ``run.py``); ``quantize`` first casts S to 8 bits as ``run.py`` does
    (``uint8(255 · clip(S, 0, 1))``, truncation). Where I = 0 and S = 0 the official 0/0 is defined here as 0 (the
    denominator is floored at 1e-8, which changes nothing where I > 0 since then S ≥ I)."""
    if quantize:
        s = torch.floor(s.clamp(0.0, 1.0) * 255.0) / 255.0
    s = torch.minimum(torch.maximum(s, low), torch.ones_like(s))
    return low / s.clamp_min(DIVISION_FLOOR)


def color_angle(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-pixel angle (radians) between the RGB vectors of ``a`` and ``b`` (N, 3, H, W) → (N, H, W).

    ``atan2(|a × b|, a · b)``: well conditioned for nearly parallel vectors, unlike ``acos`` of the cosine, whose
    gradient is infinite there; ``eps`` keeps the norm differentiable at zero.
    """
    cross = torch.linalg.cross(a, b, dim=1)
    return torch.atan2(torch.sqrt((cross * cross).sum(dim=1) + eps), (a * b).sum(dim=1))


def _mean(x: torch.Tensor) -> torch.Tensor:
    """Mean that is 0 (not NaN) for an empty tensor (a 1-pixel-high or -wide input has no y or x differences)."""
    return x.mean() if x.numel() else x.sum()


def _log_gradient_weights(low: torch.Tensor, theta: float, eps: float, log_eps: float,
                          scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge-aware smoothness weights scale / (|∂ log(I + log_eps)|^θ + eps), per channel, x then y."""
    log_i = torch.log(low + log_eps)
    dx = log_i[..., :, 1:] - log_i[..., :, :-1]
    dy = log_i[..., 1:, :] - log_i[..., :-1, :]
    return scale / (dx.abs() ** theta + eps), scale / (dy.abs() ** theta + eps)


def paper_losses(low: torch.Tensor, high: torch.Tensor, s: torch.Tensor, weights: tuple[float, float, float],
                 theta: float = 1.2, eps: float = 1e-4, log_eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """The paper's objective (weights not verified). Normalisation: each term is a mean over pixels (and batch)
    of a per-pixel quantity summed over the RGB channels (the angle for L_c).

    - ``L_r`` uses the raw S (the constraint I ≤ S ≤ 1 is imposed by the clip at the output; clipping inside L_r
      would cut the gradient wherever S starts outside [I, 1]);
    - ``L_s`` smooths the raw S, weighted by the log-gradients of the input (``log(I + 1e-4)``, per channel,
      forward differences);
    - ``L_c`` compares F = I / clip(S, I, 1) (no 8-bit cast) with the reference.
    """
    w_r, w_s, w_c = weights
    recon = ((low - s * high) ** 2).sum(dim=1).mean()
    wx, wy = _log_gradient_weights(low, theta, eps, log_eps)
    sx = s[..., :, 1:] - s[..., :, :-1]
    sy = s[..., 1:, :] - s[..., :-1, :]
    smooth = _mean((wx * sx * sx).sum(dim=1)) + _mean((wy * sy * sy).sum(dim=1))
    out = illumination_output(low, s, quantize=False)
    color = color_angle(out, high).mean()
    total = w_r * recon + w_s * smooth + w_c * color
    return {"loss": total, "recon": recon.detach(), "smooth": smooth.detach(), "color": color.detach()}


def ports_losses(low: torch.Tensor, high: torch.Tensor, s: torch.Tensor, weights: tuple[float, float, float],
                 theta: float = 1.2, eps: float = 1e-4, log_eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """The public PyTorch ports' objective (``hermosayhl/DeepUPE_pytorch``; ``Lornatang/DeepUPE-PyTorch`` computes
    the same terms): F = clip(I / (S + 1e-4), 0, 1); MSE(F, F̂) + w_c (1 − cos(F, F̂)) + w_s TV, where the TV term is
    the mean over pixels and channels of 1.5 / (|∂ log(I + 1e-4)|^1.2 + 1e-4) · (∂S)², x and y differences taken on
    the common (H−1)×(W−1) region as the ports do."""
    w_mse, w_tv, w_color = weights
    out = (low / (s + 1e-4)).clamp(0.0, 1.0)
    mse = torch.mean((out - high) ** 2)
    cos = (F.normalize(out, dim=1, eps=1e-12) * F.normalize(high, dim=1, eps=1e-12)).sum(dim=1)
    color = torch.mean(1.0 - cos)
    wx, wy = _log_gradient_weights(low, theta, eps, log_eps, scale=1.5)
    sx = s[..., :, 1:] - s[..., :, :-1]
    sy = s[..., 1:, :] - s[..., :-1, :]
    # the ports difference x at rows 1.. and y at columns 1..: restrict both to the (H-1)×(W-1) region
    tv = _mean(wx[..., 1:, :] * sx[..., 1:, :] ** 2 + wy[..., :, 1:] * sy[..., :, 1:] ** 2)
    total = w_mse * mse + w_color * color + w_tv * tv
    return {"loss": total, "mse": mse.detach(), "tv": tv.detach(), "color": color.detach()}

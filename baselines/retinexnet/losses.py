"""RetinexNet's loss terms, as the official TensorFlow code (model.py) computes them.

All terms are means over every element (``tf.reduce_mean``).

Decomposition phase (``loss_Decom``)::

    |R_l I_l - S_l| + |R_h I_h - S_h|                      reconstruction, weight 1 each
  + 0.001 (|R_h I_l - S_l| + |R_l I_h - S_h|)              mutual reconstruction
  + 0.1 (smooth(I_l, R_l) + smooth(I_h, R_h))              structure-aware illumination smoothness
  + 0.01 |R_l - R_h|                                       invariable reflectance

Relight phase (``loss_Relight``)::

    |R_l Î - S_h| + 3 smooth(Î, R_l)

``smooth(I, R) = mean(|∇x I| exp(-10 avgpool3(|∇x gray(R)|)) + |∇y I| exp(-10 avgpool3(|∇y gray(R)|)))``
where ∇ is the official 2x2 difference kernel ``[[0, 0], [-1, 1]]`` (and its transpose) applied with
TensorFlow's zero "SAME" padding (one row/column of zeros at the bottom/right), ``avgpool3`` is a 3x3,
stride-1 average that ignores the padding (TensorFlow's "SAME" average pooling), and gray() uses
``tf.image.rgb_to_grayscale``'s weights (0.2989, 0.5870, 0.1140).

Because of the zero padding, ``smooth`` of a constant map c is not exactly 0: the last column of ∇x and
the last row of ∇y see the padding and equal |c|. ``padding="replicate"`` (tests only) removes that border
term; training uses the official ``"zero"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["GRAY_WEIGHTS", "LossWeights", "gradient", "ave_gradient", "smooth", "decom_loss", "relight_loss"]

GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


@dataclass(frozen=True)
class LossWeights:
    mutual: float = 0.001          # each mutual reconstruction term
    equal_r: float = 0.01          # invariable reflectance
    smooth: float = 0.1            # each illumination smoothness term (decomposition)
    relight_smooth: float = 3.0    # smoothness of the adjusted illumination (relight)
    edge_lambda: float = 10.0      # the 10 in exp(-10 * ...)


def _gray(rgb: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(GRAY_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * w).sum(dim=1, keepdim=True)


def gradient(x: torch.Tensor, direction: str, padding: str = "zero") -> torch.Tensor:
    """|conv2d(x, k)| with the official 2x2 kernels and TF "SAME" padding (zero row/column at bottom/right).

    ``x``: ``out[i, j] = |x[i+1, j+1] - x[i+1, j]|``;  ``y``: ``out[i, j] = |x[i+1, j+1] - x[i, j+1]|``.
    """
    if padding == "zero":
        p = F.pad(x, (0, 1, 0, 1))
    elif padding == "replicate":
        p = F.pad(x, (0, 1, 0, 1), mode="replicate")
    else:
        raise ValueError(f"unknown padding {padding!r}")
    if direction == "x":
        d = p[..., 1:, 1:] - p[..., 1:, :-1]
    elif direction == "y":
        d = p[..., 1:, 1:] - p[..., :-1, 1:]
    else:
        raise ValueError(f"unknown direction {direction!r}")
    return d.abs()


def ave_gradient(x: torch.Tensor, direction: str, padding: str = "zero") -> torch.Tensor:
    return F.avg_pool2d(gradient(x, direction, padding), kernel_size=3, stride=1, padding=1, count_include_pad=False)


def smooth(illumination: torch.Tensor, reflectance: torch.Tensor, edge_lambda: float = 10.0,
           padding: str = "zero") -> torch.Tensor:
    """The structure-aware smoothness of ``illumination`` (N×1×H×W) guided by ``reflectance`` (N×3×H×W)."""
    gray = _gray(reflectance)
    total = 0
    for d in ("x", "y"):
        total = total + gradient(illumination, d, padding) * torch.exp(-edge_lambda * ave_gradient(gray, d, padding))
    return total.mean()


def _l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean()


def decom_loss(r_low: torch.Tensor, i_low: torch.Tensor, r_high: torch.Tensor, i_high: torch.Tensor,
               low: torch.Tensor, high: torch.Tensor, w: LossWeights = LossWeights()) -> dict[str, torch.Tensor]:
    """``loss_Decom`` and its terms (unweighted), ``loss`` first."""
    i_low3, i_high3 = i_low.expand_as(r_low), i_high.expand_as(r_high)
    terms = {
        "recon_low": _l1(r_low * i_low3, low),
        "recon_high": _l1(r_high * i_high3, high),
        "mutual_low": _l1(r_high * i_low3, low),
        "mutual_high": _l1(r_low * i_high3, high),
        "equal_r": _l1(r_low, r_high),
        "smooth_low": smooth(i_low, r_low, w.edge_lambda),
        "smooth_high": smooth(i_high, r_high, w.edge_lambda),
    }
    loss = (terms["recon_low"] + terms["recon_high"] + w.mutual * (terms["mutual_low"] + terms["mutual_high"])
            + w.smooth * (terms["smooth_low"] + terms["smooth_high"]) + w.equal_r * terms["equal_r"])
    return {"loss": loss, **terms}


def relight_loss(r_low: torch.Tensor, i_delta: torch.Tensor, high: torch.Tensor,
                 w: LossWeights = LossWeights()) -> dict[str, torch.Tensor]:
    """``loss_Relight`` and its terms (unweighted), ``loss`` first."""
    terms = {"relight": _l1(r_low * i_delta.expand_as(r_low), high),
             "smooth_delta": smooth(i_delta, r_low, w.edge_lambda)}
    return {"loss": terms["relight"] + w.relight_smooth * terms["smooth_delta"], **terms}

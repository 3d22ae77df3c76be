"""The four non-reference losses of Zero-DCE, in the official code's form (``Myloss.py``) and the paper's.

Official code (default, ``form="code"``), for an enhanced batch Y (N×3×H×W), its input I and the curve maps A:

* spatial consistency: channel means of Y and I, average-pooled over 4×4 regions; for each region the
  differences to its left/right/up/down neighbours (zero beyond the border, as the official zero-padded 3×3
  difference kernels), and E = Σ_directions (D_I − D_Y)², averaged over regions and images;
* exposure control: channel mean of Y average-pooled over 16×16 patches, mean over patches of (Y_k − E)²,
  E = 0.6;
* colour constancy: the per-image channel means (R̄, Ḡ, B̄); with D_pq = (p̄ − q̄)², k = √(D_RG² + D_RB² + D_GB²),
  averaged over images;
* illumination smoothness: 2·(Σ(∂_h A)² / ((H−1)W) + Σ(∂_w A)² / (H(W−1))) / N over all 24 channels.

Paper forms (``form="paper"``, eqs. 3–6): |·| instead of (·)² for the exposure gap; (|D_Y| − |D_I|)² in the
spatial term; Σ (p̄ − q̄)² (no fourth powers, no root) for colour; (|∇_x A| + |∇_y A|)², summed over the 3
channels, averaged over pixels and over the 8 iterations, for smoothness. The loss weights are separate options.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["FORMS", "spatial_consistency", "exposure_control", "colour_constancy", "illumination_smoothness",
           "neighbour_differences"]

FORMS = ("code", "paper")


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"unknown loss form {form!r}; choose {' or '.join(FORMS)}")


def neighbour_differences(x: torch.Tensor) -> list[torch.Tensor]:
    """x − its left, right, upper and lower neighbour (zero outside the image), each N×C×h×w."""
    p = F.pad(x, (1, 1, 1, 1))
    c = p[..., 1:-1, 1:-1]
    return [c - p[..., 1:-1, :-2], c - p[..., 1:-1, 2:], c - p[..., :-2, 1:-1], c - p[..., 2:, 1:-1]]


def spatial_consistency(enhanced: torch.Tensor, original: torch.Tensor, pool: int = 4,
                        form: str = "code") -> torch.Tensor:
    _check_form(form)
    ye = F.avg_pool2d(enhanced.mean(1, keepdim=True), pool)
    yo = F.avg_pool2d(original.mean(1, keepdim=True), pool)
    total = torch.zeros_like(ye)
    for de, do in zip(neighbour_differences(ye), neighbour_differences(yo)):
        total = total + ((do - de) ** 2 if form == "code" else (de.abs() - do.abs()) ** 2)
    return total.mean()


def exposure_control(enhanced: torch.Tensor, patch: int = 16, level: float = 0.6, form: str = "code") -> torch.Tensor:
    _check_form(form)
    gap = F.avg_pool2d(enhanced.mean(1, keepdim=True), patch) - level
    return (gap ** 2).mean() if form == "code" else gap.abs().mean()


def colour_constancy(enhanced: torch.Tensor, form: str = "code") -> torch.Tensor:
    _check_form(form)
    m = enhanced.mean(dim=(2, 3))                     # N×3
    r, g, b = m[:, 0], m[:, 1], m[:, 2]
    d_rg, d_rb, d_gb = (r - g) ** 2, (r - b) ** 2, (b - g) ** 2
    if form == "paper":
        return (d_rg + d_rb + d_gb).mean()
    s = d_rg ** 2 + d_rb ** 2 + d_gb ** 2
    # √ with a floor at the smallest normal float: identical values, but a zero gap (a perfectly grey image)
    # gets gradient 0 instead of the official code's 0·∞ = NaN
    return torch.sqrt(s.clamp_min(torch.finfo(s.dtype).tiny)).mean()


def illumination_smoothness(maps: torch.Tensor, form: str = "code") -> torch.Tensor:
    _check_form(form)
    n, _, h, w = maps.shape
    dh = maps[:, :, 1:, :] - maps[:, :, :-1, :]
    dw = maps[:, :, :, 1:] - maps[:, :, :, :-1]
    if form == "code":
        return 2.0 * ((dh ** 2).sum() / ((h - 1) * w) + (dw ** 2).sum() / (h * (w - 1))) / n
    iterations = maps.shape[1] // 3
    per_pixel = (dh[:, :, :, :-1].abs() + dw[:, :, :-1, :].abs()) ** 2    # on the (H−1)×(W−1) common grid
    return per_pixel.sum(1).mean() / iterations

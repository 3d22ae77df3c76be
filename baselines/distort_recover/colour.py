"""Colour measurements of the Distort-and-Recover environment, in PyTorch (batched, any device).

* ``rgb_to_lab``: sRGB in [0, 1] -> CIE L*a*b* (D65, 2° observer), the formula of ``skimage.color.rgb2lab``
  that the official ``main.py``/``get_hist.py`` call (sRGB decoding with the 0.04045 threshold, the
  ``xyz_from_rgb`` matrix of scikit-image, the D65 white (0.95047, 1, 1.08883), the 0.008856 / 7.787 branch).
  Computed in the input's dtype; the environment uses float64 like NumPy.
* ``lab_score``: the official score ``-mean_pixels(||Lab_target - Lab_image||_2) / 10`` (``get_state``); the
  reward of a step is the score after it minus the score before it.
* ``lab_histogram_8k``: ``get_hist.lab_hist_8k``: a 20×20×20 histogram of the Lab values over
  L ∈ [0, 100], a, b ∈ [-60, 60] with NumPy ``histogramdd`` binning (right-open bins, the last bin closed,
  values outside the ranges dropped), flattened in (L, a, b) C order and L2-normalised like
  ``sklearn.preprocessing.normalize`` (an all-zero histogram stays zero).
"""

from __future__ import annotations

import torch

__all__ = ["XYZ_FROM_RGB", "D65_WHITE", "HIST_BINS", "HIST_RANGES", "rgb_to_lab", "lab_distance", "lab_score",
           "lab_histogram_8k"]

XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423),
                (0.212671, 0.715160, 0.072169),
                (0.019334, 0.119193, 0.950227))
D65_WHITE = (0.95047, 1.0, 1.08883)
HIST_BINS = 20
HIST_RANGES = ((0.0, 100.0), (-60.0, 60.0), (-60.0, 60.0))


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """N×3×H×W sRGB in [0, 1] -> N×3×H×W (L, a, b)."""
    dt, dev = rgb.dtype, rgb.device
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = torch.tensor(XYZ_FROM_RGB, dtype=dt, device=dev)
    xyz = torch.einsum("ij,njhw->nihw", m, lin)
    xyz = xyz / torch.tensor(D65_WHITE, dtype=dt, device=dev).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, torch.sign(xyz) * xyz.abs() ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def lab_distance(lab_a: torch.Tensor, lab_b: torch.Tensor) -> torch.Tensor:
    """Per image: mean over pixels of the Euclidean Lab distance (ΔE76). Shape (N,)."""
    return torch.sqrt(((lab_a - lab_b) ** 2).sum(dim=1)).flatten(1).mean(dim=1)


def lab_score(lab_image: torch.Tensor, lab_target: torch.Tensor) -> torch.Tensor:
    """The official score: ``-ΔE76 / 10`` per image (higher is better)."""
    return -lab_distance(lab_target, lab_image) / 10.0


def _bin_index(v: torch.Tensor, lo: float, hi: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NumPy ``histogramdd`` binning of ``v`` into ``n`` equal bins on [lo, hi]: (index, inside mask)."""
    edges = torch.linspace(lo, hi, n + 1, dtype=torch.float64, device=v.device)
    idx = torch.bucketize(v.to(torch.float64).contiguous(), edges, right=True) - 1
    idx = torch.where(v == hi, torch.full_like(idx, n - 1), idx)   # the last bin includes its right edge
    inside = (idx >= 0) & (idx < n)
    return idx.clamp(0, n - 1), inside


def lab_histogram_8k(lab: torch.Tensor) -> torch.Tensor:
    """N×3×H×W Lab -> N×8000 L2-normalised 20×20×20 histogram (float32)."""
    n = lab.shape[0]
    out = torch.zeros(n, HIST_BINS ** 3, dtype=torch.float64, device=lab.device)
    flat = lab.flatten(2)  # N×3×P
    idx = []
    inside = torch.ones(flat[:, 0].shape, dtype=torch.bool, device=lab.device)
    for c, (lo, hi) in enumerate(HIST_RANGES):
        i, ok = _bin_index(flat[:, c], lo, hi, HIST_BINS)
        idx.append(i)
        inside &= ok
    cell = (idx[0] * HIST_BINS + idx[1]) * HIST_BINS + idx[2]
    out.scatter_add_(1, cell, inside.to(torch.float64))
    norm = out.norm(dim=1, keepdim=True)
    out = out / torch.where(norm > 0, norm, torch.ones_like(norm))
    return out.to(torch.float32)

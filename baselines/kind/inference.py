"""KinD's test-time pipeline, as the two official evaluation scripts compose it.

- ``load_images`` (official ``utils.py``) min-max normalises every image on its own:
  (x - min x) / max(max x - min x, 0.001), min and max over all pixels and channels. Training and both
  evaluation scripts feed the nets these normalised images; the output is not mapped back.
- ``evaluate_LOLdataset.py``: ratio = mean(I_high / (I_low + 1e-4)) where I_high is the DecomNet illumination of
  the *ground-truth* image (an oracle), output = R_restored ⊙ I_adjusted.
- ``evaluate.py`` (any image, no ground truth): a fixed ratio (5.0; "the value can be 0-5.0"), then two
  heuristics: the restored reflectance is multiplied by min(sqrt(2 · gaussian_σ3(rgb2gray(R_low))), 1) (dark
  regions otherwise come out grey), and the result is blended with the input,
  I_low ⊙ S + (1 - I_low) ⊙ (R' ⊙ I_adjusted), "to avoid over-exposure".

``rgb2gray`` and ``gaussian`` are scikit-image's (0.2125/0.7154/0.0721; ``filters.gaussian(σ=3)`` =
``scipy.ndimage.gaussian_filter`` with mode "nearest" and truncate 4.0), written here in torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import RATIO_EPS

__all__ = ["minmax_normalize", "gt_ratio", "ratio_map", "skimage_rgb2gray", "gaussian_blur_nearest",
           "dark_region_weight", "compose"]

SKIMAGE_GRAY = (0.2125, 0.7154, 0.0721)


def minmax_normalize(x: torch.Tensor, floor: float = 0.001) -> torch.Tensor:
    """The official ``load_images`` normalisation, per image of an N×C×H×W batch."""
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (x - lo) / (hi - lo).clamp_min(floor)


def gt_ratio(i_low: torch.Tensor, i_high: torch.Tensor) -> torch.Tensor:
    """``evaluate_LOLdataset.py``: mean(I_high / (I_low + 1e-4)) per image (N values)."""
    return (i_high / (i_low + RATIO_EPS)).mean(dim=(1, 2, 3))


def ratio_map(i_low: torch.Tensor, ratio: float | torch.Tensor) -> torch.Tensor:
    """The constant N×1×H×W map fed to the adjustment net beside I_low."""
    r = torch.as_tensor(ratio, dtype=i_low.dtype, device=i_low.device).reshape(-1, 1, 1, 1)
    return r.expand_as(i_low).contiguous()


def skimage_rgb2gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(SKIMAGE_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def gaussian_blur_nearest(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter(x, sigma, mode='nearest', truncate=4.0)`` on N×1×H×W."""
    radius = int(truncate * float(sigma) + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
    k = (k / k.sum()).to(dtype=x.dtype, device=x.device)
    y = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.pad(y, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(y, k.view(1, 1, -1, 1))


def dark_region_weight(r_low: torch.Tensor, sigma: float = 3.0) -> torch.Tensor:
    """``evaluate.py``: min((gaussian_σ(rgb2gray(R_low)) · 2) ** 0.5, 1), N×1×H×W."""
    g = gaussian_blur_nearest(skimage_rgb2gray(r_low), sigma)
    return torch.clamp(torch.sqrt((g * 2.0).clamp_min(0.0)), max=1.0)


def compose(x: torch.Tensor, r_low: torch.Tensor, i_low: torch.Tensor, r_restored: torch.Tensor,
            i_adjusted: torch.Tensor, postprocess: str) -> torch.Tensor:
    """The final image (before clipping). ``postprocess``: "none" (evaluate_LOLdataset.py: R' ⊙ I') or
    "evaluate" (evaluate.py: dark-region weighting and the blend with the normalised input ``x``)."""
    if postprocess == "none":
        return r_restored * i_adjusted
    if postprocess == "evaluate":
        fused = r_restored * dark_region_weight(r_low) * i_adjusted
        return i_low * x + (1.0 - i_low) * fused
    raise ValueError(f"unknown postprocess {postprocess!r}")


"""Optional reflectance denoising (the paper's joint-denoising step), with a documented substitute for BM3D.

The paper denoises the low image's reflectance R with BM3D before recomposing, because the noise that R
inherits from S = R ∘ I is amplified where the illumination is low (R = S / I). The released test code does
*not* denoise (``lowlight_enhance.test`` outputs ``R_low * I_delta``), so this is off by default.

BM3D is not available offline, so ``nlmeans`` substitutes skimage's non-local means (on the three channels
of R jointly, σ = ``sigma``/255, h = 0.8σ, 5x5 patches, search distance 6, fast mode) and makes it
illumination-aware by blending with the low illumination I_low (in [0, 1], from DecomNet's sigmoid)::

    R' = I_low ∘ R + (1 - I_low) ∘ R_denoised

so dark regions, where the noise of R is amplified most, take the denoised reflectance and bright regions
keep their detail (the same recomposition LIME's authors use for their BM3D step). This weighting is our
reading of "illumination-aware" denoising; it is recorded in provenance with ``faithful: False``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["DENOISERS", "denoise_reflectance"]

DENOISERS = ("none", "nlmeans")


def denoise_reflectance(reflectance: torch.Tensor, illumination: torch.Tensor, method: str,
                        sigma: float) -> torch.Tensor:
    """Return R' for R (N×3×H×W in [0,1]) and I_low (N×1×H×W in [0,1]); ``method`` in :data:`DENOISERS`."""
    if method == "none":
        return reflectance
    if method != "nlmeans":
        raise ValueError(f"unknown denoiser {method!r}")
    from skimage.restoration import denoise_nl_means

    s = float(sigma) / 255.0
    arr = reflectance.detach().to("cpu", torch.float64).numpy()
    out = np.empty_like(arr)
    for n, img in enumerate(arr):
        hwc = np.ascontiguousarray(img.transpose(1, 2, 0))
        den = denoise_nl_means(hwc, h=0.8 * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True,
                               channel_axis=-1)
        out[n] = np.clip(den, 0.0, 1.0).transpose(2, 0, 1)
    denoised = torch.from_numpy(out).to(device=reflectance.device, dtype=reflectance.dtype)
    weight = illumination.clamp(0.0, 1.0)
    return weight * reflectance + (1.0 - weight) * denoised

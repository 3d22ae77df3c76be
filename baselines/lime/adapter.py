"""``lime``: adapter for LIME (Guo, Li & Ling, TIP 2017). See ``SOURCE.md`` for what is followed and why."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.errors import BenchError
from bench.methods.base import Method, check_range

from . import algorithm

DENOISERS = ("none", "nlmeans", "bm3d")


def _check(name: str, value: Any, lo: float, hi: float, **kw: Any) -> None:
    check_range("lime", name, value, lo, hi, **kw)


@dataclass
class LimeConfig:
    """LIME options; defaults are the BIMEF wrapper ``lowlight/lime.m`` (lambda 0.15, sigma 2, gamma 0.8,
    no post-processing) with the paper's sped-up solver and weighting strategy III."""

    alpha: float = 0.15  # weight of the smoothness term (the wrapper's para.lambda)
    sigma: float = 2.0  # Gaussian sigma of strategy III
    gamma: float = 0.8  # gamma on the refined illumination (the author's demo uses 0.7)
    strategy: int = 3  # weighting strategy 1, 2 or 3 (paper eqs. 20-23)
    eps: float = 1e-3  # epsilon in the weights and floor on T before the division
    window: int = 15  # side of the square window Omega of strategy III
    solver: str = "sped-up"  # only the sped-up solver is implemented (the exact ADMM solver is not)
    denoise: str = "none"  # "none" | "nlmeans" (substitute for BM3D) | "bm3d" (needs the bm3d package)
    denoise_sigma: float = 10.0  # noise level on the 0..255 scale, for the denoiser

    def validate(self) -> None:
        _check("alpha", self.alpha, 0.0, 100.0, lo_open=True)
        _check("sigma", self.sigma, 0.0, 50.0, lo_open=True)
        _check("gamma", self.gamma, 0.0, 2.0, lo_open=True)
        _check("strategy", self.strategy, 1, 3, integer=True)
        _check("eps", self.eps, 0.0, 0.1, lo_open=True)
        _check("window", self.window, 1, 201, integer=True)
        if self.window % 2 == 0:
            raise BenchError(f"lime: option window={self.window} must be odd")
        if self.solver != "sped-up":
            raise BenchError(f"lime: option solver={self.solver!r}: only 'sped-up' is implemented "
                             "(the exact ADMM solver of the paper is not)")
        if self.denoise not in DENOISERS:
            raise BenchError(f"lime: option denoise={self.denoise!r}; choose one of {', '.join(DENOISERS)}")
        _check("denoise_sigma", self.denoise_sigma, 0.0, 255.0, lo_open=True)


def _bm3d_available() -> bool:
    return importlib.util.find_spec("bm3d") is not None


class Lime(Method):
    name = "lime"
    display_name = "LIME"
    family = "classical"
    citation = ("X. Guo, Y. Li, and H. Ling, \"LIME: Low-Light Image Enhancement via Illumination Map "
                "Estimation,\" IEEE Transactions on Image Processing, vol. 26, no. 2, pp. 982-993, 2017. "
                "doi:10.1109/TIP.2016.2639450")
    bibkey = "guo2017lime"
    version = 1
    trainable = False
    Config = LimeConfig

    def __init__(self, config: LimeConfig | None = None):
        super().__init__(config)
        self.config.validate()

    def _require_denoiser(self) -> None:
        if self.config.denoise == "bm3d" and not _bm3d_available():
            raise BenchError("lime: denoise='bm3d' needs the 'bm3d' package, which is not installed; "
                             "install it or use denoise='nlmeans' (a documented non-local-means substitute)")

    def setup(self, device: torch.device, weights=None) -> dict[str, Any]:
        super().setup(device, weights)
        self.config.validate()
        self._require_denoiser()
        return self.provenance()

    def enhance(self, low: torch.Tensor) -> torch.Tensor:
        self._require_denoiser()
        c = self.config
        arr = low.detach().to(device="cpu", dtype=torch.float64).numpy()
        outs = []
        for img in arr:
            hwc = np.clip(np.transpose(img, (1, 2, 0)), 0.0, 1.0)
            out, _ = algorithm.lime_enhance(hwc, alpha=c.alpha, sigma=c.sigma, gamma=c.gamma,
                                            strategy=c.strategy, eps=c.eps, window=c.window,
                                            denoise=c.denoise, denoise_sigma=c.denoise_sigma)
            outs.append(np.transpose(out, (2, 0, 1)))
        result = torch.from_numpy(np.ascontiguousarray(np.stack(outs)))
        return result.to(device=low.device, dtype=low.dtype)

    def provenance(self) -> dict[str, Any]:
        c = self.config
        if c.denoise == "none":
            denoise = "none (the BIMEF wrapper's default; the author's demo applies BM3D)"
        elif c.denoise == "nlmeans":
            denoise = (f"SUBSTITUTE: skimage non-local means on the YCbCr luma (sigma={c.denoise_sigma}/255, "
                       "h=0.8*sigma, 5x5 patches, distance 6) instead of BM3D, recomposed as R*T + R_d*(1-T)")
        else:
            denoise = f"BM3D (bm3d package, sigma_psd={c.denoise_sigma}/255) on the YCbCr luma, recomposed as R*T + R_d*(1-T)"
        return {
            "implementation": "NumPy/SciPy re-implementation of the paper (official LIME.p is closed p-code)",
            "solver": "sped-up (single sparse SPD system, exact SuperLU solve)",
            "weights": f"strategy {c.strategy}" + (f" (Gaussian sigma={c.sigma}, {c.window}x{c.window} window)"
                                                    if c.strategy == 3 else ""),
            "gradients": "forward differences, no wrap-around",
            "gamma": c.gamma,
            "denoise": denoise,
        }

"""``eff``: adapter for the exposure fusion framework of Ying et al. (CAIP 2017). See ``SOURCE.md``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.errors import BenchError
from bench.methods.base import Method, check_range

from . import algorithm

SOLVERS = ("pcg", "direct")


def _check(name: str, value: Any, lo: float, hi: float, **kw: Any) -> None:
    check_range("eff", name, value, lo, hi, **kw)


@dataclass
class EffConfig:
    """EFF options; defaults are those of the official MATLAB ``Ying_2017_CAIP.m`` / ``BIMEF.m``."""

    mu: float = 0.5  # fusion weight W = T^mu
    a: float = -0.3293  # camera response model: gamma = k^a
    b: float = 1.1258  # camera response model: beta = exp(b (1 - k^a))
    k: float = 0.0  # exposure ratio; 0 = search it per image (official default), >= 1 = fixed
    k_min: float = 1.0  # search interval of fminbnd
    k_max: float = 7.0
    lam: float = 0.5  # smoothness weight of tsmooth (MATLAB 'lambda')
    sigma: int = 5  # length of the box window of the texture weights (MATLAB 'sigma')
    sharpness: float = 1e-3  # texture-weight floor
    downsample: float = 0.5  # the illumination is smoothed at this scale (imresize)
    dark_threshold: float = 0.5  # pixels with T below this drive the k search
    entropy_size: int = 50  # the k search runs on an entropy_size x entropy_size resize
    offset: float = 0.01  # J = g(I, k) - offset after the search
    solver: str = "pcg"  # "pcg" (MATLAB ichol+pcg branch) | "direct" (MATLAB A\b branch)
    pcg_tol: float = 0.1
    pcg_maxit: int = 50

    def validate(self) -> None:
        _check("mu", self.mu, 0.0, 10.0, lo_open=True)
        _check("a", self.a, -5.0, 0.0)
        if self.a >= 0:
            raise BenchError(f"eff: option a={self.a!r} must be negative (k > 1 must brighten)")
        _check("b", self.b, 0.0, 10.0, lo_open=True)
        _check("k_min", self.k_min, 1.0, 100.0)
        _check("k_max", self.k_max, 1.0, 100.0)
        if self.k_max <= self.k_min:
            raise BenchError(f"eff: k_max={self.k_max!r} must exceed k_min={self.k_min!r}")
        _check("k", self.k, 0.0, 100.0)
        if 0.0 < self.k < 1.0:
            raise BenchError(f"eff: option k={self.k!r} must be 0 (search) or >= 1")
        _check("lam", self.lam, 0.0, 1e3, lo_open=True)
        _check("sigma", self.sigma, 1, 101, integer=True)
        _check("sharpness", self.sharpness, 0.0, 1.0, lo_open=True)
        _check("downsample", self.downsample, 0.0, 1.0, lo_open=True)
        _check("dark_threshold", self.dark_threshold, 0.0, 1.0, lo_open=True)
        _check("entropy_size", self.entropy_size, 2, 4096, integer=True)
        _check("offset", self.offset, 0.0, 0.5)
        if self.solver not in SOLVERS:
            raise BenchError(f"eff: option solver={self.solver!r}; choose one of {', '.join(SOLVERS)}")
        _check("pcg_tol", self.pcg_tol, 0.0, 1.0, lo_open=True)
        _check("pcg_maxit", self.pcg_maxit, 1, 10000, integer=True)


class Eff(Method):
    name = "eff"
    display_name = "EFF"
    family = "classical"
    citation = ("Z. Ying, G. Li, Y. Ren, R. Wang, and W. Wang, \"A New Image Contrast Enhancement Algorithm "
                "Using Exposure Fusion Framework,\" in Computer Analysis of Images and Patterns (CAIP 2017), "
                "LNCS vol. 10425, pp. 36-46, Springer, 2017. doi:10.1007/978-3-319-64698-5_4")
    bibkey = "ying2017new"
    version = 1
    trainable = False
    Config = EffConfig

    def __init__(self, config: EffConfig | None = None):
        super().__init__(config)
        self.config.validate()
        self.last_info: dict[str, Any] = {}

    def setup(self, device: torch.device, weights=None) -> dict[str, Any]:
        super().setup(device, weights)
        self.config.validate()
        return self.provenance()

    def enhance(self, low: torch.Tensor) -> torch.Tensor:
        c = self.config
        arr = low.detach().to(device="cpu", dtype=torch.float64).numpy()
        outs = []
        for img in arr:
            hwc = np.clip(np.transpose(img, (1, 2, 0)), 0.0, 1.0)
            out, info = algorithm.eff_enhance(
                hwc, mu=c.mu, a=c.a, b=c.b, k=(None if c.k == 0 else c.k), lam=c.lam, sigma=c.sigma,
                sharpness=c.sharpness, downsample=c.downsample, dark_threshold=c.dark_threshold,
                k_min=c.k_min, k_max=c.k_max, sample_size=c.entropy_size, offset=c.offset,
                solver=c.solver, pcg_tol=c.pcg_tol, pcg_maxit=c.pcg_maxit)
            info.pop("illumination", None)
            self.last_info = info
            outs.append(np.transpose(out, (2, 0, 1)))
        result = torch.from_numpy(np.ascontiguousarray(np.stack(outs)))
        return result.to(device=low.device, dtype=low.dtype)

    def provenance(self) -> dict[str, Any]:
        c = self.config
        if c.solver == "pcg":
            solver = (f"PCG with modified incomplete Cholesky (zero fill), tol {c.pcg_tol}, maxit {c.pcg_maxit}: "
                      "re-implementation of MATLAB ichol(michol on) + pcg")
        else:
            solver = "exact sparse LU (MATLAB's A\\b branch)"
        return {
            "implementation": "NumPy/SciPy re-implementation of the official MATLAB Ying_2017_CAIP.m",
            "tsmooth_solver": solver,
            "imresize": "re-implemented MATLAB imresize (bicubic a=-0.5, antialiased, symmetric edges)",
            "k": ("searched per image: scipy minimize_scalar 'bounded' (Brent, as fminbnd), "
                  f"xatol 1e-4, over [{c.k_min}, {c.k_max}]") if c.k == 0 else f"fixed {c.k}",
            "weight": f"W = clip(T, 0, 1)^{c.mu}",
        }

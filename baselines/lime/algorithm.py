"""LIME: Guo, Li & Ling, "LIME: Low-Light Image Enhancement via Illumination Map Estimation" (IEEE TIP 26(2),
2017), re-implemented in NumPy/SciPy (float64, CPU).

The official code is closed MATLAB p-code (``LIME.p``, redistributed with the wrapper ``lowlight/lime.m``
in baidut/BIMEF), so this follows the paper's equations with the wrapper's parameters:

1. Initial illumination  T_hat(x) = max_c L_c(x)                                   (paper eq. 2)
2. Refinement with the sped-up solver (paper section III-B, eqs. 18-19): the weighted-TV problem
   min_T ||T_hat - T||_F^2 + alpha * sum_d ||W_d o grad_d T||_1 is approximated by replacing
   |grad_d T| with (grad_d T)^2 / (|grad_d T_hat| + eps), which leaves one sparse SPD system

       (I + sum_{d in {h,v}} D_d^T diag(w~_d) D_d) t = t_hat,   w~_d = alpha * W_d / (|grad_d T_hat| + eps).

   D_d are forward differences (zero at the last column / row: no wrap-around).
   Weighting strategies (paper eqs. 20-23):
     1: W_d = 1
     2: W_d = 1 / (|grad_d T_hat| + eps)
     3: W_d = sum_{y in Omega(x)} G(x,y) / (|sum_{y in Omega(x)} G(x,y) grad_d T_hat(y)| + eps),
        G(x,y) = exp(-||x-y||^2 / (2 sigma^2)) on a square window Omega (15x15, clipped at the border).
3. Gamma on the illumination and Retinex division  R = L / max(T, eps)^gamma, clipped to [0,1].
4. Optional denoising of the result, recomposed as in the wrapper: R_f = R o T + R_d o (1 - T), where
   R_d is R with its YCbCr luma denoised.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl
from scipy import ndimage

# MATLAB rgb2ycbcr for double images in [0,1] (ITU-R BT.601, Y in [16,235]/255).
_YCC_M = np.array([[65.481, 128.553, 24.966],
                   [-37.797, -74.203, 112.0],
                   [112.0, -93.786, -18.214]]) / 255.0
_YCC_OFF = np.array([16.0, 128.0, 128.0]) / 255.0


def rgb_to_ycbcr(img: np.ndarray) -> np.ndarray:
    return img @ _YCC_M.T + _YCC_OFF


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    return (ycc - _YCC_OFF) @ np.linalg.inv(_YCC_M).T


def initial_illumination(img: np.ndarray) -> np.ndarray:
    """T_hat = max over the colour channels of an H x W x 3 image."""
    return img.max(axis=2)


def forward_gradients(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(grad_h, grad_v): forward differences, 0 in the last column / row."""
    g_h = np.zeros_like(t)
    g_v = np.zeros_like(t)
    g_h[:, :-1] = t[:, 1:] - t[:, :-1]
    g_v[:-1, :] = t[1:, :] - t[:-1, :]
    return g_h, g_v


def _gauss_window_sum(x: np.ndarray, sigma: float, window: int) -> np.ndarray:
    """sum_{y in Omega(x)} G(x,y) x(y) with an unnormalised separable Gaussian on a window x window
    square, zero outside the image (so the window is clipped at the border)."""
    r = window // 2
    k = np.exp(-(np.arange(-r, r + 1, dtype=np.float64) ** 2) / (2.0 * sigma * sigma))
    out = ndimage.correlate1d(x, k, axis=0, mode="constant", cval=0.0)
    return ndimage.correlate1d(out, k, axis=1, mode="constant", cval=0.0)


def strategy_weights(t_hat: np.ndarray, strategy: int, sigma: float, eps: float,
                     window: int) -> tuple[np.ndarray, np.ndarray]:
    """W_h, W_v of the chosen weighting strategy (1, 2 or 3)."""
    g_h, g_v = forward_gradients(t_hat)
    if strategy == 1:
        return np.ones_like(t_hat), np.ones_like(t_hat)
    if strategy == 2:
        return 1.0 / (np.abs(g_h) + eps), 1.0 / (np.abs(g_v) + eps)
    if strategy == 3:
        mass = _gauss_window_sum(np.ones_like(t_hat), sigma, window)
        w_h = mass / (np.abs(_gauss_window_sum(g_h, sigma, window)) + eps)
        w_v = mass / (np.abs(_gauss_window_sum(g_v, sigma, window)) + eps)
        return w_h, w_v
    raise ValueError(f"unknown weighting strategy {strategy}")


def build_system(t_hat: np.ndarray, alpha: float, strategy: int = 3, sigma: float = 2.0,
                 eps: float = 1e-3, window: int = 15) -> sp.csc_matrix:
    """A = I + sum_d D_d^T diag(w~_d) D_d for the sped-up solver (row-major unknown ordering)."""
    h, w = t_hat.shape
    n = h * w
    g_h, g_v = forward_gradients(t_hat)
    w_h, w_v = strategy_weights(t_hat, strategy, sigma, eps, window)
    wt_h = alpha * w_h / (np.abs(g_h) + eps)
    wt_v = alpha * w_v / (np.abs(g_v) + eps)
    idx = np.arange(n).reshape(h, w)
    src = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    dst = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    vals = np.concatenate([wt_h[:, :-1].ravel(), wt_v[:-1, :].ravel()])
    adj = sp.coo_matrix((vals, (src, dst)), shape=(n, n))
    adj = (adj + adj.T).tocsr()
    deg = np.asarray(adj.sum(axis=1)).ravel()
    a = (sp.diags(1.0 + deg) - adj).tocsc()
    a.sort_indices()
    return a


def solve_system(a: sp.spmatrix, rhs: np.ndarray) -> np.ndarray:
    """Exact sparse solve. The matrix is SPD, so SuperLU runs in symmetric mode with a minimum-degree
    ordering on A'+A (about 2 s for 600x400 on one core)."""
    lu = spl.splu(sp.csc_matrix(a), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                  options={"SymmetricMode": True})
    return lu.solve(rhs)


def refine_illumination(t_hat: np.ndarray, alpha: float = 0.15, strategy: int = 3, sigma: float = 2.0,
                        eps: float = 1e-3, window: int = 15) -> np.ndarray:
    a = build_system(t_hat, alpha, strategy, sigma, eps, window)
    return solve_system(a, t_hat.ravel()).reshape(t_hat.shape)


def denoise_luma(img: np.ndarray, method: str, sigma255: float) -> np.ndarray:
    """Denoise the YCbCr luma of ``img`` (chroma untouched) and convert back to RGB.

    ``nlmeans`` is skimage's non-local means (a substitute for BM3D); ``bm3d`` uses the ``bm3d`` package
    when it is installed. ``sigma255`` is the noise level on the 0..255 scale."""
    ycc = rgb_to_ycbcr(img)
    y = ycc[..., 0]
    sigma = sigma255 / 255.0
    if method == "nlmeans":
        from skimage.restoration import denoise_nl_means

        y_d = denoise_nl_means(y, patch_size=5, patch_distance=6, h=0.8 * sigma, sigma=sigma,
                               fast_mode=True, preserve_range=True)
    elif method == "bm3d":
        import bm3d  # optional dependency; the adapter checks that it is importable

        y_d = np.asarray(bm3d.bm3d(y, sigma_psd=sigma), dtype=np.float64)
    else:
        raise ValueError(f"unknown denoiser {method!r}")
    ycc = ycc.copy()
    ycc[..., 0] = y_d
    return ycbcr_to_rgb(ycc)


def lime_enhance(img: np.ndarray, alpha: float = 0.15, sigma: float = 2.0, gamma: float = 0.8,
                 strategy: int = 3, eps: float = 1e-3, window: int = 15, denoise: str = "none",
                 denoise_sigma: float = 10.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Enhance an H x W x 3 float64 image in [0,1]. Returns (output in [0,1], info with the maps)."""
    t_hat = initial_illumination(img)
    t = refine_illumination(t_hat, alpha, strategy, sigma, eps, window)
    t_floor = np.maximum(t, eps)
    out = np.clip(img / (t_floor ** gamma)[..., None], 0.0, 1.0)
    if denoise != "none":
        blend = np.clip(t, 0.0, 1.0)[..., None]
        out_d = denoise_luma(out, denoise, denoise_sigma)
        out = np.clip(out * blend + out_d * (1.0 - blend), 0.0, 1.0)
    return out, {"t_hat": t_hat, "t": t}

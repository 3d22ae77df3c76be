"""EFF: Ying, Li, Ren, Wang & Wang, "A New Image Contrast Enhancement Algorithm Using Exposure Fusion
Framework" (CAIP 2017), re-implemented in NumPy/SciPy (float64, CPU).

The reference is the authors' MATLAB code (``Ying_2017_CAIP.m`` in baidut/OpenCE, identical to
``lowlight/BIMEF.m`` in baidut/BIMEF). Every step below mirrors one line of that file; the places where
MATLAB semantics had to be re-created (``imresize``, ``ichol``/``pcg``, ``fminbnd``, ``entropy``) are
implemented here from their documented behaviour. See ``SOURCE.md`` for the deviations.

Pipeline for an RGB image I in [0,1]:

1. t_b = max over R, G, B.
2. T = imresize(tsmooth(imresize(t_b, 0.5), lambda=0.5, sigma=5), size(t_b)), where ``tsmooth`` solves one
   sparse linear system (I + lambda * L_w) t = t_in with relative-total-variation style texture weights on a
   periodic grid (MATLAB: PCG with a modified incomplete Cholesky preconditioner, tol 0.1, 50 iterations).
3. k = argmax_{k in [1,7]} entropy(g(Y_dark, k)) with Y = geometric mean of R, G, B of a 50x50 bicubic
   resize of I, restricted to pixels whose (resized) illumination is < 0.5 (``fminbnd``); k = 1 (J = I) when
   no pixel is dark.
4. J = g(I, k) - 0.01 with the beta-gamma camera response g(P, k) = exp(b (1 - k^a)) P^(k^a).
5. W = T^mu, output = I * W + J * (1 - W) (clipped to [0,1] by the caller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl
from scipy import ndimage
from scipy.optimize import minimize_scalar

# Camera response model constants (Ying et al.; fitted on the DoRF database).
A_DEFAULT = -0.3293
B_DEFAULT = 1.1258


# ----------------------------------------------------------------------------------------------
# Camera response model (the "brightness transform function", BTF)
# ----------------------------------------------------------------------------------------------
def btf(p: np.ndarray, k: float, a: float = A_DEFAULT, b: float = B_DEFAULT) -> np.ndarray:
    """g(P, k) = beta * P^gamma with gamma = k^a and beta = exp(b * (1 - k^a)).

    k = 1 gives gamma = beta = 1, i.e. the identity. Inputs are clamped at 0 (MATLAB takes care to feed
    non-negative values; a negative base would give complex numbers there)."""
    gamma = float(k) ** a
    beta = math.exp(b * (1.0 - gamma))
    return beta * np.power(np.maximum(p, 0.0), gamma)


# ----------------------------------------------------------------------------------------------
# MATLAB-compatible helpers
# ----------------------------------------------------------------------------------------------
def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB imresize 'bicubic')."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> sp.csr_matrix:
    """Sparse (out_len x in_len) interpolation matrix along one axis, MATLAB ``imresize`` semantics.

    Output pixel x (1-based) samples input coordinate u = x/scale + 0.5*(1 - 1/scale); when shrinking the
    cubic kernel is stretched by 1/scale (antialiasing); weights are normalised to sum to 1 and
    out-of-range taps are mirrored symmetrically (edge pixel repeated)."""
    if scale < 1.0 and antialias:
        width = 4.0 / scale

        def kernel(t):
            return scale * _cubic(scale * t)
    else:
        width = 4.0
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - idx)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    src = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)
    weights, src = weights[:, keep], src[:, keep]
    rows = np.repeat(np.arange(out_len), weights.shape[1])
    m = sp.coo_matrix((weights.ravel(), (rows, src.ravel())), shape=(out_len, in_len))
    return m.tocsr()  # duplicate (mirrored) taps are summed


def _apply_along(m: sp.csr_matrix, arr: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(arr, axis, 0)
    shape = moved.shape
    out = m @ moved.reshape(shape[0], -1)
    return np.moveaxis(out.reshape((m.shape[0],) + shape[1:]), 0, axis)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """MATLAB's double -> uint8 cast: round half away from zero, saturate."""
    return np.clip(np.floor(arr + 0.5), 0, 255)


def imresize(img: np.ndarray, scale: float | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """MATLAB ``imresize`` (bicubic, antialiasing on) of a float64 H x W (x C) array.

    Give either ``scale`` (output size = ceil(scale * input size)) or ``size`` = (rows, cols) (per-axis
    scale = out / in). Boolean input follows MATLAB's logical path: it is resized as uint8 (true = 255,
    rounded after each axis) and thresholded at > 128."""
    logical = img.dtype == bool
    work = img.astype(np.float64) * (255.0 if logical else 1.0)
    in_h, in_w = img.shape[:2]
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        scales = (out_h / in_h, out_w / in_w)
    else:
        assert scale is not None
        out_h, out_w = int(math.ceil(in_h * scale)), int(math.ceil(in_w * scale))
        scales = (float(scale), float(scale))
    lengths = ((in_h, out_h), (in_w, out_w))
    # MATLAB resizes the axis with the smallest scale first (stable order on ties).
    for axis in sorted((0, 1), key=lambda d: scales[d]):
        m = _resize_matrix(lengths[axis][0], lengths[axis][1], scales[axis])
        work = _apply_along(m, work, axis)
        if logical:
            work = _to_uint8(work)
    if logical:
        return work > 128
    return work


def matlab_entropy(values: np.ndarray) -> float:
    """MATLAB ``entropy`` of a double array: im2uint8 (clip to [0,1], x255, round), 256-bin histogram,
    -sum p log2 p."""
    q = _to_uint8(np.clip(values, 0.0, 1.0) * 255.0).astype(np.int64).ravel()
    counts = np.bincount(q, minlength=256).astype(np.float64)
    p = counts[counts > 0] / q.size
    return float(-(p * np.log2(p)).sum())


# ----------------------------------------------------------------------------------------------
# tsmooth: texture-weighted smoothing of the illumination (one sparse solve)
# ----------------------------------------------------------------------------------------------
def texture_weights(fin: np.ndarray, sigma: int, sharpness: float) -> tuple[np.ndarray, np.ndarray]:
    """``computeTextureWeights``: periodic forward differences, a length-``sigma`` box sum of them
    (zero padded, MATLAB ``filter2`` 'same'), W = 1 / (|box sum| * |difference| + sharpness).

    Returns (w_h, w_v): w_h[i, j] weights the edge (i, j)-(i, j+1 mod W), w_v[i, j] the edge
    (i, j)-(i+1 mod H, j)."""
    dt_v = np.roll(fin, -1, axis=0) - fin
    dt_h = np.roll(fin, -1, axis=1) - fin
    box = np.ones(int(sigma))
    # MATLAB filter2 with an even-length kernel centres it at floor(n/2)+1; ndimage's origin default
    # centres at n//2, which is the same position (0-based) for odd n. Use origin for even n.
    origin = 0 if sigma % 2 == 1 else -1
    g_h = ndimage.correlate1d(dt_h, box, axis=1, mode="constant", cval=0.0, origin=origin)
    g_v = ndimage.correlate1d(dt_v, box, axis=0, mode="constant", cval=0.0, origin=origin)
    w_h = 1.0 / (np.abs(g_h) * np.abs(dt_h) + sharpness)
    w_v = 1.0 / (np.abs(g_v) * np.abs(dt_v) + sharpness)
    return w_h, w_v


def smoothing_matrix(w_h: np.ndarray, w_v: np.ndarray, lam: float) -> sp.csc_matrix:
    """A = I + lam * L where L is the weighted graph Laplacian of the periodic 4-neighbour grid.

    Unknowns are ordered column-major (MATLAB's ``x(:)``) so the incomplete Cholesky factor matches
    MATLAB's ``ichol`` on the same matrix. Coinciding edges (grids with a side of 1 or 2) add up."""
    h, w = w_h.shape
    n = h * w
    idx = np.arange(n).reshape((h, w), order="F")
    src = np.concatenate([idx.ravel(order="F"), idx.ravel(order="F")])
    dst = np.concatenate([np.roll(idx, -1, axis=1).ravel(order="F"), np.roll(idx, -1, axis=0).ravel(order="F")])
    wts = lam * np.concatenate([w_h.ravel(order="F"), w_v.ravel(order="F")])
    off = src != dst  # self-loops (side length 1) contribute nothing to a Laplacian
    src, dst, wts = src[off], dst[off], wts[off]
    adj = sp.coo_matrix((wts, (src, dst)), shape=(n, n))
    adj = (adj + adj.T).tocsr()
    deg = np.asarray(adj.sum(axis=1)).ravel()
    a = sp.diags(1.0 + deg) - adj
    a = a.tocsc()
    a.eliminate_zeros()
    a.sort_indices()
    return a


def michol0(a: sp.spmatrix) -> sp.csc_matrix:
    """Modified incomplete Cholesky with zero fill-in (MATLAB ``ichol(A, struct('michol','on'))``).

    L has the sparsity pattern of tril(A); fill-in that falls outside the pattern is dropped and its
    value is subtracted from the two diagonal entries concerned, so that L L' e = A e (row sums kept) and
    (L L')_ij = A_ij on the off-diagonal pattern."""
    low = sp.tril(a, format="csc")
    low.sort_indices()
    n = low.shape[0]
    indptr, indices, data = low.indptr, low.indices, low.data
    diag = np.asarray(a.diagonal(), dtype=np.float64).copy()
    cols: list[dict[int, float]] = []
    for j in range(n):
        s, e = indptr[j], indptr[j + 1]
        cols.append({int(i): float(v) for i, v in zip(indices[s:e], data[s:e]) if i > j})
    out_rows: list[int] = []
    out_cols: list[int] = []
    out_vals: list[float] = []
    for j in range(n):
        d = diag[j]
        if not d > 0.0:
            raise ArithmeticError(f"modified incomplete Cholesky broke down at pivot {j} ({d})")
        ljj = math.sqrt(d)
        out_rows.append(j)
        out_cols.append(j)
        out_vals.append(ljj)
        entries = [(i, v / ljj) for i, v in sorted(cols[j].items())]
        for i, v in entries:
            out_rows.append(i)
            out_cols.append(j)
            out_vals.append(v)
        for p, (ia, va) in enumerate(entries):
            diag[ia] -= va * va
            for ib, vb in entries[p + 1:]:
                prod = va * vb  # ia < ib
                target = cols[ia]
                if ib in target:
                    target[ib] -= prod
                else:  # dropped fill-in: compensate on both diagonals
                    diag[ia] -= prod
                    diag[ib] -= prod
        cols[j] = {}
    return sp.csc_matrix((out_vals, (out_rows, out_cols)), shape=(n, n))


@dataclass
class PcgResult:
    x: np.ndarray
    converged: bool
    iterations: int
    relres: float
    history: list = field(default_factory=list)


def pcg_matlab(a: sp.spmatrix, b: np.ndarray, factor: sp.csc_matrix, tol: float, maxit: int) -> PcgResult:
    """Preconditioned CG as MATLAB ``pcg(A, b, tol, maxit, L, L')`` with x0 = 0.

    Stops when the recurrence residual drops below tol*||b|| and the true residual confirms it; if that
    never happens within ``maxit`` iterations it returns the iterate with the smallest true residual
    (MATLAB's ``xmin``)."""
    n2b = float(np.linalg.norm(b))
    x = np.zeros_like(b)
    if n2b == 0.0:
        return PcgResult(x, True, 0, 0.0)
    tolb = tol * n2b
    # One SuperLU factorisation of the (already triangular) factor gives fast L\ and L'\ solves.
    tri = spl.splu(factor.tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0)
    r = b.copy()
    normr = n2b
    if normr <= tolb:
        return PcgResult(x, True, 0, normr / n2b)
    best_x, best_res = x.copy(), normr
    rho_prev = 1.0
    p = None
    history = []
    for it in range(1, maxit + 1):
        z = tri.solve(tri.solve(r), trans="T")  # z = L' \ (L \ r)
        rho = float(r @ z)
        if rho == 0.0 or not np.isfinite(rho):
            break
        p = z.copy() if p is None else z + (rho / rho_prev) * p
        q = a @ p
        pq = float(p @ q)
        if pq <= 0.0 or not np.isfinite(pq):
            break
        alpha = rho / pq
        x = x + alpha * p
        r = r - alpha * q
        normr = float(np.linalg.norm(r))
        rho_prev = rho
        if normr <= tolb:
            r = b - a @ x
            normr = float(np.linalg.norm(r))
            history.append(normr / n2b)
            if normr <= tolb:
                return PcgResult(x, True, it, normr / n2b, history)
        else:
            history.append(normr / n2b)
        if normr < best_res:
            best_x, best_res = x.copy(), normr
    return PcgResult(best_x, False, maxit, best_res / n2b, history)


def tsmooth(img: np.ndarray, lam: float, sigma: int, sharpness: float, solver: str = "pcg",
            pcg_tol: float = 0.1, pcg_maxit: int = 50) -> tuple[np.ndarray, dict[str, Any]]:
    """``tsmooth(I, lambda, sigma, sharpness)`` on a 2-D map: texture weights, then one sparse solve.

    ``solver='pcg'`` reproduces the MATLAB branch taken when ``ichol`` is available (PCG, modified
    incomplete Cholesky, tol 0.1, 50 iterations: an inexact solve); ``solver='direct'`` is the ``A\\b``
    branch (exact sparse LU)."""
    w_h, w_v = texture_weights(img, sigma, sharpness)
    a = smoothing_matrix(w_h, w_v, lam)
    rhs = img.ravel(order="F")
    info: dict[str, Any] = {"solver": solver}
    if solver == "pcg":
        res = pcg_matlab(a, rhs, michol0(a), pcg_tol, pcg_maxit)
        x = res.x
        info.update(pcg_iterations=res.iterations, pcg_relres=res.relres, pcg_converged=res.converged)
    elif solver == "direct":
        x = spl.splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                     options={"SymmetricMode": True}).solve(rhs)
    else:
        raise ValueError(f"unknown solver {solver!r}")
    return x.reshape(img.shape, order="F"), info


def illumination(img: np.ndarray, lam: float = 0.5, sigma: int = 5, sharpness: float = 1e-3,
                 downsample: float = 0.5, solver: str = "pcg", pcg_tol: float = 0.1,
                 pcg_maxit: int = 50) -> tuple[np.ndarray, dict[str, Any]]:
    """t_our = imresize(tsmooth(imresize(max_c I, 0.5), lambda, sigma), size(t_b))."""
    t_b = img.max(axis=2)
    small = imresize(t_b, scale=downsample) if downsample != 1.0 else t_b
    smooth, info = tsmooth(small, lam, sigma, sharpness, solver, pcg_tol, pcg_maxit)
    t = imresize(smooth, size=t_b.shape) if smooth.shape != t_b.shape else smooth
    info["solve_shape"] = list(small.shape)
    return t, info


def geometric_mean_rgb(img: np.ndarray) -> np.ndarray:
    """``rgb2gm``: (R G B)^(1/3) of the non-negative part."""
    img = np.maximum(img, 0.0)
    return np.cbrt(img[..., 0] * img[..., 1] * img[..., 2])


def choose_k(img: np.ndarray, t: np.ndarray, a: float = A_DEFAULT, b: float = B_DEFAULT,
             threshold: float = 0.5, k_min: float = 1.0, k_max: float = 7.0,
             sample_size: int = 50) -> float | None:
    """Exposure ratio maximising the entropy of the enhanced dark-pixel brightness (``maxEntropyEnhance``).

    Returns None when no (resized) pixel is dark: MATLAB then uses J = I (k = 1, no -0.01 offset)."""
    small = imresize(img, size=(sample_size, sample_size))
    y = geometric_mean_rgb(small)
    dark = imresize(t < threshold, size=(sample_size, sample_size))
    y = y[dark]
    if y.size == 0:
        return None
    # fminbnd == Brent's bounded minimiser (scipy's 'bounded' method is a port of it); TolX = 1e-4.
    res = minimize_scalar(lambda k: -matlab_entropy(btf(y, k, a, b)), bounds=(k_min, k_max),
                          method="bounded", options={"xatol": 1e-4})
    return float(res.x)


def eff_enhance(img: np.ndarray, mu: float = 0.5, a: float = A_DEFAULT, b: float = B_DEFAULT,
                k: float | None = None, lam: float = 0.5, sigma: int = 5, sharpness: float = 1e-3,
                downsample: float = 0.5, dark_threshold: float = 0.5, k_min: float = 1.0,
                k_max: float = 7.0, sample_size: int = 50, offset: float = 0.01, solver: str = "pcg",
                pcg_tol: float = 0.1, pcg_maxit: int = 50) -> tuple[np.ndarray, dict[str, Any]]:
    """Enhance an H x W x 3 float64 image in [0,1]. Returns (output clipped to [0,1], info).

    ``k=None`` searches the exposure ratio (the official default); a fixed k follows MATLAB's other branch
    (J = min(g(I, k), 1), no offset)."""
    t, info = illumination(img, lam, sigma, sharpness, downsample, solver, pcg_tol, pcg_maxit)
    if k is None:
        k_opt = choose_k(img, t, a, b, dark_threshold, k_min, k_max, sample_size)
        if k_opt is None:
            j = img
            info["k"] = 1.0
            info["k_source"] = "no dark pixels: J = I"
        else:
            j = btf(img, k_opt, a, b) - offset
            info["k"] = k_opt
            info["k_source"] = "entropy search"
    else:
        j = np.minimum(btf(img, k, a, b), 1.0)
        info["k"] = float(k)
        info["k_source"] = "fixed"
    w = np.clip(t, 0.0, 1.0) ** mu
    w = w[..., None]
    fused = img * w + j * (1.0 - w)
    info["illumination"] = t
    return np.clip(fused, 0.0, 1.0), info

"""Bilateral-grid pieces shared by HDRNet and DeepUPE (the one place they live; ``baselines.deepupe`` imports them).

Written from the behaviour of the official TensorFlow code (``google/hdrnet``: ``hdrnet/models.py``
``HDRNetCurves._guide`` / ``_coefficients`` "unroll_grid", ``hdrnet/layers.py`` ``bilateral_slice_apply`` and the
CUDA kernels in ``hdrnet/ops/``), reimplemented in PyTorch.

Grid layout
    A bilateral grid is a tensor ``(N, n_out * n_in, D, GH, GW)``: for every grid cell (row ``gy``, column ``gx``,
    luma bin ``gz``) an ``n_out × n_in`` affine matrix, flattened output-major (index ``o * n_in + i``), the last
    input column being the offset. This is the official ``[N, GH, GW, D, n_out, n_in]`` tensor reshaped to
    ``n_out * n_in`` channels, moved to PyTorch's channel-first order. :func:`unpack_coefficients` turns the
    ``D * n_out * n_in`` channels of the prediction convolution into that layout in the official order: channel
    ``(i * n_out + o) * D + z`` holds coefficient (o, i) of luma bin z (``tf.split``/``tf.stack`` twice).

Slicing convention (the official kernels; also ``jax/bilateral_slice.py``)
    Grid cells are *centred* samples. Pixel (x, y) of a W × H image and guide value g map to the continuous grid
    position ``gxf = (x + 0.5) * GW / W``, ``gyf = (y + 0.5) * GH / H``, ``gzf = g * D``; cell k sits at ``k + 0.5``.
    The value is the trilinear (tent-weighted) interpolation of the two neighbouring cells per axis,
    ``k0 = floor(f - 0.5)`` and ``k0 + 1``, with weights ``max(1 - |k + 0.5 - f|, 0)`` computed *before* clamping
    the indices to the grid (so outside the outermost cell centres both neighbours are the border cell and the
    weights still sum to 1: border replication). :func:`slice_grid` computes exactly this with
    ``F.grid_sample(align_corners=False, padding_mode="border")`` on normalised coordinates
    ``2 * (x + 0.5) / W - 1``, ``2 * (y + 0.5) / H - 1``, ``2 * g - 1``: with ``align_corners=False``
    grid_sample's unnormalised index is ``((u + 1) * size - 1) / 2 = f - 0.5``, the official ``f`` shifted to
    cell-centre indices, and ``border`` clamps that index to ``[0, size - 1]``, which gives the same value as
    clamping the two neighbour indices. Any image size works (the grid is never resized).

    One documented difference: the official kernels weight the *depth* axis with a "smoothed" tent
    ``max(1 - sqrt(d² + 1e-8), 0)`` (both the 2017 ``bilateral_slice.cu.cc`` ``weight_z`` and the later
    ``numerics.h`` ``SmoothedLerpWeight``); at a pixel whose ``gzf`` falls exactly on a cell centre the weights then
    sum to 1 - 1e-4 instead of 1. The exact tent is used here (forward differs by at most 1e-4 of a coefficient;
    the depth gradient is the tent's piecewise-constant slope instead of the smoothed one). The test
    ``tests/test_baseline_hdrnet.py`` checks :func:`slice_grid` against a per-pixel loop of the official formula
    with both weightings.

Guide (``CurveGuide``, official ``HDRNetCurves._guide``)
    ``g = clip(Σ_c m_c · Σ_k s_ck · relu((x·M + b)_c − t_ck) + m_0, 0, 1)``: a learned 3 × 3 colour matrix
    ``M`` (row-vector convention, ``x @ M``, initialised to the identity plus one shared N(0, 1e-4²) offset) with a
    bias, a per-channel piecewise-linear curve of 16 ReLU knots (shifts initialised to k/16, slopes to
    [1, 0, ..., 0], i.e. the identity on [0, 1]), and a 1 × 1 mixing convolution to one channel (weights 1/3,
    bias 0). 112 trainable parameters.

Apply (official ``bilateral_slice_apply`` with ``has_offset=True``)
    ``out_o = Σ_i A_oi · in_i + A_o,n_in`` per pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "unpack_coefficients",
    "slice_grid",
    "apply_affine",
    "bilateral_slice_apply",
    "CurveGuide",
    "identity_grid",
]


def unpack_coefficients(x: torch.Tensor, luma_bins: int, n_out: int = 3, n_in: int = 4) -> torch.Tensor:
    """Prediction-conv output ``(N, D·n_out·n_in, GH, GW)`` → grid ``(N, n_out·n_in, D, GH, GW)`` (official order)."""
    n, c, gh, gw = x.shape
    if c != luma_bins * n_out * n_in:
        raise ValueError(f"expected {luma_bins * n_out * n_in} channels (D={luma_bins} × {n_out} × {n_in}), got {c}")
    x = x.reshape(n, n_in, n_out, luma_bins, gh, gw)      # channel (i * n_out + o) * D + z
    x = x.permute(0, 2, 1, 3, 4, 5)                         # (N, o, i, z, GH, GW)
    return x.reshape(n, n_out * n_in, luma_bins, gh, gw)


def _centre_coords(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Normalised cell-centred coordinates ``2 (k + 0.5) / n - 1`` of n pixels."""
    return (torch.arange(n, device=device, dtype=dtype) + 0.5) * (2.0 / n) - 1.0


def slice_grid(grid: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup of ``grid`` (N, C, D, GH, GW) at every pixel of ``guide`` (N, H, W) or (N, 1, H, W).

    Returns (N, C, H, W). The guide is expected in [0, 1] (the guides here are clipped); values outside are
    clamped to the border bins, as the official kernels do.
    """
    if guide.dim() == 4:
        if guide.shape[1] != 1:
            raise ValueError("guide must have one channel")
        guide = guide[:, 0]
    if grid.dim() != 5 or guide.dim() != 3 or grid.shape[0] != guide.shape[0]:
        raise ValueError(f"grid (N,C,D,GH,GW) and guide (N,H,W) expected, got {tuple(grid.shape)} and {tuple(guide.shape)}")
    n, h, w = guide.shape
    dtype, device = grid.dtype, grid.device
    guide = guide.to(dtype)
    gx = _centre_coords(w, device, dtype).view(1, 1, w).expand(n, h, w)
    gy = _centre_coords(h, device, dtype).view(1, h, 1).expand(n, h, w)
    gz = guide * 2.0 - 1.0
    coords = torch.stack((gx, gy, gz), dim=-1).unsqueeze(1)  # (N, 1, H, W, 3): x→GW, y→GH, z→D
    out = F.grid_sample(grid, coords, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0]


def apply_affine(coeffs: torch.Tensor, image: torch.Tensor, has_offset: bool = True) -> torch.Tensor:
    """Per-pixel affine colour transform: coeffs (N, n_out·(n_in+1), H, W), image (N, n_in, H, W) → (N, n_out, H, W)."""
    n, c, h, w = coeffs.shape
    n_in = image.shape[1]
    stride = n_in + (1 if has_offset else 0)
    if c % stride or image.shape[0] != n or image.shape[2:] != coeffs.shape[2:]:
        raise ValueError(f"coefficients {tuple(coeffs.shape)} do not fit an image {tuple(image.shape)}")
    a = coeffs.reshape(n, c // stride, stride, h, w)
    out = (a[:, :, :n_in] * image.unsqueeze(1)).sum(dim=2)
    if has_offset:
        out = out + a[:, :, n_in]
    return out


def bilateral_slice_apply(grid: torch.Tensor, guide: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Slice the affine grid at the guide and apply the per-pixel affine matrices to ``image`` (full resolution)."""
    return apply_affine(slice_grid(grid, guide), image, has_offset=True)


def identity_grid(n: int = 1, luma_bins: int = 8, gh: int = 16, gw: int = 16, n_chans: int = 3) -> torch.Tensor:
    """A grid holding the identity affine transform [I | 0] in every cell (for tests and sanity checks)."""
    a = torch.zeros(n_chans, n_chans + 1)
    a[:, :n_chans] = torch.eye(n_chans)
    return a.reshape(1, -1, 1, 1, 1).expand(n, -1, luma_bins, gh, gw).contiguous()


class CurveGuide(nn.Module):
    """The official "Curves" guide: colour matrix + bias, per-channel 16-knot ReLU curves, 1×1 mix, clip."""

    def __init__(self, n_chans: int = 3, n_knots: int = 16):
        super().__init__()
        self.n_chans, self.n_knots = n_chans, n_knots
        # identity plus ONE scalar drawn once (np.random.randn(1) * 1e-4 in the official code), here from torch's RNG
        self.ccm = nn.Parameter(torch.eye(n_chans) + torch.randn(1) * 1e-4)
        self.ccm_bias = nn.Parameter(torch.zeros(n_chans))
        shifts = torch.arange(n_knots, dtype=torch.float32) / n_knots   # linspace(0, 1, n, endpoint=False)
        self.shifts = nn.Parameter(shifts.repeat(n_chans, 1))
        slopes = torch.zeros(n_chans, n_knots)
        slopes[:, 0] = 1.0
        self.slopes = nn.Parameter(slopes)
        self.mix_weight = nn.Parameter(torch.full((n_chans,), 1.0 / n_chans))
        self.mix_bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → guide (N, H, W) in [0, 1]."""
        g = torch.einsum("nihw,ij->njhw", x, self.ccm) + self.ccm_bias.view(1, -1, 1, 1)
        curve = None
        # a loop over knots instead of one (N, C, K, H, W) tensor: same result, K times less memory at inference
        for k in range(self.n_knots):
            term = self.slopes[:, k].view(1, -1, 1, 1) * F.relu(g - self.shifts[:, k].view(1, -1, 1, 1))
            curve = term if curve is None else curve + term
        mixed = (curve * self.mix_weight.view(1, -1, 1, 1)).sum(dim=1) + self.mix_bias
        return mixed.clamp(0.0, 1.0)

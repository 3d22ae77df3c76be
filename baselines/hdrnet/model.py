"""HDRNet (Gharbi et al., SIGGRAPH 2017) as the official TensorFlow code builds it, in PyTorch.

Follows ``google/hdrnet`` ``hdrnet/models.py`` (``HDRNetCurves``, the default model) and ``hdrnet/layers.py``:

- **coefficients** (:class:`CoefficientNet`) on the low-resolution input (``net_input_size`` = 256):
  *splat* ``log2(256 / spatial_bin)`` = 4 stride-2 3×3 convs with ``cm·2^i·D`` channels (8, 16, 32, 64), ReLU,
  BN from the 2nd one when ``batch_norm``; *global* 2 stride-2 3×3 convs (64), flatten, FC 256 → 128 → 64 (the last
  without activation); *local* conv 64 (ReLU) then conv 64 without bias or activation; *fusion*
  ``relu(local + global)``; *prediction* 1×1 conv to ``D·3·4`` = 96 channels, unrolled into a 16×16×8 grid of 3×4
  affine matrices (:func:`bilateral.unpack_coefficients`);
- **guide** (:class:`bilateral.CurveGuide`) on the full-resolution input;
- **output**: the grid sliced at (x, y, guide) and applied to the full-resolution input
  (:func:`bilateral.bilateral_slice_apply`).

TensorFlow semantics kept: "SAME" padding (for stride 2 on even sizes TF pads 0 before and 1 after, unlike
PyTorch's symmetric ``padding=1``), weights initialised with ``variance_scaling_initializer()`` (truncated normal,
stddev sqrt(1.3 · 2 / fan_in), cut at 2 stddev) and zero biases, and ``tf.contrib.layers.batch_norm`` defaults
(no scale, a learned offset β replacing the bias, decay 0.999, epsilon 1e-3). The parameter count is the official
one: 482,080 with the defaults (the same with or without BN).

The DeepUPE network (``baselines.deepupe``) is this model with a deeper coefficient net (``global_strides`` and
``n_local`` below).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .bilateral import CurveGuide, bilateral_slice_apply, unpack_coefficients

__all__ = ["HDRNetModel", "CoefficientNet", "ConvLayer", "FCLayer", "resize_lowres", "LOWRES_MODES",
           "HDRNET_GLOBAL_STRIDES", "HDRNET_N_LOCAL"]

HDRNET_GLOBAL_STRIDES: tuple[int, ...] = (2, 2)
HDRNET_N_LOCAL = 2
LOWRES_MODES = ("nearest", "nearest-exact", "bilinear", "area")


def _tf_same_pad(x: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """Pad as TensorFlow's 'SAME': total = max((ceil(n/s) - 1)·s + k - n, 0), the smaller half first."""
    if k == 1 and stride == 1:
        return x
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
        out = -(-n // stride)
        total = max((out - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


def _tf_variance_scaling_(weight: torch.Tensor, fan_in: int) -> None:
    """``tf.contrib.layers.variance_scaling_initializer()``: factor 2, FAN_IN, truncated normal."""
    std = math.sqrt(1.3 * 2.0 / fan_in)
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


class _BatchNormOffset(nn.Module):
    """``tf.contrib.layers.batch_norm(center=True, scale=False)``: normalise, then add a learned β."""

    def __init__(self, channels: int, dims: int):
        super().__init__()
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.bn = bn(channels, eps=1e-3, momentum=1e-3, affine=False)
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return self.bn(x) + self.beta.view(shape)


class ConvLayer(nn.Module):
    """``hdrnet.layers.conv``: conv ('SAME'), optional BN (replacing the bias), optional ReLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, *, use_bias: bool = True,
                 batch_norm: bool = False, relu: bool = True):
        super().__init__()
        self.k, self.stride, self.relu = k, stride, relu
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=0, bias=use_bias and not batch_norm)
        self.norm = _BatchNormOffset(cout, 2) if batch_norm else None
        _tf_variance_scaling_(self.conv.weight, cin * k * k)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(_tf_same_pad(x, self.k, self.stride))
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


class FCLayer(nn.Module):
    """``hdrnet.layers.fc``: fully connected, optional BN (replacing the bias), optional ReLU."""

    def __init__(self, cin: int, cout: int, *, batch_norm: bool = False, relu: bool = True):
        super().__init__()
        self.relu = relu
        self.fc = nn.Linear(cin, cout, bias=not batch_norm)
        self.norm = _BatchNormOffset(cout, 1) if batch_norm else None
        _tf_variance_scaling_(self.fc.weight, cin)
        if self.fc.bias is not None:
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


class CoefficientNet(nn.Module):
    """Low-res image (N, 3, S, S) → bilateral grid (N, 12, D, S/2^n, S/2^n) (see module doc).

    ``global_strides``: strides of the global-path 3×3 convs (HDRNet: (2, 2)); ``n_local``: local-path convs, the
    first with bias and ReLU, the rest linear and bias-free (HDRNet: 2).
    """

    def __init__(self, *, luma_bins: int = 8, channel_multiplier: int = 1, spatial_bin: int = 16,
                 net_input_size: int = 256, batch_norm: bool = False,
                 global_strides: Sequence[int] = HDRNET_GLOBAL_STRIDES, n_local: int = HDRNET_N_LOCAL,
                 n_in: int = 4, n_out: int = 3):
        super().__init__()
        ratio = net_input_size / spatial_bin
        n_splat = int(round(math.log2(ratio))) if ratio >= 1 else -1
        if n_splat < 0 or 2 ** n_splat != ratio:
            raise ValueError(f"net_input_size/spatial_bin must be a power of two, got {net_input_size}/{spatial_bin}")
        gd, cm = luma_bins, channel_multiplier
        self.luma_bins, self.n_in, self.n_out = gd, n_in, n_out
        self.net_input_size, self.spatial_bin = net_input_size, spatial_bin
        width = 8 * cm * gd
        splat, cin = [], 3
        for i in range(n_splat):
            cout = cm * (2 ** i) * gd
            splat.append(ConvLayer(cin, cout, 3, 2, batch_norm=batch_norm and i > 0))
            cin = cout
        self.splat = nn.Sequential(*splat)
        glob, size = [], spatial_bin
        for s in global_strides:
            glob.append(ConvLayer(cin, width, 3, s, batch_norm=batch_norm))
            cin = width
            size = -(-size // s)
        self.global_convs = nn.Sequential(*glob)
        self.global_fc = nn.Sequential(
            FCLayer(cin * size * size, 32 * cm * gd, batch_norm=batch_norm),
            FCLayer(32 * cm * gd, 16 * cm * gd, batch_norm=batch_norm),
            FCLayer(16 * cm * gd, 8 * cm * gd, relu=False),          # no normalisation before the fusion
        )
        splat_out = cm * (2 ** (n_splat - 1)) * gd if n_splat else 3
        local = [ConvLayer(splat_out, width, 3, 1, batch_norm=batch_norm)]
        local += [ConvLayer(width, width, 3, 1, use_bias=False, relu=False) for _ in range(n_local - 1)]
        self.local = nn.Sequential(*local)
        self.prediction = ConvLayer(width, gd * n_out * n_in, 1, 1, relu=False)

    def forward(self, lowres: torch.Tensor) -> torch.Tensor:
        s = self.net_input_size
        if lowres.shape[-2:] != (s, s):
            raise ValueError(f"the coefficient network takes {s}×{s} inputs, got {tuple(lowres.shape[-2:])}")
        splat = self.splat(lowres)
        g = self.global_convs(splat).flatten(1)
        g = self.global_fc(g)
        local = self.local(splat)
        fusion = F.relu(local + g.view(g.shape[0], -1, 1, 1))
        return unpack_coefficients(self.prediction(fusion), self.luma_bins, self.n_out, self.n_in)


def resize_lowres(x: torch.Tensor, size: int, mode: str = "nearest") -> torch.Tensor:
    """The low-resolution network input: ``x`` resized to size×size (aspect ratio not kept, as officially).

    ``nearest``: source index floor(i · in / out), TF1 ``resize_images(NEAREST_NEIGHBOR)`` of the official training
    pipeline (``data_pipeline.py``); ``nearest-exact``: floor((i + 0.5) · in / out), the pixel-centre nearest of
    ``skimage.transform.resize(order=0)`` in the official ``run.py``; ``bilinear`` (no antialiasing) and ``area``
    are extra options.
    """
    if mode not in LOWRES_MODES:
        raise ValueError(f"unknown low-res resize mode {mode!r}")
    if x.shape[-2:] == (size, size):
        return x
    if mode == "bilinear":
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return F.interpolate(x, size=(size, size), mode=mode)


class HDRNetModel(nn.Module):
    """Coefficient net + curve guide + slice/apply: ``forward(lowres, fullres) -> (N, 3, H, W)`` (unclipped)."""

    def __init__(self, *, luma_bins: int = 8, channel_multiplier: int = 1, spatial_bin: int = 16,
                 net_input_size: int = 256, batch_norm: bool = False,
                 global_strides: Sequence[int] = HDRNET_GLOBAL_STRIDES, n_local: int = HDRNET_N_LOCAL):
        super().__init__()
        self.coefficients = CoefficientNet(luma_bins=luma_bins, channel_multiplier=channel_multiplier,
                                           spatial_bin=spatial_bin, net_input_size=net_input_size,
                                           batch_norm=batch_norm, global_strides=global_strides, n_local=n_local)
        self.guide = CurveGuide()
        self.net_input_size = net_input_size

    def forward(self, lowres: torch.Tensor, fullres: torch.Tensor) -> torch.Tensor:
        grid = self.coefficients(lowres)
        guide = self.guide(fullres)
        return bilateral_slice_apply(grid, guide, fullres)

"""The metric registry: pure functions on 8-bit RGB arrays, each with an explicit name and a version.

The primary pair (``psnr``, ``ssim``) is the paper's protocol, i.e. BasicSR's ``calculate_psnr`` /
``calculate_ssim`` with ``crop_border=0, test_y_channel=False`` as DSN's test code calls them:

* inputs are the saved 8-bit outputs and the 8-bit ground truth, cast to float64, range 255;
* PSNR: MSE over all pixels and channels, 10·log10(255²/MSE), +inf when identical;
* SSIM (Wang et al.): 11×11 Gaussian window, σ 1.5, C1=(0.01·255)², C2=(0.03·255)², the 5-pixel
  border touched by the window dropped ("valid"), computed per RGB channel and averaged.

Bump a metric's ``version`` whenever its numbers could change; reports never mix versions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .errors import BenchError, unknown_name

# BT.601 luma as BasicSR's rgb2ycbcr(y_only=True): limited range 16–235 on a 0–255 scale.
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114])


def _check_pair(out: np.ndarray, ref: np.ndarray) -> None:
    if out.shape != ref.shape:
        raise BenchError(f"output {out.shape[1]}×{out.shape[0]} and reference {ref.shape[1]}×{ref.shape[0]} differ in size")
    if out.dtype != np.uint8 or ref.dtype != np.uint8:
        raise BenchError("metrics take 8-bit images")


def psnr_rgb(out: np.ndarray, ref: np.ndarray) -> float:
    _check_pair(out, ref)
    if np.array_equal(out, ref):
        return float("inf")
    return float(peak_signal_noise_ratio(ref.astype(np.float64), out.astype(np.float64), data_range=255))


def ssim_rgb(out: np.ndarray, ref: np.ndarray) -> float:
    _check_pair(out, ref)
    return _wang_ssim(out.astype(np.float64), ref.astype(np.float64), channel_axis=2)


def _wang_ssim(a: np.ndarray, b: np.ndarray, channel_axis: int | None) -> float:
    # skimage with these settings is Wang's formula: its Gaussian (truncate 3.5σ → 11 taps) and its
    # border crop of (11-1)/2 = 5 px reproduce the "valid" window of BasicSR/MATLAB exactly.
    return float(
        structural_similarity(
            a, b, data_range=255, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, K1=0.01, K2=0.03, channel_axis=channel_axis,
        )
    )


def luma_y(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) @ _Y_WEIGHTS + 16.0


def psnr_y(out: np.ndarray, ref: np.ndarray) -> float:
    _check_pair(out, ref)
    if np.array_equal(out, ref):
        return float("inf")
    return float(peak_signal_noise_ratio(luma_y(ref), luma_y(out), data_range=255))


def ssim_y(out: np.ndarray, ref: np.ndarray) -> float:
    _check_pair(out, ref)
    return _wang_ssim(luma_y(out), luma_y(ref), channel_axis=None)


def gt_mean_adjust(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The harness's one GT-mean rule (protocol.md §4.4): an oracle gain on the output.

    grey = 0.299R + 0.587G + 0.114B of the uint8 images; scale the output by mean(grey ref) /
    mean(grey out); clip to [0,255]; round back to uint8. A black output is left unchanged.
    """
    _check_pair(out, ref)
    m_out = float((out.astype(np.float64) @ _GREY_WEIGHTS).mean())
    m_ref = float((ref.astype(np.float64) @ _GREY_WEIGHTS).mean())
    if m_out == 0:
        return out.copy()
    scaled = out.astype(np.float64) * (m_ref / m_out)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def psnr_gtmean(out: np.ndarray, ref: np.ndarray) -> float:
    return psnr_rgb(gt_mean_adjust(out, ref), ref)


def ssim_gtmean(out: np.ndarray, ref: np.ndarray) -> float:
    return ssim_rgb(gt_mean_adjust(out, ref), ref)


def brightness(out: np.ndarray, ref: np.ndarray | None = None) -> float:
    """No-reference descriptor: mean BT.601 grey level in [0,255]."""
    return float((out.astype(np.float64) @ _GREY_WEIGHTS).mean())


def colorfulness(out: np.ndarray, ref: np.ndarray | None = None) -> float:
    """No-reference descriptor: Hasler & Süsstrunk (2003) colourfulness M3."""
    x = out.astype(np.float64)
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., float]
    higher_is_better: bool | None  # None: a descriptor with no better direction
    needs_reference: bool
    version: int
    definition: str
    default: bool = False
    requires: tuple[str, ...] = field(default=())

    def __call__(self, out: np.ndarray, ref: np.ndarray | None) -> float:
        if self.needs_reference and ref is None:
            raise BenchError(f"metric {self.name} needs a reference image")
        return self.fn(out, ref)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("psnr", psnr_rgb, True, True, 1,
               "RGB PSNR on uint8, float64 MSE over all pixels and channels, range 255, no crop (paper/BasicSR)",
               default=True),
        Metric("ssim", ssim_rgb, True, True, 1,
               "Wang SSIM, Gaussian 11x11 sigma 1.5, K=(0.01,0.03), L=255, valid window, mean of R,G,B (paper/BasicSR)",
               default=True),
        Metric("psnr_y", psnr_y, True, True, 1, "PSNR on BT.601 limited-range luma Y (16-235), as BasicSR test_y_channel"),
        Metric("ssim_y", ssim_y, True, True, 1, "Wang SSIM on BT.601 limited-range luma Y"),
        Metric("psnr_gtmean", psnr_gtmean, True, True, 1,
               "RGB PSNR after the GT-mean oracle gain (grey 0.299/0.587/0.114 means, clip, round); uses the GT"),
        Metric("ssim_gtmean", ssim_gtmean, True, True, 1, "Wang RGB SSIM after the GT-mean oracle gain; uses the GT"),
        Metric("brightness", brightness, None, False, 1, "no-reference: mean BT.601 grey level of the output (0-255)"),
        Metric("colorfulness", colorfulness, True, False, 1, "no-reference: Hasler-Suesstrunk colourfulness M3"),
    ]
}


def _pyiqa_metric(name: str, pyiqa_name: str, higher: bool, definition: str) -> Metric:
    def fn(out: np.ndarray, ref: np.ndarray) -> float:
        from . import iqa_backend

        return iqa_backend.score(pyiqa_name, out, ref)

    return Metric(name, fn, higher, True, 1, definition, requires=("pyiqa",))


for _m in (
    _pyiqa_metric("pyiqa_psnr", "psnr", True, "pyiqa's RGB PSNR (second backend; needs the iqa extra)"),
    _pyiqa_metric("pyiqa_ssimc", "ssimc", True, "pyiqa's colour SSIM 'ssimc' (second backend; needs the iqa extra)"),
):
    METRICS[_m.name] = _m

DEFAULT_METRICS = [m.name for m in METRICS.values() if m.default]


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise unknown_name("metric", name, list(METRICS)) from None


def resolve_metrics(names: list[str] | None, paired: bool) -> list[Metric]:
    """The metrics to compute: the defaults (reference metrics only when the set is paired)."""
    if not names:
        if paired:
            return [METRICS[n] for n in DEFAULT_METRICS]
        return [m for m in METRICS.values() if not m.needs_reference]
    metrics = [get_metric(n) for n in names]
    if not paired:
        bad = [m.name for m in metrics if m.needs_reference]
        if bad:
            raise BenchError(f"dataset has no references; cannot compute {', '.join(bad)} (no-reference metrics: "
                             + ", ".join(m.name for m in METRICS.values() if not m.needs_reference) + ")")
    return metrics

"""The eight differentiable filters of White-Box / Exposure (official ``filters.py``, ``config_example.py``).

Each filter has a *regressor* that maps the raw outputs of its agent head to parameters (tanh-range
squashing, official ranges) and a *process* that applies them to an N×3×H×W image (any resolution: the
same parameters are replayed on the full-resolution image). Masking is disabled in the official config
(``cfg.masking = False``), so every filter is global; the agent head still outputs the 6 unused mask values.

=========  ======  ==========================================================================================
filter     params  operation (``lum = 0.27 R + 0.67 G + 0.06 B``)
=========  ======  ==========================================================================================
exposure   1       ``x · 2^E``, E = tanh_range(−3.5, 3.5, initial 0)
gamma      1       ``max(x, 0.001)^g``, g = exp(tanh_range(−ln 3, ln 3))  (g ∈ [1/3, 3])
wb         3       ``x · s``; s = exp(tanh_range(−0.5, 0.5)(f · (0, 1, 1))) / (1e-5 + 0.27 s_r + 0.67 s_g + 0.06 s_b)
                   (the red raw output is masked to 0, the gains are normalised to unit luminance)
saturation 1       ``(1−p)·x' + p·hsv_to_rgb(h, s + (1−s)(0.5 − |0.5 − v|)·0.8, v)``, x' = min(x, 1), p = σ(f)
tone       8       piecewise-linear curve ``Σ_i clip(x − i/8, 0, 1/8) · t_i · 8 / Σ t``, t = tanh_range(0.5, 2)
contrast   1       ``lerp(x, x / (L + 1e-6) · (½ − ½ cos(π L)), p)``, L = clip(lum, 0, 1), p = tanh(f) ∈ (−1, 1)
wnb        1       ``lerp(x, lum, p)`` (black-and-white mix), p = σ(f)
colour     24      the tone curve per channel, 3 × 8 values tanh_range(0.9, 1.1, initial 1)
=========  ======  ==========================================================================================

``tanh_range(l, r, initial)(x) = (tanh(x + atanh(2 (initial − l)/(r − l) − 1)) · ½ + ½) · (r − l) + l``.
The RGB↔HSV conversions are TensorFlow's ``rgb_to_hsv`` / ``hsv_to_rgb`` formulas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["Filter", "FILTERS", "FILTER_NAMES", "N_FILTERS", "MASK_PARAMS", "tanh_range", "rgb2lum",
           "rgb_to_hsv", "hsv_to_rgb", "apply_filter", "replay", "decode"]

MASK_PARAMS = 6       # unused mask parameters every head still outputs (masking disabled)
CURVE_STEPS = 8
EXPOSURE_RANGE = 3.5
GAMMA_RANGE = 3.0
WB_LOG_RANGE = 0.5
TONE_CURVE_RANGE = (0.5, 2.0)
COLOR_CURVE_RANGE = (0.9, 1.1)


def tanh_range(x: torch.Tensor, left: float, right: float, initial: float | None = None) -> torch.Tensor:
    bias = math.atanh(2.0 * (initial - left) / (right - left) - 1.0) if initial is not None else 0.0
    return (torch.tanh(x + bias) * 0.5 + 0.5) * (right - left) + left


def rgb2lum(img: torch.Tensor) -> torch.Tensor:
    return 0.27 * img[:, 0:1] + 0.67 * img[:, 1:2] + 0.06 * img[:, 2:3]


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """TensorFlow's ``rgb_to_hsv`` on N×3×H×W (h in [0, 1))."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    v = torch.maximum(torch.maximum(r, g), b)
    rng = v - torch.minimum(torch.minimum(r, g), b)
    s = torch.where(v > 0, rng / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    norm = 1.0 / (6.0 * torch.where(rng > 0, rng, torch.ones_like(rng)))
    h = torch.where(r == v, norm * (g - b), torch.where(g == v, norm * (b - r) + 2.0 / 6.0, norm * (r - g) + 4.0 / 6.0))
    h = torch.where(rng > 0, h, torch.zeros_like(h))
    h = torch.where(h < 0, h + 1.0, h)
    return torch.stack([h, s, v], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """TensorFlow's ``hsv_to_rgb`` on N×3×H×W."""
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    dh = h * 6.0
    dr = ((dh - 3.0).abs() - 1.0).clamp(0.0, 1.0)
    dg = (2.0 - (dh - 2.0).abs()).clamp(0.0, 1.0)
    db = (2.0 - (dh - 4.0).abs()).clamp(0.0, 1.0)
    one_minus_s = 1.0 - s
    return torch.stack([(one_minus_s + s * dr) * v, (one_minus_s + s * dg) * v, (one_minus_s + s * db) * v], dim=1)


def _curve(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``Σ_i clip(x − i/K, 0, 1/K) · t_i · K / Σ t``; x N×C×H×W, t N×C×K (or N×1×K for all channels)."""
    k = t.shape[-1]
    total = torch.zeros_like(x)
    for i in range(k):
        total = total + (x - i / k).clamp(0.0, 1.0 / k) * t[:, :, i, None, None]
    return total * (k / (t.sum(dim=-1) + 1e-30))[:, :, None, None]


# ---- regressors: raw head outputs (N×n) -> parameters ------------------------------------------------
def _reg_exposure(f):
    return tanh_range(f, -EXPOSURE_RANGE, EXPOSURE_RANGE, initial=0.0)


def _reg_gamma(f):
    lg = math.log(GAMMA_RANGE)
    return torch.exp(tanh_range(f, -lg, lg))


def _reg_wb(f):
    mask = torch.tensor([0.0, 1.0, 1.0], dtype=f.dtype, device=f.device)
    s = torch.exp(tanh_range(f * mask, -WB_LOG_RANGE, WB_LOG_RANGE))
    return s / (1e-5 + 0.27 * s[:, 0:1] + 0.67 * s[:, 1:2] + 0.06 * s[:, 2:3])


def _reg_tone(f):
    return tanh_range(f.reshape(-1, 1, CURVE_STEPS), *TONE_CURVE_RANGE)


def _reg_color(f):
    return tanh_range(f.reshape(-1, 3, CURVE_STEPS), *COLOR_CURVE_RANGE, initial=1.0)


# ---- processes ---------------------------------------------------------------------------------------
def _p_exposure(x, p):
    return x * torch.exp(p.view(-1, 1, 1, 1) * math.log(2.0))


def _p_gamma(x, p):
    return torch.pow(x.clamp(min=0.001), p.view(-1, 1, 1, 1))


def _p_wb(x, p):
    return x * p.view(-1, 3, 1, 1)


def _p_saturation(x, p):
    x = x.clamp(max=1.0)
    hsv = rgb_to_hsv(x)
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    s2 = s + (1.0 - s) * (0.5 - (0.5 - v).abs()) * 0.8
    full = hsv_to_rgb(torch.cat([h, s2, v], dim=1))
    p = p.view(-1, 1, 1, 1)
    return x * (1.0 - p) + full * p


def _p_tone(x, p):
    return _curve(x, p.expand(-1, 3, -1))


def _p_contrast(x, p):
    lum = rgb2lum(x).clamp(0.0, 1.0)
    contrast_lum = -torch.cos(math.pi * lum) * 0.5 + 0.5
    contrast_image = x / (lum + 1e-6) * contrast_lum
    p = p.view(-1, 1, 1, 1)
    return (1 - p) * x + p * contrast_image


def _p_wnb(x, p):
    p = p.view(-1, 1, 1, 1)
    return (1 - p) * x + p * rgb2lum(x)


def _p_color(x, p):
    return _curve(x, p)


@dataclass(frozen=True)
class Filter:
    name: str
    short: str                       # the official short name
    n_params: int                    # raw head outputs used (excluding the 6 mask outputs)
    regress: Callable[[torch.Tensor], torch.Tensor]
    process: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def record(self, p: torch.Tensor) -> dict[str, Any]:
        """JSON form of one image's parameters (``p`` without the batch dimension)."""
        v = p.detach().double().cpu()
        if self.name == "exposure":
            return {"ev": float(v.reshape(-1)[0])}
        if self.name == "gamma":
            return {"gamma": float(v.reshape(-1)[0])}
        if self.name == "wb":
            return {"gains": [float(a) for a in v.reshape(-1)]}
        if self.name == "tone":
            return {"curve": [float(a) for a in v.reshape(-1)]}
        if self.name == "colour":
            return {"curves": [[float(a) for a in row] for row in v.reshape(3, CURVE_STEPS)]}
        return {"strength": float(v.reshape(-1)[0])}

    def from_record(self, rec: dict[str, Any], dtype=torch.float32, device=None) -> torch.Tensor:
        key = {"exposure": "ev", "gamma": "gamma", "wb": "gains", "tone": "curve", "colour": "curves"}.get(
            self.name, "strength")
        t = torch.tensor(rec[key], dtype=dtype, device=device)
        shape = {"wb": (1, 3), "tone": (1, 1, CURVE_STEPS), "colour": (1, 3, CURVE_STEPS)}.get(self.name, (1, 1))
        return t.reshape(shape)


FILTERS: tuple[Filter, ...] = (
    Filter("exposure", "E", 1, _reg_exposure, _p_exposure),
    Filter("gamma", "G", 1, _reg_gamma, _p_gamma),
    Filter("wb", "W", 3, _reg_wb, _p_wb),
    Filter("saturation", "S+", 1, torch.sigmoid, _p_saturation),
    Filter("tone", "T", CURVE_STEPS, _reg_tone, _p_tone),
    Filter("contrast", "Ct", 1, torch.tanh, _p_contrast),
    Filter("wnb", "BW", 1, torch.sigmoid, _p_wnb),
    Filter("colour", "C", 3 * CURVE_STEPS, _reg_color, _p_color),
)
FILTER_NAMES = tuple(f.name for f in FILTERS)
N_FILTERS = len(FILTERS)


def decode(name: str, raw: torch.Tensor) -> torch.Tensor:
    return FILTERS[FILTER_NAMES.index(name)].regress(raw)


def apply_filter(x: torch.Tensor, name: str, params: torch.Tensor) -> torch.Tensor:
    return FILTERS[FILTER_NAMES.index(name)].process(x, params)


def replay(x: torch.Tensor, edits: list[dict[str, Any]]) -> torch.Tensor:
    """Apply a recorded edit list (``{"filter": name, "params": {...}}`` entries, as ``image_record`` writes
    them) to ``x`` in order."""
    for e in edits:
        f = FILTERS[FILTER_NAMES.index(e["filter"])]
        x = f.process(x, f.from_record(e["params"], x.dtype, x.device))
    return x

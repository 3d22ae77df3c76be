"""Distort-and-Recover (CVPR 2018) distortion operators, re-implemented.

Used to synthesise the ``fivek_dr_distorted`` mode (protocol.md, sections 2-3):
an Expert C target is degraded by a random list of global operators and the
result is used as the low-quality input.

Two variants of the sampler are provided, after the scripts in
``Jongchan/DISTORT-AND-RECOVER-CVPR18/tools/``:

``"uniform"``  (``MIT5K_uniform_distortion.py``)
    operators 0-4: contrast, saturation, brightness, colour temperature,
    tone curve; factor ``1 + s * U(0.2, 0.4)`` with a random sign ``s``;
    kelvin in [4000, 5500] U [6500, 8000]; at least 3 operators.
``"mild"``  (``MIT5K_uniform_distortion_3.py``)
    operators 0-3 only; factor ``1 + s * U(0.1, 0.2)``;
    kelvin in [5000, 5800] U [6200, 7000]; at least 2 operators.

Sampling semantics (read in the original scripts)
--------------------------------------------------
For each operator index ``i`` in ascending order the scripts draw one uniform
number and fire the operator when it is ``> 0.7`` (p = 0.3).  If it fires:

* temperature (``i == 3``): an integer ``t`` is drawn uniformly from
  ``[lo_min, hi_max]`` inclusive (Python ``random.randint``), and mapped with
  a break point at 6000:
  ``t < 6000  -> lo_min + (t - lo_min) / (6000 - lo_min) * (lo_max - lo_min)``
  ``t >= 6000 -> hi_max - (hi_max - t) / (hi_max - 6000) * (hi_max - hi_min)``.
  The kelvin value is therefore a float (e.g. 4000.75), not an integer; we
  keep the float and also record the integer as ``"draw"``.  Note the lower
  branch never reaches ``lo_max`` exactly (t = 5999 gives 5499.25 for
  "uniform", 5799.2 for "mild").
* tone curve (``i == 4``, "uniform" only): ``w = U(5, 10)``.
* otherwise: the sign is drawn first, ``s = +1 if U(0,1) < 0.5 else -1``,
  then the magnitude ``d = U(a, b)``; factor ``1 + s * d``.

The operator list is then shuffled (Python ``random.shuffle``; here a
permutation drawn from the numpy Generator) and applied in that order.

Rejection: the "uniform" script loops ``while not random_aug(...)``, i.e.
redraws everything until at least 3 operators fire.  The "mild" script calls
``random_aug`` once and simply *skips* the copy when fewer than 2 fire (it
makes fewer than 10 copies for some images).  We always redraw; the
conditional distribution of an accepted draw is the same as in the original.

Random numbers come from a ``numpy.random.Generator`` instead of Python's
``random`` module, so the same distribution is reproduced but not the
original's exact random stream (which is unknowable anyway: the scripts are
unseeded).  ``U(a, b)`` is computed as ``a + (b - a) * rng.random()``, like
Python's ``random.uniform``.

Applying the operators
----------------------
Each operator maps a uint8 RGB image to a uint8 RGB image, exactly like the
original, which kept a PIL ``Image`` (uint8) between operators:

* contrast / saturation / brightness: ``PIL.ImageEnhance.Contrast`` /
  ``Color`` / ``Brightness`` (PIL itself is the reference, so results depend
  on the installed Pillow version; see ``library_versions``).
* temperature: the Tanner Helland kelvin -> RGB triple divided by 255 is used
  as per-channel gains through ``Image.convert("RGB", matrix)``, as the
  original does (Pillow rounds half up and clips).  The gains are *not*
  normalised to white, so e.g. 4000 K also darkens the green/blue channels.
* tone curve: ``skimage.color.rgb2lab`` on ``uint8 / 255``; ``L / 100`` is
  mapped by the normalised sigmoid
  ``(sig(w (x - 0.5)) - sig(-w/2)) / (sig(w/2) - sig(-w/2))``, times 100;
  ``lab2rgb``; times 255; **truncated** to uint8 (``astype('uint8')``, as the
  original).  Inferred: current scikit-image clips ``lab2rgb`` output to
  [0, 1]; the 2016 original relied on whatever its scikit-image did, and an
  unclipped out-of-range value would have wrapped around in ``astype``.  We
  clip to [0, 255] before truncating, which is the only sane reading.

Differences from the original pipeline
--------------------------------------
* The original saved every distorted copy as JPEG with PIL's default quality
  (75), named ``<basename>__<op>_<degree>_..._.jpg``.  This module returns
  arrays; the harness stores them losslessly (PNG), so JPEG artefacts of the
  original inputs are **not** reproduced.  ``ops_suffix`` rebuilds the
  original name suffix for logging.
* The original read JPEG files (``PIL.Image.open``); callers here pass decoded
  uint8 arrays (decode without colour management).
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

__all__ = [
    "VARIANTS",
    "OP_INDEX",
    "kelvin_to_rgb",
    "sigmoid_tone_curve",
    "draw_distortion",
    "apply_op",
    "apply_distortion",
    "distort",
    "ops_suffix",
    "library_versions",
]

# Original operator indices (used in the original file-name suffix).
OP_INDEX: Dict[str, int] = {
    "contrast": 0,
    "saturation": 1,
    "brightness": 2,
    "temperature": 3,
    "tone_curve": 4,
}
_OP_NAMES = ["contrast", "saturation", "brightness", "temperature", "tone_curve"]

# Per-variant constants of the two original scripts.
VARIANTS: Dict[str, Dict[str, Any]] = {
    "uniform": {
        "n_ops": 5,
        "min_ops": 3,
        "fire_threshold": 0.7,  # fires when U(0,1) > 0.7  ->  p = 0.3
        "factor_range": (0.2, 0.4),
        # (lower-extreme min, lower-extreme max, break point, upper min, upper max)
        "temperature": (4000, 5500, 6000, 6500, 8000),
        "tone_width": (5.0, 10.0),
    },
    "mild": {
        "n_ops": 4,
        "min_ops": 2,
        "fire_threshold": 0.7,
        "factor_range": (0.1, 0.2),
        "temperature": (5000, 5800, 6000, 6200, 7000),
        "tone_width": None,
    },
}


# --------------------------------------------------------------------------
# Colour temperature
# --------------------------------------------------------------------------
def kelvin_to_rgb(kelvin: float) -> Tuple[float, float, float]:
    """Tanner Helland's black-body approximation: kelvin -> (r, g, b) in [0, 255].

    Same piecewise fit and clamping as the original ``convert_K_to_RGB``
    (input clamped to [1000, 40000] K; values are floats, not rounded).
    """
    k = float(kelvin)
    k = min(max(k, 1000.0), 40000.0)
    t = k / 100.0

    def clamp(v: float) -> float:
        return 0.0 if v < 0.0 else 255.0 if v > 255.0 else v

    if t <= 66:
        red = 255.0
    else:
        red = clamp(329.698727446 * math.pow(t - 60.0, -0.1332047592))

    if t <= 66:
        green = clamp(99.4708025861 * math.log(t) - 161.1195681661)
    else:
        green = clamp(288.1221695283 * math.pow(t - 60.0, -0.0755148492))

    if t >= 66:
        blue = 255.0
    elif t <= 19:
        blue = 0.0
    else:
        blue = clamp(138.5177312231 * math.log(t - 10.0) - 305.0447927307)

    return float(red), float(green), float(blue)


def _map_temperature(draw: int, bounds: Sequence[float]) -> float:
    """Map the integer draw onto the two extremes, as the original scripts do."""
    lo_min, lo_max, mid, hi_min, hi_max = (float(b) for b in bounds)
    t = float(draw)
    if t < mid:
        return (t - lo_min) / (mid - lo_min) * (lo_max - lo_min) + lo_min
    return hi_max - (hi_max - t) / (hi_max - mid) * (hi_max - hi_min)


# --------------------------------------------------------------------------
# Tone curve
# --------------------------------------------------------------------------
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def sigmoid_tone_curve(L, width: float):
    """The original ``curve_sigmoid`` on Lab lightness ``L`` in [0, 100].

    ``x = L / 100``;  ``y = (sig(w (x - 0.5)) - sig(-w/2)) / (sig(w/2) - sig(-w/2))``;
    returns ``100 * y``.  Maps 0 -> 0, 100 -> 100, 50 -> 50 and is point
    symmetric about (50, 50): ``f(100 - L) = 100 - f(L)``.
    """
    w = float(width)
    x = np.asarray(L, dtype=np.float64) / 100.0
    top = 1.0 / (1.0 + math.exp(-w * 0.5))
    bottom = 1.0 / (1.0 + math.exp(w * 0.5))
    y = (_sigmoid(w * (x - 0.5)) - bottom) / (top - bottom)
    return y * 100.0


# --------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------
def _uniform(rng: np.random.Generator, a: float, b: float) -> float:
    return float(a + (b - a) * rng.random())


def _draw_once(rng: np.random.Generator, cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    ops: List[Dict[str, Any]] = []
    for i in range(cfg["n_ops"]):
        if not rng.random() > cfg["fire_threshold"]:
            continue
        name = _OP_NAMES[i]
        if name == "temperature":
            bounds = cfg["temperature"]
            draw = int(rng.integers(bounds[0], bounds[4], endpoint=True))
            ops.append({"op": name, "kelvin": _map_temperature(draw, bounds), "draw": draw})
        elif name == "tone_curve":
            lo, hi = cfg["tone_width"]
            ops.append({"op": name, "width": _uniform(rng, lo, hi)})
        else:
            sign = 1 if rng.random() < 0.5 else -1
            lo, hi = cfg["factor_range"]
            ops.append({"op": name, "factor": 1.0 + sign * _uniform(rng, lo, hi)})
    return ops


def draw_distortion(rng: np.random.Generator, variant: str = "uniform") -> List[Dict[str, Any]]:
    """Draw a random operator list (in application order) for ``variant``.

    Each element is a JSON-serialisable dict:
    ``{"op": "contrast"|"saturation"|"brightness", "factor": f}``,
    ``{"op": "temperature", "kelvin": k, "draw": t}``  (t: the integer drawn),
    ``{"op": "tone_curve", "width": w}``.
    Whole draws are repeated until at least ``min_ops`` operators fire.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    cfg = VARIANTS[variant]
    while True:
        ops = _draw_once(rng, cfg)
        if len(ops) >= cfg["min_ops"]:
            break
    order = rng.permutation(len(ops))
    return [ops[int(j)] for j in order]


# --------------------------------------------------------------------------
# Application
# --------------------------------------------------------------------------
def _check_rgb_uint8(img) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected uint8 RGB array HxWx3, got dtype={a.dtype} shape={a.shape}")
    return a


def _to_pil(a: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(a), "RGB")


def apply_op(img_uint8: np.ndarray, op: Dict[str, Any]) -> np.ndarray:
    """Apply one operator dict to a uint8 RGB array; returns a new uint8 RGB array."""
    from PIL import ImageEnhance

    a = _check_rgb_uint8(img_uint8)
    name = op.get("op")
    if name in ("contrast", "saturation", "brightness"):
        cls = {
            "contrast": ImageEnhance.Contrast,
            "saturation": ImageEnhance.Color,
            "brightness": ImageEnhance.Brightness,
        }[name]
        out = cls(_to_pil(a)).enhance(float(op["factor"]))
        return np.asarray(out, dtype=np.uint8).copy()
    if name == "temperature":
        r, g, b = kelvin_to_rgb(float(op["kelvin"]))
        matrix = (
            r / 255.0, 0.0, 0.0, 0.0,
            0.0, g / 255.0, 0.0, 0.0,
            0.0, 0.0, b / 255.0, 0.0,
        )
        out = _to_pil(a).convert("RGB", matrix)
        return np.asarray(out, dtype=np.uint8).copy()
    if name == "tone_curve":
        from skimage import color

        lab = color.rgb2lab(a.astype(np.float64) / 255.0)
        lab[..., 0] = sigmoid_tone_curve(lab[..., 0], float(op["width"]))
        rgb = color.lab2rgb(lab) * 255.0
        # truncation, as the original ``astype('uint8')``; clip first (see module doc)
        return np.clip(rgb, 0.0, 255.0).astype(np.uint8)
    raise ValueError(f"unknown operator {op!r}")


def apply_distortion(img_uint8: np.ndarray, ops: Sequence[Dict[str, Any]]) -> np.ndarray:
    """Apply ``ops`` in order; the image is uint8 between operators (as in the original)."""
    out = _check_rgb_uint8(img_uint8).copy()
    for op in ops:
        out = apply_op(out, op)
    return out


def distort(img_uint8: np.ndarray, seed: int, variant: str = "uniform") -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Draw operators from ``numpy.random.default_rng(seed)`` and apply them.

    Returns ``(distorted uint8 array, ops)``.
    """
    rng = np.random.default_rng(seed)
    ops = draw_distortion(rng, variant)
    return apply_distortion(img_uint8, ops), ops


def ops_suffix(ops: Sequence[Dict[str, Any]]) -> str:
    """The original file-name suffix, ``"%d_%.2f_"`` per operator (e.g. ``"0_0.73_3_7350.25_"``)."""
    parts = []
    for op in ops:
        name = op["op"]
        if name == "temperature":
            degree = op["kelvin"]
        elif name == "tone_curve":
            degree = op["width"]
        else:
            degree = op["factor"]
        parts.append("%d_%.2f_" % (OP_INDEX[name], float(degree)))
    return "".join(parts)


def library_versions() -> Dict[str, str]:
    """Versions of the libraries whose numerics define the output (log them with a build)."""
    import PIL
    import skimage

    return {"numpy": np.__version__, "Pillow": PIL.__version__, "scikit-image": skimage.__version__}


if __name__ == "__main__":  # pragma: no cover - tiny manual demo
    print(json.dumps(draw_distortion(np.random.default_rng(0)), indent=1))

"""The demo set's underexposure model: well-exposed 8-bit sRGB -> synthetic low-light capture.

Model (all steps per pixel and per channel, float64):

1. **Linearise** the 8-bit sRGB input with the exact sRGB EOTF (IEC 61966-2-1):
   ``c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4`` with ``c = v / 255``
   (evaluated once as a 256-entry lookup table).
2. **Exposure**: multiply by ``k`` (``"exposure"``), log-uniform in [0.03, 0.15].
3. **Sensor noise** in linear space (Poisson-Gaussian):
   ``electrons ~ Poisson(lin * k * full_well)``,
   ``noisy = electrons / full_well + read_noise * N(0, 1)``, clipped to [0, 1].
   ``full_well`` (photo-electrons at linear 1.0, i.e. the inverse gain) is
   log-uniform in [500, 4000]; ``read_noise`` (std, linear units) is uniform in
   [0.0005, 0.003].  The variance is therefore ``lin*k/full_well + read_noise**2``:
   it grows with the signal (shot noise) above a signal-independent floor.
   Noise is independent per pixel and per channel (no Bayer mosaic /
   demosaicking correlation, no dark current, no row noise, no PRNU).
4. **Camera tone curve** back to display space: the sRGB OETF
   ``y <= 0.0031308 ? 12.92 y : 1.055 y ** (1/2.4) - 0.055``, followed by a mild
   gamma jitter ``out = oetf(noisy) ** gamma`` with ``gamma`` uniform in
   [0.9, 1.1] (``gamma < 1`` lifts shadows slightly, ``> 1`` crushes them; the
   jitter imitates differences between camera tone curves).  Pass
   ``gamma_jitter=False`` to ``draw_underexposure`` for a pure sRGB curve
   (``gamma = 1``).
5. **8-bit quantisation** with rounding half up: ``floor(255 * out + 0.5)``.

Parameters are drawn in the fixed order exposure, full_well, read_noise,
gamma; the noise is drawn afterwards from the same Generator, Poisson first,
then Gaussian, each as one C-ordered array of the image's shape.

Reproducibility: ``underexpose(img, seed)`` uses ``numpy.random.default_rng(seed)``
(PCG64, platform independent).  The noise is drawn element by element in a fixed
order; nothing is multithreaded and there are no float reductions, so the output
bytes depend only on the seed, the input and the NumPy version (NumPy does not
promise identical ``Generator.poisson`` / ``normal`` streams across *major*
versions; log ``numpy.__version__`` with a build).  The only other possible
source of variation is a last-ulp difference of ``pow`` in the platform maths
library, which could change an output byte only for a value within one ulp of
a rounding boundary.

``demo_photos()`` lists real photographs that installed packages ship inside
their wheels (scikit-image's bundled ``skimage.data`` files and matplotlib's
sample data); no download is ever needed.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

__all__ = [
    "EXPOSURE_RANGE",
    "FULL_WELL_RANGE",
    "READ_NOISE_RANGE",
    "GAMMA_RANGE",
    "MODEL_NAME",
    "srgb_to_linear",
    "linear_to_srgb",
    "draw_underexposure",
    "add_sensor_noise",
    "apply_underexposure",
    "underexpose",
    "demo_photos",
]

MODEL_NAME = "poisson-gaussian-srgb/v1"
EXPOSURE_RANGE = (0.03, 0.15)  # log-uniform
FULL_WELL_RANGE = (500.0, 4000.0)  # log-uniform, electrons at linear 1.0
READ_NOISE_RANGE = (0.0005, 0.003)  # uniform, std in linear units
GAMMA_RANGE = (0.9, 1.1)  # uniform


# --------------------------------------------------------------------------
# sRGB transfer functions
# --------------------------------------------------------------------------
def srgb_to_linear(c):
    """Exact sRGB EOTF on values in [0, 1] (float64)."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((np.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(y):
    """Exact sRGB OETF (inverse EOTF) on values in [0, 1] (float64)."""
    y = np.asarray(y, dtype=np.float64)
    return np.where(y <= 0.0031308, 12.92 * y, 1.055 * np.maximum(y, 0.0031308) ** (1.0 / 2.4) - 0.055)


_LINEAR_LUT = srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0)


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------
def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * rng.random()))


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * rng.random())


def draw_underexposure(rng: np.random.Generator, gamma_jitter: bool = True) -> Dict[str, Any]:
    """Draw the model parameters; returns a JSON-serialisable dict.

    Keys: ``model``, ``exposure``, ``full_well``, ``read_noise``, ``gamma``.
    """
    exposure = _log_uniform(rng, *EXPOSURE_RANGE)
    full_well = _log_uniform(rng, *FULL_WELL_RANGE)
    read_noise = _uniform(rng, *READ_NOISE_RANGE)
    gamma = _uniform(rng, *GAMMA_RANGE) if gamma_jitter else 1.0
    return {
        "model": MODEL_NAME,
        "exposure": exposure,
        "full_well": full_well,
        "read_noise": read_noise,
        "gamma": gamma,
    }


def add_sensor_noise(linear: np.ndarray, full_well: float, read_noise: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Poisson-Gaussian noise on a linear signal in [0, 1]; returns float64 clipped to [0, 1]."""
    lin = np.ascontiguousarray(linear, dtype=np.float64)
    fw = float(full_well)
    electrons = rng.poisson(np.maximum(lin, 0.0) * fw)
    noisy = electrons / fw + float(read_noise) * rng.standard_normal(lin.shape)
    return np.clip(noisy, 0.0, 1.0)


def apply_underexposure(img_uint8: np.ndarray, params: Dict[str, Any],
                        rng: np.random.Generator) -> np.ndarray:
    """Apply the model with ``params`` (from ``draw_underexposure``); noise comes from ``rng``.

    Returns a uint8 array of the input's shape.
    """
    a = np.asarray(img_uint8)
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {a.dtype}")
    lin = _LINEAR_LUT[a] * float(params["exposure"])
    noisy = add_sensor_noise(lin, params["full_well"], params["read_noise"], rng)
    display = linear_to_srgb(noisy)
    gamma = float(params.get("gamma", 1.0))
    if gamma != 1.0:
        display = display ** gamma
    q = np.floor(display * 255.0 + 0.5)
    return np.clip(q, 0, 255).astype(np.uint8)


def underexpose(img_uint8: np.ndarray, seed: int, gamma_jitter: bool = True) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Seeded convenience: parameters then noise from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    params = draw_underexposure(rng, gamma_jitter=gamma_jitter)
    return apply_underexposure(img_uint8, params, rng), params


# --------------------------------------------------------------------------
# Bundled demo photographs
# --------------------------------------------------------------------------
def _as_rgb_uint8(x) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"not an RGB image: shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"not a uint8 image: dtype {a.dtype}")
    return np.ascontiguousarray(a[..., :3])


def _skimage_loader(name: str, index: int | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        out = getattr(skimage.data, name)()
        if index is not None:
            out = out[index]
        return _as_rgb_uint8(out)

    load.__name__ = f"load_skimage_{name}"
    return load


def _mpl_loader(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from matplotlib import cbook
        from PIL import Image

        path = cbook.get_sample_data(filename, asfileobj=False)
        with Image.open(path) as im:
            return _as_rgb_uint8(np.asarray(im.convert("RGB")))

    load.__name__ = f"load_mpl_{filename.rsplit('.', 1)[0]}"
    return load


def demo_photos() -> List[Tuple[str, Callable[[], np.ndarray]]]:
    """Named loaders of real RGB photographs shipped inside installed wheels (no network).

    Fixed order, stable IDs.  Each loader returns a uint8 RGB HxWx3 array.
    scikit-image files are the ones bundled in its wheel (resolved by
    ``skimage.data`` without pooch); matplotlib's come from its ``sample_data``.
    Left out on purpose: grayscale images, synthetic/graphic images (logo,
    colorwheel), ``hubble_deep_field`` (already a dark astronomical frame),
    ``retina`` (fundus photo, mostly black), the right half of the motorcycle
    stereo pair (same scene as the left) and matplotlib's 128x128 RGBA icon.
    ``immunohistochemistry`` is a bright-field microscope photograph.
    """
    return [
        ("skimage-astronaut", _skimage_loader("astronaut")),
        ("skimage-chelsea", _skimage_loader("chelsea")),
        ("skimage-coffee", _skimage_loader("coffee")),
        ("skimage-rocket", _skimage_loader("rocket")),
        ("skimage-motorcycle_left", _skimage_loader("stereo_motorcycle", 0)),
        ("skimage-immunohistochemistry", _skimage_loader("immunohistochemistry")),
        ("mpl-grace_hopper", _mpl_loader("grace_hopper.jpg")),
    ]

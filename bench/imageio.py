"""Reading and writing images: the one place that decides what a pixel is.

Reading policy (documented in the README, tested in tests/test_imageio.py):

* 8-bit RGB is returned as it is stored.
* JPEG/TIFF EXIF orientation is applied, so the array is what a viewer shows.
* An embedded ICC profile other than sRGB (e.g. ProPhoto RGB in FiveK exports) is converted to sRGB
  (perceptual intent) instead of being read as if it were sRGB.
* Grayscale (8- or 16-bit) is replicated to three channels; palette images are expanded to RGB.
* An alpha channel is dropped if it is fully opaque and refused otherwise (there is no right
  background to composite on).
* 16-bit grayscale is scaled to 8 bits with rounding (v / 257). 16-bit *colour* files are refused:
  Pillow would silently keep only the high byte, so the user is asked to convert them.
* Anything that does not decode completely (truncated, corrupt) is refused.
* ``bench data index``/``prepare`` decode every image this way and refuse one smaller than
  :data:`MIN_SIDE` (the SSIM window), so sizes are checked as runs read them.

Every refusal is a one-line ``BenchError`` naming the file.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps

from .errors import BenchError
from .fsutil import atomic_path

_SRGB = ImageCms.createProfile("sRGB")


def _is_srgb(profile_bytes: bytes) -> bool:
    try:
        desc = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile_bytes)))
    except (OSError, ImageCms.PyCMSError):
        return False
    return "srgb" in desc.lower() or "61966" in desc


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 26:
        return head[24]
    return None


def _bits_per_channel(img: Image.Image, path: Path) -> int:
    if img.format == "PNG":
        return _png_bit_depth(path) or 8
    if img.format == "TIFF":
        bps = img.tag_v2.get(258, (8,))
        return int(bps[0] if isinstance(bps, tuple) else bps)
    return 16 if img.mode.startswith("I;16") else 8


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` into an H×W×3 uint8 sRGB array, following the module's policy."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()
    except FileNotFoundError:
        raise BenchError(f"missing image {path}") from None
    except OSError as e:
        if e.errno is not None:  # the file itself cannot be read (a folder, a link loop, no permission)
            from .fsutil import os_reason

            raise BenchError(f"cannot read image {path}: {os_reason(e)}") from None
        raise BenchError(f"cannot decode image {path}: {e}") from None
    except Exception as e:  # Pillow raises many types for damaged files
        raise BenchError(f"cannot decode image {path}: {e}") from None

    bits = _bits_per_channel(img, path)
    icc = img.info.get("icc_profile")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as e:
        raise BenchError(f"cannot apply EXIF orientation of {path}: {e}") from None

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if bits > 8:
        raise BenchError(
            f"{path} has {bits}-bit colour channels; convert it to 8-bit RGB first "
            "(e.g. `convert IN -depth 8 OUT.png`), the harness does not guess a rounding"
        )
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA"):
        alpha = np.asarray(img.getchannel("A"))
        if alpha.min() < 255:
            raise BenchError(f"{path} has a transparent alpha channel; flatten it to RGB first")
        img = img.convert("RGB" if mode != "LA" else "L")
        mode = img.mode
    if mode in ("L", "1"):
        img = img.convert("RGB")
    elif mode == "CMYK" or (icc and not _is_srgb(icc)):
        if icc and not _is_srgb(icc):
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                img = ImageCms.profileToProfile(
                    img, src, _SRGB, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB"
                )
            except (OSError, ImageCms.PyCMSError) as e:
                raise BenchError(f"cannot convert the ICC profile of {path} to sRGB: {e}") from None
        else:
            img = img.convert("RGB")
    elif mode != "RGB":
        raise BenchError(f"{path} has unsupported image mode {mode}")
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise BenchError(f"{path} did not decode to 8-bit RGB (got {arr.dtype} {arr.shape})")
    return np.ascontiguousarray(arr)


#: the smallest side an image may have: the 11×11 window of SSIM (bench.metrics) must fit inside it
MIN_SIDE = 11


def check_min_size(path: str | os.PathLike, arr_or_size) -> None:
    """Refuse an image smaller than :data:`MIN_SIDE` on a side (``arr_or_size``: an H×W×C array or (W, H))."""
    if isinstance(arr_or_size, np.ndarray):
        h, w = arr_or_size.shape[:2]
    else:
        w, h = arr_or_size
    if min(h, w) < MIN_SIDE:
        raise BenchError(f"{path} is {w}x{h} pixels; images must be at least {MIN_SIDE}x{MIN_SIDE} "
                         f"(the SSIM window) to be scored")


def write_png(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Write an H×W×3 uint8 array as PNG, atomically (no metadata, so bytes depend on pixels only)."""
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"write_png needs H×W×3 uint8, got {arr.dtype} {arr.shape}")
    with atomic_path(path, "the image") as tmp:
        Image.fromarray(arr, "RGB").save(tmp, format="PNG", compress_level=6)


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 H×W×3 → float32 1×3×H×W in [0,1]."""
    return torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


#: 8-bit conversions (``bench run --quantize``): how each official test script turns floats into a PNG.
QUANTIZE_MODES = {
    "round": "clamp to [0,1], x255, round half to even (DSN's tensor2img; Zero-DCE, CSRNet, DRBN round too)",
    "truncate": "clamp to [0,1], x255, truncate toward zero (astype(uint8): the official test scripts of "
                "EnlightenGAN, RetinexNet, KinD, DeepLPF and HDRNet)",
}


def quantize(t: torch.Tensor, mode: str = "round") -> np.ndarray:
    """float 1×3×H×W → uint8 H×W×3 by ``mode`` (:data:`QUANTIZE_MODES`; default: round half to even, as the
    paper's tensor2img). Truncation lowers every value by half a level on average (≈ −0.5 level bias)."""
    if t.ndim != 4 or t.shape[0] != 1 or t.shape[1] != 3:
        raise ValueError(f"expected 1×3×H×W, got {tuple(t.shape)}")
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"unknown 8-bit conversion {mode!r}; choose {' or '.join(QUANTIZE_MODES)}")
    scaled = t.detach().float().clamp(0, 1).mul(255.0)
    q = (scaled.round() if mode == "round" else scaled.floor()).to(torch.uint8)
    return q[0].permute(1, 2, 0).cpu().numpy()


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Pad an N×C×H×W tensor at the bottom and right to a multiple of ``multiple`` (mirror reflection; edge
    replication where the image is too small to reflect). Returns the padded tensor and the original H and W."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w

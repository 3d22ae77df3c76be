"""DPE's fixed 512 x 512 canvas: resize to a 512-pixel long side, pad, crop back, resize back.

What the official code does (``PREPROCESSING.py`` / ``TF.py`` of the demo, ``DATA.py`` of the supervised
training code, ``random_pad_to_size`` and ``data_augmentation`` in ``FUNCTION.py``):

* an image whose long side is not 512 is resized so that it is: (round(h * s), round(w * s)) with
  s = 512 / max(h, w), by PIL ``ANTIALIAS`` (= Lanczos-3 with the support widened by the scale when shrinking);
  the training images of the official experiments were stored at that size beforehand;
* the resized image is padded to 512 x 512 by numpy ``"symmetric"`` padding (mirror with the edge pixel), at
  the bottom and right (``use_random=False``: official test and ``data_use_random_pad = False`` in training),
  and the rectangle ``[top, top + h, left, left + w]`` is kept;
* the network's output is cropped to that rectangle (the loss is computed on it as well).

The official code stops at 512 px. To score against the full-resolution ground truth this benchmark resizes
the cropped output back to the input size with the same filter (``resample="lanczos"``; ``"bicubic"`` is an
antialiased bicubic in torch, which stays on the GPU). Resizing is done in float (no 8-bit rounding in
between), see SOURCE.md.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .model import CANVAS, symmetric_pad

__all__ = ["RESAMPLERS", "canvas_shape", "resize", "resize_uint8", "to_canvas", "run_on_canvas", "dihedral"]

RESAMPLERS = ("lanczos", "bicubic")


def canvas_shape(h: int, w: int, size: int = CANVAS) -> tuple[int, int]:
    """The official ``get_normalize_size_shape_method``: long side -> ``size``, Python ``round`` on both sides
    (unchanged when the long side already is ``size``); at least 1 pixel."""
    if max(h, w) == size:
        return h, w
    s = float(size) / float(max(h, w))
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def _pil_resize_channels(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Lanczos (PIL ``ANTIALIAS``) resize of a C x H x W float32 array, channel by channel in PIL's float mode."""
    from PIL import Image

    out = np.empty((a.shape[0], h, w), dtype=np.float32)
    for c in range(a.shape[0]):
        out[c] = np.asarray(Image.fromarray(np.ascontiguousarray(a[c], dtype=np.float32))
                            .resize((w, h), Image.Resampling.LANCZOS))
    return out


def resize(x: torch.Tensor, size: tuple[int, int], method: str = "lanczos") -> torch.Tensor:
    """Resize an N x C x H x W float tensor to ``size`` = (h, w); identity when the size already matches."""
    h, w = size
    if tuple(x.shape[-2:]) == (h, w):
        return x
    if method == "bicubic":
        return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    if method != "lanczos":
        raise ValueError(f"unknown resampling {method!r}; choose one of {', '.join(RESAMPLERS)}")
    a = x.detach().to("cpu", torch.float32).numpy()
    out = np.stack([_pil_resize_channels(img, h, w) for img in a])
    return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def resize_uint8(img: np.ndarray, size: int = CANVAS, method: str = "lanczos") -> np.ndarray:
    """An H x W x 3 uint8 image resized to a ``size`` long side (training data preparation), rounded to uint8."""
    h, w = img.shape[:2]
    nh, nw = canvas_shape(h, w, size)
    if (nh, nw) == (h, w):
        return img
    t = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
    r = resize(t, (nh, nw), method)[0].permute(1, 2, 0).numpy()
    return np.clip(np.round(r * 255.0), 0, 255).astype(np.uint8)


def to_canvas(x: torch.Tensor, size: int = CANVAS, top: int = 0, left: int = 0) -> tuple[torch.Tensor, tuple]:
    """Symmetric-pad an N x C x h x w tensor (h, w <= size) to size x size with the image at (top, left).
    Returns the canvas and the rectangle (r0, r1, c0, c1)."""
    h, w = x.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"image {w}x{h} is larger than the {size}x{size} canvas; resize it first")
    if not (0 <= top <= size - h and 0 <= left <= size - w):
        raise ValueError(f"offset ({top}, {left}) does not fit a {w}x{h} image on the {size} canvas")
    canvas = symmetric_pad(x, top, size - h - top, left, size - w - left)
    return canvas, (top, top + h, left, left + w)


def run_on_canvas(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], size: int = CANVAS,
                  method: str = "lanczos") -> torch.Tensor:
    """The official test path plus the way back: resize (long side ``size``), pad bottom/right, ``fn``, crop
    the rectangle, resize back to the input's H x W."""
    h, w = x.shape[-2:]
    small = resize(x, canvas_shape(h, w, size), method)
    canvas, (r0, r1, c0, c1) = to_canvas(small, size)
    out = fn(canvas)[..., r0:r1, c0:c1]
    return resize(out, (h, w), method)


def dihedral(img: np.ndarray, number: int) -> np.ndarray:
    """The official ``data_augmentation`` for ``max_da = 8``: left-right flip when ``number`` is odd, then
    ``np.rot90`` by ``number // 2`` quarter turns (counter-clockwise)."""
    out = img if number % 2 == 0 else np.fliplr(img)
    return np.rot90(out, number // 2)

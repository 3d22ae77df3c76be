"""Inputs, targets and previews of White-Box (official ``fivek.py``, ``artist.py``, ``data_provider.py``,
``net.py: eval``).

* **Input linearisation.** The official model edits *linear* images (16-bit RAW in training); for 8-bit sRGB
  files its ``eval`` linearises with ``x^2.2`` and "mimics RAW exposure" by dividing by twice the maximum. The
  benchmark's inputs are sRGB (LOL low images, distorted FiveK), so both training inputs and test inputs go
  through that same ``linearize`` (training the official way on RAW is impossible here). The output is not
  re-encoded: the agent learns to produce target-looking (sRGB) values, as in the original.
* **Training inputs** (``FiveKDataProvider``): each image gives ``augmentation_factor`` (4) random squares of side
  min(H, W), each resized to ``main_size``² (80²) with area averaging (``cv2.INTER_AREA``); a batch takes random
  64×64 crops of them with a random left-right flip.
* **Targets** (``ArtistDataProvider``): the centre square, resized to 80² (area), then 4 random 64×64 crops with a
  random left-right flip; a batch flips them again with p = 0.5.
* Both providers walk a shuffled list of their images epoch by epoch (``DataProvider.get_next_batch_``).
* **Test preview**: the centre square of the linearised image resized to 64×64 bilinearly (``cv2.resize``
  default), while the chosen filters are replayed on the full image.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["linearize", "area_resize", "center_square", "preview", "FakeProvider", "RealProvider"]


def linearize(x: torch.Tensor | np.ndarray, gamma: float = 2.2, normalize: bool = True):
    """``x^gamma``, then divided by 2·max (the whole image's maximum), as ``net.py: eval`` does for sRGB files.
    An all-black image stays black."""
    if isinstance(x, np.ndarray):
        y = np.power(x.astype(np.float32), gamma)
        m = float(y.max())
        return y / (2.0 * m) if normalize and m > 0 else y
    y = torch.pow(x, gamma)
    if normalize:
        m = y.amax(dim=(1, 2, 3), keepdim=True)
        y = y / torch.where(m > 0, 2.0 * m, torch.ones_like(m))
    return y


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """1-D area-averaging weights (n_out × n_in): output i averages input [i·s, (i+1)·s), s = n_in / n_out."""
    s = n_in / n_out
    w = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        a, b = i * s, (i + 1) * s
        for j in range(int(np.floor(a)), min(n_in, int(np.ceil(b)))):
            w[i, j] = max(0.0, min(b, j + 1) - max(a, j))
    return w / s


def area_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """H×W×C float image -> out_h×out_w×C by area averaging (``cv2.INTER_AREA`` when shrinking); bilinear
    (half-pixel centres) when enlarging, as INTER_AREA does."""
    h, w = img.shape[:2]
    if out_h > h or out_w > w:
        t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
        t = F.interpolate(t, size=(out_h, out_w), mode="bilinear", align_corners=False)
        return t[0].permute(1, 2, 0).numpy()
    wh, ww = _area_matrix(h, out_h), _area_matrix(w, out_w)
    x = img.astype(np.float64)
    out = np.tensordot(wh, x, axes=(1, 0))                 # out_h × W × C
    out = np.tensordot(ww, out, axes=(1, 1)).transpose(1, 0, 2)   # out_h × out_w × C
    return np.ascontiguousarray(out, dtype=np.float32)


def center_square(img):
    """``util.get_image_center``: the centred square of side min(H, W) (numpy H×W×C or tensor N×C×H×W)."""
    if isinstance(img, np.ndarray):
        h, w = img.shape[:2]
        if h > w:
            s = (h - w) // 2
            return img[s:s + w]
        if w > h:
            s = (w - h) // 2
            return img[:, s:s + h]
        return img
    h, w = img.shape[-2:]
    if h > w:
        s = (h - w) // 2
        return img[..., s:s + w, :]
    if w > h:
        s = (w - h) // 2
        return img[..., s:s + h]
    return img


def preview(lin: torch.Tensor, size: int = 64) -> torch.Tensor:
    """The agent's input at test time: ``cv2.resize(get_image_center(image), (64, 64))`` (bilinear)."""
    return F.interpolate(center_square(lin), size=(size, size), mode="bilinear", align_corners=False)


class _Provider:
    """Epoch-wise shuffled walk over ``self.data`` (K×h×w×3 float32) with crop + flip augmentation."""

    def __init__(self, data: np.ndarray, output_size: int, rng: random.Random):
        self.data, self.output_size, self.rng = data, int(output_size), rng
        self.indices = list(range(len(data)))
        self.rng.shuffle(self.indices)

    def _augment(self, img: np.ndarray) -> np.ndarray:
        s = self.output_size
        sx = self.rng.randrange(0, img.shape[0] - s + 1)
        sy = self.rng.randrange(0, img.shape[1] - s + 1)
        img = img[sx:sx + s, sy:sy + s]
        if self.rng.random() < 0.5:
            img = img[:, ::-1]
        return img

    def next_batch(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        batch: list[int] = []
        while len(batch) < n:
            k = min(len(self.indices), n - len(batch))
            batch += self.indices[:k]
            self.indices = self.indices[k:]
            if not self.indices:
                self.indices = list(range(len(self.data)))
                self.rng.shuffle(self.indices)
        imgs = np.stack([self._augment(self.data[i]) for i in batch])
        return torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).contiguous().to(device)

    def state_dict(self) -> dict[str, Any]:
        st = self.rng.getstate()
        return {"rng": [st[0], list(st[1]), st[2]], "indices": list(self.indices)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        r = state["rng"]
        self.rng.setstate((r[0], tuple(int(v) for v in r[1]), r[2]))
        self.indices = [int(i) for i in state["indices"]]


class FakeProvider(_Provider):
    """Training inputs: ``augmentation_factor`` random squares per (linearised) image at ``main_size``²."""

    def __init__(self, images: Sequence[np.ndarray], rng: random.Random, main_size: int = 80, crop: int = 64,
                 augmentation_factor: int = 4):
        data = []
        for img in images:
            side = min(img.shape[:2])
            for _ in range(augmentation_factor):
                sx = rng.randrange(0, img.shape[0] - side + 1)
                sy = rng.randrange(0, img.shape[1] - side + 1)
                data.append(area_resize(img[sx:sx + side, sy:sy + side], main_size, main_size))
        super().__init__(np.stack(data), crop, rng)


class RealProvider(_Provider):
    """Targets: the centre square at ``main_size``², ``augmentation_factor`` pre-cut random crops with flips."""

    def __init__(self, images: Sequence[np.ndarray], rng: random.Random, main_size: int = 80, crop: int = 64,
                 augmentation_factor: int = 4):
        data = []
        for img in images:
            sq = area_resize(center_square(img), main_size, main_size)
            for _ in range(augmentation_factor):
                new = sq[:, ::-1] if rng.random() < 0.5 else sq
                sx, sy = rng.randrange(main_size - crop + 1), rng.randrange(main_size - crop + 1)
                data.append(np.ascontiguousarray(new[sx:sx + crop, sy:sy + crop]))
        super().__init__(np.stack(data), crop, rng)

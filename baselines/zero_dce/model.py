"""DCE-Net and the quadratic light-enhancement (LE) curve of Zero-DCE.

DCE-Net (official ``enhance_net_nopool``): seven 3×3 convolutions with 32 channels, stride 1, padding 1, bias,
ReLU after the first six, no normalisation and no down-sampling. Layers 5, 6 and 7 take symmetric
concatenations of earlier features (x3‖x4, x2‖x5, x1‖x6). The seventh layer has 24 outputs through tanh:
8 curve-parameter maps A_n of 3 channels each, one per iteration. Each iteration applies

    LE(x; A) = x + A · x · (1 − x)

(the official code writes ``x + r·(x² − x)`` with r = −A; both are the same curve family because tanh is odd
and the last layer is linear, so the sign only relabels the learnt weights). We use the code's form so the
parameters of an official state dict mean the same here.

Layer names (``e_conv1`` … ``e_conv7``) follow the official module so its state dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DCENet", "le_curve", "apply_curves", "init_official", "N_ITER", "WIDTH"]

N_ITER = 8
WIDTH = 32


def le_curve(x: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """The paper's LE curve (eq. 1): LE(x; α) = x + α·x·(1 − x); α ∈ [−1, 1] keeps [0, 1] inside [0, 1]."""
    return x + alpha * x * (1.0 - x)


def apply_curves(x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Apply ``maps.shape[1] // 3`` iterations in order, in the official code's form x ← x + r·(x² − x)
    (= LE(x; −r)); ``maps`` is N×3n×H×W, the n per-iteration maps stacked along channels."""
    if maps.shape[1] % 3:
        raise ValueError(f"curve maps must have a multiple of 3 channels, got {maps.shape[1]}")
    for r in torch.split(maps, 3, dim=1):
        x = x + r * (x * x - x)
    return x


class DCENet(nn.Module):
    """The 7-layer DCE-Net; ``forward`` returns (image after 4 iterations, final image, the 24 curve maps)."""

    def __init__(self, width: int = WIDTH, iterations: int = N_ITER):
        super().__init__()
        self.iterations = int(iterations)
        w = int(width)
        self.e_conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=True)
        self.e_conv2 = nn.Conv2d(w, w, 3, 1, 1, bias=True)
        self.e_conv3 = nn.Conv2d(w, w, 3, 1, 1, bias=True)
        self.e_conv4 = nn.Conv2d(w, w, 3, 1, 1, bias=True)
        self.e_conv5 = nn.Conv2d(2 * w, w, 3, 1, 1, bias=True)
        self.e_conv6 = nn.Conv2d(2 * w, w, 3, 1, 1, bias=True)
        self.e_conv7 = nn.Conv2d(2 * w, 3 * self.iterations, 3, 1, 1, bias=True)

    def curve_maps(self, x: torch.Tensor) -> torch.Tensor:
        f1 = F.relu(self.e_conv1(x))
        f2 = F.relu(self.e_conv2(f1))
        f3 = F.relu(self.e_conv3(f2))
        f4 = F.relu(self.e_conv4(f3))
        f5 = F.relu(self.e_conv5(torch.cat([f3, f4], 1)))
        f6 = F.relu(self.e_conv6(torch.cat([f2, f5], 1)))
        return torch.tanh(self.e_conv7(torch.cat([f1, f6], 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maps = self.curve_maps(x)
        half = 3 * (self.iterations // 2)
        mid = apply_curves(x, maps[:, :half])
        out = apply_curves(mid, maps[:, half:])
        return mid, out, maps


def init_official(model: nn.Module, std: float = 0.02) -> None:
    """The official ``weights_init``: every conv weight ~ N(0, std); biases keep PyTorch's default init."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            with torch.no_grad():
                m.weight.normal_(0.0, std)

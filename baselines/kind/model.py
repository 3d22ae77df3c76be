"""The three KinD networks as the official TensorFlow graph (``model.py`` of zhangyhuaee/KinD) builds them.

TF details reproduced:

- ``slim.conv2d`` = 3×3 (or 1×1) convolution with "SAME" zero padding, bias, Glorot-uniform kernel and zero
  bias (the slim defaults); ``lrelu(x) = max(0.2 x, x)``.
- ``slim.max_pool2d([2, 2], stride 2, 'SAME')``: for an odd size TF pads at the bottom/right and ignores the
  padding, which is ``MaxPool2d(2, 2, ceil_mode=True)``.
- ``upsample_and_concat``: a bias-free 2×2 stride-2 ``conv2d_transpose`` (kernel from ``tf.get_variable``:
  Glorot uniform) to the skip tensor's size, then ``concat([deconv, skip])``. For an odd skip size TF's "SAME"
  transposed convolution drops the *last* row/column of the 2× output, so we crop ``[:H, :W]``.

Any input size works (odd included), as the official evaluation feeds whole images.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DecomNet", "RestorationNet", "AdjustNet", "KinDModel", "DECOM_PARAMS", "RESTORATION_PARAMS",
           "ADJUST_PARAMS", "TOTAL_PARAMS", "lrelu"]

# baselines.md §7 (computed from the TF graph): 235,876 + 7,760,739 + 19,393 = 8,016,008
DECOM_PARAMS = 235_876
RESTORATION_PARAMS = 7_760_739
ADJUST_PARAMS = 19_393
TOTAL_PARAMS = DECOM_PARAMS + RESTORATION_PARAMS + ADJUST_PARAMS


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """The official ``tf.maximum(x * 0.2, x)``."""
    return F.leaky_relu(x, 0.2)


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)
    nn.init.xavier_uniform_(conv.weight)   # slim.conv2d: xavier_initializer (uniform)
    nn.init.zeros_(conv.bias)
    return conv


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, 2, ceil_mode=True)


class UpConcat(nn.Module):
    """``upsample_and_concat``: bias-free 2×2 stride-2 transposed conv to ``skip``'s size, then [up, skip]."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False)
        nn.init.xavier_uniform_(self.deconv.weight)   # tf.get_variable's default glorot_uniform

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.deconv(x)[..., : skip.shape[-2], : skip.shape[-1]]
        return torch.cat([up, skip], dim=1)


class DecomNet(nn.Module):
    """``DecomNet_simple``: image S → reflectance R (3 ch, sigmoid) and illumination I (1 ch, sigmoid)."""

    def __init__(self):
        super().__init__()
        self.conv1 = _conv(3, 32)
        self.conv2 = _conv(32, 64)
        self.conv3 = _conv(64, 128)
        self.up1 = UpConcat(128, 64)
        self.conv8 = _conv(128, 64)
        self.up2 = UpConcat(64, 32)
        self.conv9 = _conv(64, 32)
        self.conv10 = _conv(32, 3, 1)     # "1×1 instead of the paper's 3×3" (official comment)
        self.l_conv2 = _conv(32, 32)
        self.l_conv4 = _conv(64, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c1 = lrelu(self.conv1(x))
        c2 = lrelu(self.conv2(_pool(c1)))
        c3 = lrelu(self.conv3(_pool(c2)))
        c8 = lrelu(self.conv8(self.up1(c3, c2)))
        c9 = lrelu(self.conv9(self.up2(c8, c1)))
        r = torch.sigmoid(self.conv10(c9))
        l2 = lrelu(self.l_conv2(c1))
        i = torch.sigmoid(self.l_conv4(torch.cat([l2, c9], dim=1)))
        return r, i


class RestorationNet(nn.Module):
    """``Restoration_net``: U-Net 32→512 on [R_low, I_low] (4 ch) → restored reflectance (3 ch, sigmoid)."""

    widths = (32, 64, 128, 256, 512)

    def __init__(self):
        super().__init__()
        w = self.widths
        self.enc = nn.ModuleList()
        cin = 4
        for c in w:
            self.enc.append(nn.ModuleList([_conv(cin, c), _conv(c, c)]))
            cin = c
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for c in reversed(w[:-1]):          # 256, 128, 64, 32
            self.up.append(UpConcat(cin, c))
            self.dec.append(nn.ModuleList([_conv(2 * c, c), _conv(c, c)]))
            cin = c
        self.out = _conv(w[0], 3)

    def forward(self, r: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        x = torch.cat([r, i], dim=1)
        skips = []
        for level, (a, b) in enumerate(self.enc):
            if level > 0:
                x = _pool(x)
            x = lrelu(b(lrelu(a(x))))
            skips.append(x)
        skips.pop()                          # the bottleneck (conv5) is not a skip
        for up, (a, b) in zip(self.up, self.dec):
            x = up(x, skips.pop())
            x = lrelu(b(lrelu(a(x))))
        return torch.sigmoid(self.out(x))


class AdjustNet(nn.Module):
    """``Illumination_adjust_net``: 4 × 3×3 conv on [I, ratio map]; the last conv keeps its lrelu before the
    sigmoid, as in the official graph."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([_conv(2, 32), _conv(32, 32), _conv(32, 32), _conv(32, 1)])

    def forward(self, i: torch.Tensor, ratio_map: torch.Tensor) -> torch.Tensor:
        x = torch.cat([i, ratio_map], dim=1)
        for conv in self.convs:
            x = lrelu(conv(x))
        return torch.sigmoid(x)


class KinDModel(nn.Module):
    """Holds the three nets (everything trainable); ``forward`` is the plain official composition."""

    def __init__(self):
        super().__init__()
        self.decom = DecomNet()
        self.restore = RestorationNet()
        self.adjust = AdjustNet()

    def forward(self, low: torch.Tensor, ratio: float | torch.Tensor) -> torch.Tensor:
        """R_restored ⊙ I_adjusted for a constant ratio map (``low`` already normalised as the official loader)."""
        r, i = self.decom(low)
        ratio_map = torch.as_tensor(ratio, dtype=i.dtype, device=i.device).reshape(-1, 1, 1, 1).expand_as(i)
        return self.restore(r, i) * self.adjust(i, ratio_map)

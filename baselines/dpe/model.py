"""The paired DPE generator ("global U-Net"), rebuilt in PyTorch from the official TensorFlow graph.

Source: the ``NetInfo('netG')`` layer list of the official supervised code (experiment 604,
"WGAN-v25-supervised", ``DATA.py``) and the demo generator (mirrored in ``mtics/deep-photo-enhancer/DATA.py``),
executed by the official ``CONVNET.py``/``MODEL.py``. Layer by layer, on the fixed 512 x 512 canvas:

* every conv pads (k-1)//2 pixels by TF ``"SYMMETRIC"`` padding (mirror *with* the edge pixel, numpy's
  ``"symmetric"``) and then convolves ``"VALID"``; weights ``variance_scaling_initializer(1e-3)`` (truncated
  normal, std sqrt(1.3e-3 / fan_in), cut at 2 std), zero biases;
* "act" = the official SELU variant ``scale * where(x >= 0, x, alpha * elu(x))`` with (alpha, scale) =
  (1.0198755295894968, 1.0026538655307724) -- *not* the standard SELU constants -- followed by batch
  normalisation with trainable offset and scale (eps 1e-5, moving-average decay 0.9, batch statistics over
  N, H, W while training, the moving averages at test time);
* encoder: 3x3 conv 16 (512), act; 5x5 stride-2 convs 32 (256), 64 (128), 128 (64), 128 (32), each + act;
* global branch (from the 32x32x128 features): two 5x5 stride-2 convs 128 + act (16, 8), an 8x8 VALID conv
  128 + SELU (1x1), a 1x1 conv 128 -> the global feature vector;
* local branch: 3x3 conv 128 on the 32x32x128 features (no activation), the global vector **tiled to every
  position** and concatenated after it (256 ch), 1x1 conv 128, act;
* decoder: four times (3x3 conv, nearest x2 upsampling, concatenation of the encoder's *pre-activation* conv
  output at that size, act): 128 (+128 from the 64x64 conv), 128 (+64), 64 (+32), 32 (+16); then 3x3 conv 16
  + act, 3x3 conv 3, plus the input (residual). No output clipping inside the network (the official graph
  has its ``clip_layer`` commented out; the test code clips when casting to 8 bits).

Parameters: **3,335,395** (baselines.md §9). The 8x8 VALID conv needs an 8x8 map, i.e. exactly a 512 x 512
input: see ``canvas.py`` for the resize/pad/crop around it.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DPESELU", "SELU_ALPHA", "SELU_SCALE", "symmetric_pad", "SymConv", "DPEGenerator", "CANVAS",
           "init_variance_scaling"]

CANVAS = 512
SELU_ALPHA = 1.0198755295894968
SELU_SCALE = 1.0026538655307724


class DPESELU(nn.Module):
    """The official SELU variant: ``scale * (x if x >= 0 else alpha * (exp(x) - 1))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SELU_SCALE * torch.where(x >= 0, x, SELU_ALPHA * torch.expm1(torch.clamp(x, max=0.0)))


def _symmetric_index(n: int, before: int, after: int, device) -> torch.Tensor:
    """Source indices of numpy's ``np.pad(mode="symmetric")`` along one axis, any pad width (pads wider than the
    axis repeat the mirror periodically with period 2n, as numpy's iterated padding does)."""
    i = torch.arange(-before, n + after, device=device)
    j = torch.remainder(i, 2 * n)
    return torch.where(j >= n, 2 * n - 1 - j, j)


def symmetric_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """TF ``"SYMMETRIC"`` / numpy ``"symmetric"`` padding of the last two axes (edge pixel repeated)."""
    if not (top or bottom or left or right):
        return x
    h, w = x.shape[-2:]
    if top or bottom:
        x = x.index_select(-2, _symmetric_index(h, top, bottom, x.device))
    if left or right:
        x = x.index_select(-1, _symmetric_index(w, left, right, x.device))
    return x


class SymConv(nn.Conv2d):
    """A TF ``conv_layer`` of the official code: symmetric padding of (k-1)//2 (or none), then a VALID conv."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, pad: bool = True):
        super().__init__(cin, cout, k, stride=stride, padding=0)
        self.pad = (k - 1) // 2 if pad else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        return super().forward(symmetric_pad(x, p, p, p, p) if p else x)


def _bn(c: int) -> nn.BatchNorm2d:
    # TF: moving = moving * 0.9 + batch * 0.1  <->  torch momentum 0.1
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


class DPEGenerator(nn.Module):
    """The official paired generator. ``forward`` needs N x 3 x 512 x 512 (see module docstring)."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.act = DPESELU()
        # encoder (TF tensors 1, 4, 7, 10, 13 are these convs' outputs; 15 is enc4 after act)
        self.enc0 = SymConv(channels, 16, 3)
        self.enc1 = SymConv(16, 32, 5, 2)
        self.enc2 = SymConv(32, 64, 5, 2)
        self.enc3 = SymConv(64, 128, 5, 2)
        self.enc4 = SymConv(128, 128, 5, 2)
        self.bn_enc = nn.ModuleList([_bn(16), _bn(32), _bn(64), _bn(128), _bn(128)])
        # global branch
        self.glob1 = SymConv(128, 128, 5, 2)
        self.glob2 = SymConv(128, 128, 5, 2)
        self.bn_glob = nn.ModuleList([_bn(128), _bn(128)])
        self.glob3 = SymConv(128, 128, 8, pad=False)     # 8x8 VALID -> 1x1
        self.glob4 = SymConv(128, 128, 1, pad=False)
        # local branch + fusion with the tiled global vector
        self.local = SymConv(128, 128, 3)
        self.fuse = SymConv(256, 128, 1)
        self.bn_fuse = _bn(128)
        # decoder
        self.dec1 = SymConv(128, 128, 3)                  # -> up -> cat enc3 (128) = 256
        self.dec2 = SymConv(256, 128, 3)                  # -> up -> cat enc2 (64)  = 192
        self.dec3 = SymConv(192, 64, 3)                   # -> up -> cat enc1 (32)  = 96
        self.dec4 = SymConv(96, 32, 3)                    # -> up -> cat enc0 (16)  = 48
        self.bn_dec = nn.ModuleList([_bn(256), _bn(192), _bn(96), _bn(48)])
        self.dec5 = SymConv(48, 16, 3)
        self.bn_dec5 = _bn(16)
        self.out = SymConv(16, channels, 3)
        init_variance_scaling(self)

    def global_feature(self, f32: torch.Tensor) -> torch.Tensor:
        """The N x 128 x 1 x 1 global vector from the 32x32 encoder features."""
        g = self.bn_glob[0](self.act(self.glob1(f32)))
        g = self.bn_glob[1](self.act(self.glob2(g)))
        if g.shape[-2:] != (8, 8):
            raise ValueError(f"DPE's global branch needs an 8x8 map (a {CANVAS}x{CANVAS} input), got "
                             f"{tuple(g.shape[-2:])}")
        return self.glob4(self.act(self.glob3(g)))

    @staticmethod
    def tile_concat(local: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        """Concatenate the global vector, tiled to every position, after the local features."""
        return torch.cat((local, glob.expand(-1, -1, *local.shape[-2:])), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        t = x
        for conv, bn in zip((self.enc0, self.enc1, self.enc2, self.enc3, self.enc4), self.bn_enc):
            t = conv(t)
            skips.append(t)                               # pre-activation outputs (TF tensors 1, 4, 7, 10)
            t = bn(self.act(t))
        f32 = t                                           # TF tensor 15: 32x32x128
        glob = self.global_feature(f32)
        t = self.tile_concat(self.local(f32), glob)
        t = self.bn_fuse(self.act(self.fuse(t)))
        for conv, bn, skip in zip((self.dec1, self.dec2, self.dec3, self.dec4), self.bn_dec,
                                  (skips[3], skips[2], skips[1], skips[0])):
            t = F.interpolate(conv(t), scale_factor=2, mode="nearest")
            t = bn(self.act(torch.cat((t, skip), 1)))
        t = self.bn_dec5(self.act(self.dec5(t)))
        return self.out(t) + x


@torch.no_grad()
def init_variance_scaling(model: nn.Module, factor: float = 1e-3) -> None:
    """``tf.contrib.layers.variance_scaling_initializer(factor)`` (mode FAN_IN, normal): truncated normal with
    std sqrt(1.3 * factor / fan_in), cut at 2 std, for every conv kernel; zero biases. BN: scale 1, offset 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * math.prod(m.kernel_size)
            std = math.sqrt(1.3 * factor / fan_in)
            nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

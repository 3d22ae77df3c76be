"""RetinexNet networks, rebuilt in PyTorch from the official TensorFlow graph (weichen582/RetinexNet, model.py).

DecomNet
    input = [max_c(S), S]  (4 channels, the max channel *first*, as the official ``concat([input_max, input_im])``)
    -> 9x9 conv 64 (no activation, "shallow_feature_extraction")
    -> 5 x (3x3 conv 64 + ReLU)  ("activated_layer_0..4")
    -> 3x3 conv 4 ("recon_layer") -> sigmoid; channels 0..2 = reflectance R, channel 3 = illumination I.

RelightNet (the paper's Enhance-Net)
    input = [R, I] (4 channels, R first) -> conv0 3x3 64 (no activation)
    -> conv1..3: 3x3 stride-2 conv 64 + ReLU (TensorFlow "SAME" padding: for an even size the single
       padding pixel goes to the bottom/right, which PyTorch's symmetric ``padding=1`` would not reproduce)
    -> deconv1..3: nearest-neighbour resize to the skip's size, 3x3 conv 64 + ReLU, plus the skip
       (conv2, conv1, conv0)
    -> deconv1 and deconv2 resized (nearest) to full size, concatenated with deconv3 (192 channels)
    -> 1x1 conv 64 (no activation) -> 3x3 conv 1 (no activation): the adjusted illumination Î.

Every convolution of the official graph is ``tf.layers.conv2d`` with its defaults: zero "SAME" padding, a
bias, Glorot-uniform kernels and zero biases, which is how ``reset_parameters`` initialises them here.
TensorFlow's ``resize_nearest_neighbor`` (align_corners=False, half_pixel_centers=False) picks source index
floor(dst * in / out), which is what ``F.interpolate(mode="nearest")`` does.

Trainable parameters: DecomNet 207,748 + RelightNet 236,865 = 444,613 (``shared/notes/baselines.md`` §2).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DecomNet", "RelightNet", "RetinexNetModel", "tf_same_pad", "DECOM_PARAMS", "RELIGHT_PARAMS"]

DECOM_PARAMS = 207_748
RELIGHT_PARAMS = 236_865


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad ``x`` (N×C×H×W) the way TensorFlow's ``padding='SAME'`` does for this kernel and stride:
    output size ceil(in / stride), total padding max((out-1)*stride + kernel - in, 0), the smaller half first."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dimension first
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _glorot_zero(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class DecomNet(nn.Module):
    def __init__(self, channels: int = 64, kernel: int = 3, layers: int = 5):
        super().__init__()
        self.shallow = nn.Conv2d(4, channels, kernel * 3, padding=(kernel * 3) // 2)
        self.activated = nn.ModuleList(nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
                                       for _ in range(layers))
        self.recon = nn.Conv2d(channels, 4, kernel, padding=kernel // 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot_zero(self)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([image.amax(dim=1, keepdim=True), image], dim=1)
        x = self.shallow(x)
        for conv in self.activated:
            x = F.relu(conv(x))
        x = torch.sigmoid(self.recon(x))
        return x[:, 0:3], x[:, 3:4]


class RelightNet(nn.Module):
    def __init__(self, channels: int = 64, kernel: int = 3):
        super().__init__()
        self.kernel = kernel
        self.conv0 = nn.Conv2d(4, channels, kernel, padding=kernel // 2)
        self.down = nn.ModuleList(nn.Conv2d(channels, channels, kernel, stride=2) for _ in range(3))
        self.up = nn.ModuleList(nn.Conv2d(channels, channels, kernel, padding=kernel // 2) for _ in range(3))
        self.fusion = nn.Conv2d(3 * channels, channels, 1)
        self.output = nn.Conv2d(channels, 1, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot_zero(self)

    def forward(self, illumination: torch.Tensor, reflectance: torch.Tensor) -> torch.Tensor:
        conv0 = self.conv0(torch.cat([reflectance, illumination], dim=1))
        skips = [conv0]
        x = conv0
        for conv in self.down:                         # conv1, conv2, conv3
            x = F.relu(conv(tf_same_pad(x, self.kernel, 2)))
            skips.append(x)
        decoded = []
        for conv, skip in zip(self.up, reversed(skips[:-1])):   # deconv1 (+conv2), deconv2 (+conv1), deconv3 (+conv0)
            x = F.relu(conv(F.interpolate(x, size=skip.shape[-2:], mode="nearest"))) + skip
            decoded.append(x)
        full = decoded[-1].shape[-2:]
        gathered = torch.cat([F.interpolate(decoded[0], size=full, mode="nearest"),
                              F.interpolate(decoded[1], size=full, mode="nearest"), decoded[2]], dim=1)
        return self.output(self.fusion(gathered))


class RetinexNetModel(nn.Module):
    """Both networks; ``forward(low)`` returns the official test output S = R_low * Î (unclipped)."""

    def __init__(self):
        super().__init__()
        self.decom = DecomNet()
        self.relight = RelightNet()

    @staticmethod
    def compose(reflectance: torch.Tensor, illumination: torch.Tensor) -> torch.Tensor:
        """R ∘ I with the 1-channel illumination replicated to 3 channels (``concat([I, I, I])``)."""
        return reflectance * illumination.expand(-1, 3, -1, -1)

    def decompose(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decom(image)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        r_low, i_low = self.decom(low)
        return self.compose(r_low, self.relight(i_low, r_low))

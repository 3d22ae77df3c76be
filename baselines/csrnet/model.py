"""CSRNet as the official ``CSRNet_arch.py`` builds it.

Condition network: three convolutions with stride 2 (7×7 3→32, then 3×3 32→32 twice), each applied after a
1-pixel zero pad and followed by ReLU, then a global average pool to a 32-d condition vector. (No dropout in the
released code.)

Base network: three 1×1 convolutions 3→64→64→3, i.e. the same MLP applied to every pixel. After each one, global
feature modulation (GFM) with a per-channel scale γ and shift β, each a linear map of the condition vector:
y ← y·γ + β + y = y·(1 + γ) + β; ReLU after the first two. With γ = β = 0 the network *is* the plain per-pixel MLP.

Module names follow the official code so its state dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Condition", "CSRNet", "MIN_SIZE"]


#: smallest image side the condition network accepts (its 7×7 conv needs 7 pixels after the 1-pixel pad)
MIN_SIZE = 5


class Condition(nn.Module):
    def __init__(self, in_nc: int = 3, nf: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(in_nc, nf, 7, 2, 0, bias=True)
        self.conv2 = nn.Conv2d(nf, nf, 3, 2, 0, bias=True)
        self.conv3 = nn.Conv2d(nf, nf, 3, 2, 0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.relu(conv(F.pad(x, (1, 1, 1, 1))))
        return x.mean(dim=(2, 3))


class CSRNet(nn.Module):
    def __init__(self, in_nc: int = 3, out_nc: int = 3, base_nf: int = 64, cond_nf: int = 32):
        super().__init__()
        self.base_nf, self.out_nc = int(base_nf), int(out_nc)
        self.cond_net = Condition(in_nc, cond_nf)
        self.cond_scale1 = nn.Linear(cond_nf, base_nf, bias=True)
        self.cond_scale2 = nn.Linear(cond_nf, base_nf, bias=True)
        self.cond_scale3 = nn.Linear(cond_nf, out_nc, bias=True)
        self.cond_shift1 = nn.Linear(cond_nf, base_nf, bias=True)
        self.cond_shift2 = nn.Linear(cond_nf, base_nf, bias=True)
        self.cond_shift3 = nn.Linear(cond_nf, out_nc, bias=True)
        self.conv1 = nn.Conv2d(in_nc, base_nf, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(base_nf, base_nf, 1, 1, bias=True)
        self.conv3 = nn.Conv2d(base_nf, out_nc, 1, 1, bias=True)

    @staticmethod
    def gfm(y: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """Global feature modulation: y·(1 + scale) + shift, scale/shift N×C broadcast over the pixels."""
        n, c = scale.shape
        return y * scale.view(n, c, 1, 1) + shift.view(n, c, 1, 1) + y

    def modulations(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cond = self.cond_net(x)
        return [(self.cond_scale1(cond), self.cond_shift1(cond)), (self.cond_scale2(cond), self.cond_shift2(cond)),
                (self.cond_scale3(cond), self.cond_shift3(cond))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (s1, b1), (s2, b2), (s3, b3) = self.modulations(x)
        y = F.relu(self.gfm(self.conv1(x), s1, b1))
        y = F.relu(self.gfm(self.conv2(y), s2, b2))
        return self.gfm(self.conv3(y), s3, b3)

"""The DRBN stage-1 network, rebuilt in PyTorch from the official ``DRBL-stage1/src/model/drbn.py``.

Structure (official names kept so that an official ``model_s1.pt`` state dict loads with ``strict=True``):

* ``RDB``: a residual dense block of ``C = 4`` (3x3 conv + ReLU) layers, each concatenating its ``G`` new
  channels to its input, then a 1x1 local-fusion conv (``LFF``) back to ``G0`` channels plus the block input.
* ``DRBN_BU`` (band unit): input (6 channels) -> ``SFENet1`` 3x3 + ReLU (``f_first``) -> ``SFENet2`` 3x3 + ReLU
  (``f_s1``, 16 ch, full size) -> RDB -> strided 3x3 ``Down1`` (``f_s2``, 16 ch, 1/2) -> RDB -> strided 3x3
  ``Down2`` (``f_s4``, 32 ch, 1/4). Then, coarse to fine, ``f_s4 += RDB(RDB(f_s4))``,
  ``f_s2 += RDB(Up2(f_s4))``, ``f_s1 += RDB(Up1(f_s2)) + f_first`` (``Up*`` = 4x4 stride-2 transposed convs);
  from the second recursion on each scale also adds the previous recursion's features. The band outputs are
  ``res4 = UPNet4(f_s4)``, ``res2 = UPNet2(f_s2) + up2(res4)``, ``res1 = UPNet(f_s1) + up2(res2)`` (each
  ``UPNet*`` two 3x3 convs with no activation between; ``up2`` = bilinear x2, ``align_corners=False`` as
  ``nn.Upsample`` in PyTorch >= 0.4.0). No output activation.
* ``DRBN``: four band units; the first sees ``[x, x]``, the others ``[res1 of the previous unit, x]``.
  ``forward`` returns ``(res1, res2, res4)`` of the last unit (full, 1/2, 1/4 size).

Height and width must be multiples of 4 (the strided convs halve ``ceil``-wise, the transposed convs double
exactly); :func:`pad_to_multiple` pads (the official test feeds LOL's 600x400 images, already multiples of 4).
Parameters: 139,417 per band unit, **557,668** in all (baselines.md §6, computed from the official modules).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.imageio import pad_to_multiple as _pad

__all__ = ["RDB", "DRBN_BU", "DRBNNet", "pad_to_multiple", "MULTIPLE", "init_like_torch041"]

MULTIPLE = 4


class RDBConv(nn.Module):
    """One dense layer: 3x3 conv to ``grow`` channels + ReLU, concatenated to its input."""

    def __init__(self, in_channels: int, grow: int, k: int = 3):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, grow, k, padding=(k - 1) // 2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), 1)


class RDB(nn.Module):
    """Residual dense block: ``n_layers`` dense layers, 1x1 local feature fusion, residual add."""

    def __init__(self, g0: int, grow: int, n_layers: int = 4, k: int = 3):
        super().__init__()
        self.convs = nn.Sequential(*[RDBConv(g0 + i * grow, grow, k) for i in range(n_layers)])
        self.LFF = nn.Conv2d(g0 + n_layers * grow, g0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LFF(self.convs(x)) + x


def _two_convs(cin: int, mid: int, cout: int, k: int = 3) -> nn.Sequential:
    p = (k - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, mid, k, padding=p), nn.Conv2d(mid, cout, k, padding=p))


class DRBN_BU(nn.Module):  # noqa: N801  (official name)
    """One band unit (recursion) of DRBN; see the module docstring."""

    def __init__(self, n_colors: int = 3, g0: int = 16, grow: int = 8, n_layers: int = 4, k: int = 3):
        super().__init__()
        p = (k - 1) // 2
        self.SFENet1 = nn.Conv2d(2 * n_colors, g0, k, padding=p)
        self.SFENet2 = nn.Conv2d(g0, g0, k, padding=p)
        self.RDBs = nn.ModuleList([
            RDB(g0, grow, n_layers, k), RDB(g0, grow, n_layers, k),                  # before Down1, before Down2
            RDB(2 * g0, 2 * grow, n_layers, k), RDB(2 * g0, 2 * grow, n_layers, k),  # 1/4 scale
            RDB(g0, grow, n_layers, k), RDB(g0, grow, n_layers, k),                  # after Up2, after Up1
        ])
        self.UPNet = _two_convs(g0, g0, n_colors, k)
        self.UPNet2 = _two_convs(g0, g0, n_colors, k)
        self.UPNet4 = _two_convs(2 * g0, g0, n_colors, k)
        self.Down1 = nn.Conv2d(g0, g0, k, padding=p, stride=2)
        self.Down2 = nn.Conv2d(g0, 2 * g0, k, padding=p, stride=2)
        self.Up1 = nn.ConvTranspose2d(g0, g0, k + 1, stride=2, padding=1)
        self.Up2 = nn.ConvTranspose2d(2 * g0, g0, k + 1, stride=2, padding=1)

    @staticmethod
    def img_up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, prev: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None):
        """``x``: the 6-channel input; ``prev``: the previous unit's ``(f_s1, f_s2, f_s4)`` or None (first unit).
        Returns ``(res1, res2, res4, f_s1, f_s2, f_s4)``."""
        f_first = F.relu(self.SFENet1(x))
        f_s1 = F.relu(self.SFENet2(f_first))
        f_s2 = self.Down1(self.RDBs[0](f_s1))
        f_s4 = self.Down2(self.RDBs[1](f_s2))
        f_s4 = f_s4 + self.RDBs[3](self.RDBs[2](f_s4))
        if prev is not None:
            f_s4 = f_s4 + prev[2]
        f_s2 = f_s2 + self.RDBs[4](self.Up2(f_s4))
        if prev is not None:
            f_s2 = f_s2 + prev[1]
        f_s1 = f_s1 + self.RDBs[5](self.Up1(f_s2)) + f_first
        if prev is not None:
            f_s1 = f_s1 + prev[0]
        res4 = self.UPNet4(f_s4)
        res2 = self.UPNet2(f_s2) + self.img_up(res4)
        res1 = self.UPNet(f_s1) + self.img_up(res2)
        return res1, res2, res4, f_s1, f_s2, f_s4


class DRBNNet(nn.Module):
    """Four recursions of :class:`DRBN_BU` (official ``DRBN``; module names ``recur1`` ... ``recur4``)."""

    def __init__(self, n_colors: int = 3, recursions: int = 4):
        super().__init__()
        self.recursions = recursions
        for i in range(1, recursions + 1):
            self.add_module(f"recur{i}", DRBN_BU(n_colors))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        if h % MULTIPLE or w % MULTIPLE:
            raise ValueError(f"DRBN needs height and width divisible by {MULTIPLE}, got {w}x{h}; "
                             "use pad_to_multiple")
        res1, res2, res4, *feats = self.recur1(torch.cat((x, x), 1))
        for i in range(2, self.recursions + 1):
            res1, res2, res4, *feats = getattr(self, f"recur{i}")(torch.cat((res1, x), 1), tuple(feats))
        return res1, res2, res4


def pad_to_multiple(x: torch.Tensor, multiple: int = MULTIPLE) -> tuple[torch.Tensor, int, int]:
    """The harness's padding (:func:`bench.imageio.pad_to_multiple`) to DRBN's multiple of 4 by default."""
    return _pad(x, multiple)


@torch.no_grad()
def init_like_torch041(model: nn.Module) -> None:
    """Re-initialise the transposed convolutions as PyTorch 0.4.1 (the official code's version) did.

    0.4.1 drew every conv weight and bias from U(-1/sqrt(n), 1/sqrt(n)) with n = in_channels * k * k. Current
    PyTorch gives the same distribution for ``nn.Conv2d`` but computes n from the weight's second dimension,
    which for ``nn.ConvTranspose2d`` is the *output* channel count: ``Up2`` (32 -> 16) would get a sqrt(2)
    wider range. Only the transposed convs are redrawn (from the current torch RNG)."""
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d):
            n = m.in_channels * math.prod(m.kernel_size)
            bound = 1.0 / math.sqrt(n)
            m.weight.uniform_(-bound, bound)
            if m.bias is not None:
                m.bias.uniform_(-bound, bound)

"""DeepLPF network (Moran et al., CVPR 2020), written from the paper and the released ``sjmoran/DeepLPF`` code.

Layout (module names follow the official state dict, so an official ``state_dict`` loads key for key):

``backbonenet`` (``UNetModel``)
    A U-Net of ``LocalNet`` blocks (two reflection-padded 3×3 convs with LeakyReLU(0.01)), 16/32/64/128/128
    channels, max-pool down, nearest ×2 upsampling + 1×1 conv up, skip concatenations, a 3-channel output added
    to the input, then ``final_conv`` (3×3, 3 → 64). Channels 0–2 of that 64-channel map are the backbone image
    Y1, channels 3–63 the 61 features. The official ``UNet.__init__`` also builds ``conv1``/``conv2``/``conv3``
    (1×1) and ``local_net`` that ``forward`` never uses; they are kept (53,568 parameters) so that the parameter
    count (1,769,347) and the state-dict layout equal the official ones.
``deeplpfnet`` (``DeepLPFParameterPrediction``)
    Three parameter heads (cubic: 60 outputs, graduated: 24, elliptical: 24). Each takes the 61 features
    concatenated with an image, resized bilinearly to 300×300, then 4 × (3×3 stride-2 conv + LeakyReLU) with
    2×2 max-pools in between, a global average pool, dropout 0.5 and a linear layer. The cubic head sees Y1,
    the graduated and elliptical heads see the cubic filter's output Y2. The fusion is the official one::

        Y2 = clamp(Y1 + cubic(Y1), 0, 1)
        S  = clamp(s_graduated + s_elliptical, 0, 2)
        Y  = clamp(clamp(Y2 · S, 0, 1) + Y1, 0, 1)

The three filters are plain functions of explicit parameter tensors (``cubic_filter``, ``graduated_mask``,
``elliptical_mask``) so they can be tested against direct computations. Coordinates are the official ones:
``x = row / H`` and ``y = column / W`` (so x runs down the image, y across it).

The official code indexes ``[0, ...]`` everywhere and so only works at batch 1 (DeepLPF's authors require
batch 1). Here every filter is evaluated per image along the batch dimension (the official ``.all()`` branch
choices of the graduated filter become per-image ``torch.where`` selections); at batch 1 this is exactly the
official computation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DeepLPFNet",
    "UNetModel",
    "cubic_filter",
    "graduated_mask",
    "graduated_instance_mask",
    "elliptical_mask",
    "ellipse_instance_mask",
    "coordinates",
    "tanh01",
    "PARAMETER_COUNT",
]

PARAMETER_COUNT = 1_769_347  # baselines.md §14 (backbone 1,319,191 + filters 450,156)
HEAD_SIZE = 300
EPS1 = 1e-10
EPS2 = 1e-7
MAX_SCALE = 2.0


def tanh01(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.tanh(x) + 1.0)


def coordinates(h: int, w: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The official normalised grids, each H×W: ``x[i, j] = i / H`` (row), ``y[i, j] = j / W`` (column)."""
    x = (torch.arange(h, device=device, dtype=dtype) / h).view(h, 1).expand(h, w)
    y = (torch.arange(w, device=device, dtype=dtype) / w).view(1, w).expand(h, w)
    return x, y


# ------------------------------------------------------------------------------------------------
# the three parametric filters
# ------------------------------------------------------------------------------------------------
def cubic_filter(img: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Polynomial (cubic, 20 terms per channel) filter: ``clamp(img + P(x, y, I), 0, 1)``.

    ``coeffs`` is B×60: channel c uses ``coeffs[:, 20c:20c+20]`` for the terms, in the official order,
    x³, x²y, x²I, x², xy², xyI, xy, xI², xI, x, y³, y²I, y², yI², yI, y, I³, I², I, 1."""
    b, c, h, w = img.shape
    x, y = coordinates(h, w, img.device, img.dtype)
    x, y, i = x.view(1, 1, h, w), y.view(1, 1, h, w), img
    r = coeffs.view(b, 3, 20, 1, 1)
    terms = [x ** 3, x * x * y, x * x * i, x * x, x * y * y, x * y * i, x * y, x * i * i, x * i, x,
             y ** 3, y * y * i, y * y, y * i * i, y * i, y, i ** 3, i * i, i, None]
    mask = r[:, :, 19].expand(b, 3, h, w)
    for k, t in enumerate(terms[:-1]):
        mask = mask + r[:, :, k] * t
    return torch.clamp(img + mask, 0.0, 1.0)


def graduated_instance_mask(factor: torch.Tensor, invert: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor,
                            top_line: torch.Tensor, max_scale: float = MAX_SCALE) -> torch.Tensor:
    """The official ``get_inverted_mask``: one channel's scaling map of one graduated filter.

    ``factor``, ``invert`` (0 or 1), ``d1``, ``d2`` broadcast against ``top_line`` (the soft side-of-line map).
    The four official cases (inverted or not × factor ≥ 1 or < 1) are selected per element."""
    f = factor
    ge1 = f >= 1
    inv = invert == 1
    diff = torch.where(ge1, (f - 1) / 2 + 1, (1 - f) / 2 + f)
    base = torch.where(inv, f, torch.ones_like(f))
    g1 = torch.where(inv, diff - f, torch.where(ge1, diff - f, diff - 1)) / d1
    g2 = torch.where(inv, 1 - diff, f - diff) / d2
    m = base + g1 * top_line + g2 * top_line
    lo = torch.where(ge1, torch.ones_like(f), torch.zeros_like(f))
    hi = torch.where(ge1, torch.full_like(f, max_scale), torch.ones_like(f))
    m = torch.minimum(torch.maximum(m, lo), hi)
    return torch.clamp(m, 0.0, max_scale)


def graduated_mask(params: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Scaling map (B×3×H×W) of the three graduated filters from the head's 24 raw outputs (official layout).

    [0:3] inversion indicators (sign, so no gradient, as the official ``BinaryLayer``), [3:6] slopes m,
    [6:9] lower bounds of the offsets, [9:12] offsets o1 (≥ [6:9], ≤ 1), [12:15] offsets o2 (≤ o1),
    [15:24] per-channel scale factors (instance-major). For instance k:
    ``d1 = tanh01(o1 cos(atan m))``, ``d2 = tanh01(o2 cos(atan m))`` and the side-of-line map
    ``t = tanh01(y − (m x + o1 + d1))``. The three instances multiply; every product is clamped to [0, 2]."""
    g = params
    b = g.shape[0]
    dev, dt = g.device, g.dtype
    x, y = coordinates(h, w, dev, dt)
    x, y = x.view(1, 1, h, w), y.view(1, 1, h, w)
    invert = (torch.sign(g[:, 0:3]) + 1) / 2
    slope = g[:, 3:6]
    lower = tanh01(g[:, 6:9]) + EPS1
    o1 = torch.clamp(torch.maximum(tanh01(g[:, 9:12]), lower.detach()), max=1.0)
    o2 = torch.clamp(torch.minimum(tanh01(g[:, 12:15]), o1.detach()), min=0.0)
    scale = tanh01(g[:, 15:24]) * MAX_SCALE
    angle = torch.atan(slope)
    d1 = tanh01(o1 * torch.cos(angle))
    d2 = tanh01(o2 * torch.cos(angle))
    out = None
    for k in range(3):
        col = lambda t: t[:, k].view(b, 1, 1, 1)  # noqa: E731
        top = tanh01(y - (col(slope) * x + col(o1) + col(d1)))                      # B×1×H×W
        m = graduated_instance_mask(scale[:, 3 * k:3 * k + 3].view(b, 3, 1, 1), col(invert), col(d1), col(d2), top)
        m = torch.clamp(m, 0.0, MAX_SCALE)                                           # B×3×H×W
        out = m if out is None else out * m
    return torch.clamp(out, 0.0, MAX_SCALE)


def ellipse_instance_mask(x: torch.Tensor, y: torch.Tensor, xc, yc, a, b, alpha, scale, radius,
                          eps: float = EPS2, max_scale: float = MAX_SCALE) -> torch.Tensor:
    """The official ``EllipticalFilter.get_mask``: inside the rotated ellipse
    ``((dx cos α + dy sin α)/a)² + ((dx sin α − dy cos α)/b)² < 1`` the scale decays linearly with the distance
    from the centre, ``s + (1 − s)·√(dx² + dy² + eps)/radius``; outside it is 1. Clamped to [0, max_scale]."""
    dx, dy = x - xc, y - yc
    part1 = (dx * torch.cos(alpha) + dy * torch.sin(alpha)) ** 2 / a ** 2
    part2 = (dx * torch.sin(alpha) - dy * torch.cos(alpha)) ** 2 / b ** 2
    inside = torch.sqrt(dx ** 2 + dy ** 2 + eps) * (1 - scale) / radius + scale
    m = torch.where(part1 + part2 < 1, inside, torch.ones_like(inside))
    return torch.clamp(m, 0.0, max_scale)


def elliptical_mask(params: torch.Tensor, h: int, w: int, b3_quirk: bool = True) -> torch.Tensor:
    """Scaling map (B×3×H×W) of the three elliptical filters from the head's 24 raw outputs (official layout).

    [0:3] centre x, [3:6] centre y, [6:9] semi-axis a, [9:12] semi-axis b (all tanh01 + 1e-10), [12:15] angle
    A ∈ (0, π], [15:24] per-channel scale factors in (0, 2] (instance-major). As in the official code, the
    rotation passed to the ellipse test is the per-pixel angle ``acos(dy/‖(dx, dy)‖) − A`` and the decay
    radius is the ellipse's radius along it. ``b3_quirk`` reproduces the official code's use of the third
    instance's b for the second instance's blue channel (fixed later as a "v2" option upstream)."""
    g = params
    bsz = g.shape[0]
    x, y = coordinates(h, w, g.device, g.dtype)
    x, y = x.view(1, h, w), y.view(1, h, w)
    xc, yc = tanh01(g[:, 0:3]) + EPS1, tanh01(g[:, 3:6]) + EPS1
    a, b = tanh01(g[:, 6:9]) + EPS1, tanh01(g[:, 9:12]) + EPS1
    big_a = tanh01(g[:, 12:15]) * math.pi + EPS1
    scale = tanh01(g[:, 15:24]) * MAX_SCALE + EPS1
    out = None
    for k in range(3):
        col = lambda t, j=k: t[:, j].view(bsz, 1, 1)  # noqa: E731
        dx, dy = x - col(xc), y - col(yc)
        cosine = torch.clamp(dy / torch.sqrt(dx ** 2 + dy ** 2 + EPS1), -1 + EPS2, 1 - EPS2)
        angle = torch.acos(cosine) - col(big_a)
        radius = col(a) * col(b) / torch.sqrt(col(a) ** 2 * torch.sin(angle) ** 2
                                              + col(b) ** 2 * torch.cos(angle) ** 2 + EPS1)
        chans = []
        for c in range(3):
            b_axis = col(b, 2) if (b3_quirk and k == 1 and c == 2) else col(b)
            chans.append(ellipse_instance_mask(x, y, col(xc), col(yc), col(a), b_axis, angle,
                                               scale[:, 3 * k + c].view(bsz, 1, 1), radius))
        m = torch.clamp(torch.stack(chans, 1), 0.0, MAX_SCALE)
        out = m if out is None else out * m
    return torch.clamp(out, 0.0, MAX_SCALE)


# ------------------------------------------------------------------------------------------------
# parameter heads
# ------------------------------------------------------------------------------------------------
class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=True)
        self.lrelu = nn.LeakyReLU()

    def forward(self, x):
        return self.lrelu(self.conv(x))


class MaxPoolBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.max_pool = nn.MaxPool2d(2, 2)

    def forward(self, x):
        return self.max_pool(x)


class GlobalPoolingBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.avg_pool(x)


class ParameterHead(nn.Module):
    """conv-pool ×3, conv, global average pool, dropout 0.5, linear; attribute names as the official filter."""

    def __init__(self, prefix: str, n_out: int, channels: int = 64):
        super().__init__()
        self.prefix = prefix
        blocks = [ConvBlock(channels, channels), MaxPoolBlock(), ConvBlock(channels, channels), MaxPoolBlock(),
                  ConvBlock(channels, channels), MaxPoolBlock(), ConvBlock(channels, channels), GlobalPoolingBlock()]
        for i, blk in enumerate(blocks, start=1):
            setattr(self, f"{prefix}_layer{i}", blk)
        setattr(self, f"fc_{prefix}", nn.Linear(channels, n_out))
        self.dropout = nn.Dropout(0.5)

    def forward(self, feat: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(torch.cat((feat, img), 1), size=(HEAD_SIZE, HEAD_SIZE), mode="bilinear",
                          align_corners=False)
        for i in range(1, 9):
            x = getattr(self, f"{self.prefix}_layer{i}")(x)
        x = self.dropout(x.flatten(1))
        return getattr(self, f"fc_{self.prefix}")(x)


class DeepLPFParameterPrediction(nn.Module):
    def __init__(self, b3_quirk: bool = True):
        super().__init__()
        self.b3_quirk = b3_quirk
        self.cubic_filter = ParameterHead("cubic", 60)
        self.graduated_filter = ParameterHead("graduated", 24)
        self.elliptical_filter = ParameterHead("elliptical", 24)

    def forward(self, x: torch.Tensor, return_parts: bool = False):
        feat, img = x[:, 3:64], x[:, 0:3]
        h, w = img.shape[-2:]
        img_cubic = cubic_filter(img, self.cubic_filter(feat, img))
        s_grad = graduated_mask(self.graduated_filter(feat, img_cubic), h, w)
        s_ell = elliptical_mask(self.elliptical_filter(feat, img_cubic), h, w, self.b3_quirk)
        fuse = torch.clamp(s_grad + s_ell, 0.0, MAX_SCALE)
        out = torch.clamp(torch.clamp(img_cubic * fuse, 0.0, 1.0) + img, 0.0, 1.0)
        if return_parts:
            return out, {"backbone": img, "cubic": img_cubic, "graduated": s_grad, "elliptical": s_ell}
        return out


# ------------------------------------------------------------------------------------------------
# backbone
# ------------------------------------------------------------------------------------------------
class LocalNet(nn.Module):
    def __init__(self, cin: int = 16, cout: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 0, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 0, 1)
        self.lrelu = nn.LeakyReLU()
        self.refpad = nn.ReflectionPad2d(1)

    def forward(self, x):
        x = self.lrelu(self.conv1(self.refpad(x)))
        return self.lrelu(self.conv2(self.refpad(x)))


def _match(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The official fix-up after ×2 upsampling of an odd-sized level: one column on the left, one row at the bottom."""
    dh, dw = x.shape[2] != ref.shape[2], x.shape[3] != ref.shape[3]
    if dh and dw:
        return F.pad(x, (1, 0, 0, 1))
    if dh:
        return F.pad(x, (0, 0, 0, 1))
    if dw:
        return F.pad(x, (1, 0, 0, 0))
    return x


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        # built by the official __init__ but never used in forward (kept for the state dict and the count)
        self.conv1 = nn.Conv2d(16, 64, 1)
        self.conv2 = nn.Conv2d(32, 64, 1)
        self.conv3 = nn.Conv2d(64, 64, 1)
        self.local_net = LocalNet(16)
        self.dconv_down1 = LocalNet(3, 16)
        self.dconv_down2 = LocalNet(16, 32)
        self.dconv_down3 = LocalNet(32, 64)
        self.dconv_down4 = LocalNet(64, 128)
        self.dconv_down5 = LocalNet(128, 128)
        self.maxpool = nn.MaxPool2d(2, padding=0)
        self.upsample = nn.UpsamplingNearest2d(scale_factor=2)
        self.up_conv1x1_1 = nn.Conv2d(128, 128, 1)
        self.up_conv1x1_2 = nn.Conv2d(128, 128, 1)
        self.up_conv1x1_3 = nn.Conv2d(64, 64, 1)
        self.up_conv1x1_4 = nn.Conv2d(32, 32, 1)
        self.dconv_up4 = LocalNet(256, 128)
        self.dconv_up3 = LocalNet(192, 64)
        self.dconv_up2 = LocalNet(96, 32)
        self.dconv_up1 = LocalNet(48, 16)
        self.conv_last = LocalNet(16, 3)

    def forward(self, x):
        x_in = x
        conv1 = self.dconv_down1(x)
        conv2 = self.dconv_down2(self.maxpool(conv1))
        conv3 = self.dconv_down3(self.maxpool(conv2))
        conv4 = self.dconv_down4(self.maxpool(conv3))
        x = self.dconv_down5(self.maxpool(conv4))
        x = _match(self.up_conv1x1_1(self.upsample(x)), conv4)
        x = self.dconv_up4(torch.cat([x, conv4], 1))
        x = _match(self.up_conv1x1_2(self.upsample(x)), conv3)
        x = self.dconv_up3(torch.cat([x, conv3], 1))
        x = _match(self.up_conv1x1_3(self.upsample(x)), conv2)
        x = self.dconv_up2(torch.cat([x, conv2], 1))
        x = _match(self.up_conv1x1_4(self.upsample(x)), conv1)
        x = self.dconv_up1(torch.cat([x, conv1], 1))
        return self.conv_last(x) + x_in


class UNetModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.unet = UNet()
        self.final_conv = nn.Conv2d(3, 64, 3, 1, 0, 1)
        self.refpad = nn.ReflectionPad2d(1)

    def forward(self, img):
        return self.final_conv(self.refpad(self.unet(img)))


class DeepLPFNet(nn.Module):
    """Backbone + parametric filters; input and output RGB in [0, 1] (output clamped, as the official net)."""

    MIN_SIDE = 32  # four 2× poolings must leave ≥ 2 pixels for the reflection padding

    def __init__(self, b3_quirk: bool = True):
        super().__init__()
        self.backbonenet = UNetModel()
        self.deeplpfnet = DeepLPFParameterPrediction(b3_quirk)

    def forward(self, img: torch.Tensor, return_parts: bool = False):
        h, w = img.shape[-2:]
        ph, pw = max(0, self.MIN_SIDE - h), max(0, self.MIN_SIDE - w)
        if ph or pw:  # tiny inputs only (not in the official code, which never sees them)
            img = F.pad(img, (0, pw, 0, ph), mode="replicate")
        out = self.deeplpfnet(self.backbonenet(img), return_parts=return_parts)
        if return_parts:
            out, parts = out
            return torch.clamp(out, 0.0, 1.0)[..., :h, :w], {k: v[..., :h, :w] for k, v in parts.items()}
        return torch.clamp(out, 0.0, 1.0)[..., :h, :w]

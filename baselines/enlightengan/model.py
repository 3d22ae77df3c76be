"""EnlightenGAN networks (Jiang et al., TIP 2021), written from the paper and the official VITA-Group code.

The released configuration (``scripts/script.py``: ``--which_model_netG sid_unet_resize --self_attention
--times_residual --use_norm 1 --skip 1``, ``--which_model_netD no_norm_4 --n_layers_D 5 --n_layers_patchD 4``):

``AttentionUNet`` (official ``Unet_resize_conv``)
    Input: the low image mapped to [−1, 1] and its attention map g (1 channel), concatenated (4 channels).
    Five levels of 32/64/128/256/512 channels, two 3×3 convs per level, each conv → LeakyReLU(0.2) →
    BatchNorm (the official order; the last conv of the top level has no BatchNorm), 2×2 max-pool down;
    the bottleneck's first conv output is multiplied by g (pooled ×16) before its second conv; up: bilinear
    ×2 then a 3×3 conv (``deconv*``), concatenation with the skip features multiplied by g at that scale; a
    final 1×1 conv to a 3-channel latent, multiplied by g (``--times_residual``); output = latent + input
    (``--skip 1``), no tanh. Inputs are reflection-padded (centred) to a multiple of 16 and cropped back,
    and inputs wider than 2200 px are average-pooled ×2 and the output upsampled back (``pad_tensor`` and the
    ``> 2200`` branch of the official forward). **8,636,675 parameters.**
``NoNormDiscriminator``
    4×4 convs with padding 2 and LeakyReLU(0.2), no normalisation: stride 2 for the first ``n_layers`` convs
    (64, 128, 256, 512, 512… channels), one more stride-1 conv, then a stride-1 conv to 1 channel. Global:
    ``n_layers = 5`` (11,154,369 parameters); local/patch: ``n_layers = 4`` (6,959,553).

Attention map: ``g = 1 − (0.299·(r+1) + 0.587·(g+1) + 0.114·(b+1))/2`` on the [−1, 1] input, i.e. one minus the
luminance of the [0, 1] image (``data/unaligned_dataset.py``). The paper words it as the normalised illumination
channel; ``attention_map(..., kind="max_rgb")`` gives 1 − max(R, G, B) as an option.

Initialisation: the official ``weights_init`` (conv weights N(0, 0.02), biases left at PyTorch's default;
BatchNorm weights N(1, 0.02), biases 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AttentionUNet", "NoNormDiscriminator", "attention_map", "weights_init", "pad_to_16", "G_PARAMETERS",
           "D_PARAMETERS", "DP_PARAMETERS", "ATTENTION_KINDS"]

G_PARAMETERS = 8_636_675
D_PARAMETERS = 11_154_369
DP_PARAMETERS = 6_959_553
ATTENTION_KINDS = ("luminance", "max_rgb")


def attention_map(x01: torch.Tensor, kind: str = "luminance") -> torch.Tensor:
    """The self-regularised attention map g (B×1×H×W) of an image in [0, 1]: one minus its illumination."""
    if kind == "luminance":
        y = 0.299 * x01[:, 0:1] + 0.587 * x01[:, 1:2] + 0.114 * x01[:, 2:3]
    elif kind == "max_rgb":
        y = x01.max(1, keepdim=True).values
    else:
        raise ValueError(f"unknown attention map {kind!r}")
    return 1.0 - y


def pad_to_16(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """The official ``pad_tensor``: reflection padding, split (floor left/top), up to a multiple of 16."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % 16, (-w) % 16
    left, top = pw // 2, ph // 2
    pads = (left, pw - left, top, ph - top)
    if ph or pw:
        mode = "reflect" if (h > ph and w > pw) else "replicate"
        x = F.pad(x, pads, mode=mode)
    return x, pads


def weights_init(m: nn.Module) -> None:
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif name.find("BatchNorm2d") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class AttentionUNet(nn.Module):
    """The official ``Unet_resize_conv`` with ``self_attention``, ``times_residual``, ``use_norm=1``, ``skip=1``."""

    def __init__(self):
        super().__init__()
        # bilinear x2 upsampling as PyTorch >= 0.4 does it (False), or as the release's PyTorch 0.3.1 did (True)
        self.align_corners = False
        chans = {1: 32, 2: 64, 3: 128, 4: 256, 5: 512}
        cin = 4
        for lvl in range(1, 6):
            c = chans[lvl]
            setattr(self, f"conv{lvl}_1", nn.Conv2d(cin, c, 3, padding=1))
            setattr(self, f"bn{lvl}_1", nn.BatchNorm2d(c))
            setattr(self, f"conv{lvl}_2", nn.Conv2d(c, c, 3, padding=1))
            setattr(self, f"bn{lvl}_2", nn.BatchNorm2d(c))
            cin = c
        for lvl, (cup, c) in zip(range(6, 10), [(512, 256), (256, 128), (128, 64), (64, 32)]):
            setattr(self, f"deconv{lvl - 1}", nn.Conv2d(cup, c, 3, padding=1))
            setattr(self, f"conv{lvl}_1", nn.Conv2d(2 * c, c, 3, padding=1))
            setattr(self, f"bn{lvl}_1", nn.BatchNorm2d(c))
            setattr(self, f"conv{lvl}_2", nn.Conv2d(c, c, 3, padding=1))
            if lvl != 9:
                setattr(self, f"bn{lvl}_2", nn.BatchNorm2d(c))
        self.conv10 = nn.Conv2d(32, 3, 1)
        self.act = nn.LeakyReLU(0.2)
        self.pool = nn.MaxPool2d(2)

    def _cb(self, name: str, x: torch.Tensor, bn: bool = True) -> torch.Tensor:
        x = self.act(getattr(self, "conv" + name)(x))
        return getattr(self, "bn" + name)(x) if bn else x

    def forward(self, x: torch.Tensor, gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` in [−1, 1] (B×3×H×W), ``gray`` the attention map (B×1×H×W); returns (output, latent) in the
        [−1, 1] scale, same size as ``x``."""
        h0, w0 = x.shape[-2:]
        big = w0 > 2200
        if big:
            x, gray = F.avg_pool2d(x, 2), F.avg_pool2d(gray, 2)
        x, pads = pad_to_16(x)
        gray, _ = pad_to_16(gray)
        g = [gray]
        for _ in range(4):
            g.append(self.pool(g[-1]))
        inp = x
        c1 = self._cb("1_2", self._cb("1_1", torch.cat((x, gray), 1)))
        c2 = self._cb("2_2", self._cb("2_1", self.pool(c1)))
        c3 = self._cb("3_2", self._cb("3_1", self.pool(c2)))
        c4 = self._cb("4_2", self._cb("4_1", self.pool(c3)))
        y = self._cb("5_1", self.pool(c4)) * g[4]
        y = self._cb("5_2", y)
        for lvl, skip, gs in ((6, c4, g[3]), (7, c3, g[2]), (8, c2, g[1]), (9, c1, g[0])):
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=self.align_corners)
            y = torch.cat([getattr(self, f"deconv{lvl - 1}")(y), skip * gs], 1)
            y = self._cb(f"{lvl}_1", y)
            y = self._cb(f"{lvl}_2", y, bn=lvl != 9)
        latent = self.conv10(y) * gray
        out = latent + inp
        left, right, top, bottom = pads
        hh, ww = out.shape[-2:]
        out = out[..., top:hh - bottom, left:ww - right]
        latent = latent[..., top:hh - bottom, left:ww - right]
        if big:
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=self.align_corners)
            if out.shape[-2:] != (h0, w0):  # odd sizes: the official code would fail; resize exactly
                out = F.interpolate(out, size=(h0, w0), mode="bilinear", align_corners=self.align_corners)
        return out, latent


class NoNormDiscriminator(nn.Module):
    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 5):
        super().__init__()
        kw, pad = 4, 2
        seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kw, 2, pad), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, kw, 2, pad), nn.LeakyReLU(0.2)]
        prev, mult = mult, min(2 ** n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, kw, 1, pad), nn.LeakyReLU(0.2)]
        seq += [nn.Conv2d(ndf * mult, 1, kw, 1, pad)]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

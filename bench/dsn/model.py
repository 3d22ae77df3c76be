"""The DSN network (Zhao et al., ICCV 2021), rebuilt from the paper and the documented behaviour of
the official code (``dsn_reference.md`` section 1).  Attribute names follow the official
``InvRescaleNet`` so official state dicts load strictly (see :mod:`bench.dsn.official`).

Layout (default ``n_blocks=8``)::

    operations[0]            FixedEncoderDecoder  (official ``Downsampling``; frozen W1, W2)
    operations[1..n_blocks]  InvBlock             (official ``InvBlockExp``; subnets F, G, H)
    operations[n_blocks+1]   FixedEncoderDecoder  (official ``Upsampling``; same frozen tensors)

Directions (the official code's ``rev`` flag is kept with the same meaning):

- ``enhance(x)``  == official ``netG(x, rev=True)``: E via operations[-1], blocks n..1 inverted,
  D via operations[0];
- ``degrade(y)``  == official ``netG(y, rev=False)``: E via operations[0], blocks 1..n forward,
  D via operations[-1].

``DSN.forward(x, rev=True)`` is ``enhance``; ``rev=False`` is ``degrade``.  (Note: the official
``forward`` defaults to ``rev=False``; here the default is the enhancement direction.)

Nothing changes resolution: every convolution has stride 1, so any H x W (odd sizes included)
and any batch size N works.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.init as init

from bench.dsn.encoder import (
    check_encoder_weights,
    decode,
    encode,
    fallback_encoder,
    haar_encoder,
    tensor_sha256,
)
from bench.dsn.memory import MEMORY_MODES, run_blocks

__all__ = [
    "SUBNETS",
    "ENCODERS",
    "DSN",
    "InvBlock",
    "FixedEncoderDecoder",
    "ChannelAttention",
    "SELayer",
    "ResidualUnit",
    "ResidualAttentionSubnet",
    "ResidualNetSubnet",
    "DenseSubnet",
    "make_subnet_constructor",
    "count_parameters",
    "parameter_summary",
    "macs_per_pixel",
]

#: Subnet kinds.  "rram" is the default (official ResidualBlock_AT_skip).
SUBNETS = ("rram", "rram_tied", "chain", "no_attention", "resblk", "se_resblk", "dense")
#: Encoder kinds.  "conv" = the VGG-style frozen conv pair (default), "haar" = Haar ablation.
ENCODERS = ("conv", "haar")

_ROUND_SUBNETS = ("rram", "rram_tied", "chain", "no_attention", "se_resblk")


# --------------------------------------------------------------------------------------------
# initialisation helpers (the official module_util.initialize_weights{,_xavier} behaviour)
# --------------------------------------------------------------------------------------------
def _init_kaiming(modules: Iterable[nn.Module], scale: float) -> None:
    """kaiming_normal_(fan_in, a=0) * scale, bias 0, for every Conv2d/Linear inside ``modules``."""
    for mod in modules:
        for m in mod.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                m.weight.data.mul_(scale)
                if m.bias is not None:
                    m.bias.data.zero_()


def _init_xavier(modules: Iterable[nn.Module], scale: float) -> None:
    """xavier_normal_ * scale, bias 0, for every Conv2d/Linear inside ``modules``."""
    for mod in modules:
        for m in mod.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                init.xavier_normal_(m.weight)
                m.weight.data.mul_(scale)
                if m.bias is not None:
                    m.bias.data.zero_()


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, bias=True)


def _prelu() -> nn.PReLU:
    return nn.PReLU(num_parameters=1, init=0.2)


# --------------------------------------------------------------------------------------------
# the in-place inference path (DSN.set_fast_inference)
# --------------------------------------------------------------------------------------------
# Convolutions are ~88 % of DSN's arithmetic, yet on CPU the out-of-place PReLU, attention product
# and residual sums over 64-128 full-resolution channels cost a third of the time (fresh buffers,
# the PReLU kernel's slow path).  Doing them in place on tensors nothing else holds gives bit-identical
# results; it is only taken while autograd is off, so training never sees it.  Fusing the PReLU into the
# convolution (oneDNN post-op) saves one more pass but may pick another kernel: same function, last bits
# may differ, so it comes with the channels-last CPU layout, which already changes them.
class _FastInference:
    fast_inference: bool = False
    fuse_conv_prelu: bool = False

    def inplace_now(self) -> bool:
        return self.fast_inference and not torch.is_grad_enabled()


def _prelu_inplace(prelu: nn.PReLU, x: torch.Tensor) -> torch.Tensor:
    """PReLU with one slope applied in place to a tensor the caller owns, bit-identical to ``prelu(x)``.
    On CPU as leaky_relu_ (a vectorised kernel); reading the slope as a number would sync CUDA, so there
    the module runs out of place."""
    if x.device.type != "cpu":
        return prelu(x)
    return F.leaky_relu_(x, float(prelu.weight))


_CONV_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)


def _conv_prelu(conv: nn.Conv2d, prelu: nn.PReLU, x: torch.Tensor, fuse: bool) -> torch.Tensor:
    """``prelu(conv(x))`` on the in-place path. With ``fuse``, on CPU with oneDNN, the PReLU runs as the
    convolution's leaky-ReLU post-op (the op torch.compile fuses to), sparing a pass over the output.
    Anything else (CUDA, autocast, other dtypes, a torch without the op) takes the unfused route."""
    if (fuse and _CONV_POINTWISE is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and conv.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and torch.backends.mkldnn.is_available()):
        return _CONV_POINTWISE(x, conv.weight, conv.bias, list(conv.padding), list(conv.stride),
                               list(conv.dilation), conv.groups, "leaky_relu", [float(prelu.weight)], "")
    return _prelu_inplace(prelu, conv(x))


def _add(acc: torch.Tensor, other: torch.Tensor, inplace: bool) -> torch.Tensor:
    return acc.add_(other) if inplace else acc + other


# --------------------------------------------------------------------------------------------
# attention layers
# --------------------------------------------------------------------------------------------
class ChannelAttention(nn.Module):
    """First-order SE-style channel attention (official ``SOCA``; paper Eq. 8).

    global average pool -> 1x1 conv C->C/r (bias) -> PReLU(0.2) -> 1x1 conv C/r->C (bias) -> sigmoid,
    then multiply the input channel-wise.  Parameter names ``conv_du.{0,1,2}`` as in the official code.
    """

    def __init__(self, channel: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channel, channel // reduction, 1, padding=0, bias=True),
            _prelu(),
            nn.Conv2d(channel // reduction, channel, 1, padding=0, bias=True),
            nn.Sigmoid(),
        )

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The N x C x 1 x 1 channel weights for ``x``."""
        return self.conv_du(self.avg_pool(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class SELayer(nn.Module):
    """Squeeze-and-excitation with bias-free Linear layers (official ``SELayer``): ``fc.{0,1,2}``."""

    def __init__(self, channel: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            _prelu(),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid(),
        )

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The N x C x 1 x 1 channel weights for ``x``."""
        n, c = x.shape[:2]
        return self.fc(self.avg_pool(x).view(n, c)).view(n, c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


# --------------------------------------------------------------------------------------------
# subnets
# --------------------------------------------------------------------------------------------
class ResidualUnit(_FastInference, nn.Module):
    """u -> u + A(conv3x3(2nf->nf)(PReLU(conv3x3(nf->2nf)(u)))), A = attention or identity.

    ``attention="ca"``: official ``ResidualBlock_noBN_S0`` (the RSCA of paper Eqs. 7-9; A stored
    as ``so``).  ``"se"``: official ``ResidualBlock_noBN_SE`` (A stored as ``se``).  ``None``:
    official ``module_util.ResidualBlock_noBN`` (no attention).  Init: kaiming_normal(fan_in) x 0.1,
    bias 0, for both convs and the attention's conv/linear layers; PReLU slopes 0.2.
    """

    def __init__(self, nf: int = 64, attention: Optional[str] = "ca", reduction: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf * 2, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=True)
        self.prelu = _prelu()
        self.attention_kind = attention
        if attention == "ca":
            self.so = ChannelAttention(nf, reduction)
            att: List[nn.Module] = [self.so]
        elif attention == "se":
            self.se = SELayer(nf, reduction)
            att = [self.se]
        elif attention is None:
            att = []
        else:
            raise ValueError(f"unknown attention kind {attention!r}")
        _init_kaiming([self.conv1, self.conv2, *att], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace_now():
            out = self.conv2(_conv_prelu(self.conv1, self.prelu, x, self.fuse_conv_prelu))
            if self.attention_kind is not None:
                w = (self.so if self.attention_kind == "ca" else self.se).weights(out)
                if self.fuse_conv_prelu:
                    # x + out * w in one pass over the map instead of two; the kernel may fuse the
                    # multiply-add (FMA), so last bits may differ -- as they already do on this fused path
                    return torch.addcmul(x, out, w, out=out)
                out.mul_(w)
            return out.add_(x)   # x + out == out + x bit for bit
        out = self.conv2(self.prelu(self.conv1(x)))
        if self.attention_kind == "ca":
            out = self.so(out)
        elif self.attention_kind == "se":
            out = self.se(out)
        return x + out


class ResidualAttentionSubnet(_FastInference, nn.Module):
    """The RRAM family: head conv + PReLU (32->64), ``rounds`` residual units, tail conv (64->32).

    - ``skip=True``  (RRAM, official ``ResidualBlock_AT_skip``; paper Eqs. 5-6 with W_h = W_x = 1):
      the input of unit k is x1 + (sum of the outputs of units 1..k-1), i.e. x2 = res1(x1),
      x3 = res2(x2 + x1), x4 = res3(x3 + x2 + x1); the tail reads the last unit's output.
    - ``skip=False`` (official ``ResidualBlock_AT`` / ``ResidualBlock_SE``): units chained.
    - ``tied=True``: one unit ``res`` reused for every round (the paper's "t rounds without
      increasing network parameters"); otherwise units ``res1 .. res{rounds}``.
    - ``unused``: ``"ca"`` builds the official, never-called ``soca`` module; ``"se"`` the
      never-called top-level ``se`` of ``ResidualBlock_SE``; ``None`` builds nothing.  They exist
      only so official state dicts load strictly; :func:`count_parameters` reports them apart.

    Init: head xavier_normal x 0.1, bias 0; tail kaiming x 0 (all zero), bias 0 -> output 0.
    """

    def __init__(self, channel_in: int, channel_out: int, gc: int = 64, rounds: int = 3,
                 skip: bool = True, tied: bool = False, attention: Optional[str] = "ca",
                 unused: Optional[str] = "ca", reduction: int = 16):
        super().__init__()
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        self.rounds = int(rounds)
        self.skip = bool(skip)
        self.tied = bool(tied)
        self.conv1 = _conv3(channel_in, gc)
        if self.tied:
            self.res = ResidualUnit(gc, attention, reduction)
        else:
            for k in range(1, self.rounds + 1):
                self.add_module(f"res{k}", ResidualUnit(gc, attention, reduction))
        self.conv2 = _conv3(gc, channel_out)
        self.prelu = _prelu()
        self.unused_children: Tuple[str, ...] = ()
        if unused == "ca":
            self.soca = ChannelAttention(gc, reduction)
            self.unused_children = ("soca",)
        elif unused == "se":
            self.se = SELayer(gc, reduction)
            self.unused_children = ("se",)
        elif unused is not None:
            raise ValueError(f"unknown unused-module kind {unused!r}")
        _init_xavier([self.conv1], 0.1)
        _init_kaiming([self.conv2], 0.0)

    def units(self) -> List[nn.Module]:
        if self.tied:
            return [self.res] * self.rounds
        return [getattr(self, f"res{k}") for k in range(1, self.rounds + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = self.inplace_now()
        x1 = _conv_prelu(self.conv1, self.prelu, x, self.fuse_conv_prelu) if inplace else self.prelu(self.conv1(x))
        units = self.units()
        if not self.skip:
            out = x1
            for unit in units:
                out = unit(out)
            return self.conv2(out)
        outs: List[torch.Tensor] = []
        inp = x1
        for i, unit in enumerate(units):
            outs.append(unit(inp))
            if i + 1 < len(units):
                # h_t + x_fi = (x_{k} + x_{k-1} + ... + x_2) + x1, summed newest first as the official code;
                # in place only into the sum's own buffer (the unit outputs are read again next round),
                # or, for the last sum, into the newest output, which no later round reads
                acc, owned = outs[-1], i + 2 == len(units)
                for prev in reversed(outs[:-1]):
                    acc, owned = _add(acc, prev, inplace and owned), True
                inp = _add(acc, x1, inplace and owned)
        return self.conv2(outs[-1])


class ResidualNetSubnet(nn.Module):
    """Official ``ResidualNet`` (subnet "ResNet"): x + conv5(P(conv4(P(conv3(P(conv2(P(conv1(x))))))))).

    Init: conv1..conv4 xavier x 0.1, conv5 zero.  Because of the global identity skip the subnet
    outputs its *input* at initialisation (not zero), exactly as in the official code, so a DSN
    built with it does not start as D(E(x)).
    """

    def __init__(self, channel_in: int, channel_out: int, nf: int = 64):
        super().__init__()
        if channel_in != channel_out:
            raise ValueError("ResidualNetSubnet needs channel_in == channel_out")
        self.conv1 = _conv3(channel_in, nf)
        self.conv2 = _conv3(nf, nf)
        self.conv3 = _conv3(nf, nf)
        self.conv4 = _conv3(nf, nf)
        self.conv5 = _conv3(nf, channel_out)
        self.prelu = _prelu()
        _init_xavier([self.conv1, self.conv2, self.conv3, self.conv4], 0.1)
        _init_kaiming([self.conv5], 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelu(self.conv1(x))
        out = self.prelu(self.conv2(out))
        out = self.prelu(self.conv3(out))
        out = self.prelu(self.conv4(out))
        return x + self.conv5(out)


class DenseSubnet(nn.Module):
    """Official ``DenseBlock`` (subnet "DBNet", IRN's default with PReLU instead of LeakyReLU).

    Five 3x3 convs with dense concatenation, growth ``gc=32``; conv1..conv4 xavier x 0.1, conv5
    zero, so the subnet outputs 0 at initialisation.
    """

    def __init__(self, channel_in: int, channel_out: int, gc: int = 32):
        super().__init__()
        self.conv1 = _conv3(channel_in, gc)
        self.conv2 = _conv3(channel_in + gc, gc)
        self.conv3 = _conv3(channel_in + 2 * gc, gc)
        self.conv4 = _conv3(channel_in + 3 * gc, gc)
        self.conv5 = _conv3(channel_in + 4 * gc, channel_out)
        self.prelu = _prelu()
        _init_xavier([self.conv1, self.conv2, self.conv3, self.conv4], 0.1)
        _init_kaiming([self.conv5], 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.prelu(self.conv1(x))
        x2 = self.prelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.prelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.prelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        return self.conv5(torch.cat((x, x1, x2, x3, x4), 1))


def make_subnet_constructor(kind: str = "rram", rounds: int = 3) -> Callable[[int, int], nn.Module]:
    """Return ``constructor(channel_in, channel_out)`` for a subnet kind (see :data:`SUBNETS`)."""
    if kind not in SUBNETS:
        raise ValueError(f"unknown subnet {kind!r}; choose one of {', '.join(SUBNETS)}")
    if kind not in _ROUND_SUBNETS and rounds != 3:
        raise ValueError(f"rounds applies only to {', '.join(_ROUND_SUBNETS)}; subnet {kind!r} has none")

    def constructor(cin: int, cout: int) -> nn.Module:
        if kind == "rram":
            return ResidualAttentionSubnet(cin, cout, rounds=rounds, skip=True, attention="ca", unused="ca")
        if kind == "chain":
            return ResidualAttentionSubnet(cin, cout, rounds=rounds, skip=False, attention="ca", unused="ca")
        if kind == "rram_tied":
            return ResidualAttentionSubnet(cin, cout, rounds=rounds, skip=True, tied=True,
                                           attention="ca", unused=None)
        if kind == "no_attention":
            return ResidualAttentionSubnet(cin, cout, rounds=rounds, skip=True, attention=None, unused=None)
        if kind == "se_resblk":
            return ResidualAttentionSubnet(cin, cout, rounds=rounds, skip=False, attention="se", unused="se")
        if kind == "resblk":
            return ResidualNetSubnet(cin, cout)
        return DenseSubnet(cin, cout)

    return constructor


# --------------------------------------------------------------------------------------------
# invertible block and encoder/decoder
# --------------------------------------------------------------------------------------------
class InvBlock(nn.Module):
    """Official ``InvBlockExp`` (affine coupling, no permutation).  Input [a | b], a = channels
    [0, split), b = the rest.  ES(z) = exp(clamp * (2 sigmoid(z) - 1)), clamp = 1.

    degrade (official rev=False, paper Eq. 4)::

        a' = a + F(b);  s = clamp (2 sigmoid(H(a')) - 1);  b' = b * exp(s) + G(a')

    enhance (official rev=True, paper Eq. 3)::

        s = clamp (2 sigmoid(H(a)) - 1);  b' = (b - G(a)) / exp(s);  a' = a - F(b')
    """

    def __init__(self, subnet_constructor: Callable[[int, int], nn.Module], channel_num: int = 64,
                 channel_split_num: int = 32, clamp: float = 1.0):
        super().__init__()
        self.split_len1 = channel_split_num
        self.split_len2 = channel_num - channel_split_num
        self.clamp = clamp
        self.F = subnet_constructor(self.split_len2, self.split_len1)
        self.G = subnet_constructor(self.split_len1, self.split_len2)
        self.H = subnet_constructor(self.split_len1, self.split_len2)

    def _split(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return x.narrow(1, 0, self.split_len1), x.narrow(1, self.split_len1, self.split_len2)

    def degrade(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self._split(x)
        a2 = a + self.F(b)
        s = self.clamp * (torch.sigmoid(self.H(a2)) * 2 - 1)
        b2 = b.mul(torch.exp(s)) + self.G(a2)
        return torch.cat((a2, b2), 1)

    def enhance(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self._split(x)
        s = self.clamp * (torch.sigmoid(self.H(a)) * 2 - 1)
        b2 = (b - self.G(a)).div(torch.exp(s))
        a2 = a - self.F(b2)
        return torch.cat((a2, b2), 1)

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        return self.enhance(x) if rev else self.degrade(x)


class FixedEncoderDecoder(nn.Module):
    """Frozen E/D pair (official ``Downsampling``/``Upsampling``; the IRN names are kept).

    Holds ``haar_weights1`` (64,3,3,3) and ``haar_weights2`` (64,64,3,3) as ``nn.Parameter`` with
    ``requires_grad=False`` so state-dict keys match the official ones.  ``role="down"`` behaves
    like ``Downsampling`` under the official ``forward(x, rev)`` (encode when rev=False),
    ``role="up"`` like ``Upsampling`` (encode when rev=True).
    """

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor, role: str = "down"):
        super().__init__()
        if role not in ("down", "up"):
            raise ValueError(f"role must be 'down' or 'up', got {role!r}")
        self.role = role
        self.haar_weights1 = nn.Parameter(w1.detach().clone(), requires_grad=False)
        self.haar_weights2 = nn.Parameter(w2.detach().clone(), requires_grad=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return encode(x, self.haar_weights1, self.haar_weights2)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return decode(h, self.haar_weights1, self.haar_weights2)

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        encode_now = (self.role == "down") != bool(rev)
        return self.encode(x) if encode_now else self.decode(x)


# --------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------
class DSN(nn.Module):
    """Deep Symmetric Network (official ``InvRescaleNet(3, 32, ResAT2Net_skip, [8], 1)``).

    Args:
        n_blocks: number of invertible blocks (8; 4 for the "4 IB" row).
        subnet: one of :data:`SUBNETS` (default "rram" = official ``ResidualBlock_AT_skip``).
        rounds: recurrence rounds t of the RRAM-family subnets (3; 2 for "two-round RL").
        encoder: "conv" (frozen 3x3 conv pair, default) or "haar" (the Haar-frame ablation,
            :func:`bench.dsn.encoder.haar_encoder`).
        encoder_weights: for ``encoder="conv"``, ``(W1, W2)`` or ``(W1, W2, info)`` as returned by
            :func:`bench.dsn.encoder.load_vgg16_conv1`; ``None`` uses
            :func:`bench.dsn.encoder.fallback_encoder` (seed 0) -- check ``encoder_info["kind"]``.
        clamp: the ES clamp (1.0).

    Attributes ``encoder_info`` (provenance of W1/W2) and ``config`` (the constructor arguments)
    are plain attributes, not part of the state dict.
    """

    def __init__(self, n_blocks: int = 8, subnet: str = "rram", rounds: int = 3, encoder: str = "conv",
                 encoder_weights: Optional[Sequence[Any]] = None, clamp: float = 1.0):
        super().__init__()
        if int(n_blocks) < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
        if int(rounds) < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        constructor = make_subnet_constructor(subnet, int(rounds))  # validates subnet/rounds

        if encoder == "haar":
            if encoder_weights is not None:
                raise ValueError("encoder='haar' uses fixed Haar tensors; do not pass encoder_weights")
            w1, w2, info = haar_encoder()
        elif encoder_weights is None:
            w1, w2, info = fallback_encoder(0)
        else:
            if len(encoder_weights) not in (2, 3):
                raise ValueError("encoder_weights must be (W1, W2) or (W1, W2, info)")
            w1, w2 = check_encoder_weights(encoder_weights[0], encoder_weights[1], "encoder_weights")
            if len(encoder_weights) == 3 and isinstance(encoder_weights[2], dict):
                info = dict(encoder_weights[2])
            else:
                info = {"kind": "user_tensors", "path": None}
            info.setdefault("tensors_sha256", tensor_sha256(w1, w2))
            info.setdefault("sha256", info["tensors_sha256"])

        self.n_blocks = int(n_blocks)
        self.config: Dict[str, Any] = {
            "n_blocks": self.n_blocks, "subnet": subnet, "rounds": int(rounds),
            "encoder": encoder, "clamp": float(clamp),
        }
        self.encoder_info: Dict[str, Any] = info

        # Registration (and RNG consumption) order as in the official InvRescaleNet.
        ops: List[nn.Module] = [FixedEncoderDecoder(w1, w2, role="down")]
        for _ in range(self.n_blocks):
            ops.append(InvBlock(constructor, 64, 32, clamp))
        ops.append(FixedEncoderDecoder(w1, w2, role="up"))
        self.operations = nn.ModuleList(ops)

    # -- structure ---------------------------------------------------------------------------
    @property
    def encoder_in(self) -> FixedEncoderDecoder:
        """operations[0]: E of the degradation pass, D of the enhancement pass."""
        return self.operations[0]  # type: ignore[return-value]

    @property
    def encoder_out(self) -> FixedEncoderDecoder:
        """operations[-1]: E of the enhancement pass, D of the degradation pass."""
        return self.operations[len(self.operations) - 1]  # type: ignore[return-value]

    def blocks(self) -> List[InvBlock]:
        return [self.operations[i] for i in range(1, self.n_blocks + 1)]  # type: ignore[misc]

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters with requires_grad (excludes the frozen encoder tensors); includes unused ones
        (the official optimiser, and its weight decay, see them too)."""
        return (p for p in self.parameters() if p.requires_grad)

    # -- inference speed ---------------------------------------------------------------------
    fast_inference = False
    channels_last = False

    def set_fast_inference(self, on: bool = True, channels_last: Optional[bool] = None) -> "DSN":
        """Take the in-place inference path while autograd is off (bit-identical outputs), and store the
        weights channels-last with the PReLU fused into the convolutions (default: on CPU, where oneDNN's
        channels-last convolutions are 1.3-2.5x faster here; outputs then differ from NCHW's in the last
        float bits).  Call after moving the model to its device; training (autograd on) is unaffected by
        the first, the second only changes strides."""
        self.fast_inference = bool(on)
        if channels_last is None:
            channels_last = bool(on) and next(self.parameters()).device.type == "cpu"
        self.channels_last = bool(channels_last)
        for m in self.modules():
            if isinstance(m, _FastInference):
                m.fast_inference = bool(on)
                m.fuse_conv_prelu = bool(on) and self.channels_last
        self.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return self

    def inference_path(self) -> Dict[str, bool]:
        """What :meth:`set_fast_inference` chose, for the provenance."""
        return {"inplace": self.fast_inference, "channels_last": self.channels_last,
                "fused_conv_prelu": self.fast_inference and self.channels_last}

    # -- training memory (bench/dsn/memory.py) ----------------------------------------------
    memory = "full"

    def set_memory(self, mode: str) -> "DSN":
        """What backward keeps of the blocks: "full" (plain autograd), "blocks" (recompute each block) or
        "reversible" (rebuild each block's input with its inverse). Only while autograd is on."""
        if mode not in MEMORY_MODES:
            raise ValueError(f"unknown memory mode {mode!r}; choose one of {', '.join(MEMORY_MODES)}")
        self.memory = mode
        return self

    # -- passes ------------------------------------------------------------------------------
    def features_enhance(self, h: torch.Tensor) -> torch.Tensor:
        """IFT in the enhancement direction (blocks n..1 inverted), on 64-channel features."""
        if self.memory != "full":
            return run_blocks(list(reversed(self.blocks())), h, "enhance", self.memory)
        for blk in reversed(self.blocks()):
            h = blk.enhance(h)
        return h

    def features_degrade(self, h: torch.Tensor) -> torch.Tensor:
        """IFT in the degradation direction (blocks 1..n forward), on 64-channel features."""
        if self.memory != "full":
            return run_blocks(self.blocks(), h, "degrade", self.memory)
        for blk in self.blocks():
            h = blk.degrade(h)
        return h

    def enhance(self, x: torch.Tensor) -> torch.Tensor:
        """Low -> normal light (official ``netG(x, rev=True)``).  x: N x 3 x H x W, RGB in [0, 1]."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder_in.decode(self.features_enhance(self.encoder_out.encode(x)))

    def degrade(self, y: torch.Tensor) -> torch.Tensor:
        """Normal -> low light (official ``netG(y, rev=False)``)."""
        return self.encoder_out.decode(self.features_degrade(self.encoder_in.encode(y)))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """D(E(x)) = E^T E x: what an untrained network outputs (both directions)."""
        return self.encoder_in.decode(self.encoder_out.encode(x))

    def forward(self, x: torch.Tensor, rev: bool = True) -> torch.Tensor:
        """``rev=True`` (default): :meth:`enhance`; ``rev=False``: :meth:`degrade` (official meaning)."""
        return self.enhance(x) if rev else self.degrade(x)

    def extra_repr(self) -> str:
        c = self.config
        return (f"n_blocks={c['n_blocks']}, subnet={c['subnet']!r}, rounds={c['rounds']}, "
                f"encoder={c['encoder']!r} ({self.encoder_info.get('kind')})")


# --------------------------------------------------------------------------------------------
# counting
# --------------------------------------------------------------------------------------------
def _unused_parameter_ids(model: nn.Module) -> set:
    ids = set()
    for m in model.modules():
        for name in getattr(m, "unused_children", ()):
            for p in getattr(m, name).parameters():
                ids.add(id(p))
    return ids


def count_parameters(model: nn.Module, used_only: bool = True) -> int:
    """Trainable parameters (requires_grad).  ``used_only=True`` excludes modules that are built
    but never called in forward (the official ``soca`` / top-level ``se``).

    Default DSN: 11,559,624 (used_only=True), 11,573,568 (used_only=False).
    """
    unused = _unused_parameter_ids(model) if used_only else set()
    return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in unused)


def parameter_summary(model: nn.Module) -> Dict[str, int]:
    """All the counts of ``dsn_reference.md`` section 1.6 / 7 in one dict."""
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    trainable = count_parameters(model, used_only=False)
    used = count_parameters(model, used_only=True)
    return {
        "trainable": trainable,
        "trainable_used": used,
        "unused": trainable - used,
        "frozen": frozen,
        "total": trainable + frozen,
        "state_dict_keys": len(model.state_dict()),
    }


@torch.no_grad()
def macs_per_pixel(model: DSN, height: int = 5, width: int = 7) -> int:
    """Multiply-accumulates per image pixel of one enhancement pass, counted like
    ``dsn_reference.md`` section 1.6: every stride-1 3x3 conv run on full-resolution maps (its
    weight count per pixel) plus E and D; biases and the channel-attention layers on pooled 1x1
    maps are ignored.  Default DSN: 11,578,752.
    """
    if height < 2 or width < 2:
        raise ValueError("use height, width >= 2 so pooled 1x1 maps can be told apart")
    total = [0]

    def hook(mod: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        if out.shape[-2:] == (height, width):
            total[0] += mod.weight.numel()  # Cout * Cin/groups * kh * kw MACs per output pixel

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        p = next(model.parameters())
        model.enhance(torch.zeros(1, 3, height, width, dtype=p.dtype, device=p.device))
    finally:
        for h in handles:
            h.remove()
    enc = model.encoder_in
    return total[0] + 2 * (enc.haar_weights1.numel() + enc.haar_weights2.numel())

"""The networks of White-Box / Exposure (official ``agent.py``, ``critics.py``, ``net.py``).

* **Conv trunk** (``feature_extractor`` / ``cnn``): the input (image, optionally with per-image scalars broadcast
  to extra channels) minus 0.5, then 4×4 stride-2 convolutions with leaky ReLU 0.2 ('SAME' padding: one pixel per
  side at even sizes) from 64×64 down to 4×4: 32, 64, 128, 256 channels -> 4,096 features.
* **Agent** (actor): a shared trunk on ``[image, state]`` (3 + 11 channels) with dropout (keep 0.5, applied at
  training *and* test time, as ``tf.nn.dropout`` in the official graph); per filter an FC 128 (leaky ReLU) and an
  FC ``n_params + 6`` (the last 6 are the unused mask parameters); a separate trunk + FC 128 + FC 8 gives the
  filter-choice logits -> softmax, mixed with the uniform distribution (exploration 0.05) and renormalised.
* **Critic** (``critic``): image + (mean luminance, luminance variance, mean saturation) as 3 extra channels ->
  trunk -> FC 128 (leaky ReLU) -> FC 1. The **value** network is the same function on image + state (11) + the
  three statistics (17 channels), with its own weights.

Initialisation as ``tf.contrib.layers``: Glorot-uniform weights, zero biases.

Parameter count (official graph): agent 6,123,680; critic 1,216,225; value 1,221,857; total 8,561,762.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .filters import FILTERS, MASK_PARAMS, N_FILTERS

__all__ = ["N_STATE", "STATE_REWARD", "STATE_STOPPED", "STATE_STEP", "STATE_USAGE", "ConvTrunk", "Agent", "Critic",
           "WhiteBoxNets", "image_statistics", "AGENT_PARAMS", "CRITIC_PARAMS", "VALUE_PARAMS", "TOTAL_PARAMS"]

STATE_REWARD, STATE_STOPPED, STATE_STEP, STATE_USAGE = 0, 1, 2, 3
N_STATE = 3 + N_FILTERS          # 11
AGENT_PARAMS, CRITIC_PARAMS, VALUE_PARAMS = 6_123_680, 1_216_225, 1_221_857
TOTAL_PARAMS = AGENT_PARAMS + CRITIC_PARAMS + VALUE_PARAMS    # 8,561,762


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def _glorot(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def broadcast_channels(img: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
    """``enrich_image_input``: N×k scalars as k constant channels appended to the N×3×H×W image."""
    n, _, h, w = img.shape
    return torch.cat([img, scalars[:, :, None, None].expand(n, scalars.shape[1], h, w).to(img.dtype)], dim=1)


class ConvTrunk(nn.Module):
    def __init__(self, in_channels: int, image_size: int = 64, base_channels: int = 32, output_dim: int = 4096,
                 final_from_output_dim: bool = True):
        super().__init__()
        layers = []
        size, ch, cin = image_size // 2, base_channels, in_channels
        layers.append(nn.Conv2d(cin, ch, 4, 2, 1))
        cin = ch
        while size > 4:
            if final_from_output_dim and size == 8:
                ch = output_dim // 16
            else:
                ch *= 2
            size //= 2
            layers.append(nn.Conv2d(cin, ch, 4, 2, 1))
            cin = ch
        self.convs = nn.ModuleList(layers)
        self.output_dim = cin * 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - 0.5
        for conv in self.convs:
            x = lrelu(conv(x))
        return x.flatten(1)


def dropout(x: torch.Tensor, keep: float, generator: torch.Generator | None) -> torch.Tensor:
    """``tf.nn.dropout(x, keep)``; with ``generator`` (a CPU generator) the mask is drawn on the CPU, so the
    result does not depend on the device."""
    if keep >= 1.0:
        return x
    if generator is None:
        return F.dropout(x, 1.0 - keep, training=True)
    mask = (torch.rand(x.shape, generator=generator) < keep).to(x.device, x.dtype)
    return x * mask / keep


class Agent(nn.Module):
    def __init__(self, image_size: int = 64, base_channels: int = 32, feature_dims: int = 4096, fc1: int = 128,
                 exploration: float = 0.05, dropout_keep: float = 0.5):
        super().__init__()
        self.exploration, self.dropout_keep = exploration, dropout_keep
        self.trunk = ConvTrunk(3 + N_STATE, image_size, base_channels, feature_dims)
        self.heads_fc1 = nn.ModuleList([nn.Linear(feature_dims, fc1) for _ in FILTERS])
        self.heads_fc2 = nn.ModuleList([nn.Linear(fc1, f.n_params + MASK_PARAMS) for f in FILTERS])
        self.selector_trunk = ConvTrunk(3 + N_STATE, image_size, base_channels, feature_dims)
        self.selector_fc1 = nn.Linear(feature_dims, fc1)
        self.selector_fc2 = nn.Linear(fc1, N_FILTERS)
        _glorot(self)

    def forward(self, img: torch.Tensor, states: torch.Tensor, generator: torch.Generator | None = None,
                use_dropout: bool = True) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(decoded parameters of every filter, pdf N×8, entropy N×1). Dropout masks come from ``generator``
        (a CPU generator) when given, else from the global RNG; ``use_dropout=False`` turns dropout off."""
        keep = self.dropout_keep if use_dropout else 1.0
        x = broadcast_channels(img, states)
        feat = dropout(self.trunk(x), keep, generator)
        params = []
        for f, fc1, fc2 in zip(FILTERS, self.heads_fc1, self.heads_fc2):
            raw = fc2(lrelu(fc1(feat)))
            params.append(f.regress(raw[:, : f.n_params]))
        sel = dropout(self.selector_trunk(x), keep, generator)
        logits = self.selector_fc2(lrelu(self.selector_fc1(sel)))
        pdf = torch.softmax(logits, dim=1) + 1e-37
        pdf = pdf * (1 - self.exploration) + self.exploration / N_FILTERS
        pdf = pdf / (pdf.sum(dim=1, keepdim=True) + 1e-30)
        entropy = (-pdf * torch.log(pdf)).sum(dim=1, keepdim=True)
        return params, pdf, entropy


def image_statistics(images: torch.Tensor) -> torch.Tensor:
    """(mean luminance, luminance variance, mean saturation) per image, as the official critic computes them."""
    lum = 0.27 * images[:, 0] + 0.67 * images[:, 1] + 0.06 * images[:, 2] + 1e-5
    mean = lum.mean(dim=(1, 2))
    var = ((lum - mean[:, None, None]) ** 2).mean(dim=(1, 2))
    c = images.clamp(0.0, 1.0)
    i_max, i_min = c.max(dim=1).values, c.min(dim=1).values
    sat = (i_max - i_min) / (torch.minimum(i_max + i_min, 2.0 - i_max - i_min) + 1e-2)
    return torch.stack([mean, var, sat.mean(dim=(1, 2))], dim=1)


class Critic(nn.Module):
    """The WGAN critic (``n_state = 0``) or the value network (``n_state = 11``)."""

    def __init__(self, n_state: int = 0, image_size: int = 64, base_channels: int = 32, fc1: int = 128):
        super().__init__()
        self.n_state = n_state
        self.trunk = ConvTrunk(3 + n_state + 3, image_size, base_channels, final_from_output_dim=False)
        self.fc1 = nn.Linear(self.trunk.output_dim, fc1)
        self.fc2 = nn.Linear(fc1, 1)
        _glorot(self)

    def forward(self, images: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        stats = image_statistics(images)
        scalars = stats if states is None else torch.cat([states, stats], dim=1)
        h = self.trunk(broadcast_channels(images, scalars))
        return self.fc2(lrelu(self.fc1(h)))


class WhiteBoxNets(nn.Module):
    """Everything trainable: the agent (actor), the WGAN critic and the value network."""

    def __init__(self, **kw: Any):
        super().__init__()
        self.agent = Agent(**{k: v for k, v in kw.items() if k in ("image_size", "base_channels", "feature_dims",
                                                                     "fc1", "exploration", "dropout_keep")})
        ck = {k: v for k, v in kw.items() if k in ("image_size", "base_channels", "fc1")}
        self.critic = Critic(0, **ck)
        self.value = Critic(N_STATE, **ck)

    def reset_parameters(self, seed: int) -> None:
        """Glorot/zero init from a private CPU generator (the same tensors on every device)."""
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    fan_in = m.weight[0].numel()
                    fan_out = m.weight.shape[0] * (m.weight[0, 0].numel() if m.weight.dim() > 2 else 1)
                    bound = math.sqrt(6.0 / (fan_in + fan_out))
                    w = (torch.rand(m.weight.shape, generator=g) * 2 - 1) * bound
                    m.weight.copy_(w.to(m.weight.device))
                    m.bias.zero_()

"""The 12 global colour actions of the Distort-and-Recover agent (official ``action.py`` / ``action_set.py``).

The agent works on float RGB in [0, 1] (the official code keeps ``image - 0.5`` in float64 and adds 0.5 back
around each action); every action ends with a clip to [0, 1]:

====  =====================  ==============================================================================
 idx  action                 operation
====  =====================  ==============================================================================
 0/1  contrast ×0.95/×1.05   ``b·x + (1-b)·mean(x)``, the mean over *all* pixels and channels of the image
 2/3  saturation ×0.95/×1.05 ``b·x + (1-b)·g``, g = the per-pixel mean of R, G, B (not a luma)
 4/5  brightness ×0.93/×1.07 ``b·x`` (a blend with black)
 6-11 white balance          per-channel gains (r, g, b)/255 with (240,240,255), (270,270,255), (255,240,240),
                             (255,270,270), (240,255,240), (270,255,270)
====  =====================  ==============================================================================

The 16 tone-curve actions (indices 12-27: Lab-L and R/G/B sigmoid curves of width 4) are defined in the
official code but disabled (``action_size = 12``) and are not part of this agent.

These are *not* the distortion operators of ``bench/data/distort.py`` (which synthesise the FiveK inputs): the
distortions are PIL ``ImageEnhance`` operations on uint8 images whose degenerate images are the luma mean
(contrast) and the luma image (saturation), with rounding after every operator, and a kelvin white balance;
the agent's actions are float operations with channel-mean degenerates and fixed gains. So nothing is shared
with that module (``tests/test_baseline_distort_recover.py`` shows how close brightness comes to PIL's).

The contrast mean is that of the image the action is applied to: when the chosen actions are replayed on the
full-resolution image (as the official test does) its own mean is used, so the full-resolution result is not
exactly an upsampled copy of the 224×224 one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

__all__ = ["Action", "ACTIONS", "N_ACTIONS", "apply_action", "replay", "describe"]


@dataclass(frozen=True)
class Action:
    index: int
    op: str                                  # contrast | saturation | brightness | white_balance
    factor: float = 1.0                      # contrast, saturation, brightness
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)   # white balance (already divided by 255)

    @property
    def name(self) -> str:
        if self.op == "white_balance":
            r, g, b = (round(x * 255) for x in self.gains)
            return f"white_balance ({r},{g},{b})/255"
        return f"{self.op} x{self.factor:g}"

    def record(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "op": self.op, "name": self.name}
        if self.op == "white_balance":
            d["gains"] = [float(x) for x in self.gains]
        else:
            d["factor"] = self.factor
        return d


_WB = ((240, 240, 255), (270, 270, 255), (255, 240, 240), (255, 270, 270), (240, 255, 240), (270, 255, 270))
ACTIONS: tuple[Action, ...] = (
    Action(0, "contrast", 0.95), Action(1, "contrast", 1.05),
    Action(2, "saturation", 0.95), Action(3, "saturation", 1.05),
    Action(4, "brightness", 0.93), Action(5, "brightness", 1.07),
    *(Action(6 + i, "white_balance", gains=(r / 255.0, g / 255.0, b / 255.0)) for i, (r, g, b) in enumerate(_WB)),
)
N_ACTIONS = len(ACTIONS)
assert N_ACTIONS == 12


def _apply(x: torch.Tensor, a: Action) -> torch.Tensor:
    b = a.factor
    if a.op == "contrast":
        degenerate = x.mean(dim=(1, 2, 3), keepdim=True)
        y = b * x + (1 - b) * degenerate
    elif a.op == "saturation":
        degenerate = x.mean(dim=1, keepdim=True)
        y = b * x + (1 - b) * degenerate
    elif a.op == "brightness":
        y = b * x + (1 - b) * torch.zeros_like(x)
    elif a.op == "white_balance":
        y = x * torch.tensor(a.gains, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    else:  # pragma: no cover - the table above is closed
        raise ValueError(a.op)
    return y.clamp(0.0, 1.0)


def apply_action(x: torch.Tensor, actions: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Apply one action to every image of the N×3×H×W batch ``x`` (an int), or one per image (a sequence of
    length N; an index of -1 leaves that image unchanged, the official "stopped" marker)."""
    if isinstance(actions, int):
        return _apply(x, ACTIONS[actions])
    idx = [int(a) for a in (actions.tolist() if isinstance(actions, torch.Tensor) else actions)]
    if len(idx) != x.shape[0]:
        raise ValueError(f"{len(idx)} actions for {x.shape[0]} images")
    out = x.clone()
    for k in sorted(set(idx)):
        if k < 0:
            continue
        rows = [i for i, a in enumerate(idx) if a == k]
        out[rows] = _apply(x[rows], ACTIONS[k])
    return out


def replay(x: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """Apply a sequence of action indices, in order, to the batch ``x`` (how the test replays the agent's
    choices on the full-resolution image)."""
    for k in indices:
        x = _apply(x, ACTIONS[int(k)])
    return x


def describe(indices: Sequence[int]) -> list[dict[str, Any]]:
    return [ACTIONS[int(k)].record() for k in indices]

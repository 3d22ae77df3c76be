"""Small real methods used by the pipeline tests (registered into the registry by the tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.methods.base import Method


@dataclass
class GainConfig:
    gain: float = 2.0
    fail_after: int = -1  # raise after this many images (simulates a crash), -1 never


class Gain(Method):
    name = "gain"
    display_name = "Gain"
    family = "classical"
    Config = GainConfig
    calls = 0

    def enhance(self, low):
        Gain.calls += 1
        if self.config.fail_after >= 0 and Gain.calls > self.config.fail_after:
            raise KeyboardInterrupt
        return (low * self.config.gain).clamp(0, 1)


@dataclass
class FitConfig:
    steps: int = 3


class FitGain(Method):
    """Trainable: learns the global gain mapping low to high on the training pairs."""

    name = "fitgain"
    display_name = "FitGain"
    family = "supervised"
    trainable = True
    Config = FitConfig
    profiles = {"smoke": {"steps": 1}}
    trained = 0

    def setup(self, device, weights=None):
        self.device = device
        self.model = torch.nn.Linear(1, 1, bias=False)
        if weights is not None:
            self.model.weight.data.fill_(json.loads(Path(weights).read_text())["gain"])
        return {"gain_source": "fitted" if weights else "untrained"}

    def train(self, train_pairs, val_pairs, out_dir, seed, progress=True):
        FitGain.trained += 1
        ratios = [p.load_high().mean() / max(p.load_low().mean(), 1e-6) for p in train_pairs]
        ckpt = Path(out_dir) / "checkpoint.json"
        ckpt.write_text(json.dumps({"gain": float(np.mean(ratios))}))
        return ckpt

    def enhance(self, low):
        return (low * self.model.weight.detach().view(())).clamp(0, 1)

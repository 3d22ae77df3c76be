"""Checks many method tests share: a smoke run through the harness, and a loss that falls under Adam."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import yaml

from bench.run import RunSpec, execute


def assert_image_like(out: torch.Tensor, low: torch.Tensor) -> None:
    """An enhanced image as the adapter contract promises: ``low``'s shape, float32, finite, within [0, 1]."""
    assert out.shape == low.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def seeded_method(cls, seed: int = 0, config: Any = None):
    """``cls(config)`` set up on the CPU right after seeding torch: its seeded untrained weights."""
    torch.manual_seed(seed)
    m = cls(config)
    m.setup(torch.device("cpu"))
    return m


def smoke_run(method: str, params: int | None = None, **spec: Any):
    """``bench run --method METHOD --dataset demo --profile smoke``, checked to have finished with finite
    scores from weights it trained (and ``params`` trainable parameters): (result, config.yaml, metric means)."""
    result = execute(RunSpec(method, "demo", **{"profile": "smoke", "progress": False, **spec}))
    assert (result.run_dir / "DONE").exists()
    doc = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert doc["weights"]["source"] == "trained"
    if params is not None:
        assert doc["trainable_parameters"] == params
    means = {r["metric"]: float(r["mean"]) for r in result.metrics}
    assert np.isfinite(means["psnr"]) and np.isfinite(means["ssim"])
    return result, doc, means


def adam_losses(params, loss: Callable[[], torch.Tensor], steps: int = 25, **adam: Any) -> list[float]:
    """The loss at each of ``steps`` Adam steps (lr 1e-3 unless ``adam`` says otherwise) on a fixed batch."""
    opt = torch.optim.Adam(params, **{"lr": 1e-3, **adam})
    out = []
    for _ in range(steps):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
        out.append(float(value.detach()))
    return out

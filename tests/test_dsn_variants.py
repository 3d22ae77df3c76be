"""Issue 3's remaining DSN tests: gradient reach through both losses, and every Table 2 variant preset
builds, trains a smoke step through the adapter and enhances an odd-sized image (CPU, 16-px crops)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from bench.dsn.adapter import TABLE2, VARIANTS, DSNMethod
from bench.dsn.losses import l2_loss, quantize_ste
from bench.dsn.model import DSN
from bench.methods.base import build_config
from train_pairs import ArrayPair

torch.set_num_threads(1)


def _pairs():
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate([(18, 21), (16, 17)]):
        high = rng.integers(30, 256, (h, w, 3), dtype=np.uint8)
        out.append(ArrayPair(f"p{i}", (high * 0.25).astype(np.uint8), high))
    return out


# ------------------------------------------------------------------------------------------------ gradients
def _unused_names(model):
    names = set()
    for mod_name, mod in model.named_modules():
        for child in getattr(mod, "unused_children", ()):
            for p_name, _ in getattr(mod, child).named_parameters():
                names.add(f"{mod_name}.{child}.{p_name}")
    return names


@pytest.fixture(scope="module")
def perturbed_default():
    torch.manual_seed(0)
    model = DSN()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero tails: at initialisation they block every gradient upstream of them
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return model


@pytest.mark.parametrize("which", ["forward", "backward", "both"])
def test_gradients_reach_every_used_trainable_tensor(perturbed_default, which):
    model = perturbed_default
    g = torch.Generator().manual_seed(2)
    low, high = torch.rand(1, 3, 9, 11, generator=g) * 0.3, torch.rand(1, 3, 9, 11, generator=g)
    model.zero_grad(set_to_none=True)
    loss = torch.zeros(())
    if which in ("forward", "both"):
        loss = loss + l2_loss(model.enhance(low), high)                 # ℓ_H
    if which in ("backward", "both"):
        loss = loss + l2_loss(model.degrade(quantize_ste(high)), low)    # ℓ_L
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    no_grad = {n for n, p in trainable.items() if p.grad is None or not bool(p.grad.abs().sum() > 0)}
    unused = _unused_names(model)
    assert len(unused) == 8 * 3 * 5                                     # soca: conv, bias, PReLU, conv, bias
    assert all(".soca." in n for n in unused)
    assert no_grad == unused                                            # exactly the never-called modules
    assert all(trainable[n].grad is None for n in unused)               # (None, so Adam skips them)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert len(frozen) == 4 and all(p.grad is None for p in frozen)    # the fixed encoder/decoder tensors


# ------------------------------------------------------------------------------------------------ variants
def _log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_builds_trains_a_step_and_enhances_odd_sizes(tmp_path, variant):
    assert set(VARIANTS) == set(TABLE2)
    sets = {"variant": variant, "crop": "16", "batch": "2", "iterations": "1", "milestones": "",
            "checkpoint_every": "0", "val_every": "0"}
    config = build_config(DSNMethod, "smoke", sets, "demo")
    assert config.variant == variant
    expect_blocks = VARIANTS[variant].get("n_blocks", 8)
    m = DSNMethod(config)
    m.setup(torch.device("cpu"))
    assert m.model.n_blocks == expect_blocks
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in m.build_model().state_dict().items()}
    ckpt = m.train(_pairs(), [], tmp_path / variant, seed=0, progress=False)
    rows = _log(tmp_path / variant / "train_log.csv")
    assert len(rows) == 1 and math.isfinite(float(rows[0]["loss"]))
    assert ("loss_backward" in rows[0]) is VARIANTS[variant].get("backward_loss", True)
    after = m.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)    # the step changed the weights
    x = torch.rand(1, 3, 13, 17, generator=torch.Generator().manual_seed(3))  # odd H and W
    y = m.enhance(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # the checkpoint reloads into a fresh adapter of the same variant, same output
    again = DSNMethod(build_config(DSNMethod, "smoke", sets, "demo"))
    prov = again.setup(torch.device("cpu"), ckpt)
    assert prov["variant"] == variant and prov["weights_kind"] == "bench_checkpoint"
    assert torch.equal(again.enhance(x), y)

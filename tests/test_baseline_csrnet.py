"""Tests for the CSRNet baseline (baselines/csrnet): network, GFM known answers, sampler, adapter, end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.methods.base import TrainPair, build_config
from baselines.csrnet.adapter import CSRNetConfig, CSRNetMethod, WholePairSampler
from baselines.csrnet.model import CSRNet

from train_pairs import png_pairs
from smoke import assert_image_like, seeded_method, smoke_run

torch.set_num_threads(1)

MOD_LAYERS = ("cond_scale1", "cond_scale2", "cond_scale3", "cond_shift1", "cond_shift2", "cond_shift3")


def _method(seed: int = 0, **overrides) -> CSRNetMethod:
    return seeded_method(CSRNetMethod, seed, CSRNetConfig(**overrides))


def _pairs(tmp_path, sizes=((30, 40), (30, 40), (36, 28))) -> list[TrainPair]:
    return png_pairs(tmp_path, sizes)


def _per_pixel_mlp(model: CSRNet, x: torch.Tensor, scales=(0.0, 0.0, 0.0), shifts=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Independent reference: the three 1×1 convs as matrices applied to every pixel in float64 NumPy, each
    followed by y·(1 + s) + t with constant s, t, and ReLU after the first two."""
    mats = [(getattr(model, f"conv{i}").weight.detach().double().numpy()[:, :, 0, 0],
             getattr(model, f"conv{i}").bias.detach().double().numpy()) for i in (1, 2, 3)]
    v = x.double().numpy()[0].reshape(3, -1)                  # 3 × (H·W)
    for i, (w, b) in enumerate(mats):
        v = (w @ v + b[:, None]) * (1 + scales[i]) + shifts[i]
        if i < 2:
            v = np.maximum(v, 0)
    return v.reshape(1, 3, *x.shape[-2:])


def _set_modulation(model: CSRNet, scale: float, shift: float) -> None:
    with torch.no_grad():
        for name in MOD_LAYERS:
            layer = getattr(model, name)
            layer.weight.zero_()
            layer.bias.fill_(scale if "scale" in name else shift)


# ---- architecture -----------------------------------------------------------------------------
def test_metadata_and_parameter_count():
    assert CSRNetMethod.name == "csrnet" and CSRNetMethod.family == "supervised" and CSRNetMethod.uses_pairs
    m = _method()
    assert m.trainable_parameters() == 36_489                # baselines.md §12 (computed)
    count = lambda prefix: sum(p.numel() for n, p in m.model.named_parameters() if n.startswith(prefix))  # noqa: E731
    assert count("cond_net.") == 3 * 32 * 49 + 32 + 2 * (32 * 32 * 9 + 32) == 23_232
    assert count("cond_scale") + count("cond_shift") == 4 * (32 * 64 + 64) + 2 * (32 * 3 + 3) == 8_646
    assert count("conv") == (3 * 64 + 64) + (64 * 64 + 64) + (64 * 3 + 3) == 4_611
    assert tuple(m.model.cond_net.conv1.weight.shape) == (32, 3, 7, 7)
    assert m.model.cond_net.conv1.stride == (2, 2) and m.model.cond_net.conv3.stride == (2, 2)
    for name in ("smoke", "quick", "paper"):
        build_config(CSRNetMethod, name, {}, "fivek")


def test_enhance_shapes_and_range():
    m = _method()
    torch.manual_seed(0)
    for shape in [(1, 3, 37, 53), (1, 3, 400, 600)]:
        low = torch.rand(*shape) * 0.3
        out = m.enhance(low)
        assert_image_like(out, low)
    with pytest.raises(BenchError, match="at least 5"):
        m.enhance(torch.rand(1, 3, 4, 30))


def test_deterministic_under_seed():
    low = torch.rand(1, 3, 24, 31, generator=torch.Generator().manual_seed(3)) * 0.4
    a, b = _method(5).enhance(low), _method(5).enhance(low)
    assert torch.equal(a, b)
    with torch.no_grad():   # the untrained outputs may all clamp to 0: compare the raw network outputs too
        ra, rb, rc = _method(5).model(low), _method(5).model(low), _method(6).model(low)
    assert torch.equal(ra, rb)
    assert not torch.equal(ra, rc)


# ---- known answers ----------------------------------------------------------------------------
def test_neutral_modulation_is_the_per_pixel_base_network():
    m = _method(2)
    _set_modulation(m.model, 0.0, 0.0)                        # γ = β = 0: y·(1 + 0) + 0
    x = torch.rand(1, 3, 9, 13, generator=torch.Generator().manual_seed(4))
    out = m.model(x).detach().double().numpy()
    np.testing.assert_allclose(out, _per_pixel_mlp(m.model, x), rtol=1e-5, atol=1e-6)
    # pixel-wise: permuting the pixels permutes the output
    perm = torch.randperm(9 * 13, generator=torch.Generator().manual_seed(5))
    xp = x.flatten(2)[..., perm].view_as(x)
    assert torch.allclose(m.model(xp).flatten(2), m.model(x).flatten(2)[..., perm], atol=1e-6)


def test_constant_modulation_known_answer():
    m = _method(3)
    _set_modulation(m.model, 0.5, -0.1)
    x = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(6))
    out = m.model(x).detach().double().numpy()
    np.testing.assert_allclose(out, _per_pixel_mlp(m.model, x, (0.5,) * 3, (-0.1,) * 3), rtol=1e-5, atol=1e-6)


def test_condition_is_global():
    m = _method(4)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    y = x.clone()
    y[..., 24:, 24:] = 1.0                                    # change one corner only
    a, b = m.model(x), m.model(y)
    assert not torch.allclose(a[..., :8, :8], b[..., :8, :8])  # the far corner's output moved (via the condition)
    _set_modulation(m.model, 0.0, 0.0)
    assert torch.equal(m.model(x)[..., :8, :8], m.model(y)[..., :8, :8])


# ---- training ---------------------------------------------------------------------------------
def test_training_lowers_loss_on_fixed_batch():
    m = _method(1)
    g = torch.Generator().manual_seed(2)
    low = torch.rand(1, 3, 48, 64, generator=g) * 0.3
    high = (low * 2.5 + 0.05).clamp(0, 1)
    opt = torch.optim.Adam(m.model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    m.model.train()
    values = []
    for _ in range(30):
        opt.zero_grad()
        loss = m.loss(m.model(low), high)
        loss.backward()
        opt.step()
        values.append(float(loss.detach()))
    assert np.mean(values[-3:]) < 0.75 * np.mean(values[:3])


def test_whole_pair_sampler(tmp_path):
    pairs = _pairs(tmp_path)
    s = WholePairSampler(pairs, 1, seed=0)
    ids = []
    for _ in range(6):
        b = s.next_batch()
        assert b.low.shape == b.high.shape and b.low.shape[0] == 1
        assert b.low.shape[-2:] in ((30, 40), (36, 28))                  # whole images, no crop
        ids += b.ids
    assert sorted(ids[:3]) == sorted(ids[3:]) == ["p0", "p1", "p2"]
    state = s.state_dict()
    nxt = s.next_batch()
    s.load_state_dict(state)
    assert s.next_batch().ids == nxt.ids
    with pytest.raises(BenchError, match="one size"):
        WholePairSampler(pairs, 2, seed=0)
    assert WholePairSampler(pairs[:2], 2, seed=0).next_batch().low.shape == (2, 3, 30, 40)


def test_train_checkpoint_roundtrip(tmp_path):
    pairs = _pairs(tmp_path)
    m = CSRNetMethod(build_config(CSRNetMethod, "smoke", {}))
    m.setup(torch.device("cpu"))
    ckpt = m.train(pairs, pairs[:1], tmp_path / "run", seed=0, progress=False)
    low = torch.rand(1, 3, 21, 26) * 0.3
    trained = m.enhance(low)
    fresh = CSRNetMethod(build_config(CSRNetMethod, "smoke", {}))
    fresh.setup(torch.device("cpu"), ckpt)
    assert torch.equal(fresh.enhance(low), trained)
    official = tmp_path / "csrnet.pth"
    torch.save({"module." + k: v for k, v in m.model.state_dict().items()}, official)
    other = CSRNetMethod()
    assert other.setup(torch.device("cpu"), official)["weights_kind"] == "official_state_dict"
    assert torch.equal(other.enhance(low), trained)
    # crops (non-official option) go through the shared CropSampler
    cropped = CSRNetMethod(build_config(CSRNetMethod, "smoke", {"crop": "16", "batch": "2"}))
    cropped.setup(torch.device("cpu"))
    assert cropped.train(pairs, [], tmp_path / "run_crop", seed=0, progress=False).exists()


def test_config_validation():
    with pytest.raises(BenchError):
        build_config(CSRNetMethod, "smoke", {"loss": "l3"})
    with pytest.raises(BenchError):
        build_config(CSRNetMethod, "smoke", {"augment": "true"})          # augmentation needs crops
    c = build_config(CSRNetMethod, "paper", {}, "fivek")
    assert (c.iterations, c.milestones, c.lr, c.betas, c.batch, c.crop) == (
        600_000, (100_000, 200_000, 300_000, 400_000, 500_000), 1e-4, (0.9, 0.99), 1, 0)


def test_end_to_end_smoke(monkeypatch):
    result, doc, rows = smoke_run("csrnet", params=36_489)

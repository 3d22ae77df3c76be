"""Tests for the Zero-DCE baseline (baselines/zero_dce): network, curve, losses, sampler, adapter, end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.methods.base import TrainPair, build_config
from baselines.zero_dce import losses as L
from baselines.zero_dce.adapter import ResizedLowSampler, ZeroDCE, ZeroDCEConfig
from baselines.zero_dce.model import apply_curves, le_curve
from smoke import assert_image_like, seeded_method, smoke_run

torch.set_num_threads(1)


def _method(seed: int = 0, **overrides) -> ZeroDCE:
    return seeded_method(ZeroDCE, seed, ZeroDCEConfig(**overrides))


def _pairs(tmp_path, n: int = 3, size=(40, 56), with_high: bool = False) -> list[TrainPair]:
    from PIL import Image

    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        low = (rng.random((*size, 3)) * 60 + 10 * i).astype(np.uint8)
        lp = tmp_path / f"low{i}.png"
        Image.fromarray(low).save(lp)
        hp = None
        if with_high:
            hp = tmp_path / f"high{i}.png"
            Image.fromarray(np.clip(low.astype(int) * 3, 0, 255).astype(np.uint8)).save(hp)
        out.append(TrainPair(f"p{i}", lp, hp))
    return out


# ---- architecture -----------------------------------------------------------------------------
def test_metadata_and_parameter_count():
    assert ZeroDCE.name == "zero-dce" and ZeroDCE.family == "zero-reference"
    assert ZeroDCE.trainable and not ZeroDCE.uses_pairs and ZeroDCE.bibkey
    m = _method()
    assert m.trainable_parameters() == 79_416            # baselines.md §1 (computed; matches the paper)
    shapes = {k: tuple(v.shape) for k, v in m.model.state_dict().items()}
    assert shapes["e_conv1.weight"] == (32, 3, 3, 3)
    assert shapes["e_conv5.weight"] == (32, 64, 3, 3) and shapes["e_conv6.weight"] == (32, 64, 3, 3)
    assert shapes["e_conv7.weight"] == (24, 64, 3, 3)
    assert len(shapes) == 14
    for name in ("smoke", "quick", "paper"):
        build_config(ZeroDCE, name, {}, "lol")


def test_official_init_std():
    m = _method()
    w = torch.cat([p.detach().flatten() for n, p in m.model.named_parameters() if n.endswith("weight")])
    assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.002


def test_enhance_shapes_and_range():
    m = _method()
    torch.manual_seed(0)
    for shape in [(1, 3, 37, 53), (1, 3, 400, 600)]:
        low = torch.rand(*shape) * 0.3
        out = m.enhance(low)
        assert_image_like(out, low)


def test_deterministic_under_seed():
    low = torch.rand(1, 3, 24, 31, generator=torch.Generator().manual_seed(3)) * 0.4
    a, b, c = _method(5).enhance(low), _method(5).enhance(low), _method(6).enhance(low)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ---- curve known answers ----------------------------------------------------------------------
def test_curve_known_answers():
    x = torch.linspace(0, 1, 11)
    assert torch.equal(le_curve(x, 0.0), x)                                   # α = 0: identity
    assert float(le_curve(torch.tensor(0.5), 1.0)) == pytest.approx(0.75)      # α = 1: 0.5 -> 0.75
    assert float(le_curve(torch.tensor(0.5), -1.0)) == pytest.approx(0.25)
    # the code's form x + r(x² − x) is LE(x; −r); 8 iterations of α = 1 stay in [0, 1] and are monotone
    img = torch.full((1, 3, 2, 2), 0.5)
    assert torch.equal(apply_curves(img, torch.zeros(1, 24, 2, 2)), img)
    one = apply_curves(img, -torch.ones(1, 3, 2, 2))
    assert torch.allclose(one, torch.full_like(img, 0.75))
    ramp = torch.linspace(0, 1, 101).view(1, 1, 1, -1).expand(1, 3, 1, 101)
    out = apply_curves(ramp, -torch.ones(1, 24, 1, 101))
    assert float(out.min()) >= 0 and float(out.max()) <= 1 and bool((out.diff(dim=-1) >= 0).all())
    expect = ramp.clone()
    for _ in range(8):
        expect = 2 * expect - expect ** 2
    assert torch.allclose(out, expect, atol=1e-6)


def test_zero_last_layer_is_identity_and_curve_maps_are_used():
    m = _method()
    with torch.no_grad():
        m.model.e_conv7.weight.zero_()
        m.model.e_conv7.bias.zero_()
    low = torch.rand(1, 3, 17, 19) * 0.5
    mid, out, maps = m.model(low)
    assert torch.equal(out, low) and torch.equal(mid, low) and maps.shape == (1, 24, 17, 19)
    with torch.no_grad():
        m.model.e_conv7.bias.fill_(-10.0)    # tanh -> -1: A = +1 every iteration, as the 8-step ramp above
    _, out, _ = m.model(torch.full((1, 3, 5, 5), 0.5))
    v = 0.5
    for _ in range(8):
        v = 2 * v - v * v
    assert torch.allclose(out, torch.full_like(out, v), atol=1e-6)


# ---- losses -----------------------------------------------------------------------------------
def test_exposure_known_answers():
    assert float(L.exposure_control(torch.full((2, 3, 32, 32), 0.6))) == pytest.approx(0.0, abs=1e-12)
    assert float(L.exposure_control(torch.full((1, 3, 32, 32), 0.5))) == pytest.approx(0.01, rel=1e-5)
    assert float(L.exposure_control(torch.full((1, 3, 32, 32), 0.5), form="paper")) == pytest.approx(0.1, rel=1e-5)
    # 16×16 patches of the channel mean: left half 0.2, right half 0.6 -> mean of (0.4², 0) = 0.08
    x = torch.full((1, 3, 16, 32), 0.6)
    x[..., :16] = 0.2
    assert float(L.exposure_control(x)) == pytest.approx(0.08, rel=1e-5)


def _official_style_spatial(enh, org):
    """Independent check: the official 3×3 difference kernels with zero padding on 4×4-pooled channel means."""
    ks = [[[0, 0, 0], [-1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 1, -1], [0, 0, 0]],
          [[0, -1, 0], [0, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 1, 0], [0, -1, 0]]]
    pe, po = F.avg_pool2d(enh.mean(1, keepdim=True), 4), F.avg_pool2d(org.mean(1, keepdim=True), 4)
    total = 0
    for k in ks:
        w = torch.tensor(k, dtype=torch.float32).view(1, 1, 3, 3)
        total = total + (F.conv2d(po, w, padding=1) - F.conv2d(pe, w, padding=1)) ** 2
    return total.mean()


def test_spatial_consistency():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 32, 40, generator=g), torch.rand(2, 3, 32, 40, generator=g)
    assert float(L.spatial_consistency(a, a)) == 0.0
    assert float(L.spatial_consistency(a, b)) == pytest.approx(float(_official_style_spatial(a, b)), rel=1e-5)
    # a global brightness change keeps interior contrasts; only the zero-padded border differences remain
    assert float(L.spatial_consistency(a + 0.1, a)) == pytest.approx(float(_official_style_spatial(a + 0.1, a)), rel=1e-5)
    assert float(L.spatial_consistency(-a, a, form="paper")) == pytest.approx(0.0, abs=1e-12)  # |·| ignores sign


def test_colour_constancy_known_answers_and_grey_gradient():
    x = torch.empty(1, 3, 4, 4)
    x[:, 0], x[:, 1], x[:, 2] = 0.5, 0.3, 0.1
    # D_RG = 0.04, D_RB = 0.16, D_GB = 0.04
    assert float(L.colour_constancy(x)) == pytest.approx(np.sqrt(0.04**2 + 0.16**2 + 0.04**2), rel=1e-5)
    assert float(L.colour_constancy(x, form="paper")) == pytest.approx(0.24, rel=1e-5)
    grey = torch.full((1, 3, 4, 4), 0.4, requires_grad=True)
    loss = L.colour_constancy(grey)
    loss.backward()
    assert float(loss.detach()) < 1e-18 and torch.isfinite(grey.grad).all()


def test_illumination_smoothness_known_answers():
    assert float(L.illumination_smoothness(torch.full((2, 24, 6, 7), 0.3))) == 0.0
    ramp = (0.1 * torch.arange(5.0)).view(1, 1, 1, 5).expand(1, 24, 4, 5)
    # Σ(∂_w A)² = 24·4·4·0.01 = 3.84 over H(W−1) = 16 -> 0.24, ×2 -> 0.48
    assert float(L.illumination_smoothness(ramp)) == pytest.approx(0.48, rel=1e-5)
    # paper form: (|∂x|+|∂y|)² = 0.01 per pixel and channel, summed over 24 channels, / 8 iterations -> 0.03
    assert float(L.illumination_smoothness(ramp, form="paper")) == pytest.approx(0.03, rel=1e-5)
    # batch normalisation: two copies give the same value
    assert float(L.illumination_smoothness(ramp.expand(2, 24, 4, 5))) == pytest.approx(0.48, rel=1e-5)


def test_total_loss_uses_code_weights():
    m = _method()
    t = m.loss_terms(torch.rand(2, 3, 32, 32) * 0.3)
    expect = 200 * t["loss_tv"] + t["loss_spa"] + 5 * t["loss_col"] + 10 * t["loss_exp"]
    assert float(t["loss"]) == pytest.approx(float(expect), rel=1e-6)


# ---- training ---------------------------------------------------------------------------------
def test_training_lowers_loss_on_fixed_batch():
    m = _method(1)
    low = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 0.2
    opt = torch.optim.Adam(m.model.parameters(), lr=1e-3)
    m.model.train()
    values = []
    for _ in range(25):
        opt.zero_grad()
        loss = m.loss_terms(low)["loss"]
        loss.backward()
        opt.step()
        values.append(float(loss.detach()))
    assert np.mean(values[-3:]) < 0.8 * np.mean(values[:3])


def test_sampler_partial_last_batch_and_resize(tmp_path):
    pairs = _pairs(tmp_path, n=5)
    s = ResizedLowSampler(pairs, 32, 2, seed=0)
    sizes, seen = [], []
    for _ in range(6):
        b = s.next_batch()
        assert b.high is None and b.low.shape[1:] == (3, 32, 32)
        sizes.append(b.low.shape[0])
        seen += b.ids
    assert sizes == [2, 2, 1, 2, 2, 1]
    assert sorted(seen[:5]) == sorted(seen[5:]) == [f"p{i}" for i in range(5)]
    state = s.state_dict()
    nxt = s.next_batch()
    s.load_state_dict(state)
    again = s.next_batch()
    assert nxt.ids == again.ids and torch.equal(nxt.low, again.low)


def test_train_checkpoint_roundtrip_low_only(tmp_path):
    pairs = _pairs(tmp_path, n=3, with_high=False)        # no references at all: zero-reference training
    m = ZeroDCE(build_config(ZeroDCE, "smoke", {}))
    m.setup(torch.device("cpu"))
    ckpt = m.train(pairs, [], tmp_path / "run", seed=0, progress=False)
    low = torch.rand(1, 3, 21, 26) * 0.3
    trained = m.enhance(low)
    fresh = ZeroDCE(build_config(ZeroDCE, "smoke", {}))
    fresh.setup(torch.device("cpu"), ckpt)
    assert torch.equal(fresh.enhance(low), trained)
    assert fresh.provenance()["weights_kind"] == "bench_checkpoint"
    # an official-layout state dict saved through DataParallel loads too
    official = tmp_path / "Epoch99.pth"
    torch.save({"module." + k: v for k, v in m.model.state_dict().items()}, official)
    other = ZeroDCE()
    other.setup(torch.device("cpu"), official)
    assert torch.equal(other.enhance(low), trained)
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(BenchError):
        ZeroDCE().setup(torch.device("cpu"), bad)


def test_config_validation():
    with pytest.raises(BenchError):
        build_config(ZeroDCE, "smoke", {"loss_form": "nope"})
    with pytest.raises(BenchError):
        build_config(ZeroDCE, "smoke", {"resize": "8"})       # smaller than the 16×16 exposure patches
    assert build_config(ZeroDCE, "paper", {}, "lol").resize == 256


def test_end_to_end_smoke(monkeypatch):
    result, doc, rows = smoke_run("zero-dce", params=79_416)

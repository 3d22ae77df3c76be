"""Tests for the DeepUPE baseline (baselines/deepupe): output mapping, losses, network, adapter, end to end."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.methods.base import build_config
from baselines.deepupe import adapter as deepupe_adapter
from baselines.deepupe import model as U
from baselines.deepupe.adapter import DeepUPE, DeepUPEConfig
from baselines.hdrnet import bilateral
from smoke import adam_losses, assert_image_like, smoke_run

torch.set_num_threads(1)


def _scene(h: int, w: int, seed: int = 0, scale: float = 0.35) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, h).view(h, 1)
    x = torch.linspace(0, 1, w).view(1, w)
    base = 0.5 + 0.3 * torch.sin(6 * x + 1) * torch.cos(4 * y) + 0.15 * (x > 0.5)
    img = torch.stack([base, 0.8 * base + 0.1 * y, 0.6 * base + 0.2 * x])
    img = img + 0.02 * torch.randn(img.shape, generator=g)
    return (img.clamp(0, 1) * scale)[None].float()


# ------------------------------------------------------------------------------------------------
# known answers of the output mapping F = I / clip(S, I, 1)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("quantize", [True, False])
def test_illumination_one_returns_the_input_and_illumination_input_returns_one(quantize):
    low = torch.randint(0, 256, (1, 3, 9, 11)).float() / 255
    low[0, :, 0, 0] = 0.0
    ones = torch.ones_like(low)
    torch.testing.assert_close(U.illumination_output(low, ones, quantize), low, atol=0, rtol=0)
    out = U.illumination_output(low, low.clone(), quantize)
    pos = low > 0
    assert torch.equal(out[pos], torch.ones_like(out[pos]))          # S = I -> 1
    assert torch.equal(out[~pos], torch.zeros_like(out[~pos]))       # 0 / 0 defined as 0, never NaN
    # S below I is clipped up to I (-> 1); S above 1 is clipped to 1 (-> I)
    assert torch.equal(U.illumination_output(low, low * 0.5, quantize)[pos], torch.ones_like(out[pos]))
    torch.testing.assert_close(U.illumination_output(low, ones * 3, quantize), low, atol=0, rtol=0)
    assert float(U.illumination_output(low, torch.rand_like(low), quantize).max()) <= 1.0


def test_quantisation_truncates_like_uint8_cast():
    low = torch.full((1, 3, 1, 1), 0.1)
    s = torch.full((1, 3, 1, 1), 0.5 + 0.9 / 255)                    # 255·s = 128.4 -> 128
    out = U.illumination_output(low, s, quantize=True)
    torch.testing.assert_close(out, torch.full_like(out, 0.1 / (128 / 255)))
    out = U.illumination_output(low, s, quantize=False)
    torch.testing.assert_close(out, torch.full_like(out, 0.1 / float(s.flatten()[0])))


def test_color_angle_known_values():
    a = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    b = torch.tensor([0.0, 2.0, 0.0]).view(1, 3, 1, 1)
    c = torch.tensor([1.0, 1.0, 0.0]).view(1, 3, 1, 1)
    assert U.color_angle(a, a * 3).item() == pytest.approx(0.0, abs=1e-5)
    assert U.color_angle(a, b).item() == pytest.approx(math.pi / 2, abs=1e-6)
    assert U.color_angle(a, c).item() == pytest.approx(math.pi / 4, abs=1e-6)


def test_paper_losses_vanish_for_the_exact_illumination():
    low = _scene(12, 15, scale=0.3)
    high = (low / 0.3).clamp(0.05, 1)
    s = low / high                                                    # I = S·F exactly, S in [I, 1]
    t = U.paper_losses(low, high, s, (1.0, 2.0, 1.0))
    assert float(t["recon"]) < 1e-12 and float(t["color"]) < 1e-4
    # a constant illumination is perfectly smooth; a noisy one is not
    assert float(U.paper_losses(low, high, torch.full_like(low, 0.5), (1, 2, 1))["smooth"]) == 0.0
    assert float(U.paper_losses(low, high, torch.rand_like(low), (1, 2, 1))["smooth"]) > 1.0


def test_smoothness_weights_by_hand():
    low = torch.tensor([[0.1, 0.2, 0.2]]).view(1, 1, 1, 3).expand(1, 3, 1, 3).contiguous()
    s = torch.tensor([[0.3, 0.5, 0.6]]).view(1, 1, 1, 3).expand(1, 3, 1, 3).contiguous()
    t = U.paper_losses(low, torch.ones_like(low), s, (0.0, 1.0, 0.0))
    d0 = abs(math.log(0.2 + 1e-4) - math.log(0.1 + 1e-4))
    w = [1 / (d0 ** 1.2 + 1e-4), 1 / (0.0 + 1e-4)]
    expect = 3 * (w[0] * 0.2 ** 2 + w[1] * 0.1 ** 2) / 2             # Σ_c, mean over the 2 x-differences, no y
    assert float(t["smooth"]) == pytest.approx(expect, rel=1e-4)
    assert float(t["loss"]) == pytest.approx(expect, rel=1e-4)


def test_ports_losses_known_values():
    low = _scene(10, 10, scale=0.3)
    s = torch.full_like(low, 0.5)
    high = (low / (0.5 + 1e-4)).clamp(0, 1)
    t = U.ports_losses(low, high, s, U.DEFAULT_WEIGHTS["ports"])
    assert float(t["mse"]) < 1e-12 and float(t["tv"]) == 0.0 and float(t["color"]) < 1e-6


# ------------------------------------------------------------------------------------------------
# network and adapter
# ------------------------------------------------------------------------------------------------
def test_shared_bilateral_pieces_are_not_duplicated():
    m = DeepUPE()
    m.setup(torch.device("cpu"))
    assert isinstance(m.model.guide, bilateral.CurveGuide)
    for mod in (U, deepupe_adapter):
        src = inspect.getsource(mod)
        assert "grid_sample" not in src and "def slice" not in src and "class CurveGuide" not in src
    assert all("grid_sample" not in p.read_text() for p in Path(U.__file__).parent.glob("*.py"))


def test_parameter_count_and_layout():
    m = DeepUPE()
    m.setup(torch.device("cpu"))
    assert m.trainable_parameters() == 998_816
    convs = m.model.coefficients.global_convs
    assert [layer.stride for layer in convs] == [2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1]
    local = m.model.coefficients.local
    assert len(local) == 6 and local[0].relu and local[0].conv.bias is not None
    assert all(not layer.relu and layer.conv.bias is None for layer in local[1:])
    bin8 = DeepUPE(DeepUPEConfig(spatial_bin=8))
    bin8.setup(torch.device("cpu"))
    assert bin8.trainable_parameters() == 949_792                   # ≈0.95 M at bin 8 (baselines.md)


def test_config_defaults_and_loss_weights():
    c = build_config(DeepUPE, "paper", {})
    assert (c.loss, c.w_recon, c.w_smooth, c.w_color, c.theta, c.smooth_eps) == ("ports", 1.0, 0.05, 0.2, 1.2, 1e-4)
    assert (c.lr, c.batch, c.crop, c.epochs, c.quantize_illumination) == (1e-4, 16, 512, 100, True)
    p = build_config(DeepUPE, "paper", {"loss": "paper"})
    assert (p.w_recon, p.w_smooth, p.w_color) == (1.0, 2.0, 1.0)
    assert build_config(DeepUPE, "paper", {"loss": "paper", "w_color": "0.5"}).w_color == 0.5
    assert build_config(DeepUPE, "paper", {}, "lol-400-100").epochs == 1000
    with pytest.raises(BenchError):
        build_config(DeepUPE, "paper", {"loss": "l1"})
    prov = DeepUPE(c).provenance()
    assert prov["faithful"] is False and prov["substitutes"] and prov["loss"].startswith("ports")
    assert "not verified" in DeepUPE(p).provenance()["loss"]


def test_enhance_any_size_in_range_and_deterministic():
    torch.manual_seed(3)
    m = DeepUPE()
    m.setup(torch.device("cpu"))
    torch.manual_seed(3)
    m2 = DeepUPE()
    m2.setup(torch.device("cpu"))
    for h, w in ((37, 53), (400, 600)):
        low = _scene(h, w, seed=h)
        out = m.enhance(low)
        assert_image_like(out, low)
        assert torch.equal(out, m.enhance(low)) and torch.equal(out, m2.enhance(low))
        assert torch.all(out >= low - 1e-6)                           # S ≤ 1 never darkens


@pytest.mark.parametrize("loss", ["paper", "ports"])
def test_training_lowers_the_loss_on_a_fixed_batch(loss):
    torch.manual_seed(0)
    m = DeepUPE(build_config(DeepUPE, "smoke", {"loss": loss}))
    m.setup(torch.device("cpu"))
    m.model.train()
    low = torch.cat([_scene(32, 32, seed=s, scale=0.3) for s in range(2)])
    high = ((low / 0.3) ** 0.8).clamp(0, 1)
    losses = adam_losses(m.model.parameters(), lambda: m.loss_terms(low, high)["loss"])
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


def test_smoke_run_end_to_end_and_checkpoint_checks(monkeypatch):
    result, cfg, means = smoke_run("deepupe", params=998_816)
    assert means["psnr"] > 5
    ckpt = Path(cfg["weights"]["path"])
    # the checkpoint is refused by HDRNet (other method) and by a DeepUPE with another structure
    from baselines.hdrnet.adapter import HDRNet

    with pytest.raises(BenchError, match="deepupe"):
        HDRNet().setup(torch.device("cpu"), ckpt)
    with pytest.raises(BenchError, match="luma_bins"):
        DeepUPE(DeepUPEConfig(luma_bins=4)).setup(torch.device("cpu"), ckpt)
    loaded = DeepUPE(build_config(DeepUPE, "smoke", {}))
    prov = loaded.setup(torch.device("cpu"), ckpt)
    assert prov["weights_kind"] == "bench_checkpoint" and prov["trained"]["iteration"] == 3

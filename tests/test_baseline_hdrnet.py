"""Tests for the HDRNet baseline (baselines/hdrnet): bilateral pieces, network, adapter, training, end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.methods.base import build_config
from baselines.hdrnet import bilateral as B
from baselines.hdrnet.adapter import HDRNet, HDRNetConfig
from baselines.hdrnet.model import ConvLayer, HDRNetModel, resize_lowres
from smoke import adam_losses, assert_image_like, smoke_run

torch.set_num_threads(1)


def _scene(h: int, w: int, seed: int = 0, scale: float = 0.35) -> torch.Tensor:
    """A smooth, coloured, slightly noisy low-light-like image 1×3×h×w in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, h).view(h, 1)
    x = torch.linspace(0, 1, w).view(1, w)
    base = 0.5 + 0.3 * torch.sin(6 * x + 1) * torch.cos(4 * y) + 0.15 * (x > 0.5)
    img = torch.stack([base, 0.8 * base + 0.1 * y, 0.6 * base + 0.2 * x])
    img = img + 0.02 * torch.randn(img.shape, generator=g)
    return (img.clamp(0, 1) * scale)[None].float()


# ------------------------------------------------------------------------------------------------
# the official slicing formula, written out per pixel (hdrnet/ops/*.cu.cc and numerics.h)
# ------------------------------------------------------------------------------------------------
def _official_slice_loop(grid: np.ndarray, guide: np.ndarray, depth_eps: float) -> np.ndarray:
    """grid (C, D, GH, GW), guide (H, W) -> (C, H, W); depth weight max(1 - sqrt(d² + eps), 0) (eps=0: tent)."""
    c, d, gh, gw = grid.shape
    h, w = guide.shape
    out = np.zeros((c, h, w))
    for y in range(h):
        for x in range(w):
            gxf, gyf, gzf = (x + 0.5) * gw / w, (y + 0.5) * gh / h, guide[y, x] * d
            x0, y0, z0 = math.floor(gxf - 0.5), math.floor(gyf - 0.5), math.floor(gzf - 0.5)
            for yy in (y0, y0 + 1):
                wy = max(1 - abs(yy + 0.5 - gyf), 0.0)
                for xx in (x0, x0 + 1):
                    wx = max(1 - abs(xx + 0.5 - gxf), 0.0)
                    for zz in (z0, z0 + 1):
                        dz = zz + 0.5 - gzf
                        wz = max(1 - math.sqrt(dz * dz + depth_eps), 0.0)
                        yc, xc, zc = min(max(yy, 0), gh - 1), min(max(xx, 0), gw - 1), min(max(zz, 0), d - 1)
                        out[:, y, x] += wx * wy * wz * grid[:, zc, yc, xc]
    return out


def _tiny_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    grid = rng.normal(size=(12, 4, 3, 5))
    guide = rng.random((7, 9))
    # exact bin centres, borders and the ends of [0, 1]
    guide[0, :4] = [0.0, 1.0, 0.125, 0.875]
    guide[1, :3] = [0.5, 0.25, 1e-7]
    return grid, guide


def test_slicing_matches_the_official_per_pixel_loop():
    grid, guide = _tiny_case()
    ours = B.slice_grid(torch.from_numpy(grid)[None].double(), torch.from_numpy(guide)[None].double())[0].numpy()
    exact = _official_slice_loop(grid, guide, depth_eps=0.0)
    np.testing.assert_allclose(ours, exact, atol=1e-12)
    # the official kernels' smoothed depth tent: within 1e-4 of a coefficient (documented difference)
    smoothed = _official_slice_loop(grid, guide, depth_eps=1e-8)
    assert np.abs(ours - smoothed).max() < 1e-4 * np.abs(grid).max() * 1.01
    # an off-by-half convention (align_corners=True) would not match
    g = torch.from_numpy(grid)[None].double()
    h, w = guide.shape
    coords = torch.stack(torch.broadcast_tensors(torch.linspace(-1, 1, w).view(1, w), torch.linspace(-1, 1, h).view(h, 1),
                                                 torch.from_numpy(guide) * 2 - 1), dim=-1)[None, None].double()
    wrong = torch.nn.functional.grid_sample(g, coords, align_corners=True, padding_mode="border")[0, :, 0].numpy()
    assert np.abs(wrong - exact).max() > 1e-2


def test_slice_apply_matches_the_loop_and_odd_sizes():
    grid, guide = _tiny_case(1)
    rng = np.random.default_rng(2)
    image = rng.random((3, 7, 9))
    sliced = _official_slice_loop(grid, guide, 0.0)             # (12, H, W), index o*4 + i
    expect = np.zeros((3, 7, 9))
    for o in range(3):
        expect[o] = sum(sliced[o * 4 + i] * image[i] for i in range(3)) + sliced[o * 4 + 3]
    ours = B.bilateral_slice_apply(torch.from_numpy(grid)[None], torch.from_numpy(guide)[None],
                                   torch.from_numpy(image)[None])[0].numpy()
    np.testing.assert_allclose(ours, expect, atol=1e-12)


def test_identity_grid_reproduces_the_input():
    img = _scene(37, 53)
    guide = B.CurveGuide()(img)
    for d, gh, gw in ((8, 16, 16), (3, 5, 2)):
        out = B.bilateral_slice_apply(B.identity_grid(1, d, gh, gw), guide, img)
        torch.testing.assert_close(out, img, atol=1e-6, rtol=0)


def test_unpack_follows_the_official_channel_order():
    d = 8
    x = torch.arange(d * 12, dtype=torch.float64).view(1, d * 12, 1, 1).expand(2, -1, 3, 2)
    grid = B.unpack_coefficients(x, d)
    assert grid.shape == (2, 12, d, 3, 2)
    for o in range(3):
        for i in range(4):
            for z in range(d):
                assert grid[1, o * 4 + i, z, 2, 1] == (i * 3 + o) * d + z


def test_network_with_identity_prediction_returns_the_input():
    """Zero prediction weights + identity biases in the official packed order: the whole model is the identity."""
    torch.manual_seed(0)
    m = HDRNetModel()
    conv = m.coefficients.prediction.conv
    bias = torch.zeros(8 * 12)
    for o in range(3):
        bias[(o * 3 + o) * 8:(o * 3 + o + 1) * 8] = 1.0                # channel (i*3+o)*8+z with i == o
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(bias)
    img = _scene(41, 30, seed=3)
    out = m(resize_lowres(img, 256), img)
    torch.testing.assert_close(out, img, atol=1e-6, rtol=0)


def test_guide_initialises_to_the_mean_of_the_channels():
    torch.manual_seed(0)
    guide = B.CurveGuide()
    img = _scene(9, 11)
    g = guide(img)
    # ccm = I + δ (one shared scalar ~1e-4): g ≈ mean over channels of clip-free identity curves
    mean = img.mean(dim=1)
    assert torch.allclose(g, mean, atol=1e-3)
    assert sum(p.numel() for p in guide.parameters()) == 112


def test_tf_same_padding_for_stride_two():
    layer = ConvLayer(1, 1, 3, 2, relu=False)
    with torch.no_grad():
        layer.conv.weight.fill_(1.0)
        layer.conv.bias.zero_()
    out = layer(torch.ones(1, 1, 4, 4))
    # TF 'SAME' pads 0 before and 1 after: windows rows/cols {0,1,2} and {2,3,pad}
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]


def test_lowres_resize_is_tf_nearest():
    x = torch.arange(35, dtype=torch.float32).view(1, 1, 5, 7)
    y = resize_lowres(x, 3, "nearest")
    rows, cols = [0, 1, 3], [0, 2, 4]                               # floor(i · in / out)
    assert y[0, 0].tolist() == [[float(r * 7 + c) for c in cols] for r in rows]
    assert resize_lowres(x, 3, "nearest-exact")[0, 0, 0].tolist() == [0.0 * 7 + 1, 3.0, 5.0]  # floor((i+.5)·in/out)


def test_parameter_count_matches_the_official_graph():
    m = HDRNet()
    m.setup(torch.device("cpu"))
    assert m.trainable_parameters() == 482_080
    bn = HDRNet(HDRNetConfig(batch_norm=True))
    bn.setup(torch.device("cpu"))
    assert bn.trainable_parameters() == 482_080                    # β replaces each bias
    assert len(m.model.coefficients.splat) == 4 and len(m.model.coefficients.global_convs) == 2


def test_metadata_and_profiles():
    assert HDRNet.name == "hdrnet" and HDRNet.family == "supervised" and HDRNet.trainable and HDRNet.uses_pairs
    c = HDRNetConfig()
    assert (c.lr, c.batch, c.crop, c.net_input_size, c.spatial_bin, c.luma_bins, c.batch_norm, c.augment) == \
        (1e-4, 16, 512, 256, 16, 8, False, False)
    assert build_config(HDRNet, "paper", {}, "lol-400-100").epochs == 1000
    assert build_config(HDRNet, "paper", {}, "fivek-dr").epochs == 100
    smoke = build_config(HDRNet, "smoke", {})
    assert smoke.iterations == 3 and smoke.crop <= 64
    from bench.errors import BenchError

    with pytest.raises(BenchError):
        build_config(HDRNet, "smoke", {"spatial_bin": "24"})
    with pytest.raises(BenchError):
        build_config(HDRNet, "smoke", {"lowres_resize": "cubic"})


def test_enhance_any_size_in_range_and_deterministic():
    torch.manual_seed(7)
    m = HDRNet()
    m.setup(torch.device("cpu"))
    torch.manual_seed(7)
    m2 = HDRNet()
    m2.setup(torch.device("cpu"))
    torch.manual_seed(8)
    m3 = HDRNet()
    m3.setup(torch.device("cpu"))
    for h, w in ((37, 53), (400, 600)):
        low = _scene(h, w, seed=h)
        out = m.enhance(low)
        assert_image_like(out, low)
        assert torch.equal(out, m.enhance(low))
        assert torch.equal(out, m2.enhance(low))                    # same seed, same network
        assert not torch.equal(out, m3.enhance(low))                # another seed, another network


def _fixed_batch():
    low = torch.cat([_scene(32, 32, seed=s, scale=0.3) for s in range(2)])
    high = (low / 0.3) ** 0.8                                       # a brighter, tone-mapped reference
    return low, high.clamp(0, 1)


def test_training_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    m = HDRNet()
    m.setup(torch.device("cpu"))
    m.model.train()
    low, high = _fixed_batch()
    losses = adam_losses(m.model.parameters(), lambda: m.loss_terms(low, high)["loss"])
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


def test_smoke_run_end_to_end(monkeypatch):
    result, cfg, means = smoke_run("hdrnet", params=482_080)
    assert cfg["protocol"]["weights_kind"] == "bench_checkpoint"
    assert means["psnr"] > 5

import math

import numpy as np
import pytest

from bench import metrics as M
from bench.errors import BenchError
from bench.imageio import read_rgb
from conftest import independent_psnr, independent_ssim


def _noisy(rng, shape=(41, 57, 3), sigma=12):
    ref = rng.integers(0, 256, shape, dtype=np.uint8)
    out = np.clip(ref.astype(int) + rng.normal(0, sigma, shape).round().astype(int), 0, 255).astype(np.uint8)
    return out, ref


def test_psnr_ssim_match_independent_formula(rng):
    for _ in range(5):
        out, ref = _noisy(rng)
        assert M.psnr_rgb(out, ref) == pytest.approx(independent_psnr(out, ref), abs=1e-9)
        assert M.ssim_rgb(out, ref) == pytest.approx(independent_ssim(out, ref), abs=1e-9)


def test_real_lol_pair_matches_independent_formula(shared_data):
    low = read_rgb(shared_data / "lol_v1/eval15/low/1.png")
    high = read_rgb(shared_data / "lol_v1/eval15/high/1.png")
    assert M.psnr_rgb(low, high) == pytest.approx(independent_psnr(low, high), abs=1e-9)
    assert M.ssim_rgb(low, high) == pytest.approx(independent_ssim(low, high), abs=1e-9)
    assert 3 < M.psnr_rgb(low, high) < 15  # a dark LOL input is far from its reference


def test_identities(rng):
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    assert math.isinf(M.psnr_rgb(img, img))
    assert M.ssim_rgb(img, img) == pytest.approx(1.0, abs=1e-12)
    # a constant offset d gives PSNR = 20 log10(255 / d) exactly
    base = rng.integers(0, 200, (30, 40, 3), dtype=np.uint8)
    assert M.psnr_rgb(base + 10, base) == pytest.approx(20 * math.log10(255 / 10), abs=1e-9)
    # symmetric
    out, ref = _noisy(rng)
    assert M.ssim_rgb(out, ref) == pytest.approx(M.ssim_rgb(ref, out), abs=1e-12)


def test_y_channel_variants(rng):
    out, ref = _noisy(rng)
    y_out, y_ref = M.luma_y(out), M.luma_y(ref)
    assert y_ref.min() >= 16 - 1e-9 and y_ref.max() <= 235 + 1e-9
    mse = np.mean((y_out - y_ref) ** 2)
    assert M.psnr_y(out, ref) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)
    assert M.psnr_y(out, ref) != pytest.approx(M.psnr_rgb(out, ref), abs=1e-3)


def test_gt_mean_is_invariant_to_global_gain(rng):
    ref = rng.integers(40, 160, (32, 48, 3), dtype=np.uint8)
    dark = np.round(ref * 0.5).astype(np.uint8)
    # the oracle gain undoes a global exposure error almost completely
    assert M.psnr_gtmean(dark, ref) > M.psnr_rgb(dark, ref) + 10
    assert M.psnr_gtmean(dark, ref) > 40
    # and changes nothing when the means already agree
    assert np.array_equal(M.gt_mean_adjust(ref, ref), ref)
    # grey weights are R 0.299, B 0.114 (the swapped-weights trap would change this gain)
    red = np.zeros((8, 8, 3), np.uint8); red[..., 0] = 100  # noqa: E702
    blue_ref = np.zeros((8, 8, 3), np.uint8); blue_ref[..., 2] = 100  # noqa: E702
    gain = (0.114 * 100) / (0.299 * 100)
    assert M.gt_mean_adjust(red, blue_ref)[0, 0, 0] == round(100 * gain)


def test_size_mismatch_and_unknown_metric(rng):
    a = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    with pytest.raises(BenchError, match="differ in size"):
        M.psnr_rgb(a, a[:, :11])
    with pytest.raises(BenchError, match="did you mean 'ssim'"):
        M.get_metric("ssmi")
    with pytest.raises(BenchError, match="no references"):
        M.resolve_metrics(["psnr"], paired=False)
    assert [m.name for m in M.resolve_metrics(None, paired=False)] == ["brightness", "colorfulness"]


def test_pyiqa_cross_check(rng):
    pytest.importorskip("pyiqa")
    from bench import iqa_backend

    out, ref = _noisy(rng, shape=(48, 64, 3))
    assert iqa_backend.score("psnr", out, ref) == pytest.approx(M.psnr_rgb(out, ref), abs=1e-4)
    # pyiqa's ssimc follows the same Gaussian-window formula (it clamps cs with a ReLU, a no-op here)
    assert iqa_backend.score("ssimc", out, ref) == pytest.approx(M.ssim_rgb(out, ref), abs=1e-5)

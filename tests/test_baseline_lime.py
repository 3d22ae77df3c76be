"""Tests for the LIME baseline (baselines/lime): adapter contract, solver and options."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from bench.errors import BenchError
from bench.methods.base import build_config
from baselines.lime import algorithm as A
from baselines.lime.adapter import Lime, LimeConfig



def _smooth_scene(h: int, w: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.5 + 0.3 * np.sin(6 * x + 1) * np.cos(4 * y) + 0.1 * (x > 0.5)
    img = np.stack([base, 0.8 * base + 0.1 * y, 0.6 * base + 0.2 * x], axis=-1)
    img = img + rng.normal(0, 0.02, size=img.shape)
    return np.clip(img * scale, 0.0, 1.0)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)[None])).float()


def test_metadata():
    assert Lime.name == "lime" and Lime.display_name == "LIME"
    assert Lime.family == "classical" and Lime.trainable is False and Lime.version == 1
    assert "Guo" in Lime.citation and Lime.bibkey
    c = LimeConfig()
    assert (c.alpha, c.sigma, c.gamma, c.strategy, c.denoise) == (0.15, 2.0, 0.8, 3, "none")


def test_constant_image_illumination_is_the_constant():
    t_hat = np.full((17, 23), 0.3)
    t = A.refine_illumination(t_hat)
    np.testing.assert_allclose(t, 0.3, rtol=0, atol=1e-8)  # weights reach ~1e8 on flat maps
    img = np.full((17, 23, 3), 0.3)
    out, info = A.lime_enhance(img, gamma=0.8)
    np.testing.assert_allclose(out, 0.3 / 0.3 ** 0.8, atol=1e-8)


def test_system_matches_explicit_difference_operators_and_is_solved():
    rng = np.random.default_rng(1)
    h, w = 19, 26
    t_hat = np.clip(rng.random((h, w)) * 0.5 + 0.1, 0, 1)
    alpha, eps = 0.15, 1e-3
    a = A.build_system(t_hat, alpha, strategy=3, sigma=2.0, eps=eps, window=15)
    # Independent construction: forward-difference matrices (last column/row zero), row-major order.
    dx1 = sp.diags([-np.ones(w), np.ones(w - 1)], [0, 1], shape=(w, w)).tolil()
    dx1[w - 1, :] = 0
    dy1 = sp.diags([-np.ones(h), np.ones(h - 1)], [0, 1], shape=(h, h)).tolil()
    dy1[h - 1, :] = 0
    d_h = sp.kron(sp.eye(h), dx1.tocsr())
    d_v = sp.kron(dy1.tocsr(), sp.eye(w))
    g_h = d_h @ t_hat.ravel()
    g_v = d_v @ t_hat.ravel()
    w_h, w_v = A.strategy_weights(t_hat, 3, 2.0, eps, 15)
    wt_h = alpha * w_h.ravel() / (np.abs(g_h) + eps)
    wt_v = alpha * w_v.ravel() / (np.abs(g_v) + eps)
    ref = sp.eye(h * w) + d_h.T @ sp.diags(wt_h) @ d_h + d_v.T @ sp.diags(wt_v) @ d_v
    assert abs(a - ref).max() < 1e-8 * abs(ref).max()
    t = A.solve_system(a, t_hat.ravel())
    rel = np.linalg.norm(a @ t - t_hat.ravel()) / np.linalg.norm(t_hat.ravel())
    assert rel < 1e-6
    # discrete maximum principle: I + Laplacian keeps T within the range of T_hat
    assert t.min() >= t_hat.min() - 1e-9 and t.max() <= t_hat.max() + 1e-9


def test_strategy3_weights_by_brute_force():
    rng = np.random.default_rng(2)
    t_hat = rng.random((9, 11))
    sigma, eps, window = 2.0, 1e-3, 5
    w_h, _ = A.strategy_weights(t_hat, 3, sigma, eps, window)
    g_h, _ = A.forward_gradients(t_hat)
    r = window // 2
    i, j = 4, 3
    num = den = 0.0
    for di in range(-r, r + 1):
        for dj in range(-r, r + 1):
            y, x = i + di, j + dj
            if 0 <= y < 9 and 0 <= x < 11:
                g = np.exp(-(di * di + dj * dj) / (2 * sigma * sigma))
                num += g
                den += g * g_h[y, x]
    assert w_h[i, j] == pytest.approx(num / (abs(den) + eps), rel=1e-12)


def test_dark_image_gets_brighter():
    img = _smooth_scene(48, 64, scale=0.15)
    out = Lime().enhance(_to_tensor(img))
    assert float(out.mean()) > 2.5 * img.mean()


def test_600x400_runtime():
    img = _smooth_scene(400, 600, seed=3, scale=0.3)
    m = Lime()
    t0 = time.perf_counter()
    out = m.enhance(_to_tensor(img))
    dt = time.perf_counter() - t0
    print(f"LIME 600x400: {dt:.2f} s")
    assert out.shape == (1, 3, 400, 600)
    assert dt < 60.0


@pytest.mark.parametrize("field,value", [
    ("alpha", 0.0), ("alpha", -1.0), ("sigma", 0.0), ("gamma", 0.0), ("gamma", 5.0), ("strategy", 4),
    ("strategy", 0), ("eps", 0.0), ("window", 4), ("window", 0), ("solver", "exact"), ("denoise", "median"),
    ("denoise_sigma", -1.0), ("alpha", float("nan")),
])
def test_bad_options_raise(field, value):
    cfg = LimeConfig()
    setattr(cfg, field, value)
    with pytest.raises(BenchError):
        cfg.validate()


def test_build_config_overrides():
    cfg = build_config(Lime, "paper", {"gamma": "0.7", "denoise": "nlmeans"})
    assert cfg.gamma == 0.7 and cfg.denoise == "nlmeans"
    with pytest.raises(BenchError):
        build_config(Lime, "paper", {"gamma": "-0.7"})


def test_nlmeans_substitute_and_provenance():
    img = _smooth_scene(32, 40, scale=0.2)
    m = Lime(LimeConfig(denoise="nlmeans"))
    out = m.enhance(_to_tensor(img))
    assert out.shape == (1, 3, 32, 40) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert "SUBSTITUTE" in m.provenance()["denoise"]
    assert "none" in Lime().provenance()["denoise"]


def test_bm3d_option_is_explicit():
    m = Lime(LimeConfig(denoise="bm3d"))
    try:
        import bm3d  # noqa: F401
    except ImportError:
        with pytest.raises(BenchError, match="bm3d"):
            m.enhance(torch.rand(1, 3, 8, 8))
    else:
        pytest.skip("bm3d is installed")


def test_lol_pair_improves_psnr(shared_data):
    lol = shared_data / "lol_v1" / "eval15"  # the conftest fixture skips when the shared data is absent
    low_p, high_p = lol / "low" / "1.png", lol / "high" / "1.png"
    if not (low_p.exists() and high_p.exists()):
        pytest.skip("LOL eval15 pair 1 not available")
    from PIL import Image
    from skimage.metrics import peak_signal_noise_ratio

    low = np.asarray(Image.open(low_p).convert("RGB"))
    high = np.asarray(Image.open(high_p).convert("RGB"))
    out = Lime().enhance(_to_tensor(low / 255.0))
    out8 = np.clip(np.round(out[0].numpy().transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    p_low = peak_signal_noise_ratio(high, low, data_range=255)
    p_out = peak_signal_noise_ratio(high, out8, data_range=255)
    print(f"LIME LOL eval15/1: input {p_low:.2f} dB -> {p_out:.2f} dB")
    assert p_out > p_low + 3.0

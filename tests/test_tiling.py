"""bench/tiling.py: blended tiles, the memory policy, and DSN tiled vs whole (CPU, small sizes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from bench.dsn.model import DSN
from bench.errors import BenchError
from bench.imageio import quantize
from bench.tiling import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    TensorMemoryMeter,
    TilePolicy,
    blend_weights,
    enhance_tiled,
    enhance_with_policy,
    global_pool_modules,
    parse_tile_option,
    receptive_radius,
    tile_starts,
)

torch.set_num_threads(1)


def _img(h, w, seed=0, n=1):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _psnr8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


# ------------------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("length,tile,overlap", [(1, 16, 4), (16, 16, 4), (17, 16, 4), (37, 16, 6), (100, 32, 8),
                                                 (101, 48, 24), (513, 512, 96), (4000, 512, 96)])
def test_tiles_cover_with_overlap_and_weights_sum_to_one(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # neighbours overlap ≥ overlap
    ws = blend_weights(length, starts, size)
    total = torch.zeros(length, dtype=torch.float64)
    for s, w in zip(starts, ws):
        assert w.min() >= 0 and w.max() <= 1
        total[s:s + size] += w
    assert torch.allclose(total, torch.ones(length, dtype=torch.float64), atol=1e-12)
    if len(starts) > 1:  # the used pixels keep (band - ramp) / 2 of context from inner tile edges
        assert float(ws[0][size - overlap // 4:].max()) == 0.0


@pytest.mark.parametrize("h,w,tile,overlap,batch", [(37, 53, 16, 6, 1), (64, 64, 32, 8, 3), (9, 70, 16, 4, 2),
                                                    (5, 5, 16, 4, 1)])
def test_identity_and_per_pixel_methods_are_exact(h, w, tile, overlap, batch):
    x = _img(h, w)
    y = enhance_tiled(lambda t: t.clone(), x, tile, overlap, batch=batch)
    assert (y - x).abs().max() <= 2.0**-22                    # float32 rounding of the blend only
    assert np.array_equal(quantize(y), quantize(x))           # exact after 8-bit quantisation
    gain = enhance_tiled(lambda t: t * 1.7 + 0.05, x, tile, overlap, batch=batch)
    assert np.array_equal(quantize(gain), quantize(x * 1.7 + 0.05))
    const = torch.full((1, 3, h, w), 0.3)
    assert torch.allclose(enhance_tiled(lambda t: t.clone(), const, tile, overlap), const, atol=2.0**-24, rtol=0)


def test_batches_of_images_and_tiles():
    x = _img(20, 30, n=2)
    seen = []

    def fn(t):
        seen.append(tuple(t.shape))
        return t * 2

    y = enhance_tiled(fn, x, 16, 4, batch=3)
    assert torch.allclose(y, x * 2, atol=1e-6)
    assert max(s[0] for s in seen) == 6 and all(s[-2:] == (16, 16) for s in seen)  # 3 tiles × 2 images


# ------------------------------------------------------------------------------------------------ DSN
def _random_dsn(n_blocks=2, scale=0.8, seed=0):
    """A DSN whose convolutions (tails included) all carry random fan-in-scaled weights: at 0.8 it maps
    an image far from D(E(x)) (~18 dB) without blowing up -- a network with real spatial reach."""
    torch.manual_seed(seed)
    m = DSN(n_blocks=n_blocks).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad and p.ndim == 4:
                p.normal_(0, scale * p[0].numel() ** -0.5, generator=g)
    return m


@pytest.fixture(scope="module")
def dsn2():
    return _random_dsn()


@pytest.mark.parametrize("h,w", [(61, 83), (72, 50)])
def test_dsn_tiled_within_0_05_db_of_whole(dsn2, h, w):
    g = torch.Generator().manual_seed(h)
    x = torch.nn.functional.avg_pool2d(torch.rand(1, 3, h + 4, w + 4, generator=g), 5, 1) * 0.4
    gt = quantize((x * 2.5).clamp(0, 1))
    with torch.inference_mode():
        whole = dsn2.enhance(x)
        tiled = enhance_tiled(dsn2.enhance, x, 40, 20, global_pools=global_pool_modules(dsn2), global_passes=1)
    assert _psnr8(quantize(whole), quantize(x)) < 40                 # the network does change the image
    gap = abs(_psnr8(quantize(tiled), gt) - _psnr8(quantize(whole), gt))
    assert gap < 0.05, gap
    mse = float(((tiled - whole) ** 2).mean())
    assert 10 * math.log10(1 / mse) > 60                             # and the float outputs agree closely


def test_dsn_receptive_radius_is_16_per_block_plus_encoder():
    # (an untrained DSN is D(E(x)) = x for the Parseval fallback encoder: radius 0; random weights reach out)
    assert receptive_radius(_random_dsn(n_blocks=1), size=45) == 18
    # 8 blocks: 2 + 8 × 16 = 130 px, plus the 72 global channel-attention means (no overlap covers them)
    assert len(global_pool_modules(DSN())) == 8 * 3 * (3 + 1)      # 3 units + the unused soca per subnet


class _GlobalGain(nn.Module):
    """y = x · sigmoid(4 · mean(conv(x))): a 3×3 conv plus a global statistic, like channel attention."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return x * torch.sigmoid(4 * self.pool(self.conv(x)) - 1)


def test_global_pass_restores_image_wide_statistics():
    net = _GlobalGain()
    x = _img(48, 64)
    x[..., :, 32:] *= 0.2                                           # halves with different statistics
    with torch.inference_mode():
        whole = net(x)
        local = enhance_tiled(net, x, 24, 8)
        fixed = enhance_tiled(net, x, 24, 8, global_pools=global_pool_modules(net), global_passes=1)
    assert (local - whole).abs().max() > 1e-2                       # tile-local means change the output
    assert (fixed - whole).abs().max() < 1e-5                       # one gathering pass recovers it


def test_peak_memory_is_flat_in_the_image_size():
    net = DSN(n_blocks=1).eval()
    peaks, whole = [], []
    for h, w in [(48, 48), (96, 144)]:
        x = _img(h, w)
        with torch.inference_mode():
            with TensorMemoryMeter() as meter:
                enhance_tiled(net.enhance, x, 32, 8)
            peaks.append(meter.peak - x.numel() * 4)                # minus the image-sized output buffer
            with TensorMemoryMeter() as meter:
                net.enhance(x)
            whole.append(meter.peak)
    assert abs(peaks[1] - peaks[0]) < 0.01 * peaks[0], peaks        # set by the tile alone
    assert whole[1] > 5 * whole[0] and whole[1] > 3 * peaks[1]      # the whole image grows with its area


# ------------------------------------------------------------------------------------------------ policy
class _Gain:
    """A per-pixel fake adapter: fails with CUDA-style OOM above ``limit`` pixels, records what it saw."""

    name = "gain"
    tileable = True

    def __init__(self, limit=10**9, oom_unless_cpu=False):
        self.limit, self.oom_unless_cpu = limit, oom_unless_cpu
        self.device = torch.device("cpu")
        self.calls = []

    def enhance(self, low, reference=None):
        assert torch.is_inference_mode_enabled()
        self.calls.append(tuple(low.shape[-2:]))
        if low.shape[-2] * low.shape[-1] > self.limit or (self.oom_unless_cpu and self.device.type != "cpu"):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return low * 0.5 if reference is None else (low + reference) / 2


def test_policy_whole_by_default():
    m, x = _Gain(), _img(30, 40)
    y, info = enhance_with_policy(m, x)
    assert torch.equal(y, x * 0.5) and m.calls == [(30, 40)]
    assert info == {"tiled": False, "tile": 0, "overlap": 0, "fallback": "none", "device": "cpu", "global_passes": 0}


def test_policy_oom_falls_back_to_tiles():
    m, x = _Gain(limit=40 * 40), _img(50, 70)
    y, info = enhance_with_policy(m, x, TilePolicy(tile=32, overlap=8))
    assert np.array_equal(quantize(y), quantize(x * 0.5))
    assert info["tiled"] and info["fallback"] == "oom" and (info["tile"], info["overlap"]) == (32, 8)
    assert m.calls[0] == (50, 70) and set(m.calls[1:]) == {(32, 32)}


def test_policy_max_pixels_tiles_without_trying_the_whole_image():
    m, x = _Gain(), _img(50, 70)
    y, info = enhance_with_policy(m, x, TilePolicy(tile=32, overlap=8, max_pixels=1000))
    assert info["fallback"] == "max_pixels" and info["tiled"] and (50, 70) not in m.calls


def test_policy_untileable_oom_goes_to_the_cpu_and_comes_back():
    m = _Gain(oom_unless_cpu=True)
    m.tileable = False
    m.device = torch.device("cuda")      # pretend: the fake raises OOM anywhere but on the CPU
    x = _img(20, 20)
    y, info = enhance_with_policy(m, x)
    assert torch.equal(y, x * 0.5)
    assert info["fallback"] == "oom" and info["device"] == "cpu" and not info["tiled"]
    assert m.device.type == "cuda"       # moved back for the next image
    m.device = torch.device("cuda")
    y, info = enhance_with_policy(m, x, parse_tile_option("off"))
    assert info["fallback"] == "oom" and info["device"] == "cpu"
    with pytest.raises(BenchError, match="not tileable"):
        enhance_with_policy(m, x, parse_tile_option("64"))


def test_policy_cpu_oom_with_nothing_left_is_a_clear_error():
    m = _Gain(limit=10)
    m.tileable = False
    with pytest.raises(BenchError, match="out of memory on cpu"):
        enhance_with_policy(m, _img(20, 20))


def test_forced_tiles_and_reference_travel_together():
    m, x, ref = _Gain(), _img(40, 52), _img(40, 52, seed=9)
    y, info = enhance_with_policy(m, x, parse_tile_option("24", overlap=6), reference=ref)
    assert info["tiled"] and info["fallback"] == "none" and info["tile"] == 24
    assert np.array_equal(quantize(y), quantize((x + ref) / 2))


def test_policy_options():
    assert parse_tile_option("auto") == TilePolicy() and TilePolicy().identity() is None
    assert (DEFAULT_TILE, DEFAULT_OVERLAP) == (TilePolicy().tile, TilePolicy().overlap)
    p = parse_tile_option("256")
    assert p.mode == "on" and p.tile == 256 and p.overlap == 64 and p.identity()["tile"] == 256
    assert parse_tile_option("off").mode == "off"
    for bad in ("big", "8"):
        with pytest.raises(BenchError):
            parse_tile_option(bad)
    with pytest.raises(BenchError, match="overlap"):
        parse_tile_option("64", overlap=64)

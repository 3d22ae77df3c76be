"""DeepLPF (baselines/deeplpf): architecture, parametric-filter known answers, loss, training, harness run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines.deeplpf import model as M
from baselines.deeplpf.adapter import DeepLPF, DeepLPFConfig
from baselines.deeplpf.losses import deeplpf_loss, ms_ssim, rgb_to_lab
from bench.methods.base import build_config
from smoke import assert_image_like

torch.set_num_threads(1)


def atanh01(t: float) -> float:
    """Inverse of tanh01: the raw head output giving the value t in (0, 1)."""
    return math.atanh(2 * t - 1)


# ------------------------------------------------------------------------------------------------
# architecture
# ------------------------------------------------------------------------------------------------
def test_parameter_count_matches_the_official_modules():
    net = M.DeepLPFNet()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(net) == M.PARAMETER_COUNT == 1_769_347
    assert count(net.backbonenet) == 1_319_191
    assert count(net.deeplpfnet) == 450_156
    unused = [net.backbonenet.unet.conv1, net.backbonenet.unet.conv2, net.backbonenet.unet.conv3,
              net.backbonenet.unet.local_net]
    assert sum(count(m) for m in unused) == 53_568
    keys = net.state_dict().keys()
    assert "deeplpfnet.cubic_filter.fc_cubic.weight" in keys
    assert "deeplpfnet.elliptical_filter.elliptical_layer7.conv.weight" in keys
    assert "backbonenet.unet.dconv_up1.conv2.bias" in keys and "backbonenet.final_conv.weight" in keys
    m = DeepLPF(build_config(DeepLPF, "smoke", {}))
    m.setup(torch.device("cpu"))
    assert m.trainable_parameters() == 1_769_347


def test_enhance_odd_size_and_determinism():
    torch.manual_seed(0)
    low = torch.rand(1, 3, 37, 53) * 0.5
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        m = DeepLPF(DeepLPFConfig())
        m.setup(torch.device("cpu"))
        outs.append(m.enhance(low))
    assert_image_like(outs[0], low)
    assert torch.equal(outs[0], outs[1])
    torch.manual_seed(8)
    m.setup(torch.device("cpu"))
    assert not torch.equal(m.enhance(low), outs[0])  # another seed, another network
    tiny = m.enhance(torch.rand(1, 3, 9, 13))  # below the four poolings: padded inside, cropped back
    assert tiny.shape == (1, 3, 9, 13)


def test_enhance_600x400():
    torch.manual_seed(0)
    m = DeepLPF(DeepLPFConfig())
    m.setup(torch.device("cpu"))
    out = m.enhance(torch.rand(1, 3, 400, 600) * 0.3)
    assert out.shape == (1, 3, 400, 600) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_fusion_follows_the_official_order():
    torch.manual_seed(0)
    net = M.DeepLPFNet().eval()
    x = torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        out, parts = net(x, return_parts=True)
        fuse = torch.clamp(parts["graduated"] + parts["elliptical"], 0, 2)
        expect = torch.clamp(torch.clamp(parts["cubic"] * fuse, 0, 1) + parts["backbone"], 0, 1)
    torch.testing.assert_close(out, expect)
    # the graduated and elliptical heads see the cubic output, not the backbone image
    with torch.no_grad():
        feat = net.backbonenet(x)
        head_in = net.deeplpfnet.graduated_filter(feat[:, 3:], parts["cubic"])
        torch.testing.assert_close(M.graduated_mask(head_in, 40, 48), parts["graduated"])


# ------------------------------------------------------------------------------------------------
# known answers: the three parametric filters
# ------------------------------------------------------------------------------------------------
def test_cubic_filter_constant_term_is_an_offset():
    img = torch.rand(1, 3, 6, 7) * 0.5
    coeffs = torch.zeros(1, 60)
    coeffs[0, 19], coeffs[0, 39], coeffs[0, 59] = 0.1, -0.2, 0.3
    out = M.cubic_filter(img, coeffs)
    expect = torch.clamp(img + torch.tensor([0.1, -0.2, 0.3]).view(1, 3, 1, 1), 0, 1)
    torch.testing.assert_close(out, expect)
    torch.testing.assert_close(M.cubic_filter(img, torch.zeros(1, 60)), img)


def test_cubic_filter_terms_in_official_order():
    h, w = 5, 4
    img = torch.rand(1, 3, h, w) * 0.2
    g = torch.Generator().manual_seed(1)
    coeffs = torch.randn(1, 60, generator=g) * 0.01
    out = M.cubic_filter(img, coeffs)
    for c in range(3):
        r = coeffs[0, 20 * c:20 * c + 20].tolist()
        for i in range(h):
            for j in range(w):
                x, y, v = i / h, j / w, float(img[0, c, i, j])
                terms = [x**3, x*x*y, x*x*v, x*x, x*y*y, x*y*v, x*y, x*v*v, x*v, x,
                         y**3, y*y*v, y*y, y*v*v, y*v, y, v**3, v*v, v, 1.0]
                expect = min(1.0, max(0.0, v + sum(a * t for a, t in zip(r, terms))))
                assert abs(float(out[0, c, i, j]) - expect) < 1e-6


def _direct_graduated(g: list[float], h: int, w: int) -> np.ndarray:
    """The official graduated filter written out per pixel with python floats."""
    t01 = lambda v: 0.5 * (math.tanh(v) + 1)  # noqa: E731
    out = np.ones((3, h, w))
    for k in range(3):
        inv = (math.copysign(1.0, g[k]) + 1) / 2 if g[k] != 0 else 0.5
        m = g[3 + k]
        lower = t01(g[6 + k]) + 1e-10
        o1 = min(max(t01(g[9 + k]), lower), 1.0)
        o2 = max(min(t01(g[12 + k]), o1), 0.0)
        d1, d2 = t01(o1 * math.cos(math.atan(m))), t01(o2 * math.cos(math.atan(m)))
        for c in range(3):
            f = t01(g[15 + 3 * k + c]) * 2
            for i in range(h):
                for j in range(w):
                    x, y = i / h, j / w
                    signed = y - (m * x + o1 + d1)          # signed offset from the (shifted) central line
                    t = t01(signed)
                    if f >= 1:
                        diff = (f - 1) / 2 + 1
                        if inv == 1:
                            v, lo, hi = f + (diff - f) / d1 * t + (1 - diff) / d2 * t, 1, 2
                        else:
                            v, lo, hi = 1 + (diff - f) / d1 * t + (f - diff) / d2 * t, 1, 2
                    else:
                        diff = (1 - f) / 2 + f
                        if inv == 1:
                            v, lo, hi = f + (diff - f) / d1 * t + (1 - diff) / d2 * t, 0, 1
                        else:
                            v, lo, hi = 1 + (diff - 1) / d1 * t + (f - diff) / d2 * t, 0, 1
                    out[c, i, j] *= min(max(v, lo), hi)
                    out[c, i, j] = min(max(out[c, i, j], 0), 2)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_graduated_mask_against_direct_per_pixel_computation(seed):
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(1, 24, generator=g) * 1.5
    params[0, 0], params[0, 1], params[0, 2] = 0.7, -0.4, 1.2      # both inversion cases
    params[0, 15:24] = torch.tensor([1.5, -1.0, 0.3, -0.8, 2.0, 0.0, 0.9, -2.0, 0.4])  # factors above and below 1
    h, w = 9, 11
    ours = M.graduated_mask(params, h, w)[0].numpy()
    direct = _direct_graduated(params[0].tolist(), h, w)
    np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-5)
    assert ours.std() > 1e-3  # the test exercises a non-trivial map


def test_graduated_instance_side_of_line():
    """One filter, not inverted, factor 2: 1 far below the line's side map (t = 0), factor far above (t = 1)."""
    f = torch.tensor(2.0)
    d1 = d2 = torch.tensor(0.6)
    t = torch.tensor([0.0, 1.0])
    m = M.graduated_instance_mask(f, torch.tensor(0.0), d1, d2, t)
    # t = 0 -> 1 (no change); t = 1 -> 1 + (1.5-2)/0.6 + (2-1.5)/0.6 = 1
    torch.testing.assert_close(m, torch.tensor([1.0, 1.0]))
    m_inv = M.graduated_instance_mask(f, torch.tensor(1.0), d1, d2, t)
    # inverted: t = 0 -> the full factor 2; t = 1 -> 2 + (1.5-2)/0.6 + (1-1.5)/0.6 = 0.333 -> clamped to 1
    torch.testing.assert_close(m_inv, torch.tensor([2.0, 1.0]))


def _ellipse_params(xc, yc, a, b, angle_frac, scales):
    p = torch.zeros(1, 24)
    for k in range(3):
        p[0, k], p[0, 3 + k] = atanh01(xc[k]), atanh01(yc[k])
        p[0, 6 + k], p[0, 9 + k] = atanh01(a[k]), atanh01(b[k])
        p[0, 12 + k] = atanh01(angle_frac)
    for i, s in enumerate(scales):
        p[0, 15 + i] = atanh01(s / 2)
    return p


def test_elliptical_mask_at_centre_and_outside():
    h, w = 40, 50
    x, y = M.coordinates(h, w)
    # one ellipse centred on pixel (20, 25): x = 20/40, y = 25/50
    xc, yc, a, b = torch.tensor(0.5), torch.tensor(0.5), torch.tensor(0.2), torch.tensor(0.1)
    alpha = torch.tensor(0.3)
    radius = torch.tensor(0.15)
    for s in (0.5, 1.7):
        m = M.ellipse_instance_mask(x, y, xc, yc, a, b, alpha, torch.tensor(s), radius)
        # centre: s + (1 - s)·sqrt(eps)/radius
        assert abs(float(m[20, 25]) - (s + (1 - s) * math.sqrt(1e-7) / 0.15)) < 1e-6
        assert abs(float(m[20, 25]) - s) < 2e-3
        assert float(m[0, 0]) == 1.0 and float(m[39, 49]) == 1.0   # far outside: unchanged
        assert float(m[20, 49]) == 1.0                               # 0.48 across > both semi-axes
    # the full filter: three ellipses on the same centre multiply their scales there
    p = _ellipse_params([0.5] * 3, [0.5] * 3, [0.2] * 3, [0.1] * 3, 0.25,
                        [1.2, 1.1, 0.9, 1.1, 1.0, 0.8, 1.05, 1.2, 1.3])
    full = M.elliptical_mask(p, h, w)
    expect = torch.tensor([1.2 * 1.1 * 1.05, 1.1 * 1.0 * 1.2, 0.9 * 0.8 * 1.3])
    torch.testing.assert_close(full[0, :, 20, 25], expect, atol=5e-3, rtol=0)
    torch.testing.assert_close(full[0, :, 0, 0], torch.ones(3))


def test_elliptical_b3_quirk():
    """The official code gives ellipse 2's blue channel ellipse 3's b; the option turns that off."""
    p = _ellipse_params([0.5, 0.3, 0.8], [0.5, 0.3, 0.8], [0.3, 0.3, 0.05], [0.3, 0.3, 0.02], 0.25,
                        [1.0, 1.0, 1.0, 1.5, 1.5, 1.5, 1.0, 1.0, 1.0])
    quirk = M.elliptical_mask(p, 30, 30, b3_quirk=True)[0]
    fixed = M.elliptical_mask(p, 30, 30, b3_quirk=False)[0]
    torch.testing.assert_close(quirk[:2], fixed[:2])
    assert (quirk[2] != fixed[2]).any()
    torch.testing.assert_close(fixed[2], fixed[0])  # channels of one ellipse share one shape when fixed


# ------------------------------------------------------------------------------------------------
# loss
# ------------------------------------------------------------------------------------------------
def test_rgb_to_lab_matches_skimage():
    from skimage.color import rgb2lab

    rng = np.random.default_rng(0)
    img = rng.random((6, 7, 3)).astype(np.float32)
    ours = rgb_to_lab(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    ref = rgb2lab(img)
    np.testing.assert_allclose(ours[..., 0] * 100, ref[..., 0], atol=0.05)
    np.testing.assert_allclose((ours[..., 1] * 2 - 1) * 110, ref[..., 1], atol=0.2)
    np.testing.assert_allclose((ours[..., 2] * 2 - 1) * 110, ref[..., 2], atol=0.2)


def test_ms_ssim_and_loss_values():
    torch.manual_seed(0)
    a = torch.rand(1, 1, 64, 64)
    assert abs(float(ms_ssim(a, a)) - 1.0) < 1e-6
    b = torch.rand(1, 1, 64, 64)
    v_off, v_std = float(ms_ssim(a, b)), float(ms_ssim(a, b, form="standard"))
    assert 0 < v_off < 1 and 0 < v_std < 1 and v_off != v_std
    x = torch.rand(2, 3, 40, 40)
    same = deeplpf_loss(x, x)
    assert float(same["loss"]) < 1e-6
    y = torch.rand(2, 3, 40, 40)
    terms = deeplpf_loss(x, y)
    expect = float(terms["loss_lab_l1"]) + 1e-3 * float(terms["loss_msssim"])
    assert abs(float(terms["loss"]) - expect) < 1e-6


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
def test_training_steps_lower_the_loss_on_a_fixed_pair():
    torch.manual_seed(0)
    m = DeepLPF(DeepLPFConfig())
    m.setup(torch.device("cpu"))
    low = torch.rand(1, 3, 32, 32) * 0.3
    high = torch.clamp(low * 2.5 + 0.1, 0, 1)
    opt = torch.optim.Adam(m.model.parameters(), lr=1e-3)

    def eval_loss():
        m.model.eval()
        with torch.no_grad():
            return float(m.loss_terms(low, high)["loss"])

    before = eval_loss()
    m.model.train()
    for _ in range(5):
        opt.zero_grad()
        m.loss_terms(low, high)["loss"].backward()
        opt.step()
    after = eval_loss()
    assert after < before * 0.97, (before, after)


def test_config_validation():
    from bench.errors import BenchError

    with pytest.raises(BenchError):
        DeepLPF(DeepLPFConfig(batch=2))          # batch > 1 needs crops
    with pytest.raises(BenchError):
        DeepLPF(DeepLPFConfig(crop=16))
    with pytest.raises(BenchError):
        DeepLPF(DeepLPFConfig(msssim_form="nope"))
    paper = build_config(DeepLPF, "paper", {}, "lol-v1")
    assert paper.batch == 1 and paper.crop == 0 and paper.epochs == 300 and paper.lr == 1e-4


# ------------------------------------------------------------------------------------------------
# whole-image flips (official data.py: a p = 0.5 gate, then h and v flips with p = 0.5 each inside it)
# ------------------------------------------------------------------------------------------------
def _flip_pair(seed: int = 3):
    from train_pairs import ArrayPair

    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)        # no symmetry: every flip is distinguishable
    return ArrayPair("p0", low, 255 - low), low


def _flip_kinds(sampler, low: np.ndarray, n: int) -> list[str]:
    """Which flip each of ``n`` batches carries: none, h, v or hv (and the high image flipped alike)."""
    ref = torch.from_numpy(np.ascontiguousarray(low)).permute(2, 0, 1).float().div(255.0)
    kinds = {"none": ref, "h": ref.flip(-1), "v": ref.flip(-2), "hv": ref.flip(-1).flip(-2)}
    out = []
    for _ in range(n):
        b = sampler.next_batch()
        kind = [k for k, t in kinds.items() if torch.equal(b.low[0], t)]
        assert len(kind) == 1
        torch.testing.assert_close(b.high[0], 1 - b.low[0], atol=1e-6, rtol=0)  # high flipped like low
        out.append(kind[0])
    return out


def test_official_flips_are_gated():
    from baselines.deeplpf.adapter import WholeImageSampler

    pair, low = _flip_pair()
    n = 8000
    kinds = _flip_kinds(WholeImageSampler([pair], seed=5), low, n)   # the default is flips="official"
    freq = {k: kinds.count(k) / n for k in ("none", "h", "v", "hv")}
    # data.py: P(no flip) = 0.5 (gate closed) + 0.5 * 0.25 (gate open, neither flip) = 0.625; each of h only,
    # v only and both = 0.5 * 0.25 = 0.125; each flip on its own: P(h) = P(v) = 0.25. (Independent flips would
    # give 0.25 for all four and P(h) = P(v) = 0.5.) Tolerances are > 4.5 standard deviations at n = 8000.
    assert abs(freq["none"] - 0.625) < 0.025, freq
    for k in ("h", "v", "hv"):
        assert abs(freq[k] - 0.125) < 0.02, freq
    assert abs(freq["h"] + freq["hv"] - 0.25) < 0.025 and abs(freq["v"] + freq["hv"] - 0.25) < 0.025, freq
    # the exact draws: per image, one randperm of the single index, then (gate, h, v) = rand(3) < 0.5
    from bench.training import derive_seed

    g = torch.Generator().manual_seed(derive_seed(5, "whole-images"))
    expect = []
    for _ in range(200):
        torch.randperm(1, generator=g)
        gate, h, v = (torch.rand(3, generator=g) < 0.5).tolist()
        expect.append({(0, 0): "none", (1, 0): "h", (0, 1): "v", (1, 1): "hv"}[(gate and h, gate and v)])
    assert kinds[:200] == expect
    # seeded and deterministic
    assert _flip_kinds(WholeImageSampler([pair], seed=5), low, 200) == kinds[:200]
    assert _flip_kinds(WholeImageSampler([pair], seed=6), low, 200) != kinds[:200]


def test_independent_flips_are_the_previous_behaviour():
    from baselines.deeplpf.adapter import WholeImageSampler
    from bench import training

    pair, low = _flip_pair()
    n = 4000
    kinds = _flip_kinds(WholeImageSampler([pair], seed=5, flips="independent"), low, n)
    # adapter version 1 = the generic sampler's flips: two draws per image, p = 0.5 each
    old = training.WholeImageSampler([pair], 1, 5, flips=True, seed_tag="whole-images", min_side=32)
    assert _flip_kinds(old, low, n) == kinds
    freq = {k: kinds.count(k) / n for k in ("none", "h", "v", "hv")}
    for k in freq:
        assert abs(freq[k] - 0.25) < 0.03, freq
    assert set(_flip_kinds(WholeImageSampler([pair], seed=5, flips="off"), low, 50)) == {"none"}


def test_flips_option_parsing():
    from bench.errors import BenchError

    assert DeepLPFConfig().flips == "official"
    assert build_config(DeepLPF, "paper", {}, "lol-v1").flips == "official"
    for raw, mode in [("official", "official"), ("independent", "independent"), ("off", "off"),
                      ("true", "official"), ("yes", "official"), ("1", "official"), ("false", "off"), ("0", "off"),
                      ("Independent", "independent")]:
        assert build_config(DeepLPF, "smoke", {"flips": raw}).flips == mode, raw
    assert DeepLPF(DeepLPFConfig(flips=True)).config.flips == "official"      # bool configs still load
    assert DeepLPF(DeepLPFConfig(flips=False)).config.flips == "off"
    with pytest.raises(BenchError):
        build_config(DeepLPF, "smoke", {"flips": "sometimes"})
    assert DeepLPF.version == 2                                                 # the default changed: new run IDs
    prov = DeepLPF(build_config(DeepLPF, "paper", {}, "lol-v1")).provenance()["training_input"]
    assert "official gated" in prov


def test_end_to_end_demo_smoke(monkeypatch):
    from bench.run import RunSpec, execute

    result = execute(RunSpec("deeplpf", "demo", profile="smoke", progress=False))
    assert (result.run_dir / "metrics.csv").exists()

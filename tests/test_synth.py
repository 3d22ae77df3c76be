"""Tests for the synthetic-input generators: bench.data.distort and bench.data.underexpose."""

from __future__ import annotations

import hashlib
import json
import math
import socket

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from bench.data import distort as D
from bench.data import underexpose as U


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_img():
    rng = np.random.default_rng(12345)
    # smooth-ish colour image plus texture, 48x64
    y, x = np.mgrid[0:48, 0:64]
    base = np.stack([x * 3.5, y * 4.5, (x + y) * 2.0], axis=-1)
    img = base + rng.normal(0, 20, size=base.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _blend_reference(degenerate, img, factor):
    """Independent re-statement of PIL's Image.blend for uint8: float32, truncation, clip."""
    f = np.float32(factor)
    d = degenerate.astype(np.float32)
    t = d + f * (img.astype(np.float32) - d)
    return np.clip(np.trunc(t), 0, 255).astype(np.uint8)


def _luma_pil(img):
    """PIL's RGB->L conversion (ITU-R 601-2 with fixed-point rounding)."""
    r, g, b = (img[..., i].astype(np.int64) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


# --------------------------------------------------------------------------
# distort: the PIL operators
# --------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [0.6, 0.73, 0.85, 1.15, 1.27, 1.4])
def test_enhance_ops_equal_pil_exactly(small_img, factor):
    pil = Image.fromarray(small_img, "RGB")
    cases = {
        "contrast": ImageEnhance.Contrast,
        "saturation": ImageEnhance.Color,
        "brightness": ImageEnhance.Brightness,
    }
    for name, cls in cases.items():
        ours = D.apply_op(small_img, {"op": name, "factor": factor})
        ref = np.asarray(cls(pil).enhance(factor))
        assert ours.dtype == np.uint8 and ours.shape == small_img.shape
        assert np.array_equal(ours, ref), name
        if factor != 1.0:
            assert not np.array_equal(ours, small_img), name


@pytest.mark.parametrize("factor", [0.6, 0.85, 1.27, 1.4])
def test_enhance_ops_match_documented_formula(small_img, factor):
    """out = degenerate + f (img - degenerate), with the degenerate images of protocol.md section 3."""
    luma = _luma_pil(small_img)
    grey = np.repeat(luma[..., None], 3, axis=2)
    mean_grey = np.full_like(small_img, int(luma.mean() + 0.5))
    black = np.zeros_like(small_img)
    assert np.array_equal(D.apply_op(small_img, {"op": "saturation", "factor": factor}),
                          _blend_reference(grey, small_img, factor))
    assert np.array_equal(D.apply_op(small_img, {"op": "contrast", "factor": factor}),
                          _blend_reference(mean_grey, small_img, factor))
    assert np.array_equal(D.apply_op(small_img, {"op": "brightness", "factor": factor}),
                          _blend_reference(black, small_img, factor))


# --------------------------------------------------------------------------
# distort: colour temperature
# --------------------------------------------------------------------------
# Hand-computed from the Tanner Helland fit (t = K / 100):
#   t <= 66: G = 99.4708025861 ln t - 161.1195681661 ; B = 138.5177312231 ln(t-10) - 305.0447927307
#   t >  66: R = 329.698727446 (t-60)^-0.1332047592 ; G = 288.1221695283 (t-60)^-0.0755148492
#   5000 K: G = 99.4708*3.912023 - 161.1196 = 228.0125 ; B = 138.5177*3.688879 - 305.0448 = 205.9304
#   6500 K: G = 99.4708*4.174387 - 161.1196 = 254.1101 ; B = 138.5177*4.007333 - 305.0448 = 250.0419
#   8000 K: R = 329.6987*20^-0.1332 = 221.2146 ; G = 288.1222*20^-0.0755 = 229.7892
TH_VALUES = {
    5000: (255.0, 228.0125, 205.9304),
    6500: (255.0, 254.1101, 250.0419),
    8000: (221.2146, 229.7892, 255.0),
    1500: (255.0, 108.2525, 0.0),  # G = 99.4708*2.708050 - 161.1196; B clamps to 0 (t <= 19)
}


@pytest.mark.parametrize("kelvin", sorted(TH_VALUES))
def test_kelvin_to_rgb_hand_values(kelvin):
    got = D.kelvin_to_rgb(kelvin)
    want = TH_VALUES[kelvin]
    tol = 2e-3
    for g, w in zip(got, want):
        assert abs(g - w) < tol, (kelvin, got, want)


def test_temperature_op_is_unnormalised_gain(small_img):
    k = 5000.0
    r, g, b = D.kelvin_to_rgb(k)
    out = D.apply_op(small_img, {"op": "temperature", "kelvin": k, "draw": 0})
    gains = np.array([r, g, b]) / 255.0
    ref = np.clip(np.floor(small_img * gains + 0.5), 0, 255).astype(np.uint8)
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    # red untouched (gain 1), green and blue darkened: not normalised to white
    assert np.array_equal(out[..., 0], small_img[..., 0])
    assert out[..., 1].mean() < small_img[..., 1].mean() - 5
    assert out[..., 2].mean() < small_img[..., 2].mean() - 10
    # 8000 K: blue untouched, red and green darkened
    hot = D.apply_op(small_img, {"op": "temperature", "kelvin": 8000.0, "draw": 8000})
    assert np.array_equal(hot[..., 2], small_img[..., 2])
    assert hot[..., 0].mean() < small_img[..., 0].mean() * 0.9
    assert hot[..., 1].mean() < small_img[..., 1].mean() * 0.93


# --------------------------------------------------------------------------
# distort: tone curve
# --------------------------------------------------------------------------
@pytest.mark.parametrize("w", [5.0, 7.3, 10.0])
def test_sigmoid_tone_curve_shape(w):
    assert D.sigmoid_tone_curve(0.0, w) == pytest.approx(0.0, abs=1e-12)
    assert D.sigmoid_tone_curve(100.0, w) == pytest.approx(100.0, abs=1e-12)
    assert D.sigmoid_tone_curve(50.0, w) == pytest.approx(50.0, abs=1e-12)
    L = np.linspace(0, 100, 201)
    y = D.sigmoid_tone_curve(L, w)
    assert np.allclose(y + y[::-1], 100.0, atol=1e-10)  # point symmetry about (50, 50)
    assert np.all(np.diff(y) > 0)
    # direct computation of the documented formula at L = 25
    sig = lambda t: 1.0 / (1.0 + math.exp(-t))
    direct = (sig(w * (0.25 - 0.5)) - sig(-w / 2)) / (sig(w / 2) - sig(-w / 2)) * 100
    assert D.sigmoid_tone_curve(25.0, w) == pytest.approx(direct, rel=1e-12)
    assert direct < 25.0  # S-curve: shadows darker
    # the slope at the midpoint is > 1 (contrast increase)
    assert (D.sigmoid_tone_curve(50.5, w) - D.sigmoid_tone_curve(49.5, w)) > 1.0


def test_tone_curve_op_truncates_like_original(small_img):
    from skimage import color

    w = 6.2
    out = D.apply_op(small_img, {"op": "tone_curve", "width": w})
    lab = color.rgb2lab(small_img / 255.0)
    lab[..., 0] = D.sigmoid_tone_curve(lab[..., 0], w)
    ref = np.clip(color.lab2rgb(lab) * 255.0, 0, 255)
    assert np.array_equal(out, np.floor(ref).astype(np.uint8))
    assert not np.array_equal(out, np.rint(ref).astype(np.uint8))  # truncation, not rounding


def test_tone_curve_on_grey_ramp():
    levels = np.arange(0, 256, 5, dtype=np.uint8)
    img = np.repeat(np.repeat(levels[None, :, None], 2, axis=0), 3, axis=2)
    out = D.apply_op(img, {"op": "tone_curve", "width": 8.0})[0]
    assert np.abs(out.astype(int) - out[:, :1].astype(int)).max() <= 1  # grey stays grey
    g = out[:, 1].astype(int)
    assert np.all(np.diff(g) >= 0)
    assert g[levels.tolist().index(50)] < 50 - 5  # shadows pushed down
    assert g[levels.tolist().index(200)] > 200 + 5  # highlights pushed up
    assert g[0] == 0 and g[-1] >= 254


# --------------------------------------------------------------------------
# distort: sampling
# --------------------------------------------------------------------------
def _expected_kelvin(draw, variant):
    lo_min, lo_max, mid, hi_min, hi_max = {
        "uniform": (4000, 5500, 6000, 6500, 8000),
        "mild": (5000, 5800, 6000, 6200, 7000),
    }[variant]
    if draw < mid:
        return lo_min + (draw - lo_min) * (lo_max - lo_min) / (mid - lo_min)
    return hi_max - (hi_max - draw) * (hi_max - hi_min) / (hi_max - mid)


@pytest.mark.parametrize(
    "variant,min_ops,allowed,frange,kint",
    [
        ("uniform", 3, {"contrast", "saturation", "brightness", "temperature", "tone_curve"},
         (0.2, 0.4), [(4000, 5500), (6500, 8000)]),
        ("mild", 2, {"contrast", "saturation", "brightness", "temperature"},
         (0.1, 0.2), [(5000, 5800), (6200, 7000)]),
    ],
)
def test_draw_distortion_ranges(variant, min_ops, allowed, frange, kint):
    counts, seen, signs, unsorted = [], set(), [], 0
    for seed in range(600):
        ops = D.draw_distortion(np.random.default_rng(seed), variant)
        assert json.loads(json.dumps(ops)) == ops
        names = [o["op"] for o in ops]
        assert len(names) == len(set(names)) >= min_ops
        assert set(names) <= allowed
        seen |= set(names)
        counts.append(len(ops))
        idx = [D.OP_INDEX[n] for n in names]
        unsorted += idx != sorted(idx)
        for o in ops:
            if "factor" in o:
                d = abs(o["factor"] - 1.0)
                assert frange[0] <= d <= frange[1], o
                signs.append(o["factor"] > 1.0)
            elif o["op"] == "temperature":
                assert any(lo <= o["kelvin"] <= hi for lo, hi in kint), o
                assert isinstance(o["draw"], int)
                assert o["kelvin"] == pytest.approx(_expected_kelvin(o["draw"], variant), abs=1e-9)
            else:
                assert 5.0 <= o["width"] <= 10.0, o
    assert seen == allowed
    assert 0.4 < np.mean(signs) < 0.6
    assert unsorted > 100  # order is shuffled
    # count distribution: Binomial(n, 0.3) conditioned on >= min_ops
    n = 5 if variant == "uniform" else 4
    pmf = {k: math.comb(n, k) * 0.3 ** k * 0.7 ** (n - k) for k in range(min_ops, n + 1)}
    expected_mean = sum(k * p for k, p in pmf.items()) / sum(pmf.values())
    assert abs(np.mean(counts) - expected_mean) < 0.08


class ScriptedRng:
    """Stand-in Generator: scripted random(), inclusive-max integers(), identity permutation."""

    def __init__(self, randoms):
        self.randoms = list(randoms)
        self.int_calls = []

    def random(self):
        return self.randoms.pop(0)

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        self.int_calls.append((low, high, endpoint))
        return high if endpoint else high - 1

    def permutation(self, n):
        return np.arange(n)


def test_draw_semantics_scripted():
    # per operator: fire test (U > 0.7), then sign (U < 0.5 -> +1), then magnitude U(a, b)
    rng = ScriptedRng([
        0.71, 0.49, 0.5,   # contrast fires, +, 0.2 + 0.2*0.5 -> 1.3
        0.7,               # saturation: 0.7 is not > 0.7 -> skipped
        0.9, 0.5, 0.0,     # brightness fires, 0.5 is not < 0.5 -> sign -1, 0.2 -> 0.8
        0.95,              # temperature fires: integers(4000, 8000 inclusive)
        0.8, 0.25,         # tone curve fires, width 5 + 5*0.25
    ])
    ops = D.draw_distortion(rng, "uniform")
    assert rng.randoms == []
    assert rng.int_calls == [(4000, 8000, True)]
    assert ops == [
        {"op": "contrast", "factor": pytest.approx(1.3)},
        {"op": "brightness", "factor": pytest.approx(0.8)},
        {"op": "temperature", "kelvin": 8000.0, "draw": 8000},
        {"op": "tone_curve", "width": pytest.approx(6.25)},
    ]
    # fewer than min_ops fire -> the whole draw is repeated
    rng = ScriptedRng([0.1, 0.1, 0.8, 0.0, 0.0, 0.1,   # mild, 1st draw: only brightness fires
                       0.8, 0.0, 1.0 - 1e-12, 0.1, 0.1, 0.99])  # 2nd: contrast + temperature
    ops = D.draw_distortion(rng, "mild")
    assert rng.randoms == [] and rng.int_calls == [(5000, 7000, True)]
    assert [o["op"] for o in ops] == ["contrast", "temperature"]
    assert ops[0]["factor"] == pytest.approx(1.2) and ops[1]["kelvin"] == 7000.0


def test_temperature_mapping_endpoints():
    assert D._map_temperature(4000, D.VARIANTS["uniform"]["temperature"]) == 4000.0
    assert D._map_temperature(5999, D.VARIANTS["uniform"]["temperature"]) == 5499.25
    assert D._map_temperature(6000, D.VARIANTS["uniform"]["temperature"]) == 6500.0
    assert D._map_temperature(8000, D.VARIANTS["uniform"]["temperature"]) == 8000.0
    assert D._map_temperature(6000, D.VARIANTS["mild"]["temperature"]) == 6200.0
    assert D._map_temperature(5000, D.VARIANTS["mild"]["temperature"]) == 5000.0


def test_unknown_variant_and_op(small_img):
    with pytest.raises(ValueError):
        D.draw_distortion(np.random.default_rng(0), "strong")
    with pytest.raises(ValueError):
        D.apply_op(small_img, {"op": "sharpness", "factor": 1.2})
    with pytest.raises(ValueError):
        D.apply_distortion(small_img.astype(np.float32), [])


@pytest.mark.parametrize("variant", ["uniform", "mild"])
def test_distort_determinism(small_img, variant):
    a, ops_a = D.distort(small_img, 7, variant)
    b, ops_b = D.distort(small_img, 7, variant)
    assert ops_a == ops_b
    assert a.tobytes() == b.tobytes()
    assert a.dtype == np.uint8 and a.shape == small_img.shape
    c, ops_c = D.distort(small_img, 8, variant)
    assert ops_c != ops_a
    assert c.tobytes() != a.tobytes()


def test_apply_distortion_matches_sequential_pil_pipeline(small_img):
    """Chain as the original did: PIL image between ops, uint8 after each op."""
    from skimage import color

    ops = [
        {"op": "tone_curve", "width": 7.7},
        {"op": "contrast", "factor": 0.72},
        {"op": "temperature", "kelvin": 7012.75, "draw": 7350},
        {"op": "saturation", "factor": 1.31},
        {"op": "brightness", "factor": 0.66},
    ]
    im = Image.fromarray(small_img, "RGB")
    for o in ops:
        if o["op"] == "contrast":
            im = ImageEnhance.Contrast(im).enhance(o["factor"])
        elif o["op"] == "saturation":
            im = ImageEnhance.Color(im).enhance(o["factor"])
        elif o["op"] == "brightness":
            im = ImageEnhance.Brightness(im).enhance(o["factor"])
        elif o["op"] == "temperature":
            r, g, b = D.kelvin_to_rgb(o["kelvin"])
            im = im.convert("RGB", (r / 255, 0, 0, 0, 0, g / 255, 0, 0, 0, 0, b / 255, 0))
        else:
            lab = color.rgb2lab(np.asarray(im) / 255.0)
            lab[..., 0] = D.sigmoid_tone_curve(lab[..., 0], o["width"])
            im = Image.fromarray(np.clip(color.lab2rgb(lab) * 255, 0, 255).astype(np.uint8))
    assert np.array_equal(D.apply_distortion(small_img, ops), np.asarray(im))
    assert D.ops_suffix(ops) == "4_7.70_0_0.72_3_7012.75_1_1.31_2_0.66_"


def test_draw_distortion_golden():
    """Pins the random stream (numpy PCG64 Generator); a failure means builds are no longer reproducible."""
    ops = D.draw_distortion(np.random.default_rng(2), "uniform")
    assert [o["op"] for o in ops] == [o["op"] for o in GOLDEN_OPS_SEED2]
    for o, g in zip(ops, GOLDEN_OPS_SEED2):
        assert o.keys() == g.keys()
        for k in g:
            assert o[k] == (pytest.approx(g[k], rel=1e-12) if isinstance(g[k], float) else g[k])


GOLDEN_OPS_SEED2 = [
    {"op": "tone_curve", "width": 8.96877707709129},
    {"op": "temperature", "kelvin": 4330.75, "draw": 4441},
    {"op": "contrast", "factor": 1.236960536885976},
]


# --------------------------------------------------------------------------
# underexpose
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photo():
    return U.demo_photos()[0][1]()


def test_srgb_transfer_roundtrip():
    v = np.linspace(0, 1, 1001)
    assert np.allclose(U.linear_to_srgb(U.srgb_to_linear(v)), v, atol=1e-12)
    assert U.srgb_to_linear(0.5) == pytest.approx(0.21404114, abs=1e-8)
    assert U.srgb_to_linear(0.04045) == pytest.approx(0.04045 / 12.92)
    assert U.linear_to_srgb(1.0) == pytest.approx(1.0)


def test_underexpose_deterministic_and_dark(photo):
    a, pa = U.underexpose(photo, 3)
    b, pb = U.underexpose(photo, 3)
    assert pa == pb and json.loads(json.dumps(pa)) == pa
    assert a.tobytes() == b.tobytes()
    assert a.dtype == np.uint8 and a.shape == photo.shape
    c, pc = U.underexpose(photo, 4)
    assert pc != pa and c.tobytes() != a.tobytes()
    ratios = []
    for seed in range(12):
        out, _ = U.underexpose(photo, seed)
        ratios.append(out.mean() / photo.mean())
    assert max(ratios) < 0.5
    assert np.mean(ratios) < 0.35


def test_underexpose_param_ranges():
    ps = [U.draw_underexposure(np.random.default_rng(s)) for s in range(400)]
    k = np.array([p["exposure"] for p in ps])
    fw = np.array([p["full_well"] for p in ps])
    rn = np.array([p["read_noise"] for p in ps])
    g = np.array([p["gamma"] for p in ps])
    assert k.min() >= 0.03 and k.max() <= 0.15
    assert fw.min() >= 500 and fw.max() <= 4000
    assert rn.min() >= 0.0005 and rn.max() <= 0.003
    assert g.min() >= 0.9 and g.max() <= 1.1
    # log-uniform: the median is near the geometric mean, not the arithmetic one
    assert abs(np.median(k) - math.sqrt(0.03 * 0.15)) < 0.012
    assert abs(np.median(fw) - math.sqrt(500 * 4000)) < 250
    assert U.draw_underexposure(np.random.default_rng(0), gamma_jitter=False)["gamma"] == 1.0


def test_noise_variance_grows_with_signal():
    """Poisson-Gaussian: var(linear) = signal / full_well + read_noise^2 on flat grey patches."""
    params = {"model": U.MODEL_NAME, "exposure": 0.1, "full_well": 1000.0,
              "read_noise": 0.001, "gamma": 1.0}
    levels = [64, 128, 192, 255]
    img = np.concatenate([np.full((96, 96, 3), v, np.uint8) for v in levels], axis=1)
    out = U.apply_underexposure(img, params, np.random.default_rng(0))
    lin_out = U.srgb_to_linear(out / 255.0)
    variances, expected = [], []
    for i, v in enumerate(levels):
        patch = lin_out[:, i * 96:(i + 1) * 96]
        signal = U.srgb_to_linear(v / 255.0) * params["exposure"]
        variances.append(patch.var())
        expected.append(signal / params["full_well"] + params["read_noise"] ** 2)
        assert patch.mean() == pytest.approx(signal, rel=0.05)
    assert all(np.diff(variances) > 0)
    for got, want in zip(variances, expected):
        assert got == pytest.approx(want, rel=0.2)
    assert variances[-1] / variances[0] > 8  # Gaussian-only noise would give ~1


def test_add_sensor_noise_statistics():
    rng = np.random.default_rng(1)
    sig = np.full(200_000, 0.02)
    noisy = U.add_sensor_noise(sig, 2000.0, 0.002, rng)
    assert noisy.mean() == pytest.approx(0.02, rel=0.01)
    assert noisy.var() == pytest.approx(0.02 / 2000 + 0.002 ** 2, rel=0.03)
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0


def test_underexpose_golden():
    """Pins the output bytes for a fixed seed (numpy Generator streams); see underexpose module doc."""
    img = np.random.default_rng(99).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    out, params = U.underexpose(img, 2024)
    assert hashlib.sha256(out.tobytes()).hexdigest() == GOLDEN_UNDEREXPOSE_SHA256


GOLDEN_UNDEREXPOSE_SHA256 = "396192c69e94f9f551a93973f50b06253e1fbc1bc2e9cf119d4a1d4a96cf6fff"


# --------------------------------------------------------------------------
# demo photos
# --------------------------------------------------------------------------
EXPECTED_IDS = [
    "skimage-astronaut",
    "skimage-chelsea",
    "skimage-coffee",
    "skimage-rocket",
    "skimage-motorcycle_left",
    "skimage-immunohistochemistry",
    "mpl-grace_hopper",
]


def test_demo_photos_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("demo_photos tried to use the network")

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            no_network()

    monkeypatch.setattr(socket, "socket", NoSocket)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)

    photos = U.demo_photos()
    assert [pid for pid, _ in photos] == EXPECTED_IDS
    for pid, load in photos:
        try:
            img = load()
        except pytest.skip.Exception as e:  # skimage skips tests whose data would need pooch
            pytest.fail(f"{pid}: needs a download ({e})")
        assert isinstance(img, np.ndarray), pid
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, (pid, img.shape)
        assert min(img.shape[:2]) >= 256 and max(img.shape[:2]) <= 2000, (pid, img.shape)
        assert img.flags["C_CONTIGUOUS"]
        # a colour photograph: channels differ, decent dynamic range
        assert np.abs(img[..., 0].astype(int) - img[..., 2].astype(int)).mean() > 3, pid
        assert img.std() > 20, pid
    # stable content
    again = dict(U.demo_photos())
    assert np.array_equal(again["mpl-grace_hopper"](), photos[-1][1]())

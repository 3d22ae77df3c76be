"""Tests for the KinD baseline (baselines/kind): networks, official losses, ratio policies, three-stage training."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.methods.base import build_config
from bench.training import Batch, load_torch
from baselines.kind import inference as INF
from baselines.kind import losses as L
from baselines.kind.adapter import (
    KinD,
    KinDConfig,
    MapCropSampler,
    adjust_step_fn,
    decom_step_fn,
    restoration_step_fn,
    stage_schedule,
)
from baselines.kind.model import (
    ADJUST_PARAMS,
    DECOM_PARAMS,
    RESTORATION_PARAMS,
    AdjustNet,
    DecomNet,
    KinDModel,
    RestorationNet,
    UpConcat,
    _pool,
)
from smoke import adam_losses, assert_image_like, seeded_method

torch.set_num_threads(1)


def _method(profile: str = "smoke", seed: int = 0, **overrides) -> KinD:
    return seeded_method(KinD, seed, build_config(KinD, profile, {k: str(v) for k, v in overrides.items()}))


def _low(h=37, w=53, seed=3):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 0.3


# ---- structure -------------------------------------------------------------------------------
def test_metadata_and_official_defaults():
    assert KinD.name == "kind" and KinD.family == "supervised" and KinD.trainable and KinD.uses_pairs
    assert "Zhang" in KinD.citation and KinD.pad_multiple == 1
    c = KinDConfig()
    assert (c.decom_epochs, c.decom_batch, c.decom_crop, c.decom_lr) == (2000, 10, 48, 1e-4)
    assert (c.adjust_epochs, c.adjust_batch, c.adjust_crop, c.adjust_lr) == (2000, 10, 48, 1e-4)
    assert (c.restore_epochs, c.restore_batch, c.restore_crop, c.restore_lr) == (1000, 4, 384, 1e-4)
    assert (c.restore_lr_drop_epoch, c.restore_lr_gamma, c.restore_target_gamma) == (801, 0.5, 1.2)
    assert (c.w_equal_r, c.w_i_mutual, c.w_i_input) == (0.01, 0.2, 0.15)
    # the default never looks at the ground truth: the official evaluate.py (ratio 5.0 + its post-processing)
    assert c.fixed_ratio() == 5.0 and c.resolved_postprocess() == "evaluate" and c.normalize_input
    assert set(KinD.profiles) >= {"smoke", "quick", "paper", "paper@lol", "paper@fivek"}
    for bad in ({"ratio": "bright"}, {"ratio": "0"}, {"postprocess": "gamma"}, {"small_images": "tile"}):
        with pytest.raises(BenchError):
            build_config(KinD, "smoke", bad)
    assert build_config(KinD, "smoke", {"ratio": "GT"}).fixed_ratio() is None


def test_parameter_count_matches_the_notes():
    m = _method()
    assert sum(p.numel() for p in m.model.decom.parameters()) == DECOM_PARAMS == 235_876
    assert sum(p.numel() for p in m.model.restore.parameters()) == RESTORATION_PARAMS == 7_760_739
    assert sum(p.numel() for p in m.model.adjust.parameters()) == ADJUST_PARAMS == 19_393
    assert m.trainable_parameters() == 8_016_008


@pytest.mark.parametrize("n", [24, 25, 1])
def test_transposed_conv_is_the_adjoint_of_tf_same_conv(n):
    # tf.nn.conv2d_transpose(output_shape=skip) is the adjoint of the stride-2 2x2 'SAME' conv of a skip-sized
    # input, whose padding (n % 2 rows/cols) goes at the bottom/right
    torch.manual_seed(0)
    up = UpConcat(5, 3)
    m = -(-n // 2)
    y = torch.randn(1, 5, m, m)
    x = torch.zeros(1, 3, n, n, requires_grad=True)
    fwd = F.conv2d(F.pad(x, (0, n % 2, 0, n % 2)), up.deconv.weight, stride=2)
    assert fwd.shape[-1] == m
    (adjoint,) = torch.autograd.grad(fwd, x, grad_outputs=y)
    skip = torch.zeros(1, 3, n, n)
    out = up(y, skip)
    assert out.shape == (1, 6, n, n)
    assert torch.allclose(out[:, :3], adjoint, atol=1e-5)


@pytest.mark.parametrize("size", [(7, 9), (8, 8), (1, 3)])
def test_max_pool_is_tf_same(size):
    x = torch.randn(2, 3, *size)
    h, w = size
    want = F.max_pool2d(F.pad(x, (0, w % 2, 0, h % 2), value=float("-inf")), 2)
    assert torch.equal(_pool(x), want)


def test_network_io_shapes_ranges_and_input_order():
    torch.manual_seed(0)
    with torch.no_grad():
        r, i = DecomNet()(torch.rand(2, 3, 25, 31))
    assert r.shape == (2, 3, 25, 31) and i.shape == (2, 1, 25, 31)
    assert 0 < float(r.min()) and float(r.max()) < 1 and 0 < float(i.min()) and float(i.max()) < 1
    net = RestorationNet()
    assert net.enc[0][0].weight.shape == (32, 4, 3, 3) and net.out.weight.shape == (3, 32, 3, 3)
    with torch.no_grad():
        net.enc[0][0].weight[:, :3] = 0   # the input is [R, I]: keep only the illumination's kernel
        ill = torch.rand(1, 1, 19, 23)
        out = net(torch.rand(1, 3, 19, 23), ill)
        assert out.shape == (1, 3, 19, 23) and torch.equal(out, net(torch.rand(1, 3, 19, 23), ill))


# ---- the illumination adjustment: known answers ----------------------------------------------
def _configure_adjust(net: AdjustNet, a: float, b: float, g: float) -> None:
    """conv1 channel 0 = a*I + b*ratio + g (centre taps only, so zero padding never matters); conv2-4 pass
    channel 0 through; all else 0. For a*I + b*ratio + g = z: output = sigmoid(z) if z > 0, else the four lrelus
    give sigmoid(0.2^4 z)."""
    with torch.no_grad():
        for conv in net.convs:
            conv.weight.zero_()
            conv.bias.zero_()
        net.convs[0].weight[0, 0, 1, 1] = a
        net.convs[0].weight[0, 1, 1, 1] = b
        net.convs[0].bias[0] = g
        for conv in net.convs[1:]:
            conv.weight[0, 0, 1, 1] = 1.0


def test_adjust_net_hand_computation_including_the_final_lrelu():
    net = AdjustNet()
    _configure_adjust(net, 2.0, 0.5, 0.1)
    i = torch.rand(1, 1, 6, 7)
    with torch.no_grad():
        assert torch.allclose(net(i, torch.full_like(i, 3.0)), torch.sigmoid(2.0 * i + 1.5 + 0.1), atol=1e-6)
        _configure_adjust(net, 0.0, -1.0, 0.0)    # z = -ratio < 0: the official lrelu before the sigmoid
        assert torch.allclose(net(i, torch.full_like(i, 4.0)), torch.full_like(i, float(torch.sigmoid(
            torch.tensor(-4.0 * 0.2**4)))), atol=1e-6)


@pytest.mark.parametrize("ratio", ["5.0", "1", "2.5"])
def test_fixed_ratio_map_and_plain_composition_reproduce_a_hand_computation(ratio):
    m = _method(ratio=ratio, postprocess="none")
    a, b, g = 1.5, 0.3, 0.05
    _configure_adjust(m.model.adjust, a, b, g)
    seen = []
    handle = m.model.adjust.register_forward_hook(lambda mod, inp, out: seen.append(inp[1].clone()))
    low = _low()
    out = m.enhance(low)
    handle.remove()
    assert len(seen) == 1 and seen[0].shape == (1, 1, 37, 53)
    assert torch.equal(seen[0], torch.full((1, 1, 37, 53), float(ratio)))     # the constant the option says
    with torch.no_grad():
        x = (low - low.min()) / (low.max() - low.min())                  # official load_images normalisation
        r, i = m.model.decom(x)
        want = (m.model.restore(r, i) * torch.sigmoid(a * i + b * float(ratio) + g)).clamp(0, 1)
    assert torch.allclose(out, want, atol=1e-6)
    assert m.provenance()["ratio"] == float(ratio) and m.provenance()["uses_ground_truth_at_test"] is False


def test_default_output_is_the_official_evaluate_py_pipeline():
    m = _method()
    low = _low(29, 41)
    out = m.enhance(low)
    with torch.no_grad():
        x = INF.minmax_normalize(low)
        r, i = m.model.decom(x)
        rr = m.model.restore(r, i)
        ia = m.model.adjust(i, torch.full_like(i, 5.0))
        want = (i * x + (1 - i) * (rr * INF.dark_region_weight(r) * ia)).clamp(0, 1)
    assert torch.allclose(out, want, atol=1e-6)
    prov = m.provenance()
    assert prov["ratio"] == 5.0 and prov["postprocess"] == "evaluate" and "evaluate.py" in prov["ratio_policy"]
    assert prov["faithful"] is True and "substitutes" not in prov


def test_evaluate_postprocess_by_hand():
    # constant maps: the Gaussian of a constant is the constant, so every factor is a number
    c = torch.tensor([0.1, 0.2, 0.05]).view(1, 3, 1, 1)
    r_low = c.expand(1, 3, 8, 9)
    g = 0.2125 * 0.1 + 0.7154 * 0.2 + 0.0721 * 0.05                       # skimage rgb2gray
    w = min((2 * g) ** 0.5, 1.0)
    x, i_low = torch.full((1, 3, 8, 9), 0.3), torch.full((1, 1, 8, 9), 0.25)
    rr, ia = torch.full((1, 3, 8, 9), 0.6), torch.full((1, 1, 8, 9), 0.8)
    got = INF.compose(x, r_low, i_low, rr, ia, "evaluate")
    assert torch.allclose(got, torch.full_like(got, 0.25 * 0.3 + 0.75 * 0.6 * w * 0.8), atol=1e-6)
    assert torch.allclose(INF.compose(x, r_low, i_low, rr, ia, "none"), torch.full_like(got, 0.48))
    assert float(INF.dark_region_weight(torch.ones(1, 3, 5, 5)).max()) == 1.0   # min(sqrt(2), 1)


def test_gaussian_matches_scipy_nearest():
    from scipy.ndimage import gaussian_filter

    img = np.random.default_rng(0).random((20, 31))
    got = INF.gaussian_blur_nearest(torch.from_numpy(img).view(1, 1, 20, 31), 3.0)[0, 0].numpy()
    assert np.allclose(got, gaussian_filter(img, 3.0, mode="nearest", truncate=4.0), atol=1e-10)


def test_ratio_gt_is_refused_by_bench_and_computed_with_a_reference():
    m = _method(ratio="gt")
    assert m.needs_reference_at_test and not _method().needs_reference_at_test
    low, high = _low(), _low(seed=4) * 3
    with pytest.raises(BenchError, match="ratio=gt") as err:
        m.enhance(low)
    assert "\n" not in str(err.value)
    seen = []
    handle = m.model.adjust.register_forward_hook(lambda mod, inp, out: seen.append(inp[1].clone()))
    out = m.enhance(low, reference=high)
    handle.remove()
    with torch.no_grad():
        _, i_low = m.model.decom(INF.minmax_normalize(low))
        r, i = m.model.decom(INF.minmax_normalize(low))
        _, i_high = m.model.decom(INF.minmax_normalize(high))
        ratio = float((i_high / (i_low + 1e-4)).mean())
        want = (m.model.restore(r, i) * m.model.adjust(i, torch.full_like(i, ratio))).clamp(0, 1)  # no postprocess
    assert torch.allclose(seen[0], torch.full_like(seen[0], ratio), rtol=1e-6)
    assert torch.allclose(out, want, atol=1e-6)
    prov = m.provenance()
    assert prov["ratio"] == "gt" and prov["uses_ground_truth_at_test"] is True and "ORACLE" in prov["ratio_policy"]
    assert prov["postprocess"] == "none"


# ---- enhance ---------------------------------------------------------------------------------
def test_enhance_odd_size_range_and_determinism():
    low = _low()
    a, b = _method(seed=5), _method(seed=5)
    out = a.enhance(low)
    assert_image_like(out, low)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, a.enhance(low)) and torch.equal(out, b.enhance(low))
    assert not torch.equal(out, _method(seed=6).enhance(low))


@pytest.mark.slow
def test_enhance_600x400():
    low = _low(400, 600, seed=0)
    out = _method().enhance(low)
    assert out.shape == low.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_minmax_normalisation_is_per_image():
    x = torch.stack([torch.full((3, 2, 2), 0.2), torch.linspace(0.1, 0.5, 12).view(3, 2, 2)])
    x[0, 0, 0, 0] = 0.3
    y = INF.minmax_normalize(x)
    assert float(y[0].min()) == 0 and float(y[0].max()) == 1 and float(y[1].min()) == 0
    assert torch.isclose(y[1].max(), torch.tensor(1.0))
    flat = torch.full((1, 3, 4, 4), 0.5)      # max - min floored at 0.001
    assert torch.equal(INF.minmax_normalize(flat), torch.zeros_like(flat))


# ---- losses: known answers -------------------------------------------------------------------
def test_gradient_is_the_official_kernel_padding_and_normalisation():
    x = torch.rand(2, 1, 5, 6)
    p = F.pad(x, (0, 1, 0, 1))
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(x)
    for i in range(5):
        for j in range(6):
            gx[..., i, j] = (p[..., i + 1, j + 1] - p[..., i + 1, j]).abs()
            gy[..., i, j] = (p[..., i + 1, j + 1] - p[..., i, j + 1]).abs()
    assert torch.allclose(L.raw_gradient(x, "x"), gx) and torch.allclose(L.raw_gradient(x, "y"), gy)
    want = (gx - gx.min()) / (gx.max() - gx.min() + 1e-4)      # over the whole batch at once
    assert torch.allclose(L.gradient(x, "x"), want, atol=1e-7)


def test_decomposition_reconstruction_is_zero_when_r_times_i_is_the_input():
    g = torch.Generator().manual_seed(0)
    r_low, r_high = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    i_low, i_high = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    t = L.decom_loss(r_low, i_low, r_high, i_high, r_low * i_low, r_high * i_high)
    assert float(t["recon_low"]) == 0.0 and float(t["recon_high"]) == 0.0
    assert float(t["equal_r"]) > 0 and float(t["i_mutual"]) > 0 and float(t["i_input_low"]) > 0
    want = 0.01 * t["equal_r"] + 0.2 * t["i_mutual"] + 0.15 * (t["i_input_high"] + t["i_input_low"])
    assert torch.isclose(t["loss"], want)
    t2 = L.decom_loss(r_low, i_low, r_low, i_high, r_low * i_low, r_low * i_high * 0.9)
    assert float(t2["equal_r"]) == 0.0 and float(t2["recon_high"]) > 0


def test_mutual_terms_by_hand():
    # constant illuminations: raw gradients are 0 inside and -c at the right/bottom border (zero padding),
    # normalised to c / (c + 1e-4) there
    h, w, c = 6, 7, 0.4
    i_map = torch.full((1, 1, h, w), c)
    n = c / (c + 1e-4)
    share = ((h - 1) + (w - 1)) / (h * w)      # gx: last column but the corner; gy: last row but the corner
    got = float(L.mutual_i_loss(i_map, torch.zeros_like(i_map)))
    assert got == pytest.approx(share * n * np.exp(-10 * n), rel=1e-5)
    # a black image has no gradient anywhere: the denominator is floored at 0.01
    black = torch.zeros(1, 3, h, w)
    assert float(L.mutual_i_input_loss(i_map, black)) == pytest.approx(share * n / 0.01, rel=1e-5)
    # a flat grey image has the same border pattern (tf grey weights sum to 0.9999)
    gb = 0.5 * 0.9999
    gn = gb / (gb + 1e-4)
    flat = torch.full((1, 3, h, w), 0.5)
    assert float(L.mutual_i_input_loss(i_map, flat)) == pytest.approx(share * n / gn, rel=1e-5)


def test_ssim_matches_an_independent_valid_window_computation():
    from scipy.signal import convolve2d

    rng = np.random.default_rng(0)
    a, b = rng.random((20, 23)), rng.random((20, 23))
    x = np.arange(11) - 5
    k = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    k /= k.sum()
    f = lambda z: convolve2d(z, k, mode="valid")  # noqa: E731
    mu1, mu2 = f(a), f(b)
    s11, s22, s12 = f(a * a) - mu1**2, f(b * b) - mu2**2, f(a * b) - mu1 * mu2
    want = (((2 * mu1 * mu2 + 1e-4) * (2 * s12 + 9e-4)) / ((mu1**2 + mu2**2 + 1e-4) * (s11 + s22 + 9e-4))).mean()
    t = lambda z: torch.from_numpy(z).view(1, 1, 20, 23)  # noqa: E731
    assert float(L.tf_ssim(t(a), t(b))) == pytest.approx(want, rel=1e-9)
    assert float(L.tf_ssim(t(a), t(a))) == pytest.approx(1.0, abs=1e-12)
    out = torch.rand(2, 3, 24, 24)
    terms = L.restoration_loss(out, out)
    assert float(terms["mse"]) == 0 and float(terms["grad"]) == 0 and float(terms["loss"]) == pytest.approx(0, abs=1e-6)


def test_adjust_training_ratio_maps_by_hand():
    i_low = torch.cat([torch.full((1, 1, 4, 4), 0.2), torch.full((1, 1, 4, 4), 0.1)])
    i_high = torch.cat([torch.full((1, 1, 4, 4), 0.8), torch.full((1, 1, 4, 4), 0.5)])
    inp, rmap, target = L.adjust_ratio_maps(i_low, i_high, torch.tensor([False, True]))
    r0, r1 = 0.2 / 0.8001, 0.1 / 0.5001
    # patch 0 brightens: I_low with 1/ratio + 1e-4 -> I_high; patch 1 darkens: I_high with ratio -> I_low
    assert torch.allclose(rmap[0], torch.full((1, 4, 4), 1 / r0 + 1e-4)) and torch.allclose(rmap[1], torch.full((1, 4, 4), r1))
    assert torch.equal(inp[0], i_low[0]) and torch.equal(target[0], i_high[0])
    assert torch.equal(inp[1], i_high[1]) and torch.equal(target[1], i_low[1])


def test_decom_step_normalises_crops_with_whole_image_statistics():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            n = x.shape[0]
            return torch.full((n, 3) + x.shape[2:], 0.5, requires_grad=True), torch.full((n, 1) + x.shape[2:], 0.5)

    low, high = torch.full((1, 3, 8, 8), 0.2), torch.full((1, 3, 8, 8), 0.6)
    step = decom_step_fn(Probe(), L.DecomWeights(), {"a": (0.1, 0.5)}, {"a": (0.2, 1.0)})
    step(Batch(low, high, ["a"]))
    assert torch.allclose(seen[0][0], torch.full((3, 8, 8), 0.25)) and torch.allclose(seen[0][1], torch.full((3, 8, 8), 0.5))


# ---- training --------------------------------------------------------------------------------
def _fixed_batch(seed=0, n=2, size=24):
    g = torch.Generator().manual_seed(seed)
    high = torch.rand(n, 3, size, size, generator=g) * 0.6 + 0.3
    low = high * 0.15 + 0.01 * torch.rand(n, 3, size, size, generator=g)
    return Batch(low, high, ["a"] * n)


def _train(module, step, batch, steps, lr):
    return adam_losses(list(module.parameters()), lambda: step(batch)["loss"], steps=steps, lr=lr)


def test_decom_stage_lowers_its_loss():
    torch.manual_seed(0)
    net = DecomNet()
    losses = _train(net, decom_step_fn(net, L.DecomWeights()), _fixed_batch(), 25, 1e-3)
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_adjust_stage_lowers_its_loss():
    torch.manual_seed(0)
    net = AdjustNet()
    g = torch.Generator().manual_seed(1)
    i_high = 0.5 + 0.3 * torch.rand(2, 1, 24, 24, generator=g)
    batch = Batch(i_high * 0.2, i_high, ["a", "b"])

    def fixed_loss():   # both directions of every patch
        with torch.no_grad():
            total = 0.0
            for swap in (torch.tensor([False, False]), torch.tensor([True, True])):
                inp, rmap, tgt = L.adjust_ratio_maps(batch.low, batch.high, swap)
                total += float(L.adjust_loss(net(inp, rmap), tgt)["loss"])
            return total

    before = fixed_loss()
    _train(net, adjust_step_fn(net), batch, 30, 1e-3)
    assert fixed_loss() < 0.7 * before


def test_restoration_stage_lowers_its_loss():
    torch.manual_seed(0)
    net = RestorationNet()
    g = torch.Generator().manual_seed(2)
    r = F.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=32, mode="bilinear", align_corners=False)
    low = torch.cat([r, torch.rand(2, 1, 32, 32, generator=g) * 0.2], 1)
    batch = Batch(low, r**1.2, ["a", "b"])     # a smooth reflectance and its official gamma-1.2 target
    losses = _train(net, restoration_step_fn(net), batch, 15, 1e-3)
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])


def test_schedule_follows_the_official_epochs():
    c = KinDConfig()
    assert stage_schedule(c, "decom", 400)[:2] == (80_000, [])           # 2000 x floor(400/10)
    assert stage_schedule(c, "adjust", 450)[:2] == (90_000, [])          # official: 450 images, numBatch 45
    assert stage_schedule(c, "restoration", 400)[:2] == (100_000, [80_100])   # lr/2 after (0-based) epoch 800
    assert stage_schedule(c, "restoration", 466)[:2] == (116_000, [92_916])  # official: 466 images, numBatch 116
    assert stage_schedule(c, "decom", 5)[:2] == (2000, [])               # fewer images than a batch: 1 per epoch
    smoke = build_config(KinD, "smoke", {})
    assert stage_schedule(smoke, "decom", 5)[:2] == (2, [])
    assert stage_schedule(smoke, "restoration", 5)[:2] == (2, [1])


def test_map_sampler_crops_maps_at_the_same_position_and_resumes():
    yy, xx = np.meshgrid(np.arange(30), np.arange(40), indexing="ij")
    low = np.stack([yy / 64.0, xx / 64.0], axis=2)
    small = low[:10, :12]
    s = MapCropSampler(["a", "b"], [low, small], [2 * low, 2 * small], 16, 2, seed=3)
    assert s.padded == 1 and s.lows[1].shape == (16, 16, 2) and s.lows[0].dtype == np.float16
    state = s.state_dict()
    b1 = s.next_batch()
    assert b1.low.shape == (2, 2, 16, 16) and b1.high.dtype == torch.float32
    assert torch.allclose(b1.high, 2 * b1.low)
    s.load_state_dict(state)
    assert torch.equal(s.next_batch().low, b1.low)
    assert MapCropSampler(["a", "b"], [low, small], [low, small], 16, 1, 3, small="clip").crop == 10


def test_end_to_end_smoke_run_three_stages_and_resume():
    import yaml

    from bench.paths import results_root
    from bench.run import RunSpec, execute

    result = execute(RunSpec("kind", "demo", profile="smoke", progress=False))
    assert (result.run_dir / "DONE").exists()
    card = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert card["protocol"]["ratio"] == 5.0 and card["protocol"]["uses_ground_truth_at_test"] is False
    (train_dir,) = list((results_root() / "train/demo/kind").iterdir())
    for stage in ("decom", "adjust", "restoration"):
        with open(train_dir / stage / "train_log.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["iteration"]) for r in rows] == [1, 2]
    with open(train_dir / "decom" / "train_log.csv", newline="") as f:
        assert {"recon_low", "i_mutual", "i_input_high", "equal_r"} <= set(next(csv.DictReader(f)))
    final = load_torch(train_dir / "model_final.pt")
    assert final["meta"]["stage"] == "all" and final["meta"]["iterations"] == {"decom": 2, "adjust": 2,
                                                                               "restoration": 2}
    # later stages did not touch DecomNet; each stage's net is the one its Trainer saved
    for stage, prefix in (("decom", "decom."), ("adjust", "adjust."), ("restoration", "restore.")):
        part = load_torch(train_dir / stage / "model_final.pt")["model"]
        assert all(torch.equal(part[k], final["model"][prefix + k]) for k in part)
    # re-running train on the finished directory redoes nothing and returns the same weights
    from bench.data.manifest import load_manifest
    from bench.run import _train_pairs

    m = _method()
    ckpt = m.train(_train_pairs(load_manifest("demo"), "train"), [], train_dir, 0, progress=False)
    again = load_torch(ckpt)["model"]
    assert all(torch.equal(again[k], final["model"][k]) for k in again)
    with open(train_dir / "restoration" / "train_log.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    with pytest.raises(BenchError, match="stage"):
        _method().setup(torch.device("cpu"), train_dir / "adjust" / "model_final.pt")
    loaded = _method()
    loaded.setup(torch.device("cpu"), ckpt)
    assert loaded.provenance()["weights_kind"] == "bench_checkpoint"


# ---- GPU (opt-in: -m gpu) --------------------------------------------------------------------
@pytest.mark.parametrize("ratio", ["5.0", "gt"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_enhance_agrees_between_cpu_and_gpu(ratio):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    m = _method(ratio=ratio)
    low, high = _low(67, 91), _low(67, 91, seed=9) * 3
    cpu = m.enhance(low, reference=high)
    m.setup(torch.device("cuda"))
    m.model.load_state_dict(_method(ratio=ratio).model.state_dict())
    gpu = m.enhance(low.cuda(), reference=high.cuda()).cpu()
    assert (cpu - gpu).abs().max().item() < 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_paper_sized_stage_steps_on_gpu_and_their_speed():
    """One timed burst per stage at the official batch and patch sizes; prints the projected paper schedule."""
    import time

    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    model = KinDModel().to(dev)
    c = KinDConfig()
    g = torch.Generator(device=dev).manual_seed(0)
    rows = []
    for stage, net, step, batch, crop, cin, cout in (
            ("decom", model.decom, decom_step_fn(model.decom, c.decom_weights()), c.decom_batch, c.decom_crop, 3, 3),
            ("adjust", model.adjust, adjust_step_fn(model.adjust), c.adjust_batch, c.adjust_crop, 1, 1),
            ("restoration", model.restore, restoration_step_fn(model.restore), c.restore_batch, c.restore_crop, 4, 3)):
        b = Batch(torch.rand(batch, cin, crop, crop, device=dev, generator=g),
                  torch.rand(batch, cout, crop, crop, device=dev, generator=g), ["x"] * batch)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        n = 30
        for k in range(n + 5):
            if k == 5:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = step(b)["loss"]
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        per = (time.perf_counter() - t0) / n
        assert torch.isfinite(loss)
        lol = stage_schedule(c, stage, 400)[0]
        fivek = stage_schedule(c, stage, 4500)[0]
        rows.append(f"{stage}: {per * 1000:.1f} ms/it; LOL-400 {lol} it = {lol * per / 3600:.2f} h; "
                    f"FiveK-4500 {fivek} it = {fivek * per / 3600:.1f} h")
    x = torch.rand(1, 3, 400, 600, device=dev)
    with torch.no_grad():
        for k in range(8):
            if k == 3:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            model(x, 5.0)
        torch.cuda.synchronize()
    rows.append(f"enhance 600x400: {(time.perf_counter() - t0) / 5 * 1000:.1f} ms ({torch.cuda.get_device_name()})")
    print("\n" + "\n".join(rows))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_smoke_run_on_cuda():
    from bench.run import RunSpec, execute

    result = execute(RunSpec("kind", "demo", profile="smoke", device="cuda", progress=False))
    assert (result.run_dir / "DONE").exists()

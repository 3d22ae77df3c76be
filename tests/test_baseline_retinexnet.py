"""Tests for the RetinexNet baseline (baselines/retinexnet): networks, official losses, two-phase training."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.methods.base import build_config
from bench.training import Batch, load_torch
from baselines.retinexnet import losses as L
from baselines.retinexnet.adapter import (
    RetinexNet,
    continue_adam_steps,
    RetinexNetConfig,
    decom_step_fn,
    phase_schedule,
    relight_step_fn,
)
from baselines.retinexnet.denoise import denoise_reflectance
from baselines.retinexnet.model import DECOM_PARAMS, RELIGHT_PARAMS, RetinexNetModel, tf_same_pad
from smoke import adam_losses, assert_image_like, seeded_method

torch.set_num_threads(1)


def _method(profile: str = "smoke", seed: int = 0, **overrides) -> RetinexNet:
    return seeded_method(RetinexNet, seed, build_config(RetinexNet, profile, {k: str(v) for k, v in overrides.items()}))


# ---- structure -------------------------------------------------------------------------------
def test_metadata_and_official_defaults():
    assert RetinexNet.name == "retinexnet" and RetinexNet.family == "supervised"
    assert RetinexNet.trainable and RetinexNet.uses_pairs and "Wei" in RetinexNet.citation
    c = RetinexNetConfig()
    assert (c.epochs, c.batch, c.crop, c.lr, c.lr_drop_epoch, c.lr_gamma) == (100, 16, 48, 1e-3, 20, 0.1)
    assert (c.w_mutual, c.w_equal_r, c.w_smooth, c.w_relight_smooth, c.edge_lambda) == (0.001, 0.01, 0.1, 3.0, 10.0)
    assert c.denoise == "none"
    assert set(RetinexNet.profiles) >= {"smoke", "quick", "paper", "paper@lol", "paper@fivek"}
    with pytest.raises(BenchError, match="denoise"):
        build_config(RetinexNet, "smoke", {"denoise": "bm3d"})


def test_parameter_count_matches_the_notes():
    m = _method()
    assert sum(p.numel() for p in m.model.decom.parameters()) == DECOM_PARAMS == 207_748
    assert sum(p.numel() for p in m.model.relight.parameters()) == RELIGHT_PARAMS == 236_865
    assert m.trainable_parameters() == 444_613


def test_decomnet_input_order_and_output_ranges():
    net = RetinexNetModel().decom
    # the 4-channel input is [max, R, G, B] (max first): keeping only input channel 0 of the 9x9 kernel makes
    # the output depend on the per-pixel max alone, so permuting R, G, B changes nothing
    assert net.shallow.weight.shape == (64, 4, 9, 9)
    x = torch.rand(2, 3, 20, 17)
    with torch.no_grad():
        ref = net(x)
        net.shallow.weight[:, 1:] = 0  # keep only the max channel's kernel
        only_max = net(x)
        y = x[:, [2, 0, 1]]  # same per-pixel max, other channel order
        assert torch.allclose(net(y)[0], only_max[0]) and torch.allclose(net(y)[1], only_max[1])
    r, i = ref
    assert r.shape == (2, 3, 20, 17) and i.shape == (2, 1, 20, 17)
    assert float(r.min()) > 0 and float(r.max()) < 1 and float(i.min()) > 0 and float(i.max()) < 1


def test_relightnet_input_order_sizes_and_unbounded_output():
    net = RetinexNetModel().relight
    r, i = torch.rand(1, 3, 23, 30), torch.rand(1, 1, 23, 30)
    with torch.no_grad():
        net.conv0.weight[:, :3] = 0  # the input is [R, I]: keep only the illumination's kernel
        out = net(i, r)
        assert torch.equal(out, net(i, torch.rand(1, 3, 23, 30)))
        assert out.shape == (1, 1, 23, 30)
        net.output.bias.fill_(5.0)  # no output activation: values outside [0, 1] pass through
        assert float(net(i, r).min()) > 1.0
        # the stride-2 convs see TF "SAME" padding: 24 -> 25 with the zero row/column at the bottom/right only
        seen = []
        handle = net.down[0].register_forward_hook(lambda mod, inp, out: seen.append((inp[0], out)))
        net(torch.rand(1, 1, 24, 24), torch.rand(1, 3, 24, 24))
        handle.remove()
        x, y = seen[0]
        assert x.shape[-2:] == (25, 25) and y.shape[-2:] == (12, 12)
        assert float(x[..., -1, :].abs().sum()) == 0 and float(x[..., 0, :].abs().sum()) > 0


@pytest.mark.parametrize("size,pads", [(48, (0, 1)), (47, (1, 1)), (1, (1, 1)), (2, (0, 1))])
def test_tf_same_padding_for_stride_two(size, pads):
    x = torch.ones(1, 1, size, size)
    p = tf_same_pad(x, 3, 2)
    assert p.shape[-1] == size + sum(pads)
    # which side got the zeros
    assert (p[0, 0, size // 2, : pads[0]] == 0).all() and (p[0, 0, size // 2, p.shape[-1] - pads[1]:] == 0).all()
    assert F.conv2d(p, torch.ones(1, 1, 3, 3), stride=2).shape[-1] == -(-size // 2)


def test_nearest_resize_is_tf_legacy_nearest():
    x = torch.arange(5.0).view(1, 1, 1, 5)
    for out in (10, 9, 3):
        got = F.interpolate(x, size=(1, out), mode="nearest")[0, 0, 0]
        want = torch.tensor([float(np.floor(j * 5 / out)) for j in range(out)])
        assert torch.equal(got, want)


# ---- enhance ---------------------------------------------------------------------------------
def test_enhance_odd_size_range_and_determinism():
    low = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(3)) * 0.3
    a, b = _method(seed=5), _method(seed=5)
    out = a.enhance(low)
    assert_image_like(out, low)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, a.enhance(low)) and torch.equal(out, b.enhance(low))
    assert not torch.equal(out, _method(seed=6).enhance(low))


@pytest.mark.slow
def test_enhance_600x400():
    low = torch.rand(1, 3, 400, 600, generator=torch.Generator().manual_seed(0)) * 0.3
    out = _method().enhance(low)
    assert out.shape == low.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_output_is_reflectance_times_adjusted_illumination():
    m = _method()
    low = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        r, i = m.model.decom(low)
        i_delta = m.model.relight(i, r)
        want = (r * torch.cat([i_delta] * 3, dim=1)).clamp(0, 1)
    assert torch.allclose(m.enhance(low), want, atol=1e-6)


# ---- known answers for the losses ------------------------------------------------------------
def _tf_conv_gradient(x: torch.Tensor, direction: str) -> torch.Tensor:
    """The official tf.nn.conv2d(x, [[0,0],[-1,1]] (or its transpose), 'SAME') written as a cross-correlation."""
    k = torch.tensor([[0.0, 0.0], [-1.0, 1.0]])
    if direction == "y":
        k = k.t()
    return F.conv2d(F.pad(x, (0, 1, 0, 1)), k.view(1, 1, 2, 2)).abs()


def test_gradient_matches_the_official_kernel_and_padding():
    x = torch.rand(2, 1, 9, 11)
    for d in ("x", "y"):
        assert torch.allclose(L.gradient(x, d), _tf_conv_gradient(x, d), atol=1e-7)
    g = L.gradient(x, "x")
    assert torch.isclose(g[0, 0, 3, 4], (x[0, 0, 4, 5] - x[0, 0, 4, 4]).abs())


def test_smoothness_of_a_constant_illumination():
    h, w, c = 12, 17, 0.7
    const = torch.full((2, 1, h, w), c)
    r = torch.rand(2, 3, h, w)
    # the interior of both gradient maps is 0; the official zero padding leaves only the border column/row
    for d in ("x", "y"):
        g = L.gradient(const, d)
        assert torch.count_nonzero(g[..., : h - 1, : w - 1]) == 0
    assert float(L.smooth(const, r, padding="replicate")) == 0.0
    # with R = 0 the edge weights are exp(0) = 1: mean = c * ((h-1) + (w-1)) / (h*w), the padding's share
    got = float(L.smooth(const, torch.zeros(2, 3, h, w)))
    assert got == pytest.approx(c * ((h - 1) + (w - 1)) / (h * w), rel=1e-6)
    # a horizontal ramp of slope a (R = 0): |∇x| = a inside, the zero-padding border terms on top
    a = 0.01
    ramp = (a * torch.arange(w, dtype=torch.float32)).view(1, 1, 1, w).expand(1, 1, h, w).contiguous()
    gx, gy = L.gradient(ramp, "x"), L.gradient(ramp, "y")
    want = (float(gx.sum()) + float(gy.sum())) / (h * w)
    assert float(L.smooth(ramp, torch.zeros(1, 3, h, w))) == pytest.approx(want, rel=1e-6)
    assert torch.allclose(gx[..., : h - 1, : w - 1], torch.full((1, 1, h - 1, w - 1), a), atol=1e-6)


def test_smoothness_weight_drops_at_reflectance_edges():
    h, w = 10, 10
    i_map = torch.rand(1, 1, h, w)
    flat = torch.full((1, 3, h, w), 0.5)
    edges = flat.clone()
    edges[..., :, w // 2:] = 1.0
    assert float(L.smooth(i_map, edges)) < float(L.smooth(i_map, flat))


def test_decomposition_reconstruction_is_zero_when_r_times_i_is_the_input():
    g = torch.Generator().manual_seed(0)
    r_low, r_high = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    i_low, i_high = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    low, high = r_low * i_low, r_high * i_high
    t = L.decom_loss(r_low, i_low, r_high, i_high, low, high)
    assert float(t["recon_low"]) == 0.0 and float(t["recon_high"]) == 0.0
    assert float(t["mutual_low"]) > 0 and float(t["equal_r"]) > 0
    want = (0.001 * (t["mutual_low"] + t["mutual_high"]) + 0.1 * (t["smooth_low"] + t["smooth_high"])
            + 0.01 * t["equal_r"])
    assert torch.isclose(t["loss"], want)
    # identical reflectances: the invariance term vanishes and the mutual terms become reconstructions
    t2 = L.decom_loss(r_low, i_low, r_low, i_high, r_low * i_low, r_low * i_high)
    assert float(t2["equal_r"]) == 0.0 and float(t2["mutual_low"]) == 0.0 and float(t2["mutual_high"]) == 0.0


def test_identity_relight_reproduces_the_decomposition():
    m = _method()
    low = torch.rand(2, 3, 24, 24)

    class Identity(torch.nn.Module):
        def forward(self, illumination, reflectance):
            return illumination

    m.model.relight = Identity()
    with torch.no_grad():
        r, i = m.model.decom(low)
        recon = L.decom_loss(r, i, r, i, low, low)["recon_low"]
        out = m.model(low)
        assert torch.allclose(out, r * i.expand(-1, 3, -1, -1))
        assert torch.isclose(L.relight_loss(r, i, low)["relight"], recon)
    assert torch.allclose(m.enhance(low), out.clamp(0, 1))


# ---- training --------------------------------------------------------------------------------
def _fixed_batch(seed=0, n=2, size=24):
    g = torch.Generator().manual_seed(seed)
    high = torch.rand(n, 3, size, size, generator=g) * 0.6 + 0.3
    low = high * 0.15 + 0.01 * torch.rand(n, 3, size, size, generator=g)
    return Batch(low, high, ["a"] * n)


@pytest.mark.parametrize("phase", ["decom", "relight"])
def test_each_phase_lowers_its_loss_on_a_fixed_batch(phase):
    torch.manual_seed(0)
    model = RetinexNetModel()
    batch = _fixed_batch()
    w = L.LossWeights()
    step = decom_step_fn(model, w) if phase == "decom" else relight_step_fn(model, w)
    params = list((model.decom if phase == "decom" else model.relight).parameters())
    frozen = [p.detach().clone() for p in (model.relight if phase == "decom" else model.decom).parameters()]
    losses = adam_losses(params, lambda: step(batch)["loss"], steps=25, lr=1e-3)
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    other = (model.relight if phase == "decom" else model.decom).parameters()
    assert all(torch.equal(a, b) for a, b in zip(frozen, other))


def test_schedule_follows_the_official_epochs():
    c = RetinexNetConfig()
    assert phase_schedule(c, 400)[:2] == (2500, [500])      # LOL 400: 25 iterations/epoch, drop after epoch 20
    assert phase_schedule(c, 485)[:2] == (3000, [600])      # official drop-last: floor(485/16) = 30
    assert phase_schedule(c, 5)[:2] == (100, [20])          # fewer images than a batch: 1 iteration/epoch
    smoke = build_config(RetinexNet, "smoke", {})
    assert phase_schedule(smoke, 5)[:2] == (3, [])
    quick = build_config(RetinexNet, "quick", {})
    assert phase_schedule(quick, 5)[:2] == (30, [6])


def test_relight_adam_continues_the_decom_bias_correction():
    # TF1: beta1_power/beta2_power are shared by both train ops; after many Decom steps they are ~0, so the
    # first Relight update is lr * m / sqrt(v) with m = 0.1 g, v = 0.001 g^2: sqrt(10) * lr per coordinate
    lr = 1e-3
    for start, want in ((0, lr), (10_000, lr * 0.1 / np.sqrt(0.001))):
        p = torch.nn.Parameter(torch.zeros(5))
        opt = torch.optim.Adam([p], lr=lr)
        if start:
            continue_adam_steps(opt, start)
        p.grad = torch.tensor([1.0, -2.0, 0.5, 3.0, -0.1])
        opt.step()
        assert torch.allclose(p.detach().abs(), torch.full((5,), want), rtol=1e-4)
        assert float(opt.state[p]["step"]) == start + 1


def test_denoise_option_is_a_labelled_substitute():
    g = torch.Generator().manual_seed(0)
    clean = torch.full((1, 3, 32, 32), 0.5)
    noisy = (clean + 0.1 * torch.randn(1, 3, 32, 32, generator=g)).clamp(0, 1)
    dark, bright = torch.full((1, 1, 32, 32), 0.0), torch.full((1, 1, 32, 32), 1.0)
    den = denoise_reflectance(noisy, dark, "nlmeans", 25.0)
    assert float((den - clean).abs().mean()) < 0.5 * float((noisy - clean).abs().mean())
    assert torch.equal(denoise_reflectance(noisy, bright, "nlmeans", 25.0), noisy)
    assert torch.equal(denoise_reflectance(noisy, dark, "none", 25.0), noisy)
    default = _method()
    assert default.provenance()["faithful"] is True and "substitutes" not in default.provenance()
    m = _method(denoise="nlmeans")
    prov = m.provenance()
    assert prov["faithful"] is False and "BM3D" in prov["substitutes"][0] and "SUBSTITUTE" in prov["denoise"]
    low = torch.rand(1, 3, 19, 23) * 0.3
    out = m.enhance(low)
    assert out.shape == low.shape and not torch.equal(out, default.enhance(low))


def test_end_to_end_smoke_run_two_phases_and_resume():
    from bench.paths import results_root
    from bench.run import RunSpec, execute

    result = execute(RunSpec("retinexnet", "demo", profile="smoke", progress=False))
    assert (result.run_dir / "DONE").exists()
    (train_dir,) = list((results_root() / "train/demo/retinexnet").iterdir())
    for phase in ("decom", "relight"):
        with open(train_dir / phase / "train_log.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    with open(train_dir / "decom" / "train_log.csv", newline="") as f:
        assert {"recon_low", "mutual_high", "equal_r", "smooth_low"} <= set(next(csv.DictReader(f)))
    final = load_torch(train_dir / "model_final.pt")
    # TF1's single AdamOptimizer shares its beta powers: phase 2 continues phase 1's step count
    assert final["meta"]["relight_adam_start_step"] == 3
    assert final["meta"]["phase"] == "both" and set(final["model"]) >= {"decom.shallow.weight", "relight.output.bias"}
    # the relight phase did not touch DecomNet
    decom_final = load_torch(train_dir / "decom" / "model_final.pt")["model"]
    assert all(torch.equal(decom_final[k], final["model"]["decom." + k]) for k in decom_final)
    # re-running train on the finished directory redoes nothing and returns the same weights
    from bench.data.manifest import load_manifest
    from bench.run import _train_pairs

    man = load_manifest("demo")
    m = _method()
    ckpt = m.train(_train_pairs(man, "train"), [], train_dir, 0, progress=False)
    again = load_torch(ckpt)["model"]
    assert all(torch.equal(again[k], final["model"][k]) for k in again)
    with open(train_dir / "relight" / "train_log.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 3
    # loading a single phase's weights is refused
    with pytest.raises(BenchError, match="phase"):
        _method().setup(torch.device("cpu"), train_dir / "decom" / "model_final.pt")

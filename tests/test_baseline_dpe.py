"""Tests for the paired DPE baseline (baselines/dpe): generator, 512 canvas known answers, data pipeline, adapter.

The generator only runs on the full 512x512 canvas (~3 s per forward on one slow core), so the fast tests share
forwards where they can; the loss-decrease test (four batch-1 steps on the canvas) is marked slow.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.methods.base import TrainPair, build_config
from baselines.dpe.adapter import DPE, CanvasSampler, DPEConfig, canvas_loss, dpe_lr_factor
from baselines.dpe.canvas import canvas_shape, dihedral, resize, run_on_canvas, to_canvas
from baselines.dpe.model import SELU_ALPHA, SELU_SCALE, DPEGenerator, DPESELU, symmetric_pad

from train_pairs import png_pairs
from smoke import assert_image_like, seeded_method, smoke_run

torch.set_num_threads(1)


def _method(seed: int = 0, **overrides) -> DPE:
    return seeded_method(DPE, seed, DPEConfig(**overrides))


def _pairs(tmp_path, sizes=((30, 40), (50, 20))) -> list[TrainPair]:
    return png_pairs(tmp_path, sizes)


def _smooth(h: int, w: int) -> torch.Tensor:
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.5 + 0.3 * np.sin(2 * np.pi * x + c) * np.cos(2 * np.pi * 0.7 * y) for c in range(3)])
    return torch.from_numpy(img[None].astype(np.float32))


# ---- architecture -----------------------------------------------------------------------------
def test_metadata_and_parameter_count():
    assert DPE.name == "dpe" and DPE.family == "supervised" and DPE.uses_pairs and DPE.trainable
    net = DPEGenerator()
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(net) == 3_335_395                             # baselines.md §9 (computed from the TF graph)
    conv = lambda k, cin, cout: k * k * cin * cout + cout       # noqa: E731
    assert count(net.glob3) == conv(8, 128, 128) == 1_048_704   # the 8x8 VALID conv to 1x1
    assert count(net.fuse) == conv(1, 256, 128)                 # local (128) + tiled global (128)
    assert [count(b) for b in net.bn_dec] == [512, 384, 192, 96]   # BN offset + scale on 256/192/96/48 channels
    assert net.enc1.stride == (2, 2) and net.enc1.kernel_size == (5, 5) and net.enc1.pad == 2
    assert net.glob3.pad == 0 and net.bn_enc[0].momentum == 0.1 and net.bn_enc[0].eps == 1e-5
    for name in ("smoke", "quick", "paper"):
        build_config(DPE, name, {}, "lol")


def test_variance_scaling_init():
    net = DPEGenerator()
    w = net.dec5.weight.detach()
    std = math.sqrt(1.3e-3 / (48 * 9))
    assert float(w.abs().max()) <= 2 * std + 1e-9               # truncated at 2 std
    assert 0.7 * std < float(w.std()) < 0.95 * std              # a 2-sigma truncated normal has std 0.88 sigma
    assert float(net.dec5.bias.detach().abs().max()) == 0.0


def test_selu_variant_and_symmetric_padding():
    x = torch.linspace(-3, 3, 61)
    ref = SELU_SCALE * np.where(x.numpy() >= 0, x.numpy(), SELU_ALPHA * (np.exp(x.numpy()) - 1))
    assert np.allclose(DPESELU()(x).numpy(), ref, atol=1e-6)
    assert not torch.allclose(DPESELU()(x), torch.selu(x))      # not the standard SELU constants
    a = np.random.default_rng(0).random((1, 2, 5, 3)).astype(np.float32)
    for t, b, l, r in [(2, 2, 2, 2), (0, 9, 0, 11), (7, 0, 1, 4), (1, 1, 1, 1)]:
        ref = np.pad(a, ((0, 0), (0, 0), (t, b), (l, r)), mode="symmetric")
        assert np.array_equal(symmetric_pad(torch.from_numpy(a), t, b, l, r).numpy(), ref)


# ---- the 512 canvas: known answers ------------------------------------------------------------
def test_canvas_shape_as_official():
    assert canvas_shape(400, 600) == (341, 512)                 # round(400 * 512 / 600) = round(341.33)
    assert canvas_shape(37, 53) == (357, 512) and canvas_shape(53, 37) == (512, 357)
    assert canvas_shape(333, 512) == (333, 512) and canvas_shape(1024, 2048) == (256, 512)
    assert canvas_shape(2, 3000) == (1, 512)


def test_canvas_round_trip_of_identity_network():
    """resize -> pad -> identity network -> crop -> resize back reproduces the input within the resampling
    error (exactly when the long side already is 512), odd sizes included."""
    seen = []

    def identity(c):
        seen.append(c.shape)
        return c

    x = torch.rand(1, 3, 333, 512, generator=torch.Generator().manual_seed(1))
    assert torch.equal(run_on_canvas(x, identity), x)           # no resampling: exact
    for h, w in [(37, 53), (53, 37), (400, 600), (41, 41)]:
        for method in ("lanczos", "bicubic"):
            x = _smooth(h, w)
            y = run_on_canvas(x, identity, method=method)
            assert y.shape == x.shape
            assert float((y - x).abs().max()) < 5e-3, (h, w, method)
    assert all(s[-2:] == (512, 512) for s in seen)
    # the canvas is the (resized) image at the top-left, mirror-padded with the edge pixel (numpy "symmetric")
    small = torch.rand(1, 3, 5, 7)
    canvas, rect = to_canvas(small, 16)
    ref = np.pad(small.numpy(), ((0, 0), (0, 0), (0, 11), (0, 9)), mode="symmetric")
    assert rect == (0, 5, 0, 7) and np.array_equal(canvas.numpy(), ref)
    # Lanczos resizing is PIL's (the official ANTIALIAS) on float data
    from PIL import Image

    chan = x[0, 0].numpy()
    pil = np.asarray(Image.fromarray(chan).resize((300, 200), Image.Resampling.LANCZOS))
    assert np.allclose(resize(x, (200, 300))[0, 0].numpy(), pil)


@pytest.fixture(scope="module")
def forward_record():
    """One seeded generator run through ``enhance`` on an odd-sized input, with the global feature and the
    fusion conv's input captured (shared by the shape, tiling and determinism tests)."""
    torch.manual_seed(7)
    m = DPE()
    m.setup(torch.device("cpu"))
    rec = {}
    m.model.glob4.register_forward_hook(lambda mod, inp, out: rec.__setitem__("glob", out.detach()))
    m.model.fuse.register_forward_hook(lambda mod, inp, out: rec.__setitem__("fuse_in", inp[0].detach()))
    low = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(3)) * 0.4
    rec["low"], rec["out"], rec["method"] = low, m.enhance(low), m
    return rec


def test_enhance_shapes_and_range(forward_record):
    low, out = forward_record["low"], forward_record["out"]
    assert_image_like(out, low)
    # an untrained generator is close to the identity (init factor 1e-3, residual output)
    assert float((out - low).abs().mean()) < 0.05
    big = torch.rand(1, 3, 400, 600) * 0.3
    out = forward_record["method"].enhance(big)
    assert out.shape == big.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_global_feature_is_tiled_to_every_position(forward_record):
    glob, fuse_in = forward_record["glob"], forward_record["fuse_in"]
    assert glob.shape == (1, 128, 1, 1) and fuse_in.shape == (1, 256, 32, 32)
    tiled = fuse_in[:, 128:]
    assert torch.equal(tiled, glob.expand(-1, -1, 32, 32))      # the same vector at every position
    assert float(fuse_in[:, :128].std(dim=(2, 3)).mean()) > 0   # the local half varies
    t = DPEGenerator.tile_concat(torch.zeros(2, 3, 4, 5), torch.arange(4.0).view(1, 4, 1, 1).repeat(2, 1, 1, 1))
    assert t.shape == (2, 7, 4, 5) and torch.equal(t[1, 3:, 2, 4], torch.arange(4.0))


def test_deterministic_under_seed(forward_record):
    again = _method(7)
    assert torch.equal(again.enhance(forward_record["low"]), forward_record["out"])
    other = DPEGenerator()
    assert not torch.equal(other.dec5.weight, again.model.dec5.weight)


# ---- data pipeline, loss, schedule ------------------------------------------------------------
def test_dihedral_modes_are_the_eight_distinct_transforms():
    a = np.arange(6).reshape(2, 3)
    outs = [dihedral(a, k) for k in range(8)]
    assert np.array_equal(outs[1], np.fliplr(a)) and np.array_equal(outs[2], np.rot90(a))
    assert len({o.tobytes() + bytes(o.shape) for o in outs}) == 8


def test_canvas_sampler_follows_the_official_epoch(tmp_path):
    pairs = _pairs(tmp_path)                                    # 30x40 and 50x20
    s = CanvasSampler(pairs, 3, seed=0)
    assert [a.shape[:2] for a in s.lows] == [(384, 512), (512, 205)]
    assert s.iterations_per_epoch == 16 // 3 == 5 and s.n_used == 15   # floor(2 * 8 / 3) batches, tail dropped
    seen = []
    for _ in range(5):
        b = s.next_batch()
        assert b.low.shape == b.high.shape == (3, 3, 512, 512)
        for j, (r0, r1, c0, c1) in enumerate(b.rects):
            i = s.ids.index(b.ids[j])
            h, w = dihedral(s.lows[i], b.modes[j]).shape[:2]
            assert (r0, r1, c0, c1) == (0, h, 0, w)             # top-left (data_use_random_pad = False)
            img = b.low[j, :, :h, :w].permute(1, 2, 0).numpy()
            assert np.array_equal(np.round(img * 255).astype(np.uint8), dihedral(s.lows[i], b.modes[j]))
            ref = np.pad(img, ((0, 512 - h), (0, 512 - w), (0, 0)), mode="symmetric")
            assert np.array_equal(b.low[j].permute(1, 2, 0).numpy(), ref)
            seen.append((i, b.modes[j]))
    assert len(set(seen)) == 15                                 # one epoch = each (image, mode) at most once
    state = s.state_dict()
    nxt = s.next_batch()
    s.load_state_dict(state)
    assert s.next_batch().ids == nxt.ids and s.epoch == 2
    rp = CanvasSampler(pairs, 2, seed=1, random_pad=True, augment=False)
    assert rp.iterations_per_epoch == 1
    assert any(r[0] > 0 or r[2] > 0 for _ in range(4) for r in rp.next_batch().rects)


def test_loss_is_on_the_rectangle_only():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 16, 16, generator=g)
    out = target.clone()
    out[0, :, 10:] = 5.0                                        # garbage in the padding of image 0
    out[1, :, :, 12:] = -5.0
    rects = [(0, 10, 0, 16), (0, 16, 0, 12)]
    assert float(canvas_loss(out, target, rects)["loss"]) == 0.0
    out[0, :, :10] += 0.1                                       # image 0 off by 0.1, image 1 exact
    terms = canvas_loss(out, target, rects)
    assert abs(float(terms["loss"]) - 0.01 / 2) < 1e-6          # per-image MSE, then the batch mean
    off = target.clone()
    off[0] += 0.1
    off[1] += 0.01
    psnr_loss = canvas_loss(off, target, rects, "psnr")["loss"]    # mean of log10(MSE) (official 'PSNR' term)
    assert abs(float(psnr_loss) - (math.log10(0.01) + math.log10(1e-4)) / 2) < 1e-4


def test_lr_schedule_and_options():
    # constant for epochs 0..25, then -1/25 after every epoch (official netG_base_learning_decay(_epoch) = 25)
    assert [dpe_lr_factor(e, 25, 25) for e in (0, 25, 26, 30, 49)] == [1.0, 1.0, 0.96, 0.8, pytest.approx(0.04)]
    assert dpe_lr_factor(60, 25, 25) == 0.0
    c = build_config(DPE, "paper", {}, "lol")
    assert (c.epochs, c.lr, c.batch, c.loss, c.augment, c.random_pad, tuple(c.betas)) == (
        50, 1e-5, 3, "mse", True, False, (0.9, 0.999))
    with pytest.raises(BenchError, match="gan=true .* not implemented"):
        build_config(DPE, "smoke", {"gan": "true"})
    with pytest.raises(BenchError):
        build_config(DPE, "smoke", {"loss": "l3"})
    with pytest.raises(BenchError):
        build_config(DPE, "smoke", {"resample": "nearest"})


# ---- training ---------------------------------------------------------------------------------
def test_train_one_step_and_checkpoint_roundtrip(tmp_path):
    pairs = _pairs(tmp_path)
    m = DPE(build_config(DPE, "smoke", {"iterations": "1"}))
    m.setup(torch.device("cpu"))
    ckpt = m.train(pairs, [], tmp_path / "run", seed=0, progress=False)
    rows = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert rows[0] == "iteration,loss,mse,psnr,lr,seconds" and rows[1].split(",")[4] == "1e-05"
    fresh = DPE(build_config(DPE, "smoke", {}))
    prov = fresh.setup(torch.device("cpu"), ckpt)
    assert prov["weights_kind"] == "bench_checkpoint" and prov["faithful"] is True
    for k, v in m.model.state_dict().items():                   # weights and BN moving averages restored
        assert torch.equal(fresh.model.state_dict()[k], v), k
    assert not torch.equal(fresh.model.bn_enc[0].running_mean, torch.zeros(16))
    bad = tmp_path / "bad.pt"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(BenchError, match="TensorFlow"):
        DPE().setup(torch.device("cpu"), bad)


@pytest.mark.slow
def test_training_lowers_loss_on_fixed_batch():
    m = _method(1)
    g = torch.Generator().manual_seed(2)
    low = torch.rand(1, 3, 512, 512, generator=g) * 0.3
    high = (low * 2.5 + 0.05).clamp(0, 1)
    rects = [(0, 400, 0, 512)]
    opt = torch.optim.Adam(m.model.parameters(), lr=1e-4)
    m.model.train()
    values = []
    for _ in range(4):
        opt.zero_grad()
        loss = canvas_loss(m.model(low), high, rects)["loss"]
        loss.backward()
        opt.step()
        values.append(float(loss.detach()))
    assert values[-1] < 0.9 * values[0]


def test_end_to_end_smoke(monkeypatch):
    result, doc, rows = smoke_run("dpe", params=3_335_395)

"""Tests for the DRBN stage-1 baseline (baselines/drbn): network, SSIM loss known answers, schedule, adapter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.methods.base import TrainPair, build_config
from baselines.drbn.adapter import DRBN, DRBNConfig, drbn_schedule, edsr_epoch_iterations
from baselines.drbn.losses import drbn_loss, gaussian_window, ssim
from baselines.drbn.model import RDB, DRBNNet, pad_to_multiple

from train_pairs import png_pairs
from smoke import assert_image_like, seeded_method, smoke_run

torch.set_num_threads(1)


def _method(seed: int = 0, **overrides) -> DRBN:
    return seeded_method(DRBN, seed, DRBNConfig(**overrides))


def _pairs(tmp_path, sizes=((40, 44), (36, 40), (44, 36))) -> list[TrainPair]:
    return png_pairs(tmp_path, sizes)


def _independent_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch_ssim written out in float64 SciPy: per channel, 11x11 Gaussian (sigma 1.5) correlation with zero
    padding ('same' size), the SSIM map averaged over everything."""
    from scipy.ndimage import correlate

    x = np.arange(11) - 5
    g = np.exp(-(x ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()
    win = np.outer(g, g)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    maps = []
    for n in range(a.shape[0]):
        for ch in range(a.shape[1]):
            i1, i2 = a[n, ch].astype(np.float64), b[n, ch].astype(np.float64)
            f = lambda z: correlate(z, win, mode="constant", cval=0.0)  # noqa: E731
            mu1, mu2 = f(i1), f(i2)
            s11, s22, s12 = f(i1 * i1) - mu1 ** 2, f(i2 * i2) - mu2 ** 2, f(i1 * i2) - mu1 * mu2
            maps.append(((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2)))
    return float(np.mean(maps))


# ---- architecture -----------------------------------------------------------------------------
def test_metadata_and_parameter_count():
    assert DRBN.name == "drbn" and DRBN.family == "supervised" and DRBN.uses_pairs and DRBN.trainable
    m = _method()
    assert m.trainable_parameters() == 557_668                 # baselines.md §6 (computed from the official code)
    assert sum(p.numel() for p in m.model.recur1.parameters()) == 139_417
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    # RDB(G0, G, C=4) = sum_c ((G0 + cG) * G * 9 + G) + (G0 + 4G) * G0 + G0
    assert count(RDB(16, 8)) == sum((16 + c * 8) * 8 * 9 + 8 for c in range(4)) + 48 * 16 + 16 == 8_880
    assert count(RDB(32, 16)) == 35_424
    bu = m.model.recur1
    assert tuple(bu.SFENet1.weight.shape) == (16, 6, 3, 3)
    assert bu.Down1.stride == (2, 2) and tuple(bu.Down2.weight.shape) == (32, 16, 3, 3)
    assert tuple(bu.Up2.weight.shape) == (32, 16, 4, 4) and bu.Up2.stride == (2, 2)
    for name in ("smoke", "quick", "paper"):
        build_config(DRBN, name, {}, "lol")


def test_band_outputs_are_coarse_to_fine():
    net = DRBNNet()
    x = torch.rand(1, 3, 24, 32)
    r1, r2, r4 = net(x)
    assert r1.shape == (1, 3, 24, 32) and r2.shape == (1, 3, 12, 16) and r4.shape == (1, 3, 6, 8)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.rand(1, 3, 22, 32))
    # the finer band adds the bilinear upsample of the coarser one: zeroing UPNet (the full-scale head) leaves
    # exactly up2(res2) at full scale
    with torch.no_grad():
        for p in net.recur4.UPNet.parameters():
            p.zero_()
        r1, r2, _ = net(x)
    up = torch.nn.functional.interpolate(r2, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(r1, up, atol=1e-6)


def test_recursions_share_features():
    """Units 2-4 see [res1 of the previous unit, x] and add its features; unit 1 sees [x, x]."""
    net = DRBNNet()
    x = torch.rand(1, 3, 16, 16)
    seen = {}
    net.recur1.register_forward_hook(lambda mod, inp, out: seen.__setitem__("u1", (inp, out)))
    net.recur2.register_forward_hook(lambda mod, inp, out: seen.__setitem__("u2", (inp, out)))
    net(x)
    (inp1,), out1 = seen["u1"][0][:1], seen["u1"][1]
    assert torch.equal(inp1, torch.cat((x, x), 1))
    inp2, prev2 = seen["u2"][0]
    assert torch.equal(inp2, torch.cat((out1[0], x), 1))
    assert all(torch.equal(a, b) for a, b in zip(prev2, out1[3:]))


def test_torch041_init_of_transposed_convs():
    m = _method(3)
    up2 = m.model.recur1.Up2
    bound = 1 / math.sqrt(32 * 16)                              # in_channels * k * k, as PyTorch 0.4.1
    assert float(up2.weight.detach().abs().max()) <= bound
    assert float(up2.weight.detach().abs().max()) > 0.9 * bound          # and not the narrower/wider modern range
    d = _method(3, init="default").model.recur1.Up2
    assert float(d.weight.detach().abs().max()) > bound                  # current torch: 1/sqrt(16*16)


def test_enhance_shapes_and_range():
    m = _method()
    low = torch.rand(1, 3, 37, 53) * 0.3
    out = m.enhance(low)
    assert_image_like(out, low)
    # the odd size is mirror-padded to 40x56 and cropped back
    padded, h, w = pad_to_multiple(low)
    assert padded.shape[-2:] == (40, 56) and (h, w) == (37, 53)
    with torch.no_grad():
        assert torch.equal(out, m.model(padded)[0][..., :37, :53].clamp(0, 1))


@pytest.mark.slow
def test_enhance_600x400():
    m = _method()
    low = torch.rand(1, 3, 400, 600) * 0.3
    out = m.enhance(low)
    assert out.shape == low.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_deterministic_under_seed():
    low = torch.rand(1, 3, 21, 26, generator=torch.Generator().manual_seed(3)) * 0.4
    a, b = _method(5).enhance(low), _method(5).enhance(low)
    assert torch.equal(a, b)
    with torch.no_grad():
        ra, rc = _method(5).forward_padded(low), _method(6).forward_padded(low)
    assert not torch.equal(ra, rc)


# ---- SSIM loss known answers ------------------------------------------------------------------
def test_ssim_of_identical_images_is_one_and_loss_is_minus_three():
    g = torch.Generator().manual_seed(1)
    t = torch.rand(2, 3, 32, 40, generator=g)
    assert abs(float(ssim(t, t)) - 1.0) < 1e-6
    terms = drbn_loss((t, t[..., ::2, ::2], t[..., ::4, ::4]), t)
    assert abs(float(terms["loss"]) + 3.0) < 1e-5               # -1 per scale: the minimum
    other = (t * 0.5 + 0.1).clamp(0, 1)
    assert float(ssim(other, t)) < 0.99
    worse = drbn_loss((other, other[..., ::2, ::2], other[..., ::4, ::4]), t)
    assert float(worse["loss"]) > -3.0 + 1e-3
    # the coarse GTs are plain subsamples (stride 2 / 4 from the top-left pixel), not low-passed versions
    pooled = drbn_loss((t, torch.nn.functional.avg_pool2d(t, 2), torch.nn.functional.avg_pool2d(t, 4)), t)
    assert float(pooled["ssim_s2"]) < 0.99 and abs(float(pooled["ssim_s1"]) - 1) < 1e-6


def test_ssim_matches_independent_implementation():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(2, 3, 23, 29, generator=g)
    b = (a + 0.2 * torch.rand(2, 3, 23, 29, generator=g)).clamp(0, 1)
    assert abs(float(ssim(a, b)) - _independent_ssim(a.numpy(), b.numpy())) < 1e-5
    w = gaussian_window()
    assert w.shape == (11, 11) and abs(float(w.sum()) - 1) < 1e-6 and float(w[5, 5]) == float(w.max())


# ---- schedule ---------------------------------------------------------------------------------
def test_edsr_epoch_and_paper_schedule():
    assert edsr_epoch_iterations(400, 4) == (1000, 10)          # LOL: 400 x 10 / 4
    assert edsr_epoch_iterations(689, 4) == (862, 5)            # LOL-v2 (the authors' set): ceil(3445 / 4)
    assert edsr_epoch_iterations(4500, 4) == (1125, 1)          # FiveK: repeat 0 guarded to 1
    assert edsr_epoch_iterations(5, 4) == (1250, 1000)          # demo: n // batch = 1
    c = build_config(DRBN, "paper", {}, "lol")
    assert (c.epochs, c.lr, c.batch, c.crop, c.lr_step_epochs, c.gamma, tuple(c.betas)) == (
        300, 1e-4, 4, 256, 200, 0.5, (0.9, 0.999))
    total, milestones, _ = drbn_schedule(c, 400)
    assert total == 300_000 and milestones == [200_000]
    q = build_config(DRBN, "quick", {})
    assert drbn_schedule(q, 5)[:2] == (150, [])
    with pytest.raises(BenchError, match="multiple of 4"):
        build_config(DRBN, "smoke", {"crop": "30"})
    with pytest.raises(BenchError):
        build_config(DRBN, "smoke", {"init": "xavier"})


# ---- training ---------------------------------------------------------------------------------
def test_training_lowers_loss_on_fixed_batch():
    m = _method(1)
    g = torch.Generator().manual_seed(2)
    low = torch.rand(2, 3, 32, 32, generator=g) * 0.3
    high = (low * 2.5 + 0.05).clamp(0, 1)
    opt = torch.optim.Adam(m.model.parameters(), lr=1e-3)
    m.model.train()
    values = []
    for _ in range(8):
        opt.zero_grad()
        loss = m.loss(m.model(low), high)["loss"]
        loss.backward()
        opt.step()
        values.append(float(loss.detach()))
    assert np.mean(values[-3:]) < np.mean(values[:3]) - 0.1


def test_train_checkpoint_roundtrip(tmp_path):
    pairs = _pairs(tmp_path)
    m = DRBN(build_config(DRBN, "smoke", {"val_every": "3"}))
    m.setup(torch.device("cpu"))
    ckpt = m.train(pairs, pairs[:1], tmp_path / "run", seed=0, progress=False)
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("iteration,loss,ssim_s1,ssim_s2,ssim_s4") and len(log) == 4
    assert [r.split(",")[-2] for r in log[1:]] == ["0.0001", "0.0001", "5e-05"]   # drop at 2/3 of the run
    assert (tmp_path / "run" / "val.csv").read_text().count("\n") == 2            # header + the final check
    assert m.provenance()["schedule"].startswith("fixed: 3 iterations")
    low = torch.rand(1, 3, 21, 26) * 0.3
    trained = m.enhance(low)
    fresh = DRBN(build_config(DRBN, "smoke", {}))
    fresh.setup(torch.device("cpu"), ckpt)
    assert torch.equal(fresh.enhance(low), trained)
    official = tmp_path / "model_s1.pt"                         # the official checkpoint is a bare state dict
    torch.save(m.model.state_dict(), official)
    other = DRBN()
    assert other.setup(torch.device("cpu"), official)["weights_kind"] == "official_state_dict"
    assert torch.equal(other.enhance(low), trained)
    bad = tmp_path / "bad.pt"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(BenchError, match="neither"):
        DRBN().setup(torch.device("cpu"), bad)


def test_end_to_end_smoke(monkeypatch):
    result, doc, rows = smoke_run("drbn", params=557_668)

"""EnlightenGAN (baselines/enlightengan): networks, attention, losses, unpaired sampling, training, harness run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.enlightengan import losses as L
from baselines.enlightengan.adapter import EnlightenGAN, EnlightenGANConfig
from baselines.enlightengan.gan import EnlightenGANStep, GanSettings, UnpairedBatch, UnpairedSampler, lr_at
from baselines.enlightengan.model import (
    AttentionUNet,
    NoNormDiscriminator,
    attention_map,
    pad_to_16,
    weights_init,
)
from bench.methods.base import TrainPair, build_config
from smoke import assert_image_like

torch.set_num_threads(1)


def count(m):
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_parameter_counts_match_the_official_networks():
    assert count(AttentionUNet()) == 8_636_675
    assert count(NoNormDiscriminator(3, 64, 5)) == 11_154_369
    assert count(NoNormDiscriminator(3, 64, 4)) == 6_959_553
    m = EnlightenGAN(build_config(EnlightenGAN, "smoke", {}))
    m.setup(torch.device("cpu"))
    assert m.trainable_parameters() == 8_636_675
    keys = m.model.state_dict().keys()
    assert {"conv1_1.weight", "bn1_1.running_mean", "deconv5.weight", "conv9_2.weight", "conv10.bias"} <= set(keys)
    assert "bn9_2.weight" not in keys  # the official net has no BatchNorm after conv9_2


def test_attention_map_is_one_minus_luminance_as_the_official_loader():
    x = torch.rand(1, 3, 5, 6)
    pm1 = x * 2 - 1
    r, g, b = pm1[0, 0] + 1, pm1[0, 1] + 1, pm1[0, 2] + 1
    official = 1.0 - (0.299 * r + 0.587 * g + 0.114 * b) / 2.0  # data/unaligned_dataset.py on [-1, 1] input
    torch.testing.assert_close(attention_map(x)[0, 0], official)
    torch.testing.assert_close(attention_map(x, "max_rgb")[0, 0], 1 - x[0].max(0).values)


def test_attention_regularises_the_output():
    """latent × g is added to the input: where g = 0 (white) the output is the input exactly."""
    torch.manual_seed(0)
    g = AttentionUNet()
    g.apply(weights_init)
    g.eval()
    x = torch.rand(1, 3, 32, 48) * 0.3
    x[..., 8:16, 8:24] = 1.0  # white: attention 0
    with torch.no_grad():
        out, latent = g(x * 2 - 1, attention_map(x))
    torch.testing.assert_close(out[..., 8:16, 8:24], torch.ones(1, 3, 8, 16))
    assert latent[..., 8:16, 8:24].abs().max() == 0
    assert (out - (x * 2 - 1)).abs()[..., 20:, 30:].max() > 0  # dark pixels are changed


def test_pad_to_16_splits_like_the_official_pad_tensor():
    x = torch.arange(37 * 53, dtype=torch.float32).view(1, 1, 37, 53)
    y, (left, right, top, bottom) = pad_to_16(x)
    assert y.shape[-2:] == (48, 64)
    assert (left, right, top, bottom) == (5, 6, 5, 6)  # int(div/2) on the left/top, the rest right/bottom
    torch.testing.assert_close(y[..., top:top + 37, left:left + 53], x)
    torch.testing.assert_close(y[..., top - 1, left:left + 53], x[..., 1, :])  # reflection, edge not repeated


def test_enhance_odd_size_range_and_determinism():
    torch.manual_seed(0)
    low = torch.rand(1, 3, 37, 53) * 0.4
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        m = EnlightenGAN(EnlightenGANConfig())
        m.setup(torch.device("cpu"))
        outs.append(m.enhance(low))
    assert_image_like(outs[0], low)
    assert torch.equal(outs[0], outs[1])
    torch.manual_seed(4)
    m.setup(torch.device("cpu"))
    assert not torch.equal(m.enhance(low), outs[0])


def test_enhance_600x400():
    torch.manual_seed(0)
    m = EnlightenGAN(EnlightenGANConfig())
    m.setup(torch.device("cpu"))
    out = m.enhance(torch.rand(1, 3, 400, 600) * 0.3)
    assert out.shape == (1, 3, 400, 600) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_gan_losses_known_values():
    ones, zeros = torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    # relativistic: D sees real - E[fake] = 1 (target 1) and fake - E[real] = -1 (target 0)
    assert float(L.ragan_d_loss(ones, zeros)) == pytest.approx(0.5)
    assert float(L.ragan_g_loss(ones, zeros)) == pytest.approx(2.5)
    assert float(L.lsgan_d_loss(ones, zeros)) == pytest.approx(0.0)
    assert float(L.lsgan_g_loss(zeros)) == pytest.approx(1.0)


def test_self_feature_preserving_loss():
    from bench.vgg_features import vgg16_features

    vgg, _ = vgg16_features("cpu", "relu5_1", use_imported=False, drop_pools=("pool4",))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert float(L.sfp_loss(vgg, x, x)) == 0.0
    y = torch.rand(1, 3, 32, 32) * 2 - 1
    assert float(L.sfp_loss(vgg, y, x)) > 0
    assert vgg((x + 1) / 2).shape[-2:] == (4, 4)  # relu5_1 at 1/8: the 4th pool is left out (official)


def test_lr_schedule_is_the_official_linear_decay():
    s = GanSettings(iterations=12, iterations_per_epoch=3, lr=1.0, niter=2, niter_decay=2)
    lrs = [lr_at(i, s) for i in range(12)]
    # epochs 1-3 at full lr (the first decrement happens after epoch niter + 1), epoch 4 at 1 - 1/2
    assert lrs == [1.0] * 9 + [0.5] * 3
    s = GanSettings(iterations=1, iterations_per_epoch=1, lr=1e-4, niter=100, niter_decay=100)
    assert lr_at(199, s) == pytest.approx(1e-6)  # the last epoch of the released recipe


def _write_pairs(tmp_path, n=4, size=(40, 48)):
    from PIL import Image

    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        lo = (rng.random((*size, 3)) * 60).astype(np.uint8)
        hi = (rng.random((*size, 3)) * 60 + 180).astype(np.uint8)
        lp, hp = tmp_path / f"l{i}.png", tmp_path / f"h{i}.png"
        Image.fromarray(lo).save(lp)
        Image.fromarray(hi).save(hp)
        pairs.append(TrainPair(f"p{i}", lp, hp))
    return pairs


def test_unpaired_sampler_draws_domains_independently(tmp_path):
    pairs = _write_pairs(tmp_path)
    lows = [TrainPair(p.id, p.low_path, None) for p in pairs]
    highs = [TrainPair(p.id, p.high_path, None) for p in pairs]
    s = UnpairedSampler(lows, highs, 32, 2, seed=5)
    seq_a, seq_b = [], []
    for _ in range(6):
        b = s.next_batch()
        assert b.real_a.shape == b.real_b.shape == (2, 3, 32, 32)
        assert float(b.real_a.max()) < 0.25 < 0.7 < float(b.real_b.min())  # lows vs the normal-light images
        assert (b.input_a <= b.real_a + 1e-7).all()                       # --vary only darkens
        seq_a += b.ids_a
        seq_b += b.ids_b
    assert seq_a != seq_b  # independent orders: no pairing survives
    assert sorted(seq_a[:4]) == sorted(seq_b[:4]) == ["p0", "p1", "p2", "p3"]  # each domain visits every image
    st = s.state_dict()
    nxt = s.next_batch()
    s.load_state_dict(st)
    again = s.next_batch()
    assert torch.equal(nxt.input_a, again.input_a) and nxt.ids_b == again.ids_b


def _tiny_step():
    from bench.vgg_features import vgg16_features

    torch.manual_seed(0)
    g, d, dp = AttentionUNet(), NoNormDiscriminator(3, 64, 5), NoNormDiscriminator(3, 64, 4)
    for m in (g, d, dp):
        m.apply(weights_init)
    vgg, _ = vgg16_features("cpu", "relu5_1", use_imported=False, drop_pools=("pool4",))
    step = EnlightenGANStep(g, d, dp, vgg, patch=16, n_patches=2)
    torch.manual_seed(1)
    low = torch.rand(2, 3, 32, 32) * 0.3
    batch = UnpairedBatch(low, low * 0.5, torch.rand(2, 3, 32, 32) * 0.3 + 0.6, ["a", "b"], ["c", "d"])
    offsets = [(0, 0), (8, 15), (15, 3)]
    return g, d, dp, step, batch, offsets


def test_alternating_steps_lower_the_losses_on_a_fixed_batch():
    """G steps with frozen discriminators lower the generator objective; D steps with a frozen G lower both
    discriminator objectives (a fixed batch and fixed patch offsets, so the trend is deterministic)."""
    g, d, dp, step, batch, offsets = _tiny_step()
    for p in list(d.parameters()) + list(dp.parameters()):
        p.requires_grad_(False)
    opt = torch.optim.Adam(g.parameters(), lr=2e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(4):
        opt.zero_grad()
        terms = step.generator_loss(step.forward(batch), offsets)
        terms["loss_G"].backward()
        opt.step()
        losses.append(float(terms["loss_G"].detach()))
    assert set(terms) == {"loss_G", "loss_G_global", "loss_G_patch", "loss_sfp"}
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 1e-3, losses
    for p in list(d.parameters()) + list(dp.parameters()):
        p.requires_grad_(True)
    with torch.no_grad():
        t = step.forward(batch)
    opt_d = torch.optim.Adam(list(d.parameters()) + list(dp.parameters()), lr=1e-4, betas=(0.5, 0.999))
    hist = []
    for _ in range(3):
        opt_d.zero_grad()
        terms = step.discriminator_losses(t, offsets)
        (terms["loss_D"] + terms["loss_DP"]).backward()
        opt_d.step()
        hist.append((float(terms["loss_D"].detach()), float(terms["loss_DP"].detach())))
    assert hist[-1][0] < hist[0][0] and hist[-1][1] < hist[0][1], hist


def test_vgg_choice_is_recorded(tmp_path):
    m = EnlightenGAN(EnlightenGANConfig(vgg_weights="substitute"))
    vgg, info = m.build_vgg(torch.device("cpu"))
    assert info["kind"] == "substitute_random_vgg16" and info["dropped_pools"] == ["pool4"]
    m.vgg_info = info
    prov = m.provenance()
    assert prov["faithful"] is False and prov["substitutes"] and "random" in prov["substitutes"][0]
    # a Caffe-layout file (the official vgg16.weight layout) gets the official preprocessing
    g = torch.Generator().manual_seed(0)
    sd, cin = {}, 3
    for name, cout in [("conv1_1", 64), ("conv1_2", 64), ("conv2_1", 128), ("conv2_2", 128), ("conv3_1", 256),
                       ("conv3_2", 256), ("conv3_3", 256), ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512),
                       ("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512)]:
        sd[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.01
        sd[f"{name}.bias"] = torch.zeros(cout)
        cin = cout
    path = tmp_path / "vgg16.weight"
    torch.save(sd, path)
    m = EnlightenGAN(EnlightenGANConfig(vgg_weights=str(path)))
    _, info = m.build_vgg(torch.device("cpu"))
    assert info["kind"] == "caffe_vgg16" and info["preprocess"] == "caffe_nomean"


def test_end_to_end_demo_smoke(monkeypatch):
    from bench.run import RunSpec, execute

    result = execute(RunSpec("enlightengan", "demo", profile="smoke", progress=False))
    assert (result.run_dir / "metrics.csv").exists()


def test_training_resumes_exactly_after_an_interruption(tmp_path, monkeypatch):
    """Two steps straight through == one step, Ctrl-C, resume, one step (G, D, patch D, Adam, samplers, RNG)."""
    from baselines.enlightengan import gan

    pairs = _write_pairs(tmp_path, n=2, size=(36, 40))
    cfg = dict(batch=1, crop=32, patch=16, n_patches=1, iterations=2, checkpoint_every=1, vgg_weights="substitute")

    def train(out):
        m = EnlightenGAN(EnlightenGANConfig(**cfg))
        m.setup(torch.device("cpu"))
        return m.train(pairs, [], out, seed=3, progress=False)

    straight = torch.load(train(tmp_path / "a"), weights_only=True)["model"]
    original_init = gan.GanTrainer.__init__

    def interrupting_init(self, *a, **k):
        original_init(self, *a, **k)

        def stop(it):
            if it == 1:
                raise KeyboardInterrupt

        self.on_iteration_end = stop

    monkeypatch.setattr(gan.GanTrainer, "__init__", interrupting_init)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b")
    assert (tmp_path / "b" / "state_00000001.pt").exists()
    monkeypatch.setattr(gan.GanTrainer, "__init__", original_init)
    resumed = torch.load(train(tmp_path / "b"), weights_only=True)["model"]
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    log = (tmp_path / "b" / "train_log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in log[1:]] == ["1", "2"]

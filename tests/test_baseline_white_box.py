"""Tests for the White-Box / Exposure baseline (baselines/white_box): filters, networks, rewards, pool, training,
full-resolution replay and the end-to-end run."""

from __future__ import annotations

import colorsys
import csv
import json
import math
import random

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.methods.base import build_config
from bench.training import derive_seed, load_torch
from baselines.white_box import filters as Fl
from baselines.white_box.adapter import WhiteBox, WhiteBoxConfig
from baselines.white_box.data import FakeProvider, RealProvider, area_resize, center_square, linearize, preview
from baselines.white_box.memory import ImagePool
from baselines.white_box.networks import (AGENT_PARAMS, CRITIC_PARAMS, TOTAL_PARAMS, VALUE_PARAMS, Critic,
                                          WhiteBoxNets, image_statistics)
from baselines.white_box.rl import RLConfig, agent_step, critic_loss, step_penalty, step_reward
from baselines.white_box.train import lr_schedule
from train_pairs import ArrayPair
from smoke import adam_losses, assert_image_like

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def smoke_method():
    m = WhiteBox(build_config(WhiteBox, "smoke", {}))
    m.setup(torch.device("cpu"))
    return m


# ---- metadata, recipe, size --------------------------------------------------------------------------
def test_metadata_and_official_recipe():
    assert WhiteBox.name == "white-box" and WhiteBox.family == "reinforcement" and WhiteBox.trainable
    assert "Hu" in WhiteBox.citation and WhiteBox.bibkey
    c = WhiteBoxConfig()
    assert (c.iterations, c.batch, c.base_lr, c.generator_lr_mul, c.value_lr_mul, tuple(c.betas)) == \
        (20000, 64, 5e-5, 0.3, 10.0, (0.5, 0.9))
    assert (c.citers, c.citers_init, c.critic_initialization, c.giters_first, c.gradient_penalty) == (5, 100, 10, 100, 10.0)
    assert (c.critic_logit_multiplier, c.filter_usage_penalty, c.early_stop_penalty, c.exploration) == (0.05, 1.0, 1.0, 0.05)
    assert (c.test_steps, c.max_trajectory_length, c.pool_size, c.image_size, c.dropout_keep) == (5, 7, 128, 64, 0.5)
    assert set(WhiteBox.profiles) >= {"smoke", "quick", "paper", "paper@lol", "paper@fivek"}
    with pytest.raises(BenchError, match="target_split"):
        build_config(WhiteBox, "smoke", {"target_split": "paired"})
    # learning rates: x0.1 per third of training, actor 0.3x, value 10x the actor's
    g, v, cr = lr_schedule(c, 0)
    assert (g, v, cr) == pytest.approx((1.5e-5, 1.5e-4, 5e-5))
    assert lr_schedule(c, 20000 // 3)[2] == pytest.approx(5e-6, rel=1e-3)


def test_parameter_count_matches_the_notes():
    nets = WhiteBoxNets()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(nets.agent), count(nets.critic), count(nets.value)) == (AGENT_PARAMS, CRITIC_PARAMS, VALUE_PARAMS)
    assert (AGENT_PARAMS, CRITIC_PARAMS, VALUE_PARAMS) == (6_123_680, 1_216_225, 1_221_857)
    assert TOTAL_PARAMS == 8_561_762                       # baselines.md: ≈ 8.56 M (6.12 + 1.22 + 1.22)
    m = WhiteBox(build_config(WhiteBox, "smoke", {}))
    m.setup(torch.device("cpu"))
    assert m.trainable_parameters() == 8_561_762
    # heads: per filter FC 128 -> n_params + 6 (mask outputs, unused)
    assert [fc.out_features for fc in nets.agent.heads_fc2] == [7, 7, 9, 7, 14, 7, 7, 30]
    assert nets.critic.trunk.convs[0].in_channels == 6 and nets.value.trunk.convs[0].in_channels == 17


# ---- filters -----------------------------------------------------------------------------------------
def _img(seed=0, n=2, h=5, w=6, hi=1.2):
    return torch.from_numpy(np.random.default_rng(seed).uniform(0, hi, size=(n, 3, h, w)).astype(np.float64))


def _np(x):
    return x.permute(0, 2, 3, 1).numpy()


def test_each_filter_against_a_direct_computation():
    x = _img()
    xs = _np(x)
    lum = 0.27 * xs[..., 0:1] + 0.67 * xs[..., 1:2] + 0.06 * xs[..., 2:3]
    # exposure, gamma, white balance
    ev = torch.tensor([[1.5], [-0.5]], dtype=torch.float64)
    np.testing.assert_allclose(_np(Fl.apply_filter(x, "exposure", ev)), xs * (2.0 ** ev.numpy())[:, None, None], atol=1e-12)
    g = torch.tensor([[0.5], [2.0]], dtype=torch.float64)
    np.testing.assert_allclose(_np(Fl.apply_filter(x, "gamma", g)),
                               np.maximum(xs, 0.001) ** g.numpy()[:, None, None], atol=1e-12)
    gains = torch.tensor([[1.0, 0.9, 1.2], [0.8, 1.1, 1.0]], dtype=torch.float64)
    np.testing.assert_allclose(_np(Fl.apply_filter(x, "wb", gains)), xs * gains.numpy()[:, None, None], atol=1e-12)
    # contrast and black-and-white
    p = torch.tensor([[0.6], [-0.4]], dtype=torch.float64)
    L = np.clip(lum, 0, 1)
    ci = xs / (L + 1e-6) * (0.5 - 0.5 * np.cos(np.pi * L))
    pp = p.numpy()[:, None, None]
    np.testing.assert_allclose(_np(Fl.apply_filter(x, "contrast", p)), (1 - pp) * xs + pp * ci, atol=1e-12)
    q = torch.tensor([[0.3], [1.0]], dtype=torch.float64)
    qq = q.numpy()[:, None, None]
    np.testing.assert_allclose(_np(Fl.apply_filter(x, "wnb", q)), (1 - qq) * xs + qq * lum, atol=1e-12)
    # tone and colour curves: piecewise-linear interpolation of the normalised cumulative sum
    t = torch.tensor([[[0.5, 1.0, 2.0, 1.5, 0.7, 1.1, 1.9, 0.6]], [[1.0] * 8]], dtype=torch.float64)
    out = _np(Fl.apply_filter(x, "tone", t))
    for n in range(2):
        knots = np.cumsum([0.0] + list(t[n, 0].numpy())) / t[n, 0].sum().item()
        np.testing.assert_allclose(out[n], np.interp(xs[n], np.linspace(0, 1, 9), knots), atol=1e-12)
    cc = torch.from_numpy(np.random.default_rng(1).uniform(0.9, 1.1, size=(2, 3, 8)))
    out = _np(Fl.apply_filter(x, "colour", cc))
    for n in range(2):
        for ch in range(3):
            knots = np.cumsum([0.0] + list(cc[n, ch].numpy())) / cc[n, ch].sum().item()
            np.testing.assert_allclose(out[n, ..., ch], np.interp(xs[n, ..., ch], np.linspace(0, 1, 9), knots),
                                       atol=1e-12)
    # saturation: per-pixel HSV with colorsys as the reference
    s = torch.tensor([[0.7], [0.2]], dtype=torch.float64)
    out = _np(Fl.apply_filter(x, "saturation", s))
    for n in range(2):
        for i in range(xs.shape[1]):
            for j in range(xs.shape[2]):
                px = np.minimum(xs[n, i, j], 1.0)
                h_, s_, v_ = colorsys.rgb_to_hsv(*px)
                full = colorsys.hsv_to_rgb(h_, s_ + (1 - s_) * (0.5 - abs(0.5 - v_)) * 0.8, v_)
                ref = px * (1 - s[n, 0].item()) + np.array(full) * s[n, 0].item()
                np.testing.assert_allclose(out[n, i, j], ref, atol=1e-9)


def test_parameter_regressors_use_the_official_ranges():
    big = torch.tensor([[-50.0], [0.0], [50.0]])
    assert Fl.decode("exposure", big).flatten().tolist() == pytest.approx([-3.5, 0.0, 3.5])
    assert Fl.decode("gamma", big).flatten().tolist() == pytest.approx([1 / 3, 1.0, 3.0])
    assert Fl.decode("saturation", big).flatten().tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert Fl.decode("contrast", big).flatten().tolist() == pytest.approx([-1.0, 0.0, 1.0])
    wb = Fl.decode("wb", torch.tensor([[9.0, 0.3, -0.2], [-9.0, 0.3, -0.2]]))
    assert torch.allclose(wb[0], wb[1])                          # the red raw output is masked out
    assert torch.allclose(0.27 * wb[:, 0] + 0.67 * wb[:, 1] + 0.06 * wb[:, 2], torch.ones(2), atol=1e-4)
    tone = Fl.decode("tone", torch.linspace(-20, 20, 8)[None])
    assert tone.shape == (1, 1, 8) and float(tone.min()) == pytest.approx(0.5) and float(tone.max()) == pytest.approx(2.0)
    colour = Fl.decode("colour", torch.zeros(1, 24))
    assert colour.shape == (1, 3, 8) and torch.allclose(colour, torch.ones(1, 3, 8))   # initial value 1


def test_rgb_hsv_round_trip_matches_colorsys():
    x = _img(3, 1, 4, 4, hi=1.0)
    hsv = Fl.rgb_to_hsv(x)
    for i in range(4):
        for j in range(4):
            ref = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
            np.testing.assert_allclose(hsv[0, :, i, j].numpy(), ref, atol=1e-12)
    assert torch.allclose(Fl.hsv_to_rgb(hsv), x, atol=1e-12)


# ---- networks, rewards, pool -------------------------------------------------------------------------
def test_critic_statistics():
    x = _img(4, 2, 8, 8, hi=1.0).float()
    st = image_statistics(x)
    xs = _np(x.double())
    lum = 0.27 * xs[..., 0] + 0.67 * xs[..., 1] + 0.06 * xs[..., 2] + 1e-5
    mx, mn = xs.max(axis=-1), xs.min(axis=-1)
    sat = (mx - mn) / (np.minimum(mx + mn, 2 - mx - mn) + 1e-2)
    ref = np.stack([lum.mean(axis=(1, 2)), lum.var(axis=(1, 2)), sat.mean(axis=(1, 2))], axis=1)
    np.testing.assert_allclose(st.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_penalties_and_reward_on_a_hand_built_case():
    c = RLConfig()
    out = torch.full((2, 3, 2, 2), 0.5)
    out[0, 0, 0, 0] = 1.6                                        # one value over 1: (0.6)² / 12
    entropy = torch.tensor([[math.log(8)], [1.0]])
    one_hot = torch.tensor([[1.0] + [0.0] * 7, [0.0, 1.0] + [0.0] * 6])
    usage = torch.tensor([[0.0] * 8, [0.0, 1.0] + [0.0] * 6])    # image 1 reuses filter 1
    zero = torch.zeros(2, 1)
    pen = step_penalty(out, entropy, one_hot, usage, zero + 1, zero + 1, progress=0.25, c=c)
    want = torch.tensor([[0.36 / 12], [0.75 * 0.05 * (math.log(8) - 1.0) + 1.0]])
    assert torch.allclose(pen, want, atol=1e-6)
    early = step_penalty(out * 0, entropy * 0 + math.log(8), one_hot, usage * 0, zero, zero + 1, 0.0, c)
    assert torch.allclose(early, torch.ones(2, 1))               # submitted before the last step (never happens)
    r = step_reward(torch.tensor([[0.7], [0.1]]), torch.tensor([[0.2], [0.3]]), torch.tensor([[0.1], [0.0]]),
                    zero, c)
    assert torch.allclose(r, torch.tensor([[0.5 * 0.05 - 0.1], [-0.2 * 0.05]]))


def test_agent_step_updates_the_state():
    torch.manual_seed(0)
    nets = WhiteBoxNets()
    x = torch.rand(3, 3, 64, 64) * 0.5
    states = torch.zeros(3, 11)
    states[:, 2] = torch.tensor([0.0, 3.0, 4.0])
    states[2, 3:] = 1.0                                          # image 2 has used every filter
    res = agent_step(nets.agent, x, states, RLConfig(), is_train=False, progress=0.0,
                     generator=torch.Generator().manual_seed(0))
    k = res.selected
    assert res.new_states[:, 2].tolist() == [1.0, 4.0, 5.0]
    assert res.new_states[:, 0].tolist() == [0.0, 0.0, 1.0] == res.new_states[:, 1].tolist()   # submitted at 5
    for i in range(3):
        assert res.new_states[i, 3 + int(k[i])] == 1.0
        assert torch.equal(res.output[i], Fl.FILTERS[int(k[i])].process(x[i:i + 1], res.params[int(k[i])][i:i + 1])[0])
    assert float(res.penalty[2].detach()) >= 1.0 and float(res.penalty[0].detach()) < 1.0   # reuse penalty only for image 2
    assert torch.allclose(res.pdf.sum(1), torch.ones(3)) and float(res.pdf.detach().min()) >= 0.05 / 8 - 1e-7


def test_pool_serves_unfinished_records_and_finished_ones_to_the_critic():
    prov = FakeProvider([np.random.default_rng(0).uniform(0, 0.5, (70, 90, 3)).astype(np.float32)],
                        random.Random(0), 80, 64, 4)
    pool = ImagePool(prov, 6, 3, random.Random(1), torch.device("cpu"))
    with pytest.raises(BenchError, match="no finished trajectories"):
        pool.replay_fake_batch(2)
    imgs, sts = pool.next_fake_batch(3)
    assert imgs.shape == (3, 3, 64, 64) and len(pool) == 3
    done = sts.clone()
    done[:, 1] = 1.0
    done[:, 2] = 5.0
    pool.replace(imgs + 1.0, done)
    assert len(pool) == 6
    fake = pool.replay_fake_batch(5)                             # 3 finished records, repeated to 5
    assert fake.shape == (5, 3, 64, 64) and float(fake.min()) >= 1.0
    got, got_states = pool.next_fake_batch(3)
    assert float(got_states[:, 1].max()) == 0.0                   # finished records are never edited again


def test_data_pipeline():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(2)
    img = rng.uniform(0, 1, (123, 97, 3)).astype(np.float32)
    for size in ((80, 80), (40, 37)):
        ref = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(area_resize(img, *size), ref, atol=2e-5)
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    lin = linearize(t)
    assert torch.allclose(lin, t ** 2.2 / (2 * (t ** 2.2).max()))
    assert float(lin.max()) == pytest.approx(0.5)
    sq = center_square(img)
    assert sq.shape == (97, 97, 3) and np.array_equal(sq, img[13:110])
    ref = cv2.resize(sq, (64, 64), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(preview(t)[0].permute(1, 2, 0).numpy(), ref, atol=1e-5)
    real = RealProvider([img], random.Random(0), 80, 64, 4)
    assert real.data.shape == (4, 64, 64, 3) and real.next_batch(6).shape == (6, 3, 64, 64)


# ---- inference ---------------------------------------------------------------------------------------
def test_replay_at_full_resolution_equals_applying_the_filters(smoke_method):
    torch.manual_seed(0)
    low = torch.rand(1, 3, 37, 53) * 0.5
    out = smoke_method.enhance(low)
    rec = smoke_method.image_record()
    assert rec["n_steps"] == 2 and [e["step"] for e in rec["edits"]] == [0, 1]
    assert all(e["filter"] in Fl.FILTER_NAMES and abs(sum(e["pdf"]) - 1) < 1e-5 for e in rec["edits"])
    json.dumps(rec)
    direct = Fl.replay(linearize(low), rec["edits"]).clamp(0, 1)
    assert torch.allclose(out, direct, atol=1e-6)


def test_enhance_sizes_range_and_determinism(smoke_method):
    for h, w in ((37, 53), (400, 600)):
        low = torch.rand(1, 3, h, w) * 0.4
        torch.manual_seed(5)
        out = smoke_method.enhance(low)
        torch.manual_seed(5)
        again = smoke_method.enhance(low.clone())
        assert_image_like(out, low)
        assert float(out.min()) >= 0 and float(out.max()) <= 1 and torch.equal(out, again)
    m = WhiteBox(build_config(WhiteBox, "smoke", {"test_dropout": "false"}))
    m.setup(torch.device("cpu"))
    low = torch.rand(1, 3, 20, 30)
    torch.manual_seed(1)
    a = m.enhance(low)
    torch.manual_seed(2)
    assert torch.equal(a, m.enhance(low))                        # without test-time dropout: seed-independent


# ---- training ----------------------------------------------------------------------------------------
def test_critic_and_value_losses_fall_on_fixed_batches():
    torch.manual_seed(0)
    critic = Critic(0)
    fake, real = torch.rand(4, 3, 64, 64) * 0.3, torch.rand(4, 3, 64, 64) * 0.4 + 0.6
    alpha = torch.rand(4, 1, 1, 1)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
    losses = []
    for _ in range(10):
        out = critic_loss(critic, fake, real, RLConfig(), alpha)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05
    # the value network regresses onto fixed (stop-gradient) Q targets: v_loss = mean((Q - V)²)
    value = Critic(11)
    states, q = torch.zeros(4, 11), torch.tensor([[0.5], [-0.2], [0.1], [0.3]])
    v_losses = adam_losses(value.parameters(), lambda: ((q - value(fake, states)) ** 2).mean(), steps=10,
                           betas=(0.5, 0.9))
    assert np.mean(v_losses[-3:]) < 0.5 * np.mean(v_losses[:3])


def test_smoke_training_updates_every_network(tmp_path):
    rng = np.random.default_rng(3)
    pairs = [ArrayPair(f"p{i}", rng.integers(0, 120, (70, 90, 3), dtype=np.uint8),
                   rng.integers(60, 256, (70, 90, 3), dtype=np.uint8)) for i in range(4)]
    m = WhiteBox(build_config(WhiteBox, "smoke", {}))
    m.setup(torch.device("cpu"))
    init = m._new_model(derive_seed(11, "init")).state_dict()
    ckpt = m.train(pairs, [], tmp_path / "train", seed=11, progress=False)
    obj = load_torch(ckpt)
    assert obj["meta"]["method"] == "white-box" and obj["meta"]["n_inputs"] == 2 and obj["meta"]["n_targets"] == 2
    w = obj["model"]
    for key in ("agent.trunk.convs.0.weight", "agent.selector_fc2.weight", "agent.heads_fc2.0.weight",
                "critic.fc2.weight", "value.fc2.weight"):
        assert not torch.equal(w[key], init[key]), key
    with open(tmp_path / "train" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and float(rows[0]["lr_g"]) == 0.0 and float(rows[1]["lr_g"]) > 0
    assert all(math.isfinite(float(r["g_loss"])) and math.isfinite(float(r["emd"])) for r in rows)
    assert not list((tmp_path / "train").glob("state_*.pt"))
    # a finished run is not redone; the weights load back
    assert m.train(pairs, [], tmp_path / "train", seed=11, progress=False) == ckpt
    m2 = WhiteBox(build_config(WhiteBox, "smoke", {}))
    m2.setup(torch.device("cpu"), ckpt)
    assert m2.provenance()["weights_kind"] == "bench_checkpoint"
    assert torch.equal(m2.model.state_dict()["critic.fc2.weight"], w["critic.fc2.weight"])


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from baselines.white_box.train import WhiteBoxTraining

    rng = np.random.default_rng(4)
    pairs = [ArrayPair(f"p{i}", rng.integers(0, 120, (66, 70, 3), dtype=np.uint8),
                   rng.integers(60, 256, (66, 70, 3), dtype=np.uint8)) for i in range(2)]
    cfg = build_config(WhiteBox, "smoke", {})            # iterations 0, 1, 2; checkpoints after 2 and 3
    straight = WhiteBox(cfg)
    straight.setup(torch.device("cpu"))
    ref = load_torch(straight.train(pairs, [], tmp_path / "a", seed=3, progress=False))["model"]

    original = WhiteBoxTraining.iterate

    def stop_at_2(self, t):
        if t == 2:
            raise KeyboardInterrupt
        return original(self, t)

    monkeypatch.setattr(WhiteBoxTraining, "iterate", stop_at_2)
    m = WhiteBox(cfg)
    m.setup(torch.device("cpu"))
    with pytest.raises(KeyboardInterrupt):
        m.train(pairs, [], tmp_path / "b", seed=3, progress=False)
    assert [p.name for p in (tmp_path / "b").glob("state_*.pt")] == ["state_00000002.pt"]
    monkeypatch.setattr(WhiteBoxTraining, "iterate", original)
    got = load_torch(m.train(pairs, [], tmp_path / "b", seed=3, progress=False))["model"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_end_to_end_demo_smoke():
    from bench.fsutil import read_yaml
    from bench.run import RunSpec, execute

    res = execute(RunSpec("white-box", "demo", profile="smoke", progress=False))
    assert not res.reused and (res.run_dir / "DONE").exists()
    assert len(list((res.run_dir / "outputs").glob("*.png"))) == 2
    cfg = read_yaml(res.run_dir / "config.yaml")
    assert cfg["trainable_parameters"] == 8_561_762
    assert cfg["protocol"]["mode"].startswith("unpaired")


# ---- GPU (opt-in: -m gpu) ----------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_paper_configuration_iterates_and_times(tmp_path):
    """The official batch-64 iteration (1 actor/value step + 5 critic steps) on CUDA, timed (printed with -s)."""
    import time

    from baselines.white_box.train import WhiteBoxTraining

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    nets = WhiteBoxNets()
    nets.reset_parameters(0)
    x, states = torch.rand(3, 3, 64, 64), torch.zeros(3, 11)
    states[:, 2] = 1.0
    with torch.no_grad():
        cpu = agent_step(nets.agent, x, states, RLConfig(), is_train=False, progress=0.0, use_dropout=False)
        gpu_nets = WhiteBoxNets().cuda()
        gpu_nets.load_state_dict(nets.state_dict())
        gpu = agent_step(gpu_nets.agent, x.cuda(), states.cuda(), RLConfig(), is_train=False, progress=0.0,
                         use_dropout=False)
    assert torch.equal(cpu.selected, gpu.selected.cpu())
    assert (cpu.output - gpu.output.cpu()).abs().max() < 1e-4
    for f, p in zip(Fl.FILTERS, cpu.params):
        y = _img(7, 1, 9, 11).float()
        assert (f.process(y, p[:1]) - f.process(y.cuda(), p[:1].cuda()).cpu()).abs().max() < 1e-5, f.name

    rng = np.random.default_rng(0)
    inputs = [linearize(rng.uniform(0, 0.4, (333, 500, 3)).astype(np.float32)) for _ in range(16)]
    targets = [rng.uniform(0.2, 1.0, (333, 500, 3)).astype(np.float32) for _ in range(16)]
    c = WhiteBoxConfig()
    nets = WhiteBoxNets().cuda()
    nets.reset_parameters(1)
    loop = WhiteBoxTraining(nets, inputs, targets, c, c.rl(), tmp_path, 0, torch.device("cuda"),
                            {"config": {}}, progress=False)
    t0 = time.perf_counter()
    loop.iterate(0)                     # 100 generator steps at lr 0 + 100 critic steps: fills the pool
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    rows = []
    t0 = time.perf_counter()
    for t in range(11, 21):             # steady iterations (1 + 5 steps)
        rows.append(loop.iterate(t))
    torch.cuda.synchronize()
    per_it = (time.perf_counter() - t0) / 10
    assert all(math.isfinite(r["g_loss"]) and math.isfinite(r["emd"]) for r in rows)
    bursts = 10 + 20000 // 500          # iterations with 100 critic steps
    proj = 20001 * per_it + bursts * 95 * per_it / 6 + first
    m = WhiteBox(build_config(WhiteBox, "paper", {}))
    m.setup(torch.device("cuda"))
    low = torch.rand(1, 3, 333, 500, device="cuda") * 0.5
    m.enhance(low)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = m.enhance(low)
    torch.cuda.synchronize()
    assert out.shape == low.shape
    print(f"\n[white-box gpu] {torch.cuda.get_device_name()}: iteration 0 {first:.1f}s, steady {per_it * 1e3:.0f} "
          f"ms/iteration -> 20,001 iterations ~ {proj / 3600:.2f} h; enhance 500x333 "
          f"{(time.perf_counter() - t0) * 1e3:.0f} ms; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")

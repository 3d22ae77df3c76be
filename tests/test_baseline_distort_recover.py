"""Tests for the Distort-and-Recover baseline (baselines/distort_recover): actions, Lab state and reward, the DQN
pieces, replay at full resolution, training and the end-to-end run."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.methods.base import build_config
from bench.training import derive_seed, load_torch
from baselines.distort_recover import actions as A
from baselines.distort_recover.adapter import DistortRecover, DistortRecoverConfig, lr_milestones, make_step_fn
from baselines.distort_recover.colour import lab_histogram_8k, rgb_to_lab
from baselines.distort_recover.env import (DQNBatch, Episode, ReplayQueue, StateBuilder, epsilon_at,
                                           resize_for_state)
from baselines.distort_recover.features import DeepFeatures, l2_normalize_eps1
from baselines.distort_recover.qnet import DQN, QNetwork, q_parameter_count
from train_pairs import ArrayPair
from smoke import adam_losses, assert_image_like

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def smoke_method():
    """The smoke configuration set up once (its substitute fc6 layer takes a second or two to draw)."""
    m = DistortRecover(build_config(DistortRecover, "smoke", {}))
    m.setup(torch.device("cpu"))
    return m


# ---- metadata, recipe, size --------------------------------------------------------------------------
def test_metadata_and_official_recipe():
    assert DistortRecover.name == "distort-recover" and DistortRecover.family == "reinforcement"
    assert DistortRecover.trainable and DistortRecover.uses_pairs and "Park" in DistortRecover.citation
    c = DistortRecoverConfig()
    assert (c.state_size, c.deep_features, c.seq_len, tuple(c.hidden)) == (224, "fc6", 50, (4096, 4096, 512))
    assert (c.max_steps, c.batch, c.lr, c.lr_decay, c.lr_decay_steps, c.lr_min) == (3_000_000, 4, 1e-5, 0.96, 5000, 1e-8)
    assert (c.weight_decay, c.discount, c.td_clip, c.memory_size, c.target_update) == (1e-4, 0.95, 1.0, 5000, 1000)
    assert (c.min_after_dequeue, c.enqueue_repeat) == (1000, 3)
    assert tuple(c.eps_steps) == (10000, 40000, 80000, 160000, 320000)
    assert tuple(c.eps_values) == (1.0, 0.8, 0.6, 0.4, 0.2, 0.1)
    assert set(DistortRecover.profiles) >= {"smoke", "quick", "paper", "paper@lol", "paper@fivek"}
    with pytest.raises(BenchError, match="ddqn_argmax"):
        build_config(DistortRecover, "smoke", {"ddqn_argmax": "both"})
    with pytest.raises(BenchError, match="history"):
        build_config(DistortRecover, "smoke", {"history": "none"})


def test_parameter_count_matches_the_notes():
    # state 4,096 (fc6) + 8,000 (Lab histogram) + 50 x 12 (history) = 12,696; FC 12,696-4096-4096-512-12
    assert q_parameter_count() == 70_892_044            # baselines.md: ≈ 70.9 M
    net = QNetwork(4096 + 8000 + 600)
    assert sum(p.numel() for p in net.parameters()) == 70_892_044
    dqn = DQN(100, (8, 8, 4))
    trainable = sum(p.numel() for p in dqn.parameters() if p.requires_grad)
    assert trainable == q_parameter_count(100, (8, 8, 4))   # the target copy is frozen, not counted


def test_official_initialisation_ranges():
    net = QNetwork(300, (64, 64, 32))
    net.reset_parameters(torch.Generator().manual_seed(0))
    s4096, s512 = math.sqrt(1 / 4096), math.sqrt(1 / 512)
    for t, std in ((net.fc1.weight, s4096), (net.fc3.bias, s512), (net.fc4.weight, s512),
                   (net.fc4.bias, math.sqrt(1 / 12))):
        assert float(t.detach().abs().max()) <= 2 * std + 1e-7      # truncated at two standard deviations
    assert 0.7 * s4096 < float(net.fc1.weight.detach().std()) < 0.95 * s4096   # a 2σ-truncated normal has std 0.88σ


def test_lr_schedule_stops_at_the_floor():
    ms = lr_milestones(DistortRecoverConfig())
    assert len(ms) == 169 and ms[:2] == [5000, 10000] and ms[-1] == 169 * 5000
    last = 1e-5 * 0.96 ** len(ms)
    assert 1e-8 <= last < 1e-8 / 0.96
    assert epsilon_at(0, (10, 20), (1.0, 0.5, 0.1)) == 1.0 and epsilon_at(10, (10, 20), (1.0, 0.5, 0.1)) == 0.5
    assert epsilon_at(25, (10, 20), (1.0, 0.5, 0.1)) == 0.1


# ---- actions -----------------------------------------------------------------------------------------
def test_each_action_against_a_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(2, 5, 7, 3))                  # N×H×W×3, as the official NumPy code
    t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    wb = [(240, 240, 255), (270, 270, 255), (255, 240, 240), (255, 270, 270), (240, 255, 240), (270, 255, 270)]
    for k in range(12):
        out = A.apply_action(t, k).permute(0, 2, 3, 1).numpy()
        for n in range(2):
            img = x[n]
            if k < 2:
                b = (0.95, 1.05)[k]
                ref = b * img + (1 - b) * np.full(img.shape, img.mean())
            elif k < 4:
                b = (0.95, 1.05)[k - 2]
                ref = b * img + (1 - b) * img.mean(axis=2, keepdims=True)
            elif k < 6:
                ref = (0.93, 1.07)[k - 4] * img
            else:
                ref = img * np.array(wb[k - 6]) / 255.0
            np.testing.assert_allclose(out[n], np.clip(ref, 0, 1), rtol=0, atol=1e-12, err_msg=A.ACTIONS[k].name)
    assert [a.name for a in A.ACTIONS][:6] == ["contrast x0.95", "contrast x1.05", "saturation x0.95",
                                               "saturation x1.05", "brightness x0.93", "brightness x1.07"]
    # one action per image, -1 = unchanged (the official stopped marker)
    mixed = A.apply_action(t, [5, -1])
    assert torch.equal(mixed[0], A.apply_action(t[:1], 5)[0]) and torch.equal(mixed[1], t[1])


def test_brightness_action_matches_the_pil_distortion_up_to_rounding():
    # the FiveK distortion (bench/data/distort.py) is PIL's uint8 Brightness; the agent's action is its float form
    from bench.data.distort import apply_op

    img = np.random.default_rng(1).integers(0, 256, size=(6, 9, 3), dtype=np.uint8)
    pil = apply_op(img, {"op": "brightness", "factor": 1.07}).astype(np.float64)
    ours = A.apply_action(torch.from_numpy(img / 255.0).permute(2, 0, 1)[None], 5)[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(pil - ours).max() <= 1.0
    # ...while contrast uses another degenerate image (the channel mean, not PIL's rounded luma mean)
    pil_c = apply_op(img, {"op": "contrast", "factor": 1.05}).astype(np.float64)
    ours_c = A.apply_action(torch.from_numpy(img / 255.0).permute(2, 0, 1)[None], 1)[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(pil_c - ours_c).max() > 0.0


# ---- Lab state and reward ----------------------------------------------------------------------------
def test_lab_conversion_and_histogram_match_skimage_and_numpy():
    from skimage.color import rgb2lab

    rng = np.random.default_rng(2)
    img = rng.uniform(0, 1, size=(11, 13, 3))
    img[0, 0] = 0.0
    img[0, 1] = 1.0
    lab = rgb_to_lab(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(lab, rgb2lab(img), rtol=0, atol=1e-9)

    pts = np.stack([rng.uniform(-5, 105, 400), rng.uniform(-70, 70, 400), rng.uniform(-70, 70, 400)], axis=1)
    pts[:3] = [[0.0, -60.0, 60.0], [100.0, 0.0, 0.0], [5.0, -54.0, 6.0]]   # on bin edges, incl. the last
    h, _ = np.histogramdd(pts, bins=(20, 20, 20), range=((0, 100), (-60, 60), (-60, 60)))
    ref = h.reshape(-1) / np.linalg.norm(h.reshape(-1))
    ours = lab_histogram_8k(torch.from_numpy(pts.T.reshape(1, 3, 20, 20))).numpy()[0]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)
    assert float(lab_histogram_8k(torch.full((1, 3, 2, 2), 500.0)).abs().sum()) == 0.0   # all outside: zeros


def _grey_lab(v: float) -> np.ndarray:
    """CIE L*a*b* of the sRGB grey (v, v, v), written out (D65, scikit-image's matrix)."""
    lin = ((v + 0.055) / 1.055) ** 2.4 if v > 0.04045 else v / 12.92
    m = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
    xyz = m.sum(axis=1) * lin / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_reward_on_a_hand_built_case():
    builder = StateBuilder(DeepFeatures("none"), "official", 50)
    target = torch.full((3, 3, 4, 4), 0.5, dtype=torch.float64)
    images = torch.stack([torch.full((3, 4, 4), v, dtype=torch.float64) for v in (0.0, 0.465, 0.6)])
    ep = Episode(builder, images, target)
    lt = _grey_lab(0.5)
    dist = [np.linalg.norm(_grey_lab(v) - lt) for v in (0.0, 0.465, 0.6)]
    np.testing.assert_allclose(ep.score.numpy(), [-d / 10 for d in dist], rtol=0, atol=1e-9)
    assert abs(dist[0] - 53.389) < 0.01                     # L* of 50 % sRGB grey ≈ 53.39 (black is 0)
    reward, terminal = ep.step([5, 5, 5])                   # brightness x1.07 on all three
    after = [np.linalg.norm(_grey_lab(v) - lt) for v in (0.0, 0.465 * 1.07, min(0.6 * 1.07, 1.0))]
    np.testing.assert_allclose(reward.numpy(), [(b - a) / 10 for b, a in zip(dist, after)], rtol=0, atol=1e-9)
    assert reward[0] == 0 and reward[1] > 0 and reward[2] < 0       # black stays black; closer; further
    assert terminal.tolist() == [True, False, True]                  # terminal when reward <= 0
    assert ep.history[0, 5] == 1 and ep.history.sum() == 3           # official history: "action 5 used"


def test_history_encodings_and_state_layout():
    n = 1
    official = StateBuilder(DeepFeatures("none"), "official", 50)
    paper = StateBuilder(DeepFeatures("none"), "paper", 50)
    ho, hp = official.new_history(n, torch.device("cpu")), paper.new_history(n, torch.device("cpu"))
    for step, a in enumerate([3, 3, 11]):
        official.record(ho, [a], step)
        paper.record(hp, [a], step)
    assert ho.nonzero()[:, 1].tolist() == [3, 11]                       # released code: per-action flags
    assert hp.nonzero()[:, 1].tolist() == [0 * 12 + 3, 1 * 12 + 3, 2 * 12 + 11]   # paper: one-hot per step
    img = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    s = official.state(img, rgb_to_lab(img), ho)
    assert s.shape == (1, 8000 + 600) and official.state_len == 8600
    assert abs(float(s[0, :8000].norm()) - 1.0) < 1e-5                  # the histogram part is L2-normalised
    x = torch.tensor([[0.3, 0.4], [3.0, 4.0]])
    assert torch.allclose(l2_normalize_eps1(x), torch.tensor([[0.3, 0.4], [0.6, 0.8]]))   # epsilon = 1


def test_fc6_state_part(smoke_method):
    f = smoke_method.features
    assert f.dim == 4096 and f.info["faithful"] is False and f.info["vgg"]["kind"] == "substitute_random_vgg16"
    y = f(torch.rand(2, 3, 32, 32))
    assert y.shape == (2, 4096) and float(y.norm(dim=1).max()) <= 1.0 + 1e-5
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(f(x), f(x.clone()))
    assert smoke_method.builder.state_len == 4096 + 8000 + 600
    prov = smoke_method.provenance()
    assert prov["faithful"] is False and any("fc6" in s for s in prov["substitutes"])
    assert prov["feature_source"]["vgg"]["kind"] == "substitute_random_vgg16"


# ---- replay queue and TD step ------------------------------------------------------------------------
def test_replay_queue_dequeues_without_replacement():
    q = ReplayQueue(16, 2, torch.device("cpu"))
    s = torch.arange(20, dtype=torch.float32).reshape(10, 2)
    q.enqueue_many(s, s + 100, torch.arange(10.0), torch.arange(10), torch.zeros(10))
    rng = np.random.default_rng(0)
    first = q.dequeue(4, rng)
    assert len(q) == 6
    rest = q.dequeue(6, rng)
    got = sorted(first["r"].tolist() + rest["r"].tolist())
    assert got == list(range(10))                                   # every entry exactly once
    assert torch.equal(first["s2"], first["s"] + 100) and torch.equal(first["a"].float(), first["r"])
    with pytest.raises(RuntimeError):
        q.dequeue(1, rng)


def _batch(it=0):
    g = torch.Generator().manual_seed(3)
    s, s2 = torch.rand(4, 10, generator=g), torch.rand(4, 10, generator=g)
    return DQNBatch(s, torch.tensor([0, 1, 2, 1]), torch.tensor([0.3, -0.2, 0.05, 0.0]), s2,
                    torch.tensor([0.0, 1.0, 0.0, 1.0]), it, 1.0)


def test_td_step_matches_the_formula():
    dqn = DQN(10, (16, 16, 8), 3)
    dqn.reset_parameters(1)
    c = DistortRecoverConfig(target_update=5)
    b = _batch()
    with torch.no_grad():
        q, qt = dqn.online(b.s), dqn.target(b.s2)
        for mode, src in (("state", b.s), ("next_state", b.s2)):
            a_star = dqn.online(src).argmax(1)
            y = b.r + (1 - b.term) * 0.95 * qt[torch.arange(4), a_star]
            delta = y - q[torch.arange(4), b.a]
            want = (delta.clamp(-1, 1) ** 2).mean()
            got = make_step_fn(dqn, DistortRecoverConfig(ddqn_argmax=mode))(b)["loss"]
            assert torch.allclose(got, want)
    # the target network is copied from the online one at every target_update-th step
    step = make_step_fn(dqn, c)
    step(_batch(4))
    assert not torch.equal(dqn.target.fc1.weight, dqn.online.fc1.weight)
    step(_batch(5))
    assert torch.equal(dqn.target.fc1.weight, dqn.online.fc1.weight)


def test_td_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    dqn = DQN(10, (32, 32, 16), 3)
    dqn.reset_parameters(2)
    b = _batch()
    b.term[:] = 1.0                                            # fixed targets y = r
    step = make_step_fn(dqn, DistortRecoverConfig(target_update=10**6))
    losses = adam_losses(dqn.online.parameters(), lambda: step(b)["loss"], steps=30, lr=1e-2)
    assert np.mean(losses[-3:]) < 0.1 * np.mean(losses[:3])


# ---- inference ---------------------------------------------------------------------------------------
def test_replay_at_full_resolution_equals_applying_the_actions(smoke_method):
    torch.manual_seed(0)
    low = torch.rand(1, 3, 37, 53) * 0.5
    out = smoke_method.enhance(low)
    rec = smoke_method.image_record()
    assert rec["n_steps"] >= 1 and rec["stopped_by"] in ("max_q<=0", "step_limit")
    direct = A.replay(low.double(), [e["index"] for e in rec["edits"]]).float().clamp(0, 1)
    assert torch.equal(out, direct)
    json.dumps(rec)                                              # JSON-serialisable
    assert [e["step"] for e in rec["edits"]] == list(range(rec["n_steps"]))
    assert all(e["q"] > 0 for e in rec["edits"])                 # it only acts while the best Q is positive


def test_enhance_sizes_range_and_determinism(smoke_method):
    for h, w in ((37, 53), (400, 600)):
        torch.manual_seed(h)
        low = torch.rand(1, 3, h, w) * 0.4
        out = smoke_method.enhance(low)
        assert_image_like(out, low)
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        assert torch.equal(out, smoke_method.enhance(low.clone()))


def test_state_resize_is_pil_bilinear_on_uint8():
    from PIL import Image

    img = np.random.default_rng(4).integers(0, 256, size=(30, 41, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(img).resize((32, 32), Image.BILINEAR))
    assert np.array_equal(resize_for_state(img, 32), ref)
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    assert np.array_equal(resize_for_state(t, 32), ref)


# ---- training ----------------------------------------------------------------------------------------
def test_smoke_training_updates_the_networks(tmp_path, smoke_method):
    rng = np.random.default_rng(5)
    pairs = []
    for i in range(6):
        high = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
        pairs.append(ArrayPair(f"p{i}", (high * 0.6).astype(np.uint8), high))
    m = DistortRecover(build_config(DistortRecover, "smoke", {"deep_features": "none"}))
    m.setup(torch.device("cpu"))
    init = m._new_model(derive_seed(7, "init"))
    ckpt = m.train(pairs, [], tmp_path / "train", seed=7, progress=False)
    obj = load_torch(ckpt)
    assert obj["meta"]["method"] == "distort-recover" and obj["iteration"] == 6
    w = obj["model"]
    assert not torch.equal(w["online.fc1.weight"], init.online.fc1.weight)     # online network learned
    assert not torch.equal(w["target.fc1.weight"], init.target.fc1.weight)     # target was synchronised (step 3)
    with open(tmp_path / "train" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(math.isfinite(float(r["loss"])) for r in rows)
    assert float(rows[0]["epsilon"]) == 1.0 and float(rows[-1]["epsilon"]) < 1.0
    # the trained weights load back and drive inference
    m2 = DistortRecover(build_config(DistortRecover, "smoke", {"deep_features": "none"}))
    m2.setup(torch.device("cpu"), ckpt)
    assert m2.provenance()["weights_kind"] == "bench_checkpoint"
    assert m2.enhance(torch.rand(1, 3, 20, 30)).shape == (1, 3, 20, 30)
    with pytest.raises(BenchError, match="other state features"):     # fc6 state features: refused
        smoke_method.setup(torch.device("cpu"), ckpt)
    smoke_method.setup(torch.device("cpu"))


def test_end_to_end_demo_smoke():
    from bench.fsutil import read_yaml
    from bench.run import RunSpec, execute

    res = execute(RunSpec("distort-recover", "demo", profile="smoke", progress=False))
    assert not res.reused and (res.run_dir / "DONE").exists()
    assert len(list((res.run_dir / "outputs").glob("*.png"))) == 2
    cfg = read_yaml(res.run_dir / "config.yaml")
    assert cfg["trainable_parameters"] == q_parameter_count(12696, (64, 64, 32))
    assert cfg["protocol"]["faithful"] is False and cfg["protocol"]["substitutes"]


# ---- GPU (opt-in: -m gpu) ----------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_paper_configuration_trains_and_times(tmp_path):
    """The official 70.9 M-parameter agent on 224x224 states: a short run on CUDA, timed (printed with -s)."""
    import time

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    x = torch.rand(2, 3, 31, 45, dtype=torch.float64)
    for k in range(12):      # the actions and the Lab pieces agree between the devices
        assert torch.allclose(A.apply_action(x, k), A.apply_action(x.cuda(), k).cpu(), atol=1e-12)
    lab = rgb_to_lab(x)
    assert torch.allclose(lab, rgb_to_lab(x.cuda()).cpu(), atol=1e-9)
    assert torch.allclose(lab_histogram_8k(lab), lab_histogram_8k(lab.cuda()).cpu(), atol=1e-6)

    rng = np.random.default_rng(0)
    pairs = []
    for i in range(16):
        high = rng.integers(0, 256, size=(333, 500, 3), dtype=np.uint8)
        pairs.append(ArrayPair(f"p{i}", (high * rng.uniform(0.4, 0.9)).astype(np.uint8), high))
    steps = 300
    m = DistortRecover(build_config(DistortRecover, "paper", {"max_steps": str(steps), "checkpoint_every": "0"}))
    t0 = time.perf_counter()
    m.setup(torch.device("cuda"))
    setup_s = time.perf_counter() - t0
    assert m.trainable_parameters() == 70_892_044
    t0 = time.perf_counter()
    m.train(pairs, [], tmp_path / "train", seed=0, progress=False)
    torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    with open(tmp_path / "train" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == steps and all(math.isfinite(float(r["loss"])) for r in rows)
    secs = [float(r["seconds"]) for r in rows]
    per_step = (secs[-1] - secs[steps // 2]) / (steps - 1 - steps // 2)   # steady state: 1 env step per 3
    low = torch.rand(1, 3, 333, 500, device="cuda") * 0.5
    m.enhance(low)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = m.enhance(low)
    torch.cuda.synchronize()
    enh = time.perf_counter() - t0
    assert out.shape == low.shape
    print(f"\n[distort-recover gpu] {torch.cuda.get_device_name()}: setup {setup_s:.1f}s, train {steps} steps "
          f"{train_s:.1f}s (warm-up fill of 1000 queue entries included), steady {per_step * 1e3:.1f} ms/step "
          f"-> 3M steps ~ {per_step * 3e6 / 3600:.1f} h; enhance 500x333 {enh * 1e3:.0f} ms "
          f"({m.image_record()['n_steps']} actions); peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")

"""Training machinery (bench/training.py), DSN losses and the ``ours`` adapter. CPU, tiny crops."""

import csv
import dataclasses

import numpy as np
import pytest
import torch
import yaml

from bench.dsn import adapter as adapter_mod
from bench.dsn.adapter import ALT_VARIANTS, TABLE2, VARIANTS, DSNMethod
from bench.dsn.losses import l1_loss, l2_loss, psnr_loss, quantize_ste
from bench.errors import BenchError
from bench.imageio import write_png
from bench.methods.base import TrainPair, build_config
from bench.training import (
    CropSampler,
    Trainer,
    TrainSettings,
    WholeImageSampler,
    epoch_schedule,
    latest_state,
    save_torch,
)
from train_pairs import ArrayPair, crash_after

torch.set_num_threads(1)


def _smooth(rng, h, w):
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / 5 + c) + np.cos(y / 7 - c) for c in range(3)], -1)
    img = 128 + 60 * base + rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _png_pairs(tmp_path, rng, sizes, darken=0.3):
    pairs = []
    for i, (h, w) in enumerate(sizes):
        high = _smooth(rng, h, w)
        low = np.round(high * darken).astype(np.uint8)
        lp, hp = tmp_path / f"low/{i}.png", tmp_path / f"high/{i}.png"
        write_png(lp, low)
        write_png(hp, high)
        pairs.append(TrainPair(f"img{i}", lp, hp))
    return pairs


def _cfg(profile="smoke", **sets):
    return build_config(DSNMethod, profile, {k: str(v) for k, v in sets.items()}, "demo")


def _log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------------ sampler
def test_sampler_same_position_all_dihedral_and_resumable(rng):
    h, w = 6, 6
    low = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    high = 255 - low  # a pixelwise function of low: same position <=> high == 255 - low
    s = CropSampler([ArrayPair("a", low, high)], crop=6, batch=4, seed=3)
    seen = set()
    for _ in range(40):
        b = s.next_batch()
        assert b.low.shape == (4, 3, 6, 6) and b.low.dtype == torch.float32
        assert torch.allclose(b.high, 1 - b.low, atol=1e-6)
        for img in b.low:
            seen.add(img.numpy().tobytes())
    assert len(seen) == 8  # a 6x6 crop of a 6x6 image: exactly the 8 dihedral transforms
    # the sampler's state reproduces the next batches (what resume relies on)
    state = s.state_dict()
    nxt = [s.next_batch().low for _ in range(3)]
    s2 = CropSampler([ArrayPair("a", low, high)], crop=6, batch=4, seed=99)
    s2.load_state_dict(state)
    assert all(torch.equal(a, s2.next_batch().low) for a in nxt)


def test_sampler_epochs_small_images_and_low_only(rng):
    pairs = [ArrayPair(f"p{i}", _smooth(rng, 10 + i, 12), _smooth(rng, 10 + i, 12)) for i in range(5)]
    s = CropSampler(pairs, crop=8, batch=2, seed=0)
    ids = [i for _ in range(5) for i in s.next_batch().ids]  # 10 draws: two full permutations
    assert sorted(ids[:5]) == sorted(ids[5:]) == [f"p{i}" for i in range(5)]
    assert s.iterations_per_epoch == 3
    # smaller than the crop: reflect-padded once (low and high alike), or the crop clipped
    small = [ArrayPair("s", _smooth(rng, 5, 7), _smooth(rng, 5, 7)), pairs[0]]
    r = CropSampler(small, crop=9, batch=2, seed=0, small="reflect")
    assert r.next_batch().low.shape == (2, 3, 9, 9) and r.describe()["padded_images"] == 1
    c = CropSampler(small, crop=9, batch=2, seed=0, small="clip")
    assert c.next_batch().low.shape == (2, 3, 5, 5)
    lo = CropSampler([ArrayPair("u", _smooth(rng, 9, 9), None)], crop=4, batch=3, seed=0, use_high=False)
    b = lo.next_batch()
    assert b.high is None and b.low.shape == (3, 3, 4, 4)
    with pytest.raises(BenchError, match="no reference"):
        CropSampler([ArrayPair("u", _smooth(rng, 9, 9), None)], crop=4, batch=1, seed=0)


def test_whole_image_sampler_flips_pairs_together_and_resumes(rng):
    img = _smooth(rng, 6, 8)
    one = WholeImageSampler([ArrayPair("a", img, 255 - img)], 1, seed=0, flips=True)
    variants = {a.tobytes() for a in (img, img[:, ::-1], img[::-1], img[::-1, ::-1])}
    seen = set()
    for _ in range(20):
        b = one.next_batch()
        low, high = (np.round(t[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8) for t in (b.low, b.high))
        assert low.tobytes() in variants and np.array_equal(high, 255 - low)   # whole image, flipped as a pair
        seen.add(low.tobytes())
    assert len(seen) > 1 and one.epoch == 20
    pairs = [ArrayPair(f"p{i}", _smooth(rng, 6, 8), _smooth(rng, 6, 8)) for i in range(5)]
    s = WholeImageSampler(pairs, 2, seed=0)                    # drop_last: two full batches per permutation
    assert s.iterations_per_epoch == 2
    ids = [i for _ in range(4) for i in s.next_batch().ids]
    assert len(set(ids[:4])) == len(set(ids[4:])) == 4 and s.epoch == 2
    state = s.state_dict()
    nxt = [s.next_batch() for _ in range(3)]
    s.load_state_dict(state)
    assert all(a.ids == b.ids and torch.equal(a.low, b.low) for a, b in zip(nxt, [s.next_batch() for _ in range(3)]))
    part = WholeImageSampler(pairs, 2, seed=0, drop_last=False, use_high=False)
    sizes = [part.next_batch() for _ in range(6)]
    assert [b.low.shape[0] for b in sizes] == [2, 2, 1, 2, 2, 1] and sizes[0].high is None
    assert part.iterations_per_epoch == 3
    with pytest.raises(BenchError, match="larger than"):
        WholeImageSampler(pairs[:1], 2, seed=0)
    with pytest.raises(BenchError, match="one size"):
        WholeImageSampler([pairs[0], ArrayPair("b", _smooth(rng, 7, 8), _smooth(rng, 7, 8))], 2, seed=0)
    with pytest.raises(BenchError, match="smaller than 7 pixels"):
        WholeImageSampler(pairs, 1, seed=0, min_side=7)
    with pytest.raises(BenchError, match="no reference"):
        WholeImageSampler([ArrayPair("u", img, None)], 1, seed=0)
    with pytest.raises(BenchError, match="differ in size"):
        WholeImageSampler([ArrayPair("u", img, img[:5])], 1, seed=0)


def test_trainer_lr_lambda_and_initial_optimizer_state(tmp_path, rng, monkeypatch):
    pairs = [ArrayPair(f"p{i}", _smooth(rng, 6, 8), _smooth(rng, 6, 8)) for i in range(3)]
    calls = []

    def trainer(out, iterations=4, **kw):
        torch.manual_seed(0)
        model = torch.nn.Conv2d(3, 3, 1)
        settings = TrainSettings(iterations=iterations, lr=0.1, checkpoint_every=2, **kw)
        return Trainer(model, list(model.parameters()), WholeImageSampler(pairs, 1, seed=0),
                       lambda b: {"loss": ((model(b.low) - b.high) ** 2).mean()}, out, settings, seed=0,
                       progress=False, lr_lambda=lambda it: 1.0 / (it + 1), init_optimizer_state=calls.append)

    trainer(tmp_path / "a").run()
    assert [float(r["lr"]) for r in _log(tmp_path / "a/train_log.csv")] == pytest.approx([0.1, 0.05, 0.1 / 3, 0.025])
    assert len(calls) == 1 and isinstance(calls[0], torch.optim.Adam)
    trainer(tmp_path / "a").run()                              # finished: nothing is trained or initialised
    assert len(calls) == 1
    with monkeypatch.context() as mp:                          # stop after iteration 2, then resume
        mp.setattr(Trainer, "_on_iteration_end", lambda self, it: (_ for _ in ()).throw(KeyboardInterrupt)
                   if it == 2 else None)
        with pytest.raises(KeyboardInterrupt):
            trainer(tmp_path / "b").run()
    assert len(calls) == 2 and latest_state(tmp_path / "b").name == "state_00000002.pt"
    trainer(tmp_path / "b").run()                              # resumed: the checkpoint holds the optimiser state
    assert len(calls) == 2
    assert [float(r["lr"]) for r in _log(tmp_path / "b/train_log.csv")] == pytest.approx([0.1, 0.05, 0.1 / 3, 0.025])
    with pytest.raises(BenchError, match="not both"):
        trainer(tmp_path / "c", milestones=(2,))


def test_paper_schedules_in_iterations():
    assert epoch_schedule(400, 2, 250, 100) == (50_000, [20_000, 40_000])           # LOL (D6)
    assert epoch_schedule(4500, 2, 200, 50) == (450_000, [112_500, 225_000, 337_500])  # FiveK
    assert epoch_schedule(5, 2, 4, 2) == (12, [6])                                   # ceil(5/2) = 3 per epoch
    m = DSNMethod(_cfg("paper"))
    assert m.schedule(400) == (50_000, [20_000, 40_000])
    fivek = DSNMethod(build_config(DSNMethod, "paper", {}, "fivek-distorted"))
    assert fivek.schedule(4500) == (450_000, [112_500, 225_000, 337_500])
    code = DSNMethod(build_config(DSNMethod, "paper", {"schedule": "code"}, "lol"))
    assert code.schedule(400) == (500_000, [20_000, 40_000, 60_000, 80_000, 100_000])


# ------------------------------------------------------------------------------------------------ losses
def test_losses_and_quantiser():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 4, 5, generator=g), torch.rand(2, 3, 4, 5, generator=g)
    d = (a - b).double()
    assert l2_loss(a, b).item() == pytest.approx(float((d ** 2).sum() / 2), rel=1e-5)
    assert l1_loss(a, b).item() == pytest.approx(float(d.abs().sum() / 2), rel=1e-5)
    mse = (d ** 2).mean(dim=(1, 2, 3))
    assert psnr_loss(a, b).item() == pytest.approx(float(-(10 * torch.log10(1 / mse)).mean()), rel=1e-5)
    x = torch.tensor([-0.2, 0.1234, 0.5, 1.3], requires_grad=True)
    q = quantize_ste(x)
    assert torch.allclose(q, torch.tensor([0.0, round(0.1234 * 255) / 255, 128 / 255, 1.0]))
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones(4))  # straight-through


# ------------------------------------------------------------------------------------------------ training
def test_smoke_training_lowers_the_loss(tmp_path, rng):
    # one 24x24 pair, crop 24, no augmentation: every batch is the same data, so the loss must fall
    pairs = _png_pairs(tmp_path, rng, [(24, 24)])
    m = DSNMethod(_cfg(iterations=6, batch=1, augment="false", checkpoint_every=0))
    assert m.config.n_blocks == 8 and m.config.crop == 24
    m.setup(torch.device("cpu"))
    ckpt = m.train(pairs, [], tmp_path / "run", seed=0, progress=False)
    losses = [float(r["loss"]) for r in _log(tmp_path / "run/train_log.csv")]
    assert len(losses) == 6
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
    assert ckpt.name == "model_final.pt" and (tmp_path / "run/train_done.json").exists()
    assert latest_state(tmp_path / "run") is None  # the 3x-larger training state is dropped once finished


def _tiny(**sets):
    base = dict(n_blocks=1, crop=16, iterations=6, milestones="3", checkpoint_every=2)
    base.update(sets)
    return DSNMethod(_cfg(**base))


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("how", ["crash", "ctrl_c"])
def test_interrupted_training_resumes_bit_identically(tmp_path, rng, monkeypatch, how):
    pairs = _png_pairs(tmp_path, rng, [(20, 28), (18, 18), (26, 21)])
    straight = _tiny()
    straight.setup(torch.device("cpu"))
    ref = _weights(straight.train(pairs, [], tmp_path / "a", seed=7, progress=False))
    ref_log = _log(tmp_path / "a/train_log.csv")

    out = tmp_path / "b"
    with monkeypatch.context() as mp:
        if how == "crash":  # a hard failure after iteration 5: resume from the periodic checkpoint at 4
            crash_after(mp, 5)
            with pytest.raises(RuntimeError):
                _tiny().train(pairs, [], out, seed=7, progress=False)
            assert latest_state(out).name == "state_00000004.pt"
        else:  # Ctrl-C in the middle of iteration 3 (checkpoints every 4): the last completed one is saved
            calls = {"n": 0}
            real = adapter_mod.quantize_ste

            def interrupt(x):
                calls["n"] += 1
                if calls["n"] == 3:
                    raise KeyboardInterrupt
                return real(x)
            mp.setattr(adapter_mod, "quantize_ste", interrupt)
            with pytest.raises(KeyboardInterrupt):
                _tiny(checkpoint_every=4).train(pairs, [], out, seed=7, progress=False)
            assert latest_state(out).name == "state_00000002.pt"
    resumed = _tiny(checkpoint_every=4 if how == "ctrl_c" else 2)
    resumed.setup(torch.device("cpu"))
    got = _weights(resumed.train(pairs, [], out, seed=7, progress=False))
    assert list(got) == list(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    log = _log(out / "train_log.csv")
    assert [r["iteration"] for r in log] == [str(i) for i in range(1, 7)]
    assert [r["loss"] for r in log] == [r["loss"] for r in ref_log]
    assert [r["lr"] for r in log] == ["0.0002"] * 3 + ["0.0001"] * 3  # per-iteration milestone at 3
    # a finished training run is not repeated
    with monkeypatch.context() as mp:
        mp.setattr(CropSampler, "next_batch", lambda self: pytest.fail("trained again"))
        assert _tiny().train(pairs, [], out, seed=7, progress=False).name == "model_final.pt"
    assert _log(out / "train_log.csv") == log


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    target = tmp_path / "state_00000002.pt"
    save_torch({"x": torch.ones(3)}, target)
    good = target.read_bytes()

    import errno

    import bench.fsutil

    class Torn:   # the disk fills up half-way through the checkpoint's bytes
        def __init__(self, path, mode):
            self.f = open(path, mode)

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    with monkeypatch.context() as mp:
        mp.setattr(bench.fsutil, "open", Torn, raising=False)
        with pytest.raises(BenchError, match="state_00000002.pt.*no space left"):
            save_torch({"x": torch.zeros(3)}, target)
        assert target.read_bytes() == good  # the old checkpoint is untouched
        with pytest.raises(BenchError):
            save_torch({"x": torch.zeros(3)}, tmp_path / "state_00000004.pt")
    assert not (tmp_path / "state_00000004.pt").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary left behind


def test_one_way_variant_has_no_backward_term(tmp_path, rng):
    pairs = _png_pairs(tmp_path, rng, [(16, 16)])
    for variant, expect in (("one_way", False), ("full", True)):
        m = DSNMethod(_cfg(variant=variant, n_blocks=1, crop=16, iterations=2, checkpoint_every=0))
        m.setup(torch.device("cpu"))
        m.train(pairs, [], tmp_path / variant, seed=0, progress=False)
        rows = _log(tmp_path / variant / "train_log.csv")
        assert ("loss_backward" in rows[0]) is expect
        if not expect:
            assert all(r["loss"] == r["loss_forward"] for r in rows)
        assert m.provenance()["backward_loss"] is expect
        assert m.config.variant == "custom"  # n_blocks=1 is not a preset (the label is always truthful)


# ------------------------------------------------------------------------------------------------ adapter
def test_every_variant_preset_builds_and_runs():
    assert set(VARIANTS) == set(TABLE2) and len(VARIANTS) == 12
    x = torch.rand(1, 3, 19, 23, generator=torch.Generator().manual_seed(0))
    for name in [*VARIANTS, *ALT_VARIANTS]:
        m = DSNMethod(_cfg(variant=name))
        m.setup(torch.device("cpu"))
        y = m.enhance(x)
        assert y.shape == x.shape and torch.isfinite(y).all(), name
        assert m.config.variant == name and m.provenance()["variant"] == name
    assert DSNMethod(_cfg(variant="four_ib")).config.n_blocks == 4
    # the same rows as plain options are labelled with their preset; other combinations are "custom"
    assert _cfg(subnet="chain").variant == "no_rl"
    assert _cfg(subnet="chain", n_blocks=4).variant == "custom"
    with pytest.raises(BenchError, match="variant no_rl sets subnet"):
        _cfg(variant="no_rl", subnet="dense")
    with pytest.raises(BenchError, match="did you mean"):
        _cfg(variant="one_wya")
    with pytest.raises(BenchError, match="rounds"):
        _cfg(subnet="dense", rounds=2)


def test_inference_option_picks_the_path_and_is_recorded():
    x = torch.rand(1, 3, 11, 13, generator=torch.Generator().manual_seed(2))
    fast, plain = DSNMethod(_cfg()), DSNMethod(_cfg(inference="plain"))
    on, off = ({"inplace": v, "channels_last": v, "fused_conv_prelu": v} for v in (True, False))
    fast_path, plain_path = (m.setup(torch.device("cpu"))["inference_path"] for m in (fast, plain))
    assert "allocator" in fast_path and "allocator" in plain_path        # bench/dsn/allocator.py
    assert {k: v for k, v in fast_path.items() if k != "allocator"} == on
    assert {k: v for k, v in plain_path.items() if k != "allocator"} == off
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in fast.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    plain.model.load_state_dict(fast.model.state_dict())
    ref = plain.model.enhance(x)
    assert (ref - plain.model.reconstruct(x)).abs().max() > 1e-2        # the blocks act
    assert (fast.model.enhance(x) - ref).abs().max() < 1e-5 * ref.abs().max()
    assert "inference" in DSNMethod.test_time_options                   # switching it never retrains
    with pytest.raises(BenchError, match="inference path of ours"):
        _cfg(inference="turbo")


def test_official_layout_and_own_checkpoints_load(tmp_path):
    from bench.dsn.official import export_official_state_dict

    torch.manual_seed(0)
    src = DSNMethod(_cfg())
    src.setup(torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in src.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
    path = tmp_path / "fiveK_G.pth"
    torch.save(export_official_state_dict(src.model), path)
    x = torch.rand(1, 3, 9, 13)
    torch.manual_seed(5)  # a different random init that the load must overwrite
    dst = DSNMethod(_cfg())
    prov = dst.setup(torch.device("cpu"), path)
    assert torch.equal(dst.enhance(x), src.enhance(x))
    assert prov["weights_kind"] == "official_state_dict" and prov["encoder_kind"] == "dsn_checkpoint"
    assert prov["encoder"] == "fallback" and prov["faithful"] is False  # recognised by the tensors' hash
    # a structure that cannot hold it fails in one line
    with pytest.raises(BenchError) as ei:
        DSNMethod(_cfg(n_blocks=4)).setup(torch.device("cpu"), path)
    assert "\n" not in str(ei.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BenchError, match="not a loadable"):
        DSNMethod(_cfg()).setup(torch.device("cpu"), junk)
    other = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(2)}, other)
    with pytest.raises(BenchError, match="neither a checkpoint of ours nor"):
        DSNMethod(_cfg()).setup(torch.device("cpu"), other)


def test_end_to_end_smoke_run_records_encoder_and_training():
    from bench.run import RunSpec, execute

    result = execute(RunSpec("ours", "demo", profile="smoke", limit=1, progress=False))
    cfg = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    proto = cfg["protocol"]
    assert cfg["method"] == "ours" and cfg["smoke"] is True
    assert proto["encoder"] == "fallback" and proto["encoder_kind"] == "fallback_hadamard_parseval"
    assert len(proto["encoder_tensors_sha256"]) == 64 and proto["faithful"] is False
    assert proto["variant"] == "full" and cfg["config"]["variant"] == "full"
    assert cfg["config"]["encoder_tensors"].startswith("fallback:")
    assert cfg["weights"]["source"] == "trained" and proto["weights_kind"] == "bench_checkpoint"
    assert proto["trained"]["iteration"] == 3 and proto["trained"]["schedule"]["n_train"] == 5
    train_dir = type(result.run_dir)(cfg["weights"]["train_run"])
    assert (train_dir / "DONE").exists() and len(_log(train_dir / "train_log.csv")) == 3
    assert cfg["trainable_parameters"] == 11_559_624  # used by the forward pass (soca excluded)
    metrics = {r["metric"]: float(r["mean"]) for r in result.metrics}
    assert np.isfinite(metrics["psnr"]) and 0 < metrics["ssim"] <= 1
    assert dataclasses.asdict(DSNMethod(_cfg()).config)["variant"] == "full"

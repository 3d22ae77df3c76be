"""Training speed options (bench/train_speed.py) on CPU: the same training, recorded, refused on resume.

Measured here (torch 2.14 CPU, 1 thread, DSN n_blocks=1, 16² crops, 4 iterations):
- loader_workers > 0: batches and trained weights bit-identical to the serial sampler;
- optimizer_impl=foreach: bit-identical to torch's default Adam loop on CPU; fused: runs on CPU, not
  bit-identical (max |Δw| 1.9e-9 after 4 steps; logged losses equal to their 6 significant digits);
- channels_last_train: not bit-identical (other oneDNN kernels): max |Δw| 5.2e-7 after 4 steps, logged losses
  equal to 6 significant digits (asserted: weights within 1e-5, losses within 1e-5 relative);
- compile on CPU: falls back to eager (recorded), so the weights are those of compile=off.
"""

import csv
import json
import logging

import numpy as np
import pytest
import torch

from bench.dsn.adapter import DSNMethod
from bench.errors import BenchError
from bench.methods.base import build_config
from bench.train_speed import PrefetchSampler, TrainSpeed, compile_unavailable
from bench.training import CropSampler, TrainSettings, WholeImageSampler, latest_state
from train_pairs import ArrayPair, crash_after, png_pairs

torch.set_num_threads(1)


def _pairs(rng, sizes=((20, 28), (18, 18), (26, 21), (30, 17), (19, 33))):
    return [ArrayPair(f"p{i}", rng.integers(0, 256, (*s, 3), dtype=np.uint8),
                      rng.integers(0, 256, (*s, 3), dtype=np.uint8)) for i, s in enumerate(sizes)]


def _same(a, b):
    return torch.equal(a.low, b.low) and torch.equal(a.high, b.high) and a.ids == b.ids


# ------------------------------------------------------------------------------------------------ loader
@pytest.mark.parametrize("workers", [1, 3])
def test_prefetch_gives_the_serial_batches_and_states(rng, workers):
    pairs = _pairs(rng)
    serial = CropSampler(pairs, crop=16, batch=2, seed=5)
    fast = PrefetchSampler(CropSampler(pairs, crop=16, batch=2, seed=5), workers)
    states = []
    for _ in range(13):                          # several epochs of ceil(5/2) batches
        assert fast.state_dict()["pos"] == serial.state_dict()["pos"]
        s_ref, s_got = serial.state_dict(), fast.state_dict()
        assert torch.equal(s_ref["generator"], s_got["generator"]) and s_ref["perm"] == s_got["perm"]
        states.append(s_got)
        assert _same(serial.next_batch(), fast.next_batch())
    # resume from a state taken mid-way (what a checkpoint holds), on a fresh prefetching sampler
    again = PrefetchSampler(CropSampler(pairs, crop=16, batch=2, seed=99), workers)
    again.load_state_dict(states[7])
    replay = CropSampler(pairs, crop=16, batch=2, seed=99)
    replay.load_state_dict(states[7])
    for _ in range(6):
        assert _same(replay.next_batch(), again.next_batch())
    # closing rewinds the drawn-ahead batches: the wrapped sampler is where the serial one is
    fast.close()
    assert _same(serial.next_batch(), fast.sampler.next_batch())
    assert len(fast) == 5 and fast.crop == 16 and fast.describe()["batch"] == 2


def test_prefetch_of_a_sampler_without_plans_is_serial_too(rng):
    pairs = [ArrayPair(f"w{i}", rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
                       rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)) for i in range(3)]
    serial = WholeImageSampler(pairs, 1, seed=2, flips=True)
    fast = PrefetchSampler(WholeImageSampler(pairs, 1, seed=2, flips=True), 2)
    assert not fast.planned
    for _ in range(7):
        state = fast.state_dict()
        assert state["pos"] == serial.state_dict()["pos"] and state["epoch"] == serial.state_dict()["epoch"]
        assert _same(serial.next_batch(), fast.next_batch())
    fast.close()
    assert _same(serial.next_batch(), fast.sampler.next_batch())


# ------------------------------------------------------------------------------------------------ DSN runs
def _cfg(**sets):
    base = dict(n_blocks=1, crop=16, iterations=4, milestones="2", checkpoint_every=2)
    base.update(sets)
    return build_config(DSNMethod, "smoke", {k: str(v) for k, v in base.items()}, "demo")


def _train(tmp_path, name, pairs, **sets):
    m = DSNMethod(_cfg(**sets))
    m.setup(torch.device("cpu"))
    path = m.train(pairs, [], tmp_path / name, seed=3, progress=False)
    weights = torch.load(path, map_location="cpu", weights_only=True)["model"]
    with open(tmp_path / name / "train_log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    settings = json.loads((tmp_path / name / "train_settings.json").read_text())
    return weights, log, settings


@pytest.fixture(scope="module")
def disk_pairs(tmp_path_factory):
    return png_pairs(tmp_path_factory.mktemp("pairs"), [(20, 28), (18, 18), (26, 21)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, disk_pairs):
    return _train(tmp_path_factory.mktemp("ref"), "ref", disk_pairs)


def _max_diff(a, b):
    assert list(a) == list(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_default_settings_record_everything_off(reference):
    _, log, settings = reference
    assert settings["speed"] == {"channels_last": False, "compile": "off", "compiled": False,
                                 "optimizer_impl": "default", "loader_workers": 0, "tf32": False}
    assert len(log) == 4


def test_loader_workers_train_bit_identically(tmp_path, disk_pairs, reference):
    ref_w, ref_log, _ = reference
    w, log, settings = _train(tmp_path, "w2", disk_pairs, loader_workers=2)
    assert settings["speed"]["loader_workers"] == 2 and settings["settings"]["loader_workers"] == 2
    assert _max_diff(w, ref_w) == 0.0
    assert [r["loss"] for r in log] == [r["loss"] for r in ref_log]


def test_loader_workers_resume_exactly_after_a_crash(tmp_path, disk_pairs, reference, monkeypatch):
    ref_w, ref_log, _ = reference
    with monkeypatch.context() as mp:
        crash_after(mp, 3)
        with pytest.raises(RuntimeError):
            _train(tmp_path, "crash", disk_pairs, loader_workers=3)
    assert latest_state(tmp_path / "crash").name == "state_00000002.pt"
    w, log, settings = _train(tmp_path, "crash", disk_pairs, loader_workers=3)
    assert settings["resumed_from"].endswith("state_00000002.pt")
    assert _max_diff(w, ref_w) == 0.0
    assert [r["loss"] for r in log] == [r["loss"] for r in ref_log]


def test_optimizer_impls_against_the_default_adam(tmp_path, disk_pairs, reference):
    ref_w, ref_log, _ = reference
    w, log, settings = _train(tmp_path, "foreach", disk_pairs, optimizer_impl="foreach")
    assert settings["speed"]["optimizer_impl"] == "foreach"
    assert _max_diff(w, ref_w) == 0.0                         # CPU: bit-identical to the for-loop Adam
    w, log, settings = _train(tmp_path, "fused", disk_pairs, optimizer_impl="fused")
    assert "optimizer_fallback" not in settings["speed"]      # torch >= 2.4 has a fused CPU Adam
    assert 0 < _max_diff(w, ref_w) < 1e-5                      # measured 1.9e-9: last float bits differ
    assert [float(r["loss"]) for r in log] == pytest.approx([float(r["loss"]) for r in ref_log], rel=1e-6)


def test_fused_adam_refused_by_torch_falls_back_to_foreach(monkeypatch, caplog):
    real = torch.optim.Adam

    def adam(params, fused=None, **kw):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported "
                               "devices")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", adam)
    speed = TrainSpeed(TrainSettings(iterations=1, lr=0.1, optimizer_impl="fused"), "cpu")
    with caplog.at_level(logging.WARNING, logger="bench.train_speed"):
        opt = speed.adam([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    assert opt.defaults["foreach"] is True
    assert speed.describe()["optimizer_fallback"].startswith("fused Adam refused on cpu (`fused=True` requires")
    assert "foreach used" in caplog.text


def test_channels_last_training_matches_nchw_to_float_tolerance(tmp_path, disk_pairs, reference):
    ref_w, ref_log, _ = reference
    w, log, settings = _train(tmp_path, "cl", disk_pairs, channels_last_train="true")
    assert settings["speed"]["channels_last"] is True
    got, want = [float(r["loss"]) for r in log], [float(r["loss"]) for r in ref_log]
    assert got == pytest.approx(want, rel=1e-5)
    assert _max_diff(w, ref_w) < 1e-5
    # the weights file loads into a plain NCHW model, and inference is back on the usual path
    m = DSNMethod(_cfg(channels_last_train="true"))
    m.setup(torch.device("cpu"), tmp_path / "cl" / "model_final.pt")
    assert m.enhance(torch.rand(1, 3, 9, 11)).shape == (1, 3, 9, 11)


def test_compile_and_tf32_on_cpu_fall_back_and_are_recorded(tmp_path, disk_pairs, reference, caplog):
    ref_w, _, _ = reference
    assert compile_unavailable(torch.device("cpu")).startswith("compile is used on CUDA only")
    with caplog.at_level(logging.WARNING, logger="bench.train_speed"):
        w, _, settings = _train(tmp_path, "compile", disk_pairs, compile="max-autotune", tf32="true")
    speed = settings["speed"]
    assert speed["compile"] == "max-autotune" and speed["compiled"] is False
    assert speed["compile_fallback"] == "compile is used on CUDA only; on cpu the step runs eagerly"
    assert speed["tf32"] is True and speed["tf32_note"] == "tf32 has no effect on cpu"
    assert "compile=max-autotune: compile is used on CUDA only" in caplog.text
    assert _max_diff(w, ref_w) == 0.0                          # eager, and TF32 means nothing on CPU


def test_bf16_with_channels_last_and_loader_runs_on_cpu(tmp_path, disk_pairs):
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.conv2d(torch.rand(1, 2, 4, 4), torch.rand(2, 2, 3, 3))
    except RuntimeError as e:
        pytest.skip(f"no CPU bf16 autocast here: {e}")
    _, log, settings = _train(tmp_path, "bf16", disk_pairs, amp="bf16", channels_last_train="true", loader_workers=1)
    assert settings["settings"]["amp"] == "bf16" and all(np.isfinite(float(r["loss"])) for r in log)


# ------------------------------------------------------------------------------------------------ identity
def test_options_are_part_of_the_identity_only_when_on():
    plain = TrainSettings(iterations=3, lr=0.1)
    assert not {"channels_last", "compile", "optimizer_impl", "loader_workers", "tf32"} & set(plain.identity())
    for key, value in (("channels_last", True), ("compile", "default"), ("optimizer_impl", "foreach"),
                       ("loader_workers", 2), ("tf32", True)):
        ident = TrainSettings(iterations=3, lr=0.1, **{key: value}).identity()
        assert ident[key] == value and ident != plain.identity()
    for bad, match in (({"compile": "fast"}, "unknown compile mode"), ({"optimizer_impl": "sgd"}, "optimizer_impl"),
                       ({"loader_workers": -1}, "loader_workers must be"), ({"loader_workers": True}, "integer")):
        with pytest.raises(BenchError, match=match):
            TrainSettings(iterations=3, lr=0.1, **bad)
    for key, raw, match in (("compile", "fast", "unknown compile mode of ours"),
                            ("optimizer_impl", "fuse", "did you mean 'fused'"),
                            ("loader_workers", "99", "ours: loader_workers must be"),
                            ("channels_last_train", "maybe", "channels_last_train")):
        with pytest.raises(BenchError, match=match):
            _cfg(**{key: raw})


@pytest.mark.parametrize("option", [("channels_last_train", "true"), ("loader_workers", "2"),
                                    ("optimizer_impl", "fused"), ("compile", "default"), ("tf32", "true")])
def test_resume_with_another_speed_setting_is_refused(tmp_path, disk_pairs, monkeypatch, option):
    with monkeypatch.context() as mp:
        crash_after(mp, 2)
        with pytest.raises(RuntimeError):
            _train(tmp_path, "run", disk_pairs)
    assert latest_state(tmp_path / "run").name == "state_00000002.pt"
    with pytest.raises(BenchError, match="written with other training settings"):
        _train(tmp_path, "run", disk_pairs, **dict([option]))


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_speed_options_keep_the_losses(tmp_path, disk_pairs):
    from bench.perf_cuda import paper_step

    results = {}
    for name, opts in (("fp32", {}), ("cl", {"channels_last": True}), ("fused", {"optimizer_impl": "fused"})):
        step, _ = paper_step(torch.device("cuda"), crop=32, n_blocks=1, **opts)
        results[name] = [step() for _ in range(3)]
    for name in ("cl", "fused"):
        assert results[name] == pytest.approx(results["fp32"], rel=1e-4), name


# ------------------------------------------------------------------------------------------------ gpu-bench
def test_gpu_bench_cpu_smoke_runs_every_section(tmp_path, monkeypatch, capsys):
    from bench import perf_cuda
    from bench.cli import main

    monkeypatch.setitem(perf_cuda.CONFIGS, "cpu", {**perf_cuda.CONFIGS["cpu"], "crop": 12, "n_blocks": 1,
                                                   "steps": 2, "size": (16, 24), "accuracy_crop": 12,
                                                   "accuracy_iters": 1, "long_steps": 2})
    assert main(["perf", "gpu-bench", "--cpu-smoke"]) == 0
    res = json.loads((tmp_path / "results/perf/dsn_cuda_cpu_smoke.json").read_text())
    assert res["cpu_smoke"] is True and not res.get("errors") and not res.get("skipped")
    assert set(res["sections"]) == {"steps", "enhance", "memory", "accuracy", "compile", "long"}
    steps = res["steps"]
    assert steps["fp32"]["loss_rel_diff_vs_fp32"] == 0.0 and steps["tf32"] == {"skipped": "TF32 exists on CUDA only"}
    assert steps["fp32+cl"]["loss_rel_diff_vs_fp32"] < 1e-5 and 0 < steps["bf16"]["loss_rel_diff_vs_fp32"] < 0.05
    compiled = [n for n in steps if n.endswith("+compile")]           # the two fastest eager settings, compiled
    assert len(compiled) == 2 and all(steps[n]["skipped"].startswith("compile is used on CUDA only") for n in compiled)
    assert res["enhance"]["fp32"]["psnr_8bit_vs_fp32_db"]["photo"] == float("inf")
    assert res["enhance"]["bf16"]["psnr_8bit_vs_fp32_db"]["photo"] < float("inf")
    mem = res["memory"]
    assert "skipped" in mem or (set(mem) == {"full", "blocks", "reversible"}
                                and mem["blocks"]["loss_rel_diff_vs_full"] == 0)
    acc = res["accuracy"]
    assert acc["n_test"] == 2 and acc["iterations"] == 1 and np.isfinite(acc["delta_psnr_bf16_minus_fp32_db"])
    assert res["long"]["steps_measured"] == 2 and res["long"]["setting"] in steps
    assert res["projection"]["lol"]["iterations"] == 50_000 and res["projection"]["fivek"]["iterations"] == 450_000
    md = (tmp_path / "results/perf/dsn_cuda_cpu_smoke.md").read_text()
    assert "**CPU SMOKE RUN**" in md and "not measurements" in md and "| fp32+cl |" in md
    assert not (tmp_path / "results/perf/dsn_cuda_bench.json").exists()


def test_gpu_bench_needs_cuda_or_the_smoke_flag(monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["perf", "gpu-bench"]) == 2
    assert "needs a CUDA device; use --cpu-smoke" in capsys.readouterr().err
    assert main(["perf", "gpu-bench", "--cpu-smoke", "--sections", "steps,speed"]) == 2
    assert "unknown gpu-bench section" in capsys.readouterr().err

import csv
import json
import os
import stat

import pytest
import yaml

from bench import registry
from bench.cli import main
from bench.data.manifest import load_manifest
from bench.data.prepare import prepare
from bench.errors import BenchError
from bench.evaluate import rescore
from bench.imageio import read_rgb
from bench.paths import results_root
from bench.run import RunSpec, execute
from conftest import independent_psnr, independent_ssim


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_identity_on_lol_eval15_matches_the_paper_formula(shared_data):
    prepare("lol-485-15", shared_data / "lol_v1", split="test", progress=False)
    result = execute(RunSpec("identity", "lol-485-15", progress=False))
    rows = _rows(result.run_dir / "per_image.csv")
    assert len(rows) == 15
    m = load_manifest("lol-485-15")
    for r in rows:
        low = read_rgb(shared_data / f"lol_v1/eval15/low/{r['id']}.png")
        high = read_rgb(shared_data / f"lol_v1/eval15/high/{r['id']}.png")
        assert float(r["psnr"]) == pytest.approx(independent_psnr(low, high), abs=1e-6)
        assert float(r["ssim"]) == pytest.approx(independent_ssim(low, high), abs=1e-6)
        assert (r["height"], r["width"]) == ("400", "600")
    summary = {r["metric"]: r for r in _rows(result.run_dir / "metrics.csv")}
    assert float(summary["psnr"]["mean"]) == pytest.approx(sum(float(r["psnr"]) for r in rows) / 15, abs=1e-9)
    cfg = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert cfg["protocol"]["split_fingerprint"] == m.fingerprint("test") and cfg["smoke"] is False


def test_run_directory_layout_and_cache_reuse(fake_methods):
    first = execute(RunSpec("gain", "demo", progress=False))
    d = first.run_dir
    assert {p.name for p in d.iterdir()} >= {"config.yaml", "env.json", "per_image.csv", "metrics.csv", "outputs",
                                             "log.txt", "DONE", "enhance.csv"}
    assert sorted(p.name for p in (d / "outputs").iterdir()) == ["mpl-grace_hopper.png", "skimage-coffee.png"]
    assert list(_rows(d / "per_image.csv")[0]) == ["id", "height", "width", "runtime_ms", "device", "tiled",
                                                   "fallback", "output_sha256", "gt_sha256", "psnr", "ssim"]
    assert {(r["tiled"], r["fallback"]) for r in _rows(d / "per_image.csv")} == {("0", "none")}
    env = json.loads((d / "env.json").read_text())
    assert env["dataset_fingerprint"] == load_manifest("demo").fingerprint("test")
    assert env["metric_versions"] == {"psnr": 1, "ssim": 1} and env["packages"]["torch"]
    calls = fake_methods.Gain.calls
    again = execute(RunSpec("gain", "demo", progress=False))
    assert again.reused and again.run_dir == d and fake_methods.Gain.calls == calls
    other = execute(RunSpec("gain", "demo", overrides={"gain": "3"}, progress=False))
    assert other.run_dir != d and not other.reused
    assert execute(RunSpec("gain", "demo", seed=1, progress=False)).run_dir not in (d, other.run_dir)
    assert execute(RunSpec("gain", "demo", force=True, progress=False)).reused is False


def test_interrupted_run_resumes_where_it_stopped(fake_methods):
    with pytest.raises(KeyboardInterrupt):
        execute(RunSpec("gain", "demo", overrides={"fail_after": "1"}, progress=False))
    (run_dir,) = list((results_root() / "runs/demo/gain").iterdir())
    assert not (run_dir / "DONE").exists()
    assert len(_rows(run_dir / "enhance.csv")) == 1
    # resume: the same identity must not recompute the finished image (the failure counter keeps counting)
    fake_methods.Gain.calls = -100
    result = execute(RunSpec("gain", "demo", overrides={"fail_after": "1"}, progress=False))
    assert result.run_dir == run_dir and (run_dir / "DONE").exists()
    assert fake_methods.Gain.calls == -99
    assert len(_rows(run_dir / "per_image.csv")) == 2


def test_limit_marks_smoke_and_eval_adds_columns(fake_methods):
    result = execute(RunSpec("gain", "demo", limit=1, progress=False))
    cfg = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert cfg["smoke"] is True and cfg["limit"] == 1 and cfg["identity"]["ids"] == ["skimage-coffee"]
    before = _rows(result.run_dir / "per_image.csv")
    rescore(result.run_dir, ["psnr_y", "psnr_gtmean"], progress=False)
    after = _rows(result.run_dir / "per_image.csv")
    assert [r["psnr"] for r in after] == [r["psnr"] for r in before]
    assert {"psnr_y", "psnr_gtmean"} <= set(after[0])
    assert {r["metric"] for r in _rows(result.run_dir / "metrics.csv")} == {"psnr", "ssim", "psnr_y", "psnr_gtmean"}


def test_trainable_method_trains_once_then_reuses_weights(fake_methods):
    r1 = execute(RunSpec("fitgain", "demo", profile="smoke", progress=False))
    assert fake_methods.FitGain.trained == 1
    cfg = yaml.safe_load((r1.run_dir / "config.yaml").read_text())
    assert cfg["weights"]["source"] == "trained" and len(cfg["weights"]["sha256"]) == 64
    execute(RunSpec("fitgain", "demo", profile="smoke", split="val", progress=False))
    assert fake_methods.FitGain.trained == 1  # same training identity: weights reused
    psnr_trained = float(_rows(r1.run_dir / "metrics.csv")[0]["mean"])
    psnr_input = float(_rows(execute(RunSpec("identity", "demo", progress=False)).run_dir / "metrics.csv")[0]["mean"])
    assert psnr_trained > psnr_input + 3


def test_bad_options_and_names_fail_cleanly(fake_methods, capsys):
    for argv, pattern in [
        (["run", "--method", "gian", "--dataset", "demo"], "did you mean 'gain'"),
        (["run", "--method", "gain", "--dataset", "dmeo"], "did you mean 'demo'"),
        (["run", "--method", "gain", "--dataset", "demo", "--set", "gian=2"], "did you mean 'gain'"),
        (["run", "--method", "gain", "--dataset", "demo", "--set", "gain=abc"], "expected float"),
        (["run", "--method", "gain", "--dataset", "demo", "--metrics", "psnr", "ssmi"], "did you mean 'ssim'"),
        (["run", "--method", "gain", "--dataset", "demo", "--split", "tset"], "did you mean 'test'"),
        (["run", "--method", "gain", "--dataset", "demo", "--weights", "/nonexistent.pt"], "does not exist"),
    ]:
        assert main(["-q", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert pattern in err and err.count("\n") == 1, (argv, err)


def test_unwritable_results_folder(fake_methods, bench_env, capsys):
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions; checked by the read-only-file case below")
    results = bench_env / "results"
    results.mkdir()
    results.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert main(["-q", "run", "--method", "gain", "--dataset", "demo"]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        results.chmod(stat.S_IRWXU)


def test_results_path_that_is_a_file(fake_methods, bench_env, capsys, monkeypatch):
    blocker = bench_env / "blocked"
    blocker.write_text("a file where the results folder should be")
    monkeypatch.setenv("BENCH_RESULTS", str(blocker))
    assert main(["-q", "run", "--method", "gain", "--dataset", "demo"]) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and err.count("\n") == 1


def test_corrupt_dataset_file_is_reported(fake_methods, capsys):
    execute(RunSpec("identity", "demo", progress=False))
    m = load_manifest("demo")
    target = m.root / "low/skimage-coffee.png"
    target.write_bytes(target.read_bytes()[:100])
    from bench.data.manifest import locked
    from bench.run import verify_or_fail

    with pytest.raises(BenchError, match="checksum mismatch"):
        verify_or_fail(locked(m), locked(m).split("test"), progress=False)
    # a demo run rebuilds its damaged files before running
    assert main(["-q", "run", "--method", "gain", "--dataset", "demo"]) == 0


def test_size_mismatch_in_a_pair_is_refused(fake_methods, bench_env, rng):
    import numpy as np

    from bench.imageio import write_png

    low, high = bench_env / "u/low", bench_env / "u/high"
    write_png(low / "a.png", rng.integers(0, 256, (12, 14, 3), dtype=np.uint8))
    write_png(high / "a.png", rng.integers(0, 256, (12, 14, 3), dtype=np.uint8))
    assert main(["-q", "data", "index", "mine", "--low", str(low), "--high", str(high)]) == 0
    # the user swaps in a differently sized reference after indexing: the checksum catches it first
    write_png(high / "a.png", rng.integers(0, 256, (12, 13, 3), dtype=np.uint8))
    with pytest.raises(BenchError, match="checksum mismatch"):
        execute(RunSpec("gain", "mine", progress=False))


def test_per_image_records_and_ground_truth_oracle_hooks(fake_methods, monkeypatch):
    import fake_methods as fm

    class Recorder(fm.Gain):
        name = "recorder"

        def enhance(self, low, reference=None):
            self.seen = None if reference is None else float(reference.mean())
            return low

        def image_record(self):
            return {"reference_mean": self.seen}

    class Oracle(Recorder):
        name = "oracle"
        needs_reference_at_test = True

    fm.Recorder, fm.Oracle = Recorder, Oracle
    monkeypatch.setitem(registry.METHODS, "recorder", "fake_methods:Recorder")
    monkeypatch.setitem(registry.METHODS, "oracle", "fake_methods:Oracle")
    plain = execute(RunSpec("recorder", "demo", progress=False)).run_dir
    rec = json.loads((plain / "records" / "skimage-coffee.json").read_text())
    assert rec == {"reference_mean": None}  # the reference is withheld unless the method declares the need
    assert "uses_ground_truth_at_test" not in yaml.safe_load((plain / "config.yaml").read_text())["protocol"]
    oracle = execute(RunSpec("oracle", "demo", progress=False)).run_dir
    rec = json.loads((oracle / "records" / "skimage-coffee.json").read_text())
    high = read_rgb(load_manifest("demo").root / "high" / "skimage-coffee.png")
    assert rec["reference_mean"] == pytest.approx(high.mean() / 255, abs=1e-6)
    assert yaml.safe_load((oracle / "config.yaml").read_text())["protocol"]["uses_ground_truth_at_test"] is True
    from bench.report.collect import admitted, read_run

    assert admitted(read_run(plain), "paper") and not admitted(read_run(oracle), "paper")


def test_test_time_options_do_not_retrain_but_training_identity_does(fake_methods, monkeypatch):
    from bench.run import train_identity

    cls = fake_methods.FitGain
    m = load_manifest("demo")
    base = train_identity(cls, cls.Config(), m, 0, "smoke")
    monkeypatch.setattr(cls, "test_time_options", frozenset({"steps"}))
    assert train_identity(cls, cls.Config(steps=9), m, 0, "smoke") == train_identity(cls, cls.Config(), m, 0, "smoke")
    monkeypatch.setattr(cls, "test_time_options", frozenset())
    assert train_identity(cls, cls.Config(steps=9), m, 0, "smoke") != base
    monkeypatch.setattr(cls, "training_identity", lambda self: {"vgg": "imagenet"})
    assert train_identity(cls, cls.Config(), m, 0, "smoke")["extra"] == {"vgg": "imagenet"}

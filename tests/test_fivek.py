import numpy as np
import pytest
import yaml
from PIL import Image

from bench.cli import main
from bench.data.fivek import id_from_name
from bench.data.manifest import load_manifest, lock_path, locked
from bench.data.prepare import prepare
from bench.errors import BenchError
from bench.imageio import read_rgb


def test_ids_from_file_names():
    assert id_from_name("train/raw/000014.jpg") == "000014"
    assert id_from_name("a4514-kme_0258.tif") == "004514"
    assert id_from_name("notes.txt") is None


def _lock(name):
    m = load_manifest(name)
    return yaml.safe_load(lock_path(m).read_text())


def test_distorted_build_from_real_expert_c_exports_is_bit_identical(shared_data, bench_env, monkeypatch):
    root = shared_data / "fivek_samples"
    report = prepare("fivek-distorted", root, split="test", partial=True, jobs=2, progress=False)
    assert report.splits == {"test": 12}
    first = _lock("fivek-distorted")
    assert first["partial"] is True
    assert len(first["operators"]) == 12 and all(len(ops) >= 3 for ops in first["operators"].values())

    m = locked(load_manifest("fivek-distorted"))
    # ProPhoto targets are stored converted to sRGB, sRGB ones untouched
    pp = m.file_path("high/004526.png")
    assert np.array_equal(read_rgb(pp), read_rgb(root / "prophoto_rgb/expertC/a4526-_DGW7879.tif"))
    naive = np.asarray(Image.open(root / "prophoto_rgb/expertC/a4526-_DGW7879.tif").convert("RGB"))
    assert not np.array_equal(read_rgb(pp), naive)
    assert np.array_equal(read_rgb(m.file_path("high/004514.png")),
                          np.asarray(Image.open(root / "expertC/a4514-kme_0258.tif").convert("RGB")))

    monkeypatch.setenv("BENCH_DATA", str(bench_env / "data2"))
    prepare("fivek-distorted", root, split="test", partial=True, jobs=1, progress=False)
    second = _lock("fivek-distorted")
    assert second["splits"] == first["splits"] and second["operators"] == first["operators"]


def test_distorted_without_partial_names_what_is_missing(shared_data):
    with pytest.raises(BenchError, match=r"488 of 500 pairs have no high image .* pass --partial"):
        prepare("fivek-distorted", shared_data / "fivek_samples", split="test", progress=False)


def _dr_folder(root, ids, rng):
    for i in ids:
        for role, gain in (("raw", 0.5), ("target", 1.0)):
            img = (rng.integers(0, 256, (20, 30, 3)) * gain).astype(np.uint8)
            (root / "test" / role).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / "test" / role / f"{i}.jpg", quality=95)


def test_locked_pairs_record_hashes_on_first_use_and_verify_afterwards(tmp_path, rng, capsys):
    root = tmp_path / "C"
    _dr_folder(root, ["004501", "004502", "004503"], rng)
    assert main(["-q", "data", "prepare", "fivek", "--root", str(root), "--split", "test", "--partial"]) == 0
    lock = _lock("fivek")
    assert [p["id"] for p in lock["splits"]["test"]] == ["004501", "004502", "004503"]
    assert all(len(p["low_sha256"]) == 64 for p in lock["splits"]["test"])
    assert main(["-q", "data", "verify", "fivek"]) == 0
    # the user's copy changes after the first use: refused, naming the pair
    Image.fromarray(rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)).save(root / "test/raw/004502.jpg")
    assert main(["-q", "data", "prepare", "fivek", "--root", str(root), "--split", "test", "--partial"]) == 2
    assert "differ from the hashes recorded" in capsys.readouterr().err
    # and a prepared file damaged in place is caught by verify
    m = locked(load_manifest("fivek"))
    m.file_path("low/004503.jpg").write_bytes(b"broken")
    assert main(["-q", "data", "verify", "fivek"]) == 2

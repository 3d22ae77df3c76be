import shutil
import zipfile
from collections import Counter

import numpy as np
import pytest
import yaml

from bench.cli import main
from bench.data import lol
from bench.data.manifest import Manifest, load_manifest, safe_relpath
from bench.data.prepare import prepare
from bench.errors import BenchError
from bench.imageio import write_png
from bench.paths import manifests_root


def test_lol_manifests_regenerate_from_published_checksums(shared_data):
    paper, standard = lol.build(shared_data / "lol_v1/our485_ALL_485_pairs.sha256",
                                shared_data / "lol_v1/eval15/SHA256SUMS")
    for m in (paper, standard):
        committed = yaml.safe_load((manifests_root() / "datasets" / f"{m.name}.yaml").read_text())
        assert committed == yaml.safe_load(yaml.safe_dump(m.to_dict(), sort_keys=False))


@pytest.mark.parametrize("name,sizes", [("lol", (400, 20, 100)), ("lol-485-15", (485, 15, 15))])
def test_lol_splits_keep_identical_ground_truths_together(name, sizes):
    m = load_manifest(name)
    train, val, test = (m.split(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == sizes
    assert {p.id for p in val} <= {p.id for p in train}
    assert not {p.id for p in train} & {p.id for p in test}
    train_gt = {p.high_sha256 for p in train}
    assert not train_gt & {p.high_sha256 for p in test}
    assert {p.id for p in load_manifest("lol-485-15").split("test")} <= {p.id for p in test}
    groups = Counter(p.high_sha256 for p in train + test)
    assert sum(1 for c in groups.values() if c > 1) == 66 and sum(c for c in groups.values() if c > 1) == 152


def test_prepare_standard_test_split_from_real_files(shared_data, bench_env):
    report = prepare("lol-485-15", shared_data / "lol_v1", split="test", progress=False)
    assert report.splits == {"test": 15}
    m = load_manifest("lol-485-15")
    assert all(m.file_path(p.low).is_file() and m.file_path(p.high).is_file() for p in m.split("test"))
    assert main(["-q", "data", "verify", "lol-485-15", "--split", "test"]) == 0


def test_prepare_without_split_names_the_missing_training_pairs(shared_data, bench_env, capsys):
    with pytest.raises(BenchError) as e:
        prepare("lol-485-15", shared_data / "lol_v1", progress=False)
    msg = str(e.value)
    assert "242 of 485 train pairs missing" in msg and "our485/low/5.png" in msg and "our485/high/5.png" in msg
    assert "the 243 present train pairs match their checksums" in msg
    assert "nothing was written" in msg and "\n" not in msg
    assert not (bench_env / "data" / "lol_v1").exists()
    assert main(["-q", "data", "prepare", "lol-485-15", "--root", str(shared_data / "lol_v1")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def _copy_eval15(shared_data, dest):
    shutil.copytree(shared_data / "lol_v1/eval15", dest / "LOLdataset/eval15")
    return dest / "LOLdataset"


def test_tampered_and_unexpected_files_are_refused(shared_data, tmp_path):
    root = _copy_eval15(shared_data, tmp_path / "dl")
    (root / "eval15/high/22.png").write_bytes((root / "eval15/high/22.png").read_bytes()[:-1] + b"\x00")
    with pytest.raises(BenchError, match=r"1 file\(s\) .* differ from the manifest's checksums .*eval15/high/22.png"):
        prepare("lol-485-15", root, split="test", progress=False)
    root = _copy_eval15(shared_data, tmp_path / "dl2")
    shutil.copy(root / "eval15/low/1.png", root / "eval15/low/9999.png")
    with pytest.raises(BenchError, match="unexpected image"):
        prepare("lol-485-15", root, split="test", progress=False)


def test_prepare_reads_the_official_zip_layout(shared_data, tmp_path):
    z = tmp_path / "LOLdataset.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_STORED) as zf:
        for f in sorted((shared_data / "lol_v1/eval15").rglob("*.png")):
            zf.write(f, "LOLdataset/eval15/" + f.relative_to(shared_data / "lol_v1/eval15").as_posix())
    assert prepare("lol-485-15", z, split="test", progress=False).splits == {"test": 15}


def test_manifest_paths_may_not_escape_the_root():
    for bad in ("../etc/passwd", "/abs/file.png", "a/../../b.png"):
        with pytest.raises(BenchError, match="escapes the dataset root"):
            safe_relpath(bad, "m")
    d = {"name": "x", "splits": {"test": [{"id": "1", "low": "../x.png", "high": "h.png"}]}}
    with pytest.raises(BenchError, match="escapes"):
        Manifest.from_dict(d)


def test_unknown_dataset_and_split(capsys):
    with pytest.raises(BenchError, match="did you mean 'lol'"):
        load_manifest("lol1")
    with pytest.raises(BenchError, match="did you mean 'test'"):
        load_manifest("lol").split("tset")


def test_demo_builds_bit_identically(bench_env):
    m = load_manifest("demo")
    report = prepare("demo", None, progress=False)
    assert report.splits == {"train": 5, "val": 1, "test": 2}
    lock = yaml.safe_load((m.root / "demo.lock.yaml").read_text())
    assert lock["matches_reference"] is True
    for split, pairs in m.splits.items():
        for p in pairs:
            from bench.fsutil import sha256_file

            assert sha256_file(m.file_path(p.low)) == p.low_sha256
            assert sha256_file(m.file_path(p.high)) == p.high_sha256


def test_index_pairs_by_stem_and_refuses_bad_folders(tmp_path, rng):
    low, high = tmp_path / "u/low", tmp_path / "u/high"
    imgs = {}
    for stem in ("b", "a", "c"):
        imgs[stem] = rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)
        write_png(low / f"{stem}.png", imgs[stem] // 4)
        write_png(high / f"{stem}.png", imgs[stem])
    assert main(["-q", "data", "index", "mine", "--low", str(low), "--high", str(high)]) == 0
    m = load_manifest("mine")
    assert [p.id for p in m.split("test")] == ["a", "b", "c"]
    assert all(p.high == f"high/{p.id}.png" for p in m.split("test"))
    # an unpaired set
    assert main(["-q", "data", "index", "nogt", "--low", str(low)]) == 0
    assert not load_manifest("nogt").paired
    # a missing partner and a size mismatch
    write_png(low / "d.png", imgs["a"])
    with pytest.raises(BenchError, match="1 low image\\(s\\) without a high partner \\(d\\)"):
        from bench.data.index import index_folder

        index_folder("bad", low, high, progress=False)
    write_png(high / "d.png", imgs["a"][:, :13])
    with pytest.raises(BenchError, match="d: low is 14x12 but high is 13x12"):
        index_folder("bad", low, high, progress=False)

"""``bench weights``: import VGG-16 conv1 / official DSN files, show, verify; manifests/weights.yaml."""

import argparse
import hashlib
import re

import pytest
import torch
import yaml

from bench import weights
from bench.dsn.adapter import DSNMethod
from bench.dsn.encoder import tensor_sha256
from bench.errors import BenchError
from bench.methods.base import build_config
from bench.paths import REPO_ROOT

torch.set_num_threads(1)


def _vgg(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 3, 3, 3, generator=g) * 0.1, torch.randn(64, 64, 3, 3, generator=g) * 0.02


def _torchvision_file(path, w1, w2):
    torch.save({"features.0.weight": w1, "features.0.bias": torch.zeros(64), "features.2.weight": w2,
                "features.2.bias": torch.zeros(64), "features.5.weight": torch.zeros(128, 64, 3, 3)}, path)
    return path


def _caffe_file(path, w1, w2):
    torch.save({"conv1_1.weight": w1, "conv1_1.bias": torch.zeros(64), "conv1_2.weight": w2,
                "conv1_2.bias": torch.zeros(64), "conv2_1.weight": torch.zeros(128, 64, 3, 3)}, path)
    return path


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(capsys, *argv):
    code = weights.main(["weights", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _ours(**sets):
    return DSNMethod(build_config(DSNMethod, "smoke", {k: str(v) for k, v in sets.items()}, "demo"))


def test_import_torchvision_then_caffe_and_runs_use_it(tmp_path, capsys, bench_env):
    tw1, tw2 = _vgg(1)
    tv = _torchvision_file(tmp_path / "vgg16-397923af.pth", tw1, tw2)  # name claims a hash it does not have
    code, out, _ = _run(capsys, "import", "vgg16", tv)
    assert code == 0 and "torchvision_v1" in out and "vgg16.weight" in out  # says which file the paper needs
    rec = yaml.safe_load((bench_env / "data/_weights/vgg16_conv1.yaml").read_text())
    assert rec["kind"] == "torchvision_v1" and rec["source_sha256"] == _sha(tv)
    assert rec["filename_hash_ok"] is False and rec["manifest_id"] == "vgg16_torchvision_v1"
    assert rec["manifest_sha256"] == "MISMATCH" and rec["faithful"] is False
    assert rec["tensors_sha256"] == tensor_sha256(tw1, tw2)

    cw1, cw2 = _vgg(2)
    caffe = _caffe_file(tmp_path / "vgg16.weight", cw1, cw2)
    assert _run(capsys, "import", "vgg16", caffe)[0] == 0
    w1, w2, rec = weights.imported_vgg16()
    assert torch.equal(w1, cw1) and torch.equal(w2, cw2) and rec["kind"] == "caffe_t7"
    assert rec["manifest_sha256"] == "unknown in manifest" and rec["faithful"] is False  # D1: no hash, no claim

    # a run with the default encoder=auto now uses the imported tensors, and says so
    cfg = build_config(DSNMethod, "smoke", {}, "demo")
    assert cfg.encoder_tensors == f"vgg16:caffe_t7:{rec['tensors_sha256']}"
    m = DSNMethod(cfg)
    prov = m.setup(torch.device("cpu"))
    assert prov["encoder"] == "vgg16" and prov["encoder_kind"] == "caffe_t7"
    assert prov["encoder_tensors_sha256"] == rec["tensors_sha256"] and prov["encoder_file_sha256"] == _sha(caffe)
    assert prov["faithful"] is False and "no hash" in prov["faithful_reason"]
    assert torch.equal(m.model.operations[0].haar_weights1, cw1)
    # the training identity changes with the imported tensors; the fallback stays selectable
    assert build_config(DSNMethod, "smoke", {"encoder": "fallback"}, "demo").encoder_tensors.startswith("fallback:")

    code, out, _ = _run(capsys, "show")
    assert code == 0 and rec["tensors_sha256"] in out and _sha(caffe) in out
    code, out, _ = _run(capsys, "verify")
    assert code == 0 and "ok:" in out


def test_faithful_only_when_a_known_hash_matches(tmp_path, capsys, monkeypatch):
    w1, w2 = _vgg(3)
    caffe = _caffe_file(tmp_path / "vgg16.weight", w1, w2)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "weights.yaml").write_text(yaml.safe_dump({"version": 1, "files": {
        "vgg16_caffe_t7": {"filename": "vgg16.weight", "kind": "caffe_t7", "sha256": _sha(caffe),
                           "conv1_tensors_sha256": "unknown"}}}))
    monkeypatch.setenv("BENCH_MANIFESTS", str(manifests))
    assert _run(capsys, "import", "vgg16", caffe)[0] == 0
    prov = _ours().setup(torch.device("cpu"))
    assert prov["faithful"] is True and prov["encoder"] == "vgg16"
    # the same tensors in a torchvision-style file are a substitute, never faithful
    tv = _torchvision_file(tmp_path / "tv.pth", w1, w2)
    assert _run(capsys, "import", "vgg16", tv)[0] == 0
    assert _ours().setup(torch.device("cpu"))["faithful"] is False


def test_encoder_vgg16_needs_an_import():
    with pytest.raises(BenchError, match="bench weights import vgg16"):
        build_config(DSNMethod, "smoke", {"encoder": "vgg16"}, "demo")
    assert build_config(DSNMethod, "smoke", {}, "demo").encoder_tensors.startswith("fallback:")


def test_bad_files_fail_in_one_line(tmp_path, capsys):
    g = torch.Generator().manual_seed(4)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a torch file")
    wrong_keys = tmp_path / "keys.pth"
    torch.save({"layer1.weight": torch.randn(3, 3, generator=g)}, wrong_keys)
    wrong_shape = tmp_path / "shape.pth"
    torch.save({"conv1_1.weight": torch.randn(64, 3, 5, 5, generator=g),
                "conv1_2.weight": torch.randn(64, 64, 3, 3, generator=g)}, wrong_shape)
    not_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], not_dict)
    cases = [
        (("vgg16", tmp_path / "absent.pth"), "not found"),
        (("vgg16", junk), "not a loadable"),
        (("vgg16", wrong_keys), "no VGG-16 conv1 weights"),
        (("vgg16", wrong_shape), r"shape \(64, 3, 5, 5\)"),
        (("vgg16", not_dict), "state dict"),
        (("official", tmp_path / "absent.pth"), "not found"),
        (("official", junk), "not a loadable"),
        (("official", wrong_keys), "lacks tensor operations"),
        (("official", not_dict), "state dict"),
    ]
    for (what, path), pattern in cases:
        code, out, err = _run(capsys, "import", what, path)
        assert code == 2, (what, path)
        assert re.search(pattern, err) and err.count("\n") == 1 and err.startswith("bench: error:"), (what, err)
    assert not (tmp_path / "data/_weights/vgg16_conv1.pt").exists()


def test_import_official_and_verify_detects_changes(tmp_path, capsys, bench_env):
    from bench.dsn.model import DSN
    from bench.dsn.official import export_official_state_dict

    torch.manual_seed(0)
    path = tmp_path / "fiveK_G.pth"
    torch.save(export_official_state_dict(DSN()), path)
    code, out, _ = _run(capsys, "import", "official", path)
    assert code == 0 and "--weights official:ours" in out and "[unverified]" in out
    from bench.official.importer import imports, resolve_official

    rec = imports()[0]
    assert rec["method"] == "ours" and rec["files"][0]["sha256"] == _sha(path)
    assert rec["files"][0]["status"] == "unverified"   # the manifest knows fiveK_G.pth but not its hash
    assert rec["encoder_tensors_sha256"] and rec["faithful_encoder"] is False
    stored, again = resolve_official("official:ours")
    assert again["id"] == rec["id"] and stored.is_file()
    loaded = torch.load(stored, weights_only=True)["model"]
    assert set(loaded) == set(export_official_state_dict(DSN()))   # all 964 official tensors, converted
    # importing it as VGG takes its frozen encoder tensors (kind dsn_checkpoint)
    assert _run(capsys, "import", "vgg16", path)[0] == 0
    assert weights.imported_vgg16()[2]["kind"] == "dsn_checkpoint"
    assert _run(capsys, "verify")[0] == 0
    # a changed file and damaged stored tensors are both reported
    torch.save(export_official_state_dict(DSN(n_blocks=8, subnet="chain")), path)
    code, out, err = _run(capsys, "verify")
    assert code == 2 and "differs from the one recorded" in out and err.count("\n") == 1
    stored = bench_env / "data/_weights/vgg16_conv1.pt"
    w1, w2 = _vgg(9)
    torch.save({"W1": w1, "W2": w2}, stored)
    code, out, err = _run(capsys, "verify")
    assert code == 2 and "does not match its record" in out
    with pytest.raises(BenchError, match="does not match its record"):
        build_config(DSNMethod, "smoke", {}, "demo")


def test_official_import_rejects_a_four_block_file(tmp_path, capsys):
    from bench.dsn.model import DSN
    from bench.dsn.official import export_official_state_dict

    path = tmp_path / "ib4_G.pth"
    torch.save(export_official_state_dict(DSN(n_blocks=4)), path)
    code, _, err = _run(capsys, "import", "official", path)
    assert code == 2 and "lacks tensor operations.5." in err and err.count("\n") == 1


def test_register_builds_parsers_with_the_given_parents():
    root = argparse.ArgumentParser(prog="bench")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
    sub = root.add_subparsers(dest="cmd", required=True)
    weights.register(sub, [quiet])
    args = root.parse_args(["weights", "import", "vgg16", "some.pth", "-q"])
    assert args.what == "vgg16" and [str(f) for f in args.file] == ["some.pth"] and args.quiet and args.fn is weights.cmd_weights
    assert root.parse_args(["weights", "show"]).weights_cmd == "show"
    with pytest.raises(SystemExit):
        root.parse_args(["weights", "import", "resnet", "x.pth"])


def test_manifest_lists_known_files_with_valid_hashes():
    doc = yaml.safe_load((REPO_ROOT / "manifests/weights.yaml").read_text())
    files = doc["files"]
    assert {"vgg16_caffe_t7", "vgg16_torchvision_v1", "dsn_fivek_official"} <= set(files)
    for key, e in files.items():
        for field in ("filename", "kind", "what", "how_to_get", "sha256"):
            assert e.get(field), (key, field)
        assert e["sha256"] == "unknown" or re.fullmatch(r"[0-9a-f]{64}", e["sha256"]), key
    tv = files["vgg16_torchvision_v1"]
    assert tv["filename"] == "vgg16-397923af.pth" and tv["sha256"].startswith("397923af")
    assert files["vgg16_caffe_t7"]["filename"] == "vgg16.weight"

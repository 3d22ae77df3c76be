"""Official checkpoints end to end: the TF bundle reader's checks, the importer's records and manifest labels,
``--weights official:M`` in runs (provenance, the official test pipeline, ``--quantize``) and the reports."""

import shutil

import numpy as np
import pytest
import torch
import yaml

from bench import weights
from bench.errors import BenchError
from bench.official.importer import import_official, imports, resolve_official
from bench.official.tfbundle import TFCheckpointError, masked_crc32c, open_bundle
from bench.run import RunSpec, execute

torch.set_num_threads(1)


def _run(capsys, *argv):
    code = weights.main(["weights", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- the tensor-bundle reader -------------------------------------------------------------------
def test_masked_crc32c_matches_the_leveldb_definition():
    # crc32c("123456789") = 0xE3069283 (RFC 3720 check value); LevelDB's mask rotates right 15 and adds a constant
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_reads_real_checkpoints_with_their_shapes(shared_weights):
    b = open_bundle(shared_weights / "kind/decom_net_train")       # folder -> its 'checkpoint' file
    assert len(b.entries) == 18 and b.num_shards == 1 and not b.missing_shards()
    assert sum(e.numel for e in b.entries.values()) == 235876      # SOURCES.md
    w = b.read("DecomNet/g_conv1_1/weights")
    assert w.dtype == np.float32 and w.shape == (3, 3, 3, 32) and np.isfinite(w).all() and w.std() > 0
    # shard size from the index alone equals the real file's
    assert b.shard_sizes() == {0: (shared_weights / "kind/decom_net_train/model.ckpt.data-00000-of-00001").stat().st_size}
    idx = open_bundle(shared_weights / "white_box/model.ckpt-20000.index")
    assert len(idx.entries) == 240 and idx.entries["OptimizeLoss/beta1_power"].shape == ()


def test_damage_is_caught_by_crc_and_a_missing_shard_is_named(shared_weights, tmp_path):
    src = shared_weights / "kind/decom_net_train"
    shutil.copytree(shared_weights / "kind", tmp_path / "kind")
    folder = tmp_path / "kind/decom_net_train"
    data = folder / "model.ckpt.data-00000-of-00001"
    b = open_bundle(folder)
    e = b.entries["DecomNet/g_conv10/weights"]
    raw = bytearray(data.read_bytes())
    raw[e.offset + 5] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(TFCheckpointError, match=r"tensor DecomNet/g_conv10/weights fails its CRC32C check"):
        open_bundle(folder).read("DecomNet/g_conv10/weights")
    assert open_bundle(folder).read("DecomNet/g_conv1_1/biases").shape == (32,)   # other tensors are intact
    # a flipped byte in the index fails the block checksum
    index = folder / "model.ckpt.index"
    raw = bytearray(index.read_bytes())
    raw[10] ^= 0x40
    index.write_bytes(bytes(raw))
    with pytest.raises(TFCheckpointError, match="fails its CRC32C check"):
        open_bundle(folder)
    # the importer says the same in one line
    with pytest.raises(BenchError, match="model.ckpt.index: block at offset 0 fails its CRC32C"):
        import_official("kind", [folder.parent], dry=True)
    # an index without its shard: the shard's name and expected size
    only = tmp_path / "only_index"
    only.mkdir()
    shutil.copy(src / "model.ckpt.index", only)
    with pytest.raises(TFCheckpointError, match=r"data shard model.ckpt.data-00000-of-00001 is absent; the index "
                                                r"expects 943,504 bytes"):
        open_bundle(only).read_all()
    (tmp_path / "x.index").write_bytes(b"\0" * 64)
    with pytest.raises(TFCheckpointError, match="not a TensorFlow checkpoint index"):
        open_bundle(tmp_path / "x.index")


def test_dry_run_reads_the_index_alone_and_real_import_names_the_shard(shared_weights, capsys):
    code, out, _ = _run(capsys, "import", "official", "--method", "kind", "--dry-run", shared_weights / "kind")
    assert code == 0 and "dry run OK: kind: 68 of our tensors" in out
    assert "model.ckpt.data-00000-of-00001 absent (31,042,956 B expected)" in out
    code, out, err = _run(capsys, "import", "official", "--method", "kind", shared_weights / "kind")
    assert code == 2 and err.count("\n") == 1 and "Restoration_net_train" in err and "31,042,956 bytes" in err
    assert not imports()


# ---- import records and the manifest -------------------------------------------------------------
def test_import_labels_from_the_manifest_and_refuses_wrong_or_altered_files(shared_weights, tmp_path, capsys):
    code, out, _ = _run(capsys, "import", "official", "--method", "zero-dce", shared_weights / "zero_dce/Epoch99.pth")
    assert code == 0 and "[zero-dce-epoch99]" in out and "SICE" in out
    rec = imports()[-1]
    assert rec["verified"] and rec["checkpoint"] == "zero-dce-epoch99" and rec["files"][0]["manifest_id"] == "zero_dce_epoch99"
    assert rec["licence"].startswith("CC BY-NC")
    # a copy with one byte changed (inside the pickle's tensor data) still loads, but is not the manifest's file
    raw = bytearray((shared_weights / "zero_dce/Epoch99.pth").read_bytes())
    raw[-2000] ^= 0x01
    (tmp_path / "Epoch99.pth").write_bytes(bytes(raw))
    code, out, _ = _run(capsys, "import", "official", "--method", "zero-dce", tmp_path / "Epoch99.pth")
    assert code == 0 and "[unverified]" in out
    # a file of another method: the first tensor it lacks is named
    code, _, err = _run(capsys, "import", "official", "--method", "csrnet", shared_weights / "zero_dce/Epoch99.pth")
    assert code == 2 and err.count("\n") == 1 and "lacks tensor" in err
    code, _, err = _run(capsys, "import", "official", "--method", "lime", shared_weights / "zero_dce/Epoch99.pth")
    assert code == 2 and "no official checkpoint" in err
    # official:M is the latest import; the stored conversion is re-hashed before use
    stored, latest = resolve_official("official:zero-dce")
    assert latest["label"] == "unverified"
    stored_first, first = resolve_official(f"official:zero-dce@{rec['id']}")
    assert first["verified"]
    with open(stored_first, "ab") as f:
        f.write(b"x")
    with pytest.raises(BenchError, match="differs from the file written at import"):
        resolve_official(f"official:zero-dce@{rec['id']}")
    with pytest.raises(BenchError, match="no official checkpoint of drbn imported"):
        resolve_official("official:drbn")
    assert _run(capsys, "verify")[0] == 2


# ---- runs with official weights --------------------------------------------------------------------
def test_run_with_official_weights_records_them_and_reports_keep_them_apart(shared_weights, demo, capsys, monkeypatch):
    from baselines.zero_dce.adapter import ZeroDCE
    from bench.imageio import read_rgb, to_tensor
    from bench.report.collect import collect
    from bench.report.official import official_rows
    from bench.report.spec import load_spec

    assert _run(capsys, "import", "official", "--method", "zero-dce", shared_weights / "zero_dce/Epoch99.pth")[0] == 0
    res = execute(RunSpec("zero-dce", "demo", weights="official:zero-dce", progress=False))
    doc = yaml.safe_load((res.run_dir / "config.yaml").read_text())
    assert doc["weights"]["source"] == "official" and doc["weights"]["official"]["checkpoint"] == "zero-dce-epoch99"
    assert doc["weights"]["official"]["verified"] is True
    assert doc["official_test"]["official_quantize"] == "round" and doc["quantize"] == "round"
    assert "quantize" not in doc["identity"]

    # truncation: another run ID, and every saved value is floor(255 * clamp(y)) of the same float output
    trunc = execute(RunSpec("zero-dce", "demo", weights="official:zero-dce", quantize="truncate", progress=False))
    assert trunc.run_dir != res.run_dir
    doc_t = yaml.safe_load((trunc.run_dir / "config.yaml").read_text())
    assert doc_t["identity"]["quantize"] == "truncate" and doc_t["protocol"]["quantisation"].startswith("truncate")
    method = ZeroDCE(ZeroDCE.Config())
    method.setup(torch.device("cpu"), resolve_official("official:zero-dce")[0])
    from bench.run import open_dataset

    m = open_dataset("demo", progress=False)
    pair = m.split("test")[0]
    y = method.enhance(to_tensor(read_rgb(m.file_path(pair.low))))[0].permute(1, 2, 0).numpy()
    saved_t = read_rgb(trunc.run_dir / "outputs" / f"{pair.id}.png")
    saved_r = read_rgb(res.run_dir / "outputs" / f"{pair.id}.png")
    assert np.array_equal(saved_t, np.floor(np.clip(y, 0, 1) * 255).astype(np.uint8))
    assert np.array_equal(saved_r, np.round(np.clip(y, 0, 1) * 255).astype(np.uint8))
    assert (saved_r.astype(int) - saved_t).min() == 0 and (saved_r.astype(int) - saved_t).max() == 1

    # Table 1 never takes them; table1-official does, with the checkpoint's facts
    data = collect(load_spec("table1"), ["demo"], "paper", [0])
    zd = [r for r in data.frame.to_dict("records") if r["row"] == "zero-dce"]
    assert zd and all(np.isnan(r["mean"]) for r in zd)
    rows = official_rows(["demo"])
    assert [(r.method, r.checkpoint, r.quantize, r.flag) for r in rows] == [
        ("zero-dce", "zero-dce-epoch99", "round", ""), ("zero-dce", "zero-dce-epoch99", "truncate", "")]
    means = {r.quantize: r.ours["psnr"] for r in rows}
    assert means["round"] == pytest.approx(float(next(x["mean"] for x in res.metrics if x["metric"] == "psnr")))
    assert means["round"] != means["truncate"]


def test_official_test_overrides_apply_unless_the_user_sets_them(shared_weights, demo, capsys, monkeypatch):
    from baselines.zero_dce.adapter import ZeroDCE
    from baselines.zero_dce.official import layout

    def with_overrides():
        base = layout()
        return type(base)(**{**base.__dict__, "test_overrides": {"lr": "0.123"}})

    monkeypatch.setattr(ZeroDCE, "official_layout", classmethod(lambda cls: with_overrides()))
    assert _run(capsys, "import", "official", "--method", "zero-dce", shared_weights / "zero_dce/Epoch99.pth")[0] == 0
    res = execute(RunSpec("zero-dce", "demo", weights="official:zero-dce", progress=False, limit=1))
    doc = yaml.safe_load((res.run_dir / "config.yaml").read_text())
    assert doc["config"]["lr"] == pytest.approx(0.123) and doc["official_test"]["overrides_applied"] == {"lr": "0.123"}
    res = execute(RunSpec("zero-dce", "demo", weights="official:zero-dce", progress=False, limit=1,
                          overrides={"lr": "0.5"}))
    doc = yaml.safe_load((res.run_dir / "config.yaml").read_text())
    assert doc["config"]["lr"] == pytest.approx(0.5) and doc["official_test"]["overrides_applied"] == {}


def test_manifest_checkpoints_and_published_figures_are_consistent(shared_weights):
    from bench.registry import METHODS
    from bench.report.official import published

    files, groups = weights.manifest_entries(), weights.manifest_checkpoints()
    official = {k: e for k, e in files.items() if e.get("checkpoint")}
    assert {e["checkpoint"] for e in official.values()} == set(groups)
    for key, e in official.items():
        assert e["method"] == groups[e["checkpoint"]]["method"] and e["method"] in METHODS, key
        assert e["role"] in ("state_dict", "index", "data"), key
    for g in groups.values():
        assert g["trained_on"] and g["source_repo"] and g["licence"]
        assert all(str(v).startswith(("yes:", "unknown:")) for v in g["contamination"].values())
    # every file of the shared fixtures that the manifest lists carries the recorded hash
    sums = dict(line.split()[::-1] for line in (shared_weights / "SHA256SUMS").read_text().splitlines())
    listed = {e["sha256"] for e in official.values()}
    assert {sums[p] for p in sums if p.endswith((".pth", ".pt", ".index", "00001"))} <= listed
    for r in published():
        assert r["checkpoint"] in groups and groups[r["checkpoint"]]["method"] == r["method"]
        assert r["metric"] in ("psnr", "ssim") and float(r["value"]) > 0


def test_converted_official_weights_load_into_methods_with_their_own_loader(tmp_path):
    """HDRNet/DeepUPE check a trained structure in their checkpoints; an import carries none and is still loaded."""
    from baselines.hdrnet.adapter import HDRNet
    from bench.methods.base import build_config
    from bench.training import WEIGHTS_FORMAT

    method = HDRNet(build_config(HDRNet, "paper", {}, ""))
    torch.manual_seed(3)
    state = method.build_model().state_dict()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path / "hdrnet-official.pt"
    torch.save({"format": WEIGHTS_FORMAT, "model": state,
                "meta": {"method": "hdrnet", "weights_source": "official", "official": {"label": "x", "files": []}}}, path)
    prov = method.setup(torch.device("cpu"), path)
    assert prov["weights_source"] == "official" and prov["weights_kind"] == "official_import"
    assert all(torch.equal(v, state[k]) for k, v in method.model.state_dict().items())


def test_subnormal_weights_are_flushed_without_changing_outputs(shared_weights, capsys):
    """The released Zero-DCE file holds subnormal weights (x86 computes with them ~50x slower); setup zeroes them,
    records how many, and the official outputs still match."""
    from baselines.zero_dce.adapter import ZeroDCE
    from bench.methods.torch_method import flush_subnormal_

    raw = torch.load(shared_weights / "zero_dce/Epoch99.pth", map_location="cpu", weights_only=True)
    tiny = torch.finfo(torch.float32).tiny
    n_sub = sum(int(((v != 0) & (v.abs() < tiny)).sum()) for v in raw.values())
    assert n_sub > 1000
    assert _run(capsys, "import", "official", "--method", "zero-dce", shared_weights / "zero_dce/Epoch99.pth")[0] == 0
    method = ZeroDCE(ZeroDCE.Config())
    prov = method.setup(torch.device("cpu"), resolve_official("official:zero-dce")[0])
    assert prov["subnormal_values_flushed"] == n_sub
    assert all(not ((p != 0) & (p.abs() < tiny)).any() for p in method.model.parameters())
    ref = np.load(shared_weights / "reference/zero_dce_b.npz")
    y = method.enhance(torch.from_numpy(ref["x"]))
    assert (y - torch.from_numpy(ref["enhance_image"])).abs().max() <= 1e-6
    assert flush_subnormal_(method.model) == 0


def test_dsn_official_import_runs_with_the_file_encoder(tmp_path, capsys):
    from bench.dsn.adapter import DSNMethod
    from bench.dsn.encoder import tensor_sha256
    from bench.dsn.model import DSN
    from bench.dsn.official import export_official_state_dict
    from bench.methods.base import build_config

    torch.manual_seed(5)
    sd = export_official_state_dict(DSN())
    path = tmp_path / "fiveK_G.pth"
    torch.save(sd, path)
    assert _run(capsys, "import", "official", path)[0] == 0
    method = DSNMethod(build_config(DSNMethod, "paper", {}, "fivek"))
    prov = method.setup(torch.device("cpu"), resolve_official("official:ours")[0])
    assert prov["weights_source"] == "official" and prov["encoder_kind"] == "dsn_checkpoint"
    assert prov["encoder_tensors_sha256"] == tensor_sha256(sd["operations.0.haar_weights1"], sd["operations.0.haar_weights2"])
    assert all(torch.equal(v, sd[k]) for k, v in method.model.state_dict().items())

"""The official TensorFlow checkpoints of RetinexNet and KinD, read without TensorFlow, against the official code.

Fixtures (``shared/weights``, SOURCES.md): RetinexNet ``model/Decom`` (complete) and ``model/Relight`` (index
only); KinD ``decom_net_train`` and ``illumination_adjust_net_train`` (complete) and ``Restoration_net_train``
(index only); ``reference/retinexnet_{a,b}.npz`` (the official ``test()``'s R_low, I_low and their PNGs) and
``reference/kind_{a,b}.npz`` (``evaluate.py``'s normalised input, R, I and I_adjust at ratio 5.0).

The complete files are converted with the method's layout restricted to the parts that have values (the others'
tensors kept at their initial values: ``keep``), loaded strictly, and run on the fixture inputs.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from baselines.kind.adapter import KinD
from baselines.kind.inference import minmax_normalize, ratio_map
from baselines.kind.model import KinDModel
from baselines.retinexnet.adapter import RetinexNet
from baselines.retinexnet.model import RetinexNetModel
from bench.errors import BenchError
from bench.methods.base import build_config
from bench.official.importer import import_official, read_part
from bench.official.layout import LayoutError, convert, dry_run
from bench.official.tfbundle import open_bundle

FLOAT_TOL = 1e-5
U8_TOL = 1


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy()


def _truncate(a: np.ndarray) -> np.ndarray:
    """The official ``save_images``: ``np.clip(x * 255.0, 0, 255.0).astype('uint8')``."""
    return np.clip(a * 255.0, 0, 255.0).astype(np.uint8)


def _u8_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def _load_parts(layout, model, folders, keep):
    """Read the named parts (folder per part), convert with the layout restricted to them, load strictly."""
    values, stats = {}, {}
    for name, folder in folders.items():
        part = layout.part(name)
        values[name], _, stats[name] = read_part(part, folder, needed={r.source for r in part.rules})
    sub = dataclasses.replace(layout, parts=tuple(layout.part(n) for n in folders), keep=keep)
    model.load_state_dict(convert(sub, model.state_dict(), values), strict=True)
    return stats


# ------------------------------------------------------------------------------------------------
# RetinexNet
# ------------------------------------------------------------------------------------------------
def _retinexnet_decom(shared_weights) -> tuple[RetinexNetModel, dict]:
    torch.manual_seed(0)
    model = RetinexNetModel().eval()
    stats = _load_parts(RetinexNet.official_layout(), model, {"decom": shared_weights / "retinexnet" / "Decom"},
                        keep=((r"^relight\.", "the Relight shard was not released in the stored snapshot"),))
    return model, stats


@pytest.mark.parametrize("case", ["a", "b"])
def test_retinexnet_decom_reproduces_official_test(shared_weights, case):
    model, stats = _retinexnet_decom(shared_weights)
    assert stats["decom"]["tensors_read"] == 14          # the 60 ignored tensors are never read
    z = np.load(shared_weights / "reference" / f"retinexnet_{case}.npz")
    x = z["input_u8"].astype(np.float32) / 255.0          # utils.load_images
    assert np.array_equal(x, z["x"][0])
    with torch.no_grad():
        r, i = model.decom(_nchw(x[None]))
    r, i = _nhwc(r), _nhwc(i)
    assert float(np.abs(r - z["R"]).max()) <= FLOAT_TOL
    assert float(np.abs(i - z["I"]).max()) <= FLOAT_TOL
    assert _u8_diff(_truncate(r[0]), z["R_u8"]) <= U8_TOL
    assert _u8_diff(_truncate(np.repeat(i[0], 3, axis=2)), z["I_u8"]) <= U8_TOL


def test_retinexnet_decom_input_order_matters(shared_weights):
    """The check can fail: with the max channel moved after RGB (concat([S, max]) instead of the official
    concat([max, S])), the reflectance is far off."""
    model, _ = _retinexnet_decom(shared_weights)
    with torch.no_grad():
        w = model.decom.shallow.weight
        w.copy_(w[:, [1, 2, 3, 0]])
    z = np.load(shared_weights / "reference" / "retinexnet_a.npz")
    with torch.no_grad():
        r, _ = model.decom(_nchw(z["x"]))
    assert float(np.abs(_nhwc(r) - z["R"]).max()) > 1e-2


def test_retinexnet_dry_run_maps_both_parts(shared_weights):
    rec = import_official("retinexnet", [shared_weights / "retinexnet"], dry=True)
    assert rec["filled"] == len(RetinexNetModel().state_dict()) == 32
    assert rec["official_tensors"] == {"decom": 74, "relight": 104}
    assert rec["ignored"] == {"decom": 60, "relight": 86}
    assert rec["reading"]["relight"]["missing_shards"] == [
        {"name": "RetinexNet-tensorflow.data-00000-of-00001", "expected_bytes": 4_433_456}]
    # the two folders given one by one locate the same parts
    rec2 = import_official("retinexnet", [shared_weights / "retinexnet" / "Relight",
                                          shared_weights / "retinexnet" / "Decom"], dry=True)
    assert rec2["filled"] == 32


def test_retinexnet_full_import_names_missing_relight_shard(shared_weights):
    with pytest.raises(BenchError) as e:
        import_official("retinexnet", [shared_weights / "retinexnet"])
    msg = str(e.value)
    assert "\n" not in msg
    assert "Relight" in msg and "RetinexNet-tensorflow.data-00000-of-00001 is absent" in msg
    assert "4,433,456 bytes" in msg


def test_retinexnet_relight_decomnet_copy_equals_decom_file(shared_weights):
    """Why the Relight file's DecomNet/* is ignored: its tensors' CRC32Cs equal the Decom file's."""
    decom = open_bundle(shared_weights / "retinexnet" / "Decom").entries
    relight = open_bundle(shared_weights / "retinexnet" / "Relight").entries
    copy = sorted(n for n in relight if n.startswith("DecomNet/"))
    assert len(copy) == 14
    assert all(relight[n].crc32c == decom[n].crc32c and relight[n].shape == decom[n].shape for n in copy)
    # and the RelightNet it does map: conv2d = conv0 (R, I in), conv2d_7 = fusion (192 in), conv2d_8 = output
    assert relight["RelightNet/conv2d/kernel"].shape == (3, 3, 4, 64)
    assert relight["RelightNet/conv2d_7/kernel"].shape == (1, 1, 192, 64)
    assert relight["RelightNet/conv2d_8/kernel"].shape == (3, 3, 64, 1)


def test_retinexnet_refuses_a_kind_checkpoint(shared_weights, tmp_path):
    fake = tmp_path / "Decom"
    fake.mkdir()
    for f in ("checkpoint", "model.ckpt.index"):
        shutil.copy(shared_weights / "kind" / "decom_net_train" / f, fake / f)
    with pytest.raises(BenchError) as e:
        import_official("retinexnet", [fake, shared_weights / "retinexnet" / "Relight"], dry=True)
    assert "lacks tensor DecomNet/shallow_feature_extraction/kernel" in str(e.value)


# ------------------------------------------------------------------------------------------------
# KinD
# ------------------------------------------------------------------------------------------------
def _kind_decom_adjust(shared_weights) -> tuple[KinDModel, dict]:
    torch.manual_seed(0)
    model = KinDModel().eval()
    root = shared_weights / "kind"
    stats = _load_parts(KinD.official_layout(), model,
                        {"decom": root / "decom_net_train", "illumination": root / "illumination_adjust_net_train"},
                        keep=((r"^restore\.", "the Restoration_net shard was never committed"),))
    return model, stats


@pytest.mark.parametrize("case", ["a", "b"])
def test_kind_decom_and_adjust_reproduce_official_evaluate(shared_weights, case):
    model, stats = _kind_decom_adjust(shared_weights)
    assert stats["decom"]["tensors_read"] == 18 and stats["illumination"]["tensors_read"] == 8
    z = np.load(shared_weights / "reference" / f"kind_{case}.npz")
    # our min-max normalisation (normalize_input=true) of the 8-bit input is the official load_images
    low = _nchw(z["input_u8"][None].astype(np.float32) / 255.0)
    assert float(np.abs(_nhwc(minmax_normalize(low)) - z["x"]).max()) <= 1e-7
    with torch.no_grad():
        r, i = model.decom(_nchw(z["x"]))
        i_adj = model.adjust(i, ratio_map(i, float(z["ratio"])))
    assert float(z["ratio"]) == 5.0
    assert float(np.abs(_nhwc(r) - z["R"]).max()) <= FLOAT_TOL
    assert float(np.abs(_nhwc(i) - z["I"]).max()) <= FLOAT_TOL
    assert float(np.abs(_nhwc(i_adj) - z["I_adjust"]).max()) <= FLOAT_TOL


def test_kind_normalisation_matters(shared_weights):
    """The check can fail: case b (max value 35) without the min-max stretch decomposes differently."""
    model, _ = _kind_decom_adjust(shared_weights)
    z = np.load(shared_weights / "reference" / "kind_b.npz")
    with torch.no_grad():
        r, _ = model.decom(_nchw(z["input_u8"][None].astype(np.float32) / 255.0))
    assert float(np.abs(_nhwc(r) - z["R"]).max()) > 1e-2


def test_kind_test_overrides_give_the_official_pipeline():
    layout = KinD.official_layout()
    assert layout.official_quantize == "truncate"
    c = build_config(KinD, "paper", dict(layout.test_overrides), "")
    assert c.normalize_input is True and c.fixed_ratio() == 5.0 and c.resolved_postprocess() == "evaluate"


def test_kind_dry_run_maps_three_parts(shared_weights):
    rec = import_official("kind", [shared_weights / "kind"], dry=True)
    assert rec["filled"] == len(KinDModel().state_dict()) == 68
    assert rec["official_tensors"] == {"decom": 18, "illumination": 8, "restoration": 42}
    assert rec["ignored"] == {"decom": 0, "illumination": 0, "restoration": 0}
    assert rec["reading"]["restoration"]["missing_shards"] == [
        {"name": "model.ckpt.data-00000-of-00001", "expected_bytes": 31_042_956}]


def test_kind_full_import_names_missing_restoration_shard(shared_weights):
    with pytest.raises(BenchError) as e:
        import_official("kind", [shared_weights / "kind"])
    msg = str(e.value)
    assert "\n" not in msg
    assert "Restoration_net_train" in msg and "model.ckpt.data-00000-of-00001 is absent" in msg
    assert "31,042,956 bytes" in msg


def test_kind_refuses_a_retinexnet_checkpoint(shared_weights, tmp_path):
    root = tmp_path / "ckpt"
    fake = root / "decom_net_train"
    fake.mkdir(parents=True)
    for f in ("checkpoint", "RetinexNet-tensorflow.index"):
        shutil.copy(shared_weights / "retinexnet" / "Decom" / f, fake / f)
    for d in ("illumination_adjust_net_train", "Restoration_net_train"):
        shutil.copytree(shared_weights / "kind" / d, root / d)
    with pytest.raises(BenchError) as e:
        import_official("kind", [root], dry=True)
    assert "lacks tensor DecomNet/g_conv1_1/weights" in str(e.value)


def test_layout_refuses_swapped_parts(shared_weights):
    """The illumination file offered as KinD's decom part is refused, naming the first tensor it lacks."""
    layout = KinD.official_layout()
    root = shared_weights / "kind"
    shapes = {p.name: read_part(p, root / d, shapes_only=True)[0] for p, d in zip(
        layout.parts, ("illumination_adjust_net_train", "illumination_adjust_net_train", "Restoration_net_train"))}
    with pytest.raises(LayoutError, match="lacks tensor DecomNet/g_conv1_1/weights"):
        dry_run(layout, KinDModel().state_dict(), shapes)

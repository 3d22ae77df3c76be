"""Official PyTorch checkpoints through ``bench.official.importer.import_official``.

* Zero-DCE ``Epoch99.pth``, CSRNet ``csrnet.pth``, DRBN ``model_s1.pt`` (``shared/weights``, test fixtures only):
  imported, loaded by the adapter from the stored converted file, run on the reference crops, compared with
  the official code's float outputs (max |Δ| ≤ 1e-5) and, through the official 8-bit conversion applied to our
  float output, with its uint8 outputs (≤ 1 level). One whole-image check (Zero-DCE, 400x600).
* EnlightenGAN ``200_net_G_A.pth`` and DeepLPF's ``…_model.pt`` (not in ``shared/``): synthetic files in the
  official layout, whose (key, shape) lists are written out below from the official code (``models/networks.py``
  ``Unet_resize_conv``; ``unet.py`` / ``model.py``), not from our networks; filled with random tensors, imported,
  and every tensor of our network compared with the one it came from.
* DSN (``ours``): an official-layout file made with ``export_official_state_dict`` (964 keys), through the
  generic importer.
* Every layout refuses, with one line naming the tensor: a wrong method's file, one unknown extra tensor, a
  misshapen tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.methods.base import build_config
from bench.official.importer import import_official
from bench.registry import load_method_class

FILES = {"zero-dce": "zero_dce/Epoch99.pth", "csrnet": "csrnet/csrnet.pth", "drbn": "drbn/model_s1.pt"}
FLOAT_TOL = 1e-5


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _method(name: str, stored: str | Path):
    cls = load_method_class(name)
    method = cls(build_config(cls, "paper", {}, ""))
    method.setup(torch.device("cpu"), Path(stored))
    return method


def _x(u8: np.ndarray) -> torch.Tensor:
    """The official readers' float input: uint8 H×W×3 / 255 as float32, 1×3×H×W."""
    return torch.from_numpy(np.array(u8, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).numpy()


def _maxdiff(a, b) -> float:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return float(np.abs(a.astype(np.float64) - np.asarray(b, dtype=np.float64)).max())


def _u8_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def _save_image_u8(t: torch.Tensor) -> np.ndarray:
    """torchvision's save_image (Zero-DCE's lowlight_test.py): x*255 + 0.5, clamp [0, 255], to uint8."""
    return _hwc((t * 255 + 0.5).clamp(0, 255).to(torch.uint8))


def _round_half_even_u8(t: torch.Tensor) -> np.ndarray:
    """CSRNet's tensor2img / DRBN's utility.quantize: clamp to [0, 1], x255, round half to even, uint8."""
    return np.round(_hwc(t.clamp(0, 1)).astype(np.float64) * 255.0).astype(np.uint8)


def _truncate_u8(t: torch.Tensor) -> np.ndarray:
    """EnlightenGAN's util.tensor2im on [0, 1] values / DeepLPF's (x*255).astype('uint8')."""
    return np.clip(_hwc(t).astype(np.float64) * 255.0, 0, 255).astype(np.uint8)


def _refused(method: str, path: Path) -> str:
    with pytest.raises(BenchError) as err:
        import_official(method, [path])
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def _converted(record) -> dict[str, torch.Tensor]:
    return torch.load(record["stored"], map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    """(state dict of each shared file), loaded once."""
    from conftest import SHARED_WEIGHTS

    if not (SHARED_WEIGHTS / "SOURCES.md").is_file():
        pytest.skip(f"official weight fixtures not found at {SHARED_WEIGHTS}")
    return {m: torch.load(SHARED_WEIGHTS / f, map_location="cpu", weights_only=True) for m, f in FILES.items()}


def _ref(shared_weights: Path, name: str):
    return np.load(shared_weights / "reference" / f"{name}.npz")


# ------------------------------------------------------------------------------------------------
# Zero-DCE
# ------------------------------------------------------------------------------------------------
def test_zero_dce_official_file_reproduces_the_official_outputs(shared_weights):
    record = import_official("zero-dce", [shared_weights / FILES["zero-dce"]])
    assert record["official_quantize"] == "round" and record["verified"]
    method = _method("zero-dce", record["stored"])
    assert method.weights_info["weights_kind"] == "official_import"
    for case in "ab":
        ref = _ref(shared_weights, f"zero_dce_{case}")
        x = _x(ref["input_u8"])
        assert _maxdiff(x, ref["x"]) == 0.0
        out = method.enhance(x)
        assert _maxdiff(out, np.clip(ref["enhance_image"], 0, 1)) <= FLOAT_TOL
        with torch.no_grad():
            mid, raw, maps = method.model(x)
        for ours, key in ((mid, "enhance_image_1"), (raw, "enhance_image"), (maps, "r")):
            assert _maxdiff(ours, ref[key]) <= FLOAT_TOL, (case, key, _maxdiff(ours, ref[key]))
        assert _u8_diff(_save_image_u8(out), ref["out_u8"]) <= 1


def test_zero_dce_whole_image_matches_the_official_png(shared_weights, shared_data):
    from PIL import Image

    record = import_official("zero-dce", [shared_weights / FILES["zero-dce"]])
    method = _method("zero-dce", record["stored"])
    low = np.asarray(Image.open(shared_data / "lol_v1" / "eval15" / "low" / "1.png").convert("RGB"))
    want = np.asarray(Image.open(shared_weights / "reference" / "zero_dce_full1.png").convert("RGB"))
    assert low.shape == want.shape == (400, 600, 3)
    assert _u8_diff(_save_image_u8(method.enhance(_x(low))), want) <= 1


# ------------------------------------------------------------------------------------------------
# CSRNet
# ------------------------------------------------------------------------------------------------
def test_csrnet_official_file_reproduces_the_official_outputs(shared_weights, official_files):
    assert len(official_files["csrnet"]) == 24
    record = import_official("csrnet", [shared_weights / FILES["csrnet"]])
    assert record["official_quantize"] == "round"
    converted = _converted(record)
    assert set(converted) == set(official_files["csrnet"])   # all 24 map, strictly
    for k, v in official_files["csrnet"].items():
        assert torch.equal(converted[k], v), k
    method = _method("csrnet", record["stored"])
    for case in "ab":
        ref = _ref(shared_weights, f"csrnet_{case}")
        x = _x(ref["input_u8"])
        assert _maxdiff(x, ref["x"]) == 0.0
        with torch.no_grad():
            raw = method.forward_enhance(x)
        assert float(ref["out"].min()) < 0   # the official array is the unclamped netG output
        assert _maxdiff(raw, ref["out"]) <= FLOAT_TOL, (case, _maxdiff(raw, ref["out"]))
        out = method.enhance(x)
        assert _maxdiff(out, np.clip(ref["out"], 0, 1)) <= FLOAT_TOL
        assert _u8_diff(_round_half_even_u8(out), ref["out_u8"]) <= 1


# ------------------------------------------------------------------------------------------------
# DRBN
# ------------------------------------------------------------------------------------------------
def test_drbn_official_file_reproduces_the_official_outputs(shared_weights):
    record = import_official("drbn", [shared_weights / FILES["drbn"]])
    assert record["official_quantize"] == "round"
    method = _method("drbn", record["stored"])

    # case a (64x96): trainer.Trainer.test() feeds x = lr/255; phr1 is the test output
    ref = _ref(shared_weights, "drbn_a")
    x = _x(ref["input_u8"])
    assert _maxdiff(x, ref["x"]) == 0.0
    with torch.no_grad():
        bands = method.model(x)
    for ours, key in zip(bands, ("phr1", "phr2", "phr4")):
        assert _maxdiff(ours, ref[key]) <= FLOAT_TOL, (key, _maxdiff(ours, ref[key]))
    out = method.enhance(x)                       # the adapter's test path: phr1 of x, clamped
    assert _maxdiff(out, np.clip(ref["phr1"], 0, 1)) <= FLOAT_TOL
    assert _u8_diff(_round_half_even_u8(out), ref["out_u8"]) <= 1

    # case b (61x91): the official code cannot run it; (i) its top-left 60x88 through the official test
    ref = _ref(shared_weights, "drbn_b")
    assert "must match" in str(ref["official_error"])
    x = _x(ref["input_u8_60x88"])
    assert _maxdiff(x, ref["x_60x88"]) == 0.0
    with torch.no_grad():
        bands = method.model(x)
    for ours, key in zip(bands, ("phr1_60x88", "phr2_60x88", "phr4_60x88")):
        assert _maxdiff(ours, ref[key]) <= FLOAT_TOL, (key, _maxdiff(ours, ref[key]))
    out = method.enhance(x)
    assert _maxdiff(out, np.clip(ref["phr1_60x88"], 0, 1)) <= FLOAT_TOL
    assert _u8_diff(_round_half_even_u8(out), ref["out_u8_60x88"]) <= 1

    # (ii) the whole 61x91 crop: our adapter reflect-pads bottom/right to 64x92 and crops back, which is what
    # the official network was given for pad_reflect_*
    x = _x(ref["input_u8"])
    padded = torch.nn.functional.pad(x, (0, 1, 0, 3), mode="reflect")
    assert _maxdiff(padded, ref["pad_reflect_x"]) == 0.0
    out = method.enhance(x)
    assert tuple(out.shape) == (1, 3, 61, 91)
    want = ref["pad_reflect_phr1"][..., :61, :91]
    assert _maxdiff(out, np.clip(want, 0, 1)) <= FLOAT_TOL


def test_drbn_accepts_the_edsr_model_prefix(shared_weights, official_files, tmp_path):
    path = tmp_path / "model_s1_prefixed.pt"
    torch.save({f"model.{k}": v for k, v in official_files["drbn"].items()}, path)
    converted = _converted(import_official("drbn", [path]))
    assert all(torch.equal(converted[k], v) for k, v in official_files["drbn"].items())


# ------------------------------------------------------------------------------------------------
# refusals with the real files (wrong method, extra tensor, misshapen tensor)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, source, first", [
    ("csrnet", "zero-dce", "cond_net.conv1.weight"),
    ("drbn", "csrnet", "recur1.SFENet1.weight"),
    ("zero-dce", "drbn", "e_conv1.weight"),
    ("enlightengan", "csrnet", "conv1_1.weight"),
    ("deeplpf", "zero-dce", "backbonenet.unet.conv1.weight"),
    ("ours", "csrnet", "operations.0.haar_weights1"),
])
def test_a_wrong_methods_file_is_refused_naming_the_first_missing_tensor(shared_weights, method, source, first):
    msg = _refused(method, shared_weights / FILES[source])
    assert f"lacks tensor {first} " in msg and method in msg, msg


@pytest.mark.parametrize("method", sorted(FILES))
def test_an_unknown_extra_tensor_is_refused_by_name(official_files, tmp_path, method):
    path = tmp_path / "extra.pth"
    torch.save({**official_files[method], "head.extra_unknown.weight": torch.zeros(3)}, path)
    msg = _refused(method, path)
    assert "has tensor head.extra_unknown.weight that" in msg and "(+" not in msg, msg


@pytest.mark.parametrize("method, key", [("zero-dce", "e_conv7.bias"), ("csrnet", "cond_scale3.weight"),
                                         ("drbn", "recur4.Up2.weight")])
def test_a_misshapen_tensor_is_refused_by_name(official_files, tmp_path, method, key):
    sd = dict(official_files[method])
    assert key in sd
    sd[key] = torch.zeros(tuple(sd[key].shape) + (1,))
    path = tmp_path / "misshapen.pth"
    torch.save(sd, path)
    msg = _refused(method, path)
    assert f"{key} has shape {tuple(sd[key].shape)}" in msg, msg


# ------------------------------------------------------------------------------------------------
# EnlightenGAN: a synthetic 200_net_G_A.pth in the official layout
# ------------------------------------------------------------------------------------------------
#: Unet_resize_conv (models/networks.py), --self_attention --use_norm 1 --skip 1: (conv, out, in, kernel)
EGAN_CONVS = [
    ("conv1_1", 32, 4, 3), ("conv1_2", 32, 32, 3), ("conv2_1", 64, 32, 3), ("conv2_2", 64, 64, 3),
    ("conv3_1", 128, 64, 3), ("conv3_2", 128, 128, 3), ("conv4_1", 256, 128, 3), ("conv4_2", 256, 256, 3),
    ("conv5_1", 512, 256, 3), ("conv5_2", 512, 512, 3),
    ("deconv5", 256, 512, 3), ("conv6_1", 256, 512, 3), ("conv6_2", 256, 256, 3),
    ("deconv6", 128, 256, 3), ("conv7_1", 128, 256, 3), ("conv7_2", 128, 128, 3),
    ("deconv7", 64, 128, 3), ("conv8_1", 64, 128, 3), ("conv8_2", 64, 64, 3),
    ("deconv8", 32, 64, 3), ("conv9_1", 32, 64, 3), ("conv9_2", 32, 32, 3),
    ("conv10", 3, 32, 1),
]
#: its BatchNorm2d layers (bn9_2 does not exist: conv9_2 is followed by LReLU only)
EGAN_BNS = [("bn1_1", 32), ("bn1_2", 32), ("bn2_1", 64), ("bn2_2", 64), ("bn3_1", 128), ("bn3_2", 128),
            ("bn4_1", 256), ("bn4_2", 256), ("bn5_1", 512), ("bn5_2", 512), ("bn6_1", 256), ("bn6_2", 256),
            ("bn7_1", 128), ("bn7_2", 128), ("bn8_1", 64), ("bn8_2", 64), ("bn9_1", 32)]


def _egan_official(seed: int = 0, counters: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, cout, cin, k in EGAN_CONVS:
        sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * 0.02
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.02
    for name, c in EGAN_BNS:
        sd[f"{name}.weight"] = 1 + 0.02 * torch.randn(c, generator=g)
        sd[f"{name}.bias"] = 0.02 * torch.randn(c, generator=g)
        sd[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=g)
        if counters:   # a file saved by PyTorch >= 0.4.1
            sd[f"{name}.num_batches_tracked"] = torch.tensor(12345)
    return sd


def test_enlightengan_synthetic_official_file_is_imported_tensor_for_tensor(tmp_path):
    sd = _egan_official()
    params = sum(v.numel() for k, v in sd.items() if k.endswith((".weight", ".bias")))
    assert params == 8_636_675   # the official generator's parameter count (baselines.md §4)
    path = tmp_path / "200_net_G_A.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)   # saved through DataParallel
    record = import_official("enlightengan", [path])
    assert record["official_quantize"] == "truncate"
    assert "Normalize" in record["test_pipeline"] and "tensor2im" in record["test_pipeline"]
    converted = _converted(record)
    for k, v in sd.items():
        assert torch.equal(converted[k], v), k
    extra = sorted(set(converted) - set(sd))
    assert extra and all(k.endswith(".num_batches_tracked") for k in extra)

    # the adapter's test path is the official predict(): [-1, 1] input, the gray attention map of that
    # input, eval-mode BatchNorm, (x + 1)/2; written out here independently of forward_enhance
    method = _method("enlightengan", record["stored"])
    assert method.weights_info["weights_kind"] == "official_import"
    u8 = np.random.default_rng(0).integers(0, 256, (36, 52, 3), dtype=np.uint8)   # not multiples of 16
    x = _x(u8)
    real_a = (x - 0.5) / 0.5                                          # ToTensor + Normalize((.5,)*3, (.5,)*3)
    r, gg, b = real_a[:, 0] + 1, real_a[:, 1] + 1, real_a[:, 2] + 1
    a_gray = (1.0 - (0.299 * r + 0.587 * gg + 0.114 * b) / 2.0).unsqueeze(1)   # unaligned_dataset.py
    with torch.no_grad():
        fake_b, _ = method.model.eval()(real_a, a_gray)
    ours = method.enhance(x)
    assert tuple(ours.shape) == (1, 3, 36, 52)
    assert _maxdiff(ours, ((fake_b + 1) / 2).clamp(0, 1)) <= 1e-5
    official_u8 = np.clip((_hwc(fake_b).astype(np.float64) + 1) / 2.0 * 255.0, 0, 255).astype(np.uint8)
    assert _u8_diff(_truncate_u8(ours), official_u8) <= 1


def test_enlightengan_file_with_batchnorm_counters_is_accepted(tmp_path):
    sd = _egan_official(1, counters=True)
    path = tmp_path / "200_net_G_A.pth"
    torch.save(sd, path)
    record = import_official("enlightengan", [path])
    converted = _converted(record)
    assert all(torch.equal(converted[k], v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))


def test_enlightengan_refusals_name_the_tensor(tmp_path):
    sd = _egan_official(2)
    path = tmp_path / "a.pth"
    torch.save({**sd, "conv11.weight": torch.zeros(3, 3, 1, 1)}, path)
    assert "has tensor conv11.weight that" in _refused("enlightengan", path)
    bad = dict(sd)
    bad["bn5_2.running_var"] = torch.ones(256)
    torch.save(bad, path)
    assert "bn5_2.running_var has shape (256,)" in _refused("enlightengan", path)
    del bad["bn5_2.running_var"]
    torch.save(bad, path)
    assert "lacks tensor bn5_2.running_var " in _refused("enlightengan", path)


# ------------------------------------------------------------------------------------------------
# DeepLPF: a synthetic …_model.pt in the official layout
# ------------------------------------------------------------------------------------------------
#: unet.py UNetModel (LocalNet = conv1, conv2 3x3) and model.py filters: (module, out, in, kernel); Linear: k=0
DEEPLPF_MODULES = [
    ("backbonenet.unet.conv1", 64, 16, 1), ("backbonenet.unet.conv2", 64, 32, 1),
    ("backbonenet.unet.conv3", 64, 64, 1),
    ("backbonenet.unet.local_net.conv1", 64, 16, 3), ("backbonenet.unet.local_net.conv2", 64, 64, 3),
    ("backbonenet.unet.dconv_down1.conv1", 16, 3, 3), ("backbonenet.unet.dconv_down1.conv2", 16, 16, 3),
    ("backbonenet.unet.dconv_down2.conv1", 32, 16, 3), ("backbonenet.unet.dconv_down2.conv2", 32, 32, 3),
    ("backbonenet.unet.dconv_down3.conv1", 64, 32, 3), ("backbonenet.unet.dconv_down3.conv2", 64, 64, 3),
    ("backbonenet.unet.dconv_down4.conv1", 128, 64, 3), ("backbonenet.unet.dconv_down4.conv2", 128, 128, 3),
    ("backbonenet.unet.dconv_down5.conv1", 128, 128, 3), ("backbonenet.unet.dconv_down5.conv2", 128, 128, 3),
    ("backbonenet.unet.up_conv1x1_1", 128, 128, 1), ("backbonenet.unet.up_conv1x1_2", 128, 128, 1),
    ("backbonenet.unet.up_conv1x1_3", 64, 64, 1), ("backbonenet.unet.up_conv1x1_4", 32, 32, 1),
    ("backbonenet.unet.dconv_up4.conv1", 128, 256, 3), ("backbonenet.unet.dconv_up4.conv2", 128, 128, 3),
    ("backbonenet.unet.dconv_up3.conv1", 64, 192, 3), ("backbonenet.unet.dconv_up3.conv2", 64, 64, 3),
    ("backbonenet.unet.dconv_up2.conv1", 32, 96, 3), ("backbonenet.unet.dconv_up2.conv2", 32, 32, 3),
    ("backbonenet.unet.dconv_up1.conv1", 16, 48, 3), ("backbonenet.unet.dconv_up1.conv2", 16, 16, 3),
    ("backbonenet.unet.conv_last.conv1", 3, 16, 3), ("backbonenet.unet.conv_last.conv2", 3, 3, 3),
    ("backbonenet.final_conv", 64, 3, 3),
] + [
    (f"deeplpfnet.{f}_filter.{f}_layer{i}.conv", 64, 64, 3) for f in ("cubic", "graduated", "elliptical")
    for i in (1, 3, 5, 7)
] + [
    ("deeplpfnet.cubic_filter.fc_cubic", 60, 64, 0), ("deeplpfnet.graduated_filter.fc_graduated", 24, 64, 0),
    ("deeplpfnet.elliptical_filter.fc_elliptical", 24, 64, 0),
]


def _deeplpf_official(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, cout, cin, k in DEEPLPF_MODULES:
        shape = (cout, cin, k, k) if k else (cout, cin)
        sd[f"{name}.weight"] = torch.randn(*shape, generator=g) * 0.05
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.05
    return sd


def test_deeplpf_synthetic_official_file_is_imported_tensor_for_tensor(tmp_path):
    sd = _deeplpf_official()
    assert sum(v.numel() for v in sd.values()) == 1_769_347   # the official count (baselines.md §14)
    path = tmp_path / "deeplpf_epoch_424_model.pt"
    torch.save(sd, path)
    record = import_official("deeplpf", [path])
    assert record["official_quantize"] == "truncate"
    converted = _converted(record)
    assert set(converted) == set(sd)
    for k, v in sd.items():
        assert torch.equal(converted[k], v), k
    method = _method("deeplpf", record["stored"])
    assert method.weights_info["weights_kind"] == "official_import"
    for k, v in method.model.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_deeplpf_wrapped_dataparallel_file_is_imported(tmp_path):
    sd = _deeplpf_official(1)
    path = tmp_path / "wrapped_model.pt"
    torch.save({"epoch": 424, "model_state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    converted = _converted(import_official("deeplpf", [path]))
    assert all(torch.equal(converted[k], v) for k, v in sd.items())


def test_deeplpf_refusals_name_the_tensor(tmp_path):
    sd = _deeplpf_official(2)
    path = tmp_path / "a_model.pt"
    torch.save({**sd, "deeplpfnet.colour_head.fc.weight": torch.zeros(60, 64)}, path)   # the 2026 colour head
    assert "has tensor deeplpfnet.colour_head.fc.weight that" in _refused("deeplpf", path)
    bad = dict(sd)
    bad["deeplpfnet.cubic_filter.fc_cubic.weight"] = torch.zeros(24, 64)
    torch.save(bad, path)
    assert "deeplpfnet.cubic_filter.fc_cubic.weight has shape (24, 64)" in _refused("deeplpf", path)


# ------------------------------------------------------------------------------------------------
# DSN (ours): the 964-key official layout through the generic importer
# ------------------------------------------------------------------------------------------------
def _dsn_official(seed: int = 0) -> dict[str, torch.Tensor]:
    from bench.dsn.model import DSN
    from bench.dsn.official import export_official_state_dict

    torch.manual_seed(seed)
    return dict(export_official_state_dict(DSN()))


def test_dsn_official_layout_file_goes_through_the_generic_importer(tmp_path):
    from bench.dsn.official import load_official_state_dict, official_key_layout
    from bench.dsn.model import DSN

    sd = _dsn_official()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == official_key_layout() and len(sd) == 964
    path = tmp_path / "fiveK_G.pth"
    torch.save(sd, path)
    record = import_official("ours", [path])
    assert record["method"] == "ours" and record["official_quantize"] == "round"
    converted = _converted(record)
    assert set(converted) == set(sd)
    for k, v in sd.items():
        assert torch.equal(converted[k], v), k
    # the converted tensors load strictly into a default DSN, as the DSN-only loader does with the file
    model = DSN()
    model.load_state_dict(converted, strict=True)
    info = load_official_state_dict(DSN(), path)
    assert info["n_keys"] == 964
    # wrappers the DSN-only reader accepts: DataParallel prefix, {"state_dict": ...}
    wrapped = tmp_path / "wrapped_G.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, wrapped)
    again = _converted(import_official("ours", [wrapped]))
    assert all(torch.equal(again[k], v) for k, v in sd.items())


def test_dsn_refusals_name_the_tensor(tmp_path):
    sd = _dsn_official(1)
    path = tmp_path / "x_G.pth"
    bad = dict(sd)
    bad["operations.9.haar_weights2"] = bad["operations.9.haar_weights2"] + 1e-3
    torch.save(bad, path)
    msg = _refused("ours", path)
    assert "encoder copies differ: operations.0.haar_weights2 != operations.9.haar_weights2" in msg, msg
    torch.save({**sd, "operations.10.haar_weights1": torch.zeros(64, 3, 3, 3)}, path)   # a 9-block file's extra
    assert "has tensor operations.10.haar_weights1 that" in _refused("ours", path)
    bad = dict(sd)
    bad["operations.4.G.res2.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    torch.save(bad, path)
    assert "operations.4.G.res2.conv1.weight has shape (64, 64, 3, 3)" in _refused("ours", path)
    del bad["operations.4.G.res2.conv1.weight"]
    torch.save(bad, path)
    assert "lacks tensor operations.4.G.res2.conv1.weight " in _refused("ours", path)


def test_reference_meta_names_the_official_conversions(shared_weights):
    """The 8-bit conversions the tests apply are the ones the fixtures record."""
    metas = {n: json.loads(str(_ref(shared_weights, n)["meta"])) for n in ("zero_dce_a", "csrnet_a", "drbn_a")}
    assert "add_(0.5)" in metas["zero_dce_a"]["u8"]
    assert "half to even" in metas["csrnet_a"]["u8"] and "half to even" in metas["drbn_a"]["u8"]


def test_enlightengan_official_pipeline_aligns_corners_at_test_time_only():
    """The release ran under PyTorch 0.3.1, whose bilinear upsampling aligned corners: the official-weights
    pipeline sets it, training identities ignore it, and it changes the output."""
    import torch.nn.functional as F

    from baselines.enlightengan.adapter import EnlightenGAN
    from bench.methods.base import build_config
    from bench.run import official_pipeline

    overrides, _, quant = official_pipeline(EnlightenGAN)
    assert overrides == {"upsample_align_corners": "true"} and quant == "truncate"
    assert "upsample_align_corners" in EnlightenGAN.test_time_options
    outs = {}
    for flag in ("false", "true"):
        m = EnlightenGAN(build_config(EnlightenGAN, "smoke", {"upsample_align_corners": flag}, "demo"))
        m.setup(torch.device("cpu"))
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():   # weights large enough that the decoder's upsampling shows in the output
            for p in m.model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        outs[flag] = m.enhance(torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1)))
    assert (outs["true"] - outs["false"]).abs().max() > 1e-4
    # the flag is exactly F.interpolate's align_corners
    y = torch.rand(1, 2, 4, 6)
    m.model.align_corners = True
    assert torch.equal(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=m.model.align_corners),
                       F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True))

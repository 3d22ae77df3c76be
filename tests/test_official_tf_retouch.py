"""Official TensorFlow checkpoints of HDRNet, DeepUPE, White-Box, DPE and Distort-and-Recover.

Fixtures (``shared/weights``, SOURCES.md §2): the *index* of Google's HDR+ HDRNet model, of DeepUPE's
``checkpoints/model.ckpt`` and of White-Box's ``model.ckpt-20000``; their data shards are absent, so names and shapes
are checked (dry run), a real import must stop naming the shard, and a checkpoint of another method must be
refused. Values are checked on random arrays with the index's names and shapes: every one of our tensors must hold
its official array in the expected layout (the expectations are written here from the official graph code, not
from the layouts), and the NHWC-flatten and guide conversions are checked functionally.

DPE and Distort-and-Recover released no checkpoint: their synthetic indexes are built here from the official
graph code (DPE's ``DATA.py`` layer list walked as ``MODEL.py``/``CONVNET.py`` name it; D&R's ``q_network.py``
shapes and ``main.py``'s saver).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from baselines.deepupe.adapter import DeepUPE
from baselines.deepupe.model import DEEPUPE_GLOBAL_STRIDES, DEEPUPE_N_LOCAL
from baselines.distort_recover.adapter import DistortRecover
from baselines.distort_recover.qnet import DQN
from baselines.dpe.adapter import DPE
from baselines.dpe.model import DPEGenerator
from baselines.dpe.official import layout as dpe_layout
from baselines.hdrnet.adapter import HDRNet
from baselines.hdrnet.model import HDRNetModel, resize_lowres
from baselines.white_box.adapter import WhiteBox
from baselines.white_box.networks import WhiteBoxNets, lrelu
from bench.errors import BenchError
from bench.official.importer import import_official, read_part
from bench.official.layout import LayoutError, convert, dry_run


HDRP = ("hdrnet", "upgraded_from_sig2017.ckpt-0")
DEEPUPE = ("deepupe", "model.ckpt")
WHITEBOX = ("white_box", "model.ckpt-20000")


class _Shape:
    def __init__(self, shape):
        self.shape = tuple(shape)


def _index_shapes(shared_weights, which) -> dict[str, tuple[int, ...]]:
    folder, prefix = which
    part = HDRNet.official_layout().parts[0]          # any tf part: shapes_only reads the index alone
    return read_part(part, shared_weights / folder / f"{prefix}.index", shapes_only=True)[0]


def _random_sources(shapes, used, seed=0) -> dict[str, object]:
    """Random float32 arrays for the tensors in ``used``, bare shapes for the rest (never read)."""
    rng = np.random.default_rng(seed)
    return {n: (rng.standard_normal(s).astype(np.float32) if n in used else _Shape(s)) for n, s in shapes.items()}


def _conv(a):            # TF HWIO -> torch OIHW
    return a.transpose(3, 2, 0, 1)


def _flat_dense(a, h, w, c):   # dense after an NHWC flatten -> Linear weight over an NCHW flatten
    return a.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(a.shape[1], -1)


def _one_line_error(fn) -> str:
    with pytest.raises(BenchError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------------------
# HDRNet (HDR+ model) and DeepUPE: the HDRNetCurves graph
# ------------------------------------------------------------------------------------------------
def _curves_expectation(n_global: int, n_local: int) -> dict[str, tuple[str, str]]:
    """our key -> (official name, how it is laid out), from hdrnet/models.py (DeepUPE: main/models.py)."""
    c = "inference/coefficients"
    out: dict[str, tuple[str, str]] = {}
    convs = [(f"coefficients.splat.{i}.conv", f"{c}/splat/conv{i + 1}", True) for i in range(4)]
    convs += [(f"coefficients.global_convs.{i}.conv", f"{c}/global/conv{i + 1}", True) for i in range(n_global)]
    convs += [(f"coefficients.local.{i}.conv", f"{c}/local/conv{i + 1}", i == 0) for i in range(n_local)]
    convs += [("coefficients.prediction.conv", f"{c}/prediction/conv1", True)]
    for ours, theirs, bias in convs:
        out[f"{ours}.weight"] = (f"{theirs}/weights", "conv")
        if bias:
            out[f"{ours}.bias"] = (f"{theirs}/biases", "copy")
    for i in range(3):
        out[f"coefficients.global_fc.{i}.fc.weight"] = (f"{c}/global/fc{i + 1}/weights", "fc1" if i == 0 else "dense")
        out[f"coefficients.global_fc.{i}.fc.bias"] = (f"{c}/global/fc{i + 1}/biases", "copy")
    g = "inference/guide"
    out.update({"guide.ccm": (f"{g}/ccm", "copy"), "guide.ccm_bias": (f"{g}/ccm_bias", "copy"),
                "guide.shifts": (f"{g}/shifts", "squeeze"), "guide.slopes": (f"{g}/slopes", "squeeze"),
                "guide.mix_weight": (f"{g}/channel_mixing/weights", "squeeze"),
                "guide.mix_bias": (f"{g}/channel_mixing/biases", "copy")})
    return out


def _expected(kind: str, a: np.ndarray) -> np.ndarray:
    return {"conv": _conv, "copy": lambda x: x, "dense": lambda x: x.T,
            "fc1": lambda x: _flat_dense(x, 4, 4, 64), "squeeze": lambda x: np.squeeze(x)}[kind](a)


def _official_guide(x_nhwc, ccm, ccm_bias, shifts, slopes, mix_w, mix_b):
    """HDRNetCurves._guide (hdrnet/models.py) in NumPy: matmul by ccm, 16-knot ReLU curves, 1x1 mix, clip."""
    g = (x_nhwc.reshape(-1, 3) @ ccm + ccm_bias).reshape(x_nhwc.shape)[..., None]
    curve = np.sum(slopes * np.maximum(g - shifts, 0.0), axis=4)
    mixed = np.tensordot(curve, mix_w[0, 0], axes=([3], [0])) + mix_b
    return np.clip(mixed, 0.0, 1.0)[..., 0]


def test_hdrnet_dry_run_maps_the_hdrp_index(shared_weights):
    rec = import_official("hdrnet", [shared_weights / "hdrnet"], dry=True)
    assert rec["filled"] == len(HDRNetModel().state_dict()) == 29
    assert rec["official_tensors"] == {"": 92}
    assert rec["ignored"] == {"": 63}                    # 58 Adam slots, 2 beta powers, global_step, 2 EMAs
    assert rec["kept"] == []
    assert rec["reading"]["file"]["missing_shards"] == [
        {"name": "upgraded_from_sig2017.ckpt-0.data-00000-of-00001", "expected_bytes": 5_784_984}]
    shapes = _index_shapes(shared_weights, HDRP)
    weights = [n for n in shapes if not n.endswith(("/Adam", "/Adam_1")) and n.startswith("inference/")]
    assert sum(math.prod(shapes[n]) for n in weights) == 482_080


def test_hdrnet_full_import_names_the_missing_shard(shared_weights):
    msg = _one_line_error(lambda: import_official("hdrnet", [shared_weights / "hdrnet"]))
    assert "upgraded_from_sig2017.ckpt-0.data-00000-of-00001 is absent" in msg
    assert "5,784,984 bytes" in msg


def test_hdrnet_refuses_the_deepupe_index(shared_weights):
    msg = _one_line_error(lambda: import_official("hdrnet", [shared_weights / "deepupe"], dry=True))
    assert "has tensor inference/coefficients/global/conv10/biases" in msg


def test_hdrnet_hdrp_checkpoint_needs_the_default_configuration(shared_weights):
    """The HDR+ shapes are our default config (luma_bins 8, cm 1, spatial_bin 16, no BN); another is refused."""
    shapes = {"": _index_shapes(shared_weights, HDRP)}
    layout = HDRNet.official_layout()
    assert dry_run(layout, HDRNetModel().state_dict(), shapes)["filled"] == 29
    with pytest.raises(LayoutError, match=r"inference/coefficients/splat/conv1/weights has shape \(3, 3, 3, 8\)"):
        dry_run(layout, HDRNetModel(luma_bins=16).state_dict(), shapes)
    with pytest.raises(LayoutError, match="splat/conv2/biases"):     # BN replaces the biases from the 2nd conv
        dry_run(layout, HDRNetModel(batch_norm=True).state_dict(), shapes)
    # the curves guide, not HDRNetPointwiseNNGuide's guide/conv1
    assert not any(n.startswith("inference/guide/conv") for n in shapes[""])


def test_hdrnet_conversion_puts_every_array_in_place(shared_weights):
    shapes = _index_shapes(shared_weights, HDRP)
    want = _curves_expectation(2, 2)
    model = HDRNetModel()
    assert set(want) == set(model.state_dict())
    src = _random_sources(shapes, {n for n, _ in want.values()})
    out = convert(HDRNet.official_layout(), model.state_dict(), {"": src})
    for ours, (theirs, kind) in want.items():
        np.testing.assert_array_equal(out[ours].numpy(), _expected(kind, src[theirs]), err_msg=ours)
    model.load_state_dict(out, strict=True)

    # fc1 reads the NHWC flatten of the 4x4x64 global map, as tf.reshape(x, [bs, lh*lw*lc]) does
    rng = np.random.default_rng(1)
    fmap = rng.standard_normal((1, 4, 4, 64)).astype(np.float32)
    w, b = src["inference/coefficients/global/fc1/weights"], src["inference/coefficients/global/fc1/biases"]
    official = fmap.reshape(1, -1) @ w + b
    with torch.no_grad():
        ours = model.coefficients.global_fc[0].fc(torch.from_numpy(fmap).permute(0, 3, 1, 2).reshape(1, -1))
    np.testing.assert_allclose(ours.numpy(), official, rtol=1e-5, atol=1e-4)

    # the guide: our CurveGuide with the converted tensors = the official _guide on the same image
    g = "inference/guide"
    params = {k: rng.standard_normal(shapes[f"{g}/{k}"]).astype(np.float32) * s for k, s in
              (("ccm", 0.5), ("ccm_bias", 0.1), ("shifts", 0.3), ("slopes", 0.7),
               ("channel_mixing/weights", 0.6), ("channel_mixing/biases", 0.1))}
    params["ccm"] += np.eye(3, dtype=np.float32)
    src.update({f"{g}/{k}": v for k, v in params.items()})
    model.load_state_dict(convert(HDRNet.official_layout(), model.state_dict(), {"": src}), strict=True)
    x = rng.random((1, 5, 7, 3)).astype(np.float32)
    ref = _official_guide(x, params["ccm"], params["ccm_bias"], params["shifts"], params["slopes"],
                          params["channel_mixing/weights"], params["channel_mixing/biases"])
    with torch.no_grad():
        ours = model.guide(torch.from_numpy(x).permute(0, 3, 1, 2))
    assert 0.05 < float((ref > 0).mean()) and float((ref < 1).mean()) > 0.05   # not all clipped
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_hdrnet_test_pipeline_is_run_py(shared_weights):
    """run.py's low-res input is skimage.transform.resize(order=0): our nearest-exact, not the default nearest."""
    skt = pytest.importorskip("skimage.transform")
    layout = HDRNet.official_layout()
    assert layout.test_overrides == {"lowres_resize": "nearest-exact"}
    assert layout.official_quantize == "truncate"
    cfg = dataclasses.replace(HDRNet.Config(), lowres_resize=layout.test_overrides["lowres_resize"])
    cfg.validate()
    z = np.load(shared_weights / "reference" / "retinexnet_b.npz")      # any 61x91 fixture crop
    im = z["input_u8"].astype(np.float64) / 255.0                        # skimage.img_as_float
    ref = skt.resize(im, (256, 256), order=0, anti_aliasing=False)
    t = torch.from_numpy(im).permute(2, 0, 1)[None]
    ours = resize_lowres(t, 256, cfg.lowres_resize)[0].permute(1, 2, 0).numpy()
    assert float(np.abs(ours - ref).max()) == 0.0
    default = resize_lowres(t, 256, HDRNet.Config().lowres_resize)[0].permute(1, 2, 0).numpy()
    assert float(np.abs(default - ref).max()) > 0.05


# ---- DeepUPE -----------------------------------------------------------------------------------
def test_deepupe_dry_run_maps_the_released_index(shared_weights):
    rec = import_official("deepupe", [shared_weights / "deepupe" / "model.ckpt.index"], dry=True)
    model = DeepUPE().build_model()
    assert rec["filled"] == len(model.state_dict()) == 53
    assert rec["official_tensors"] == {"": 164}
    assert rec["ignored"] == {"": 111}
    assert rec["reading"]["file"]["missing_shards"] == [
        {"name": "model.ckpt.data-00000-of-00001", "expected_bytes": 11_985_816}]
    shapes = _index_shapes(shared_weights, DEEPUPE)
    weights = [n for n in shapes if not n.endswith(("/Adam", "/Adam_1")) and n.startswith("inference/")]
    assert len(weights) == 53 and sum(math.prod(shapes[n]) for n in weights) == 998_816


def test_deepupe_full_import_names_the_missing_shard(shared_weights):
    msg = _one_line_error(lambda: import_official("deepupe", [shared_weights / "deepupe"]))
    assert "model.ckpt.data-00000-of-00001 is absent" in msg and "11,985,816 bytes" in msg


def test_deepupe_refuses_the_hdrnet_index(shared_weights):
    msg = _one_line_error(lambda: import_official("deepupe", [shared_weights / "hdrnet"], dry=True))
    assert "lacks tensor inference/coefficients/global/conv3/weights" in msg


def test_deepupe_conversion_puts_every_array_in_place(shared_weights):
    shapes = _index_shapes(shared_weights, DEEPUPE)
    want = _curves_expectation(len(DEEPUPE_GLOBAL_STRIDES), DEEPUPE_N_LOCAL)
    assert (len(DEEPUPE_GLOBAL_STRIDES), DEEPUPE_N_LOCAL) == (12, 6)
    model = DeepUPE().build_model()
    assert set(want) == set(model.state_dict())
    src = _random_sources(shapes, {n for n, _ in want.values()}, seed=2)
    out = convert(DeepUPE.official_layout(), model.state_dict(), {"": src})
    for ours, (theirs, kind) in want.items():
        np.testing.assert_array_equal(out[ours].numpy(), _expected(kind, src[theirs]), err_msg=ours)
    layout = DeepUPE.official_layout()
    assert layout.test_overrides == {"lowres_resize": "nearest-exact"} and layout.official_quantize == "round"


# ------------------------------------------------------------------------------------------------
# White-Box
# ------------------------------------------------------------------------------------------------
def _white_box_expectation() -> dict[str, tuple[str, str]]:
    """our key -> (official name, layout), from agent.py / critics.py / net.py scopes."""
    out: dict[str, tuple[str, str]] = {}

    def trunk(ours, scope):
        for i, n in enumerate(("Conv", "Conv_1", "Conv_2", "Conv_3")):
            out[f"{ours}.convs.{i}.weight"] = (f"{scope}/{n}/weights", "conv")
            out[f"{ours}.convs.{i}.bias"] = (f"{scope}/{n}/biases", "copy")

    def fc(ours, theirs, kind):
        out[f"{ours}.weight"] = (f"{theirs}/weights", kind)
        out[f"{ours}.bias"] = (f"{theirs}/biases", "copy")

    trunk("agent.trunk", "generator")
    for j in range(8):
        fc(f"agent.heads_fc1.{j}", f"generator/filter_{j}/fc1", "flat")
        fc(f"agent.heads_fc2.{j}", f"generator/filter_{j}/fc2", "dense")
    trunk("agent.selector_trunk", "generator/action_selection")
    fc("agent.selector_fc1", "generator/action_selection/selector_fc1", "flat")
    fc("agent.selector_fc2", "generator/action_selection/selector_fc2", "dense")
    for ours, scope in (("critic", "critic"), ("value", "rl_value/critic")):
        trunk(f"{ours}.trunk", scope)
        fc(f"{ours}.fc1", f"{scope}/fully_connected", "flat")
        fc(f"{ours}.fc2", f"{scope}/fully_connected_1", "dense")
    return out


def test_white_box_dry_run_maps_the_released_index(shared_weights):
    rec = import_official("white-box", [shared_weights / "white_box"], dry=True)
    assert rec["filled"] == len(WhiteBoxNets().state_dict()) == 76
    assert rec["official_tensors"] == {"": 240}
    assert rec["ignored"] == {"": 164}     # 152 Adam slots, 6 beta powers, 3 step counters, 3 EMA tensors
    assert rec["reading"]["file"]["missing_shards"] == [
        {"name": "model.ckpt-20000.data-00000-of-00001", "expected_bytes": 102_741_192}]


def test_white_box_full_import_names_the_missing_shard(shared_weights):
    msg = _one_line_error(lambda: import_official("white-box", [shared_weights / "white_box"]))
    assert "model.ckpt-20000.data-00000-of-00001 is absent" in msg and "102,741,192 bytes" in msg


def test_white_box_refuses_another_methods_index(shared_weights):
    msg = _one_line_error(lambda: import_official("white-box", [shared_weights / "deepupe"], dry=True))
    assert "lacks tensor generator/Conv/weights" in msg


def test_white_box_conversion_puts_every_array_in_place(shared_weights):
    shapes = _index_shapes(shared_weights, WHITEBOX)
    want = _white_box_expectation()
    nets = WhiteBoxNets()
    assert set(want) == set(nets.state_dict())
    src = _random_sources(shapes, {n for n, _ in want.values()}, seed=3)
    out = convert(WhiteBox.official_layout(), nets.state_dict(), {"": src})
    kinds = {"conv": _conv, "copy": lambda x: x, "dense": lambda x: x.T,
             "flat": lambda x: _flat_dense(x, 4, 4, 256)}
    for ours, (theirs, kind) in want.items():
        np.testing.assert_array_equal(out[ours].numpy(), kinds[kind](src[theirs]), err_msg=ours)
    nets.load_state_dict(out, strict=True)

    # the first FC of a head reads tf.reshape(net, [-1, 4096]) of the NHWC 4x4x256 trunk output
    rng = np.random.default_rng(4)
    fmap = rng.standard_normal((1, 4, 4, 256)).astype(np.float32)
    w, b = src["generator/filter_4/fc1/weights"], src["generator/filter_4/fc1/biases"]
    official = fmap.reshape(1, -1) @ w + b
    with torch.no_grad():
        ours = nets.agent.heads_fc1[4](torch.from_numpy(fmap).permute(0, 3, 1, 2).reshape(1, -1))
    np.testing.assert_allclose(lrelu(ours).numpy(), 0.6 * official + 0.4 * np.abs(official), rtol=1e-5, atol=1e-4)
    assert WhiteBox.official_layout().official_quantize == "round"


# ------------------------------------------------------------------------------------------------
# DPE: a synthetic index from the official graph code
# ------------------------------------------------------------------------------------------------
def _conv_l(k, f):
    return ("conv", k, f)


_ACT = [("selu",), ("bn",)]
# DATA.py NetInfo('netG') (supervised code; the same list as the mirror's demo): (input index, layers)
_DPE_BLOCKS = [
    (0, [_conv_l(3, 16), *_ACT, _conv_l(5, 32), *_ACT, _conv_l(5, 64), *_ACT, _conv_l(5, 128), *_ACT,
         _conv_l(5, 128), *_ACT]),
    (15, [_conv_l(5, 128), *_ACT, _conv_l(5, 128), *_ACT, _conv_l(8, 128), ("selu",), _conv_l(1, 128)]),
    (15, [_conv_l(3, 128), ("g_concat", 24), _conv_l(1, 128), *_ACT,
          _conv_l(3, 128), ("resize",), ("concat", 10), *_ACT,
          _conv_l(3, 128), ("resize",), ("concat", 7), *_ACT,
          _conv_l(3, 64), ("resize",), ("concat", 4), *_ACT,
          _conv_l(3, 32), ("resize",), ("concat", 1), *_ACT,
          _conv_l(3, 16), *_ACT, _conv_l(3, 3), ("res", 0)]),
]


def _dpe_official_index(name="netG", act_size=1):
    """{official name: shape} as MODEL.conv_net_block / CONVNET.exe_*_layer name the variables, in graph order,
    and the list of conv and BN prefixes in that order."""
    channels = [3]                                  # tensor_list: channel counts
    shapes: dict[str, tuple[int, ...]] = {}
    convs, bns = [], []
    for b, (inp, layers) in enumerate(_DPE_BLOCKS, start=1):
        scope = f"{name}_var_scope/{name}_var_scopeA/{name}_{b}"
        c = channels[inp]
        for l, layer in enumerate(layers):
            kind = layer[0]
            if kind == "conv":
                _, k, f = layer
                shapes[f"{scope}/conv_{l}_w"] = (k, k, c, f)
                shapes[f"{scope}/conv_{l}_b"] = (f,)
                convs.append(f"{scope}/conv_{l}")
                c = f
            elif kind == "bn":
                for i in range(act_size):
                    for field in ("offset", "scale", "mv_mean", "mv_var"):
                        shapes[f"{scope}/bn_{l}_{i}_{field}"] = (c,)
                bns.append(f"{scope}/bn_{l}_0")
            elif kind in ("concat", "g_concat"):
                c += channels[layer[1]]
            channels.append(c)
    return shapes, convs, bns


# our modules in the generator's forward order (model.py), to pair with the official graph order
_DPE_OUR_CONVS = ["enc0", "enc1", "enc2", "enc3", "enc4", "glob1", "glob2", "glob3", "glob4", "local", "fuse",
                  "dec1", "dec2", "dec3", "dec4", "dec5", "out"]
_DPE_OUR_BNS = ["bn_enc.0", "bn_enc.1", "bn_enc.2", "bn_enc.3", "bn_enc.4", "bn_glob.0", "bn_glob.1", "bn_fuse",
                "bn_dec.0", "bn_dec.1", "bn_dec.2", "bn_dec.3", "bn_dec5"]


def test_dpe_synthetic_index_from_the_graph_code_maps():
    shapes, convs, bns = _dpe_official_index()
    assert (len(convs), len(bns), len(shapes)) == (17, 13, 86)
    trainable = sum(math.prod(s) for n, s in shapes.items() if not n.endswith(("_mv_mean", "_mv_var")))
    assert trainable == 3_335_395                    # the official count (baselines.md §9)
    rec = dry_run(DPE.official_layout(), DPEGenerator().state_dict(), {"": shapes})
    assert rec["filled"] == 86 and rec["ignored"] == {"": 0}
    assert rec["kept"] == sorted(k for k in DPEGenerator().state_dict() if k.endswith(".num_batches_tracked"))
    assert len(rec["kept"]) == 13
    # the mirror's renamed demo file (scope netG-736) maps with that name, not with the default
    demo, _, _ = _dpe_official_index("netG-736")
    assert dry_run(dpe_layout("netG-736"), DPEGenerator().state_dict(), {"": demo})["filled"] == 86
    with pytest.raises(LayoutError, match="lacks tensor netG_var_scope/netG_var_scopeA/netG_1/conv_0_w"):
        dry_run(DPE.official_layout(), DPEGenerator().state_dict(), {"": demo})


def test_dpe_refuses_a_two_way_generator_with_individual_batch_norms():
    """The 2-way GAN's netG keeps two BN sets (act_o size 2: bn_<l>_1_*): not the paired generator."""
    shapes, _, _ = _dpe_official_index(act_size=2)
    with pytest.raises(LayoutError, match=r"has tensor netG_var_scope/netG_var_scopeA/netG_1/bn_2_1_offset"):
        dry_run(DPE.official_layout(), DPEGenerator().state_dict(), {"": shapes})


def test_dpe_conversion_puts_every_array_in_place():
    shapes, convs, bns = _dpe_official_index()
    model = DPEGenerator()
    src = _random_sources(shapes, set(shapes), seed=5)
    out = convert(DPE.official_layout(), model.state_dict(), {"": src})
    for ours, theirs in zip(_DPE_OUR_CONVS, convs):
        w, b = _conv(src[f"{theirs}_w"]), src[f"{theirs}_b"]
        if ours == "enc0":
            w = w[:, ::-1]                           # the official input is BGR (cv2.imread)
        if ours == "out":
            w, b = w[::-1], b[::-1]                  # and its output too (cv2.imwrite)
        np.testing.assert_array_equal(out[f"{ours}.weight"].numpy(), w, err_msg=ours)
        np.testing.assert_array_equal(out[f"{ours}.bias"].numpy(), b, err_msg=ours)
    for ours, theirs in zip(_DPE_OUR_BNS, bns):
        for field, tf in (("bias", "offset"), ("weight", "scale"), ("running_mean", "mv_mean"),
                          ("running_var", "mv_var")):
            np.testing.assert_array_equal(out[f"{ours}.{field}"].numpy(), src[f"{theirs}_{tf}"], err_msg=ours)
    model.load_state_dict(out, strict=True)
    # tf.nn.batch_normalization(..., epsilon=1e-5) of bn_layer's default
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-5}

    # the BGR swap keeps the residual consistent: RGB in -> out(RGB) + RGB, i.e. the official BGR net, flipped
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        ours_rgb = torch.nn.functional.conv2d(x, out["enc0.weight"], out["enc0.bias"], padding=1)
        official_bgr = torch.nn.functional.conv2d(x.flip(1), torch.from_numpy(_conv(src[f"{convs[0]}_w"]).copy()),
                                                  torch.from_numpy(src[f"{convs[0]}_b"]), padding=1)
    torch.testing.assert_close(ours_rgb, official_bgr, rtol=1e-5, atol=1e-5)
    assert DPE.official_layout().official_quantize == "round"


# ------------------------------------------------------------------------------------------------
# Distort-and-Recover: a synthetic index from q_network.py and main.py
# ------------------------------------------------------------------------------------------------
def _dr_official_index(input_length=4096 + 8000 + 50 * 12, hidden=(4096, 4096, 512), num_action=12):
    """q_network(..., 'pred', duel=False) variables + the saver's step/step (main.py Agent.init_model)."""
    dims = [input_length, *hidden, num_action]
    shapes = {}
    for k in range(1, 5):
        shapes[f"pred/fc{k}_weights"] = (dims[k - 1], dims[k])
        shapes[f"pred/fc{k}_biases"] = (dims[k],)
    shapes["step/step"] = ()
    return shapes


def test_distort_recover_synthetic_index_from_the_graph_code_maps():
    shapes = _dr_official_index()
    assert sum(math.prod(s) for n, s in shapes.items() if n.startswith("pred/")) == 70_892_044   # ≈70.9 M
    with torch.device("meta"):                       # shapes only: no 570 MB of real tensors
        model = DQN(12_696)
    rec = dry_run(DistortRecover.official_layout(), model.state_dict(), {"": shapes})
    assert rec["filled"] == 16 and rec["ignored"] == {"": 1} and rec["kept"] == []
    # a histogram-only state (deep_features=none: 8,600 inputs) does not fit the official Q-network
    with torch.device("meta"):
        small = DQN(8000 + 600)
    with pytest.raises(LayoutError, match=r"pred/fc1_weights has shape \(12696, 4096\)"):
        dry_run(DistortRecover.official_layout(), small.state_dict(), {"": shapes})


def test_distort_recover_conversion_fills_online_and_target():
    shapes = _dr_official_index(input_length=20, hidden=(8, 8, 4))     # same names, small widths
    model = DQN(20, (8, 8, 4), 12)
    src = _random_sources(shapes, set(shapes), seed=6)
    out = convert(DistortRecover.official_layout(), model.state_dict(), {"": src})
    for net in ("online", "target"):
        for k in range(1, 5):
            np.testing.assert_array_equal(out[f"{net}.fc{k}.weight"].numpy(), src[f"pred/fc{k}_weights"].T)
            np.testing.assert_array_equal(out[f"{net}.fc{k}.bias"].numpy(), src[f"pred/fc{k}_biases"])
    model.load_state_dict(out, strict=True)
    # the official forward: relu(x W1 + b1) ... x W4 + b4
    x = np.random.default_rng(7).standard_normal((3, 20)).astype(np.float32)
    h = x
    for k in range(1, 5):
        h = h @ src[f"pred/fc{k}_weights"] + src[f"pred/fc{k}_biases"]
        h = np.maximum(h, 0) if k < 4 else h
    with torch.no_grad():
        q = model(torch.from_numpy(x))
    np.testing.assert_allclose(q.numpy(), h, rtol=1e-5, atol=1e-5)
    assert DistortRecover.official_layout().official_quantize == "truncate"

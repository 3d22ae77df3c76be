"""Tests for bench/dsn: DSN network, encoder tensors, official state-dict import/export.

CPU only, tiny inputs.  Expected numbers come from dsn_reference.md sections 1.6, 1.7 and 7.
"""

import copy
import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

from bench.dsn.encoder import (
    decode,
    encode,
    encoder_gain,
    fallback_encoder,
    haar_encoder,
    load_vgg16_conv1,
    tensor_sha256,
)
from bench.dsn.model import (
    DSN,
    InvBlock,
    ResidualAttentionSubnet,
    count_parameters,
    macs_per_pixel,
    parameter_summary,
)
from bench.dsn.official import (
    export_official_state_dict,
    load_official_state_dict,
    official_key_layout,
)

torch.set_num_threads(1)

FROZEN = 2 * (64 * 3 * 9 + 64 * 64 * 9)  # 77,184


def _perturb(model, seed=1, scale=0.01):
    """Add Gaussian noise to every trainable tensor (tails become non-zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def _ref_encode(x, w1, w2):
    return F.conv2d(F.conv2d(x, w1, padding=1), w2, padding=1)


def _ref_decode(h, w1, w2):
    return F.conv_transpose2d(F.conv_transpose2d(h, w2, padding=1), w1, padding=1)


@pytest.fixture(scope="module")
def default_model():
    torch.manual_seed(0)
    return DSN()


# ------------------------------------------------------------------------------- size / layout
def test_parameter_counts_default(default_model):
    s = parameter_summary(default_model)
    assert s["trainable"] == 11_573_568
    assert s["trainable_used"] == 11_559_624
    assert s["frozen"] == 77_184
    assert s["total"] == 11_650_752
    assert s["state_dict_keys"] == 964
    assert count_parameters(default_model) == 11_559_624
    assert count_parameters(default_model, used_only=False) == 11_573_568


def test_macs_per_pixel_default(default_model):
    assert macs_per_pixel(default_model) == 11_578_752


def test_state_dict_matches_official_layout(default_model):
    layout = official_key_layout(8)
    assert len(layout) == 964
    got = [(k, tuple(v.shape)) for k, v in default_model.state_dict().items()]
    assert got == layout  # same keys, same shapes, same order


def test_structure_and_frozen_encoder(default_model):
    ops = default_model.operations
    assert len(ops) == 10
    for idx in (0, 9):
        for name in ("haar_weights1", "haar_weights2"):
            p = getattr(ops[idx], name)
            assert isinstance(p, torch.nn.Parameter) and not p.requires_grad
        assert torch.equal(ops[idx].haar_weights1, ops[0].haar_weights1)
        assert torch.equal(ops[idx].haar_weights2, ops[0].haar_weights2)
    assert all(isinstance(ops[i], InvBlock) for i in range(1, 9))
    assert [n for n, _ in ops[1].named_children()] == ["F", "G", "H"]
    assert default_model.encoder_info["kind"] == "fallback_hadamard_parseval"


def test_initialisation_statistics():
    torch.manual_seed(0)
    m = DSN(n_blocks=1)
    blk = m.operations[1]
    heads, u1, u2, ca0, ca2 = [], [], [], [], []
    for sub in (blk.F, blk.G, blk.H):
        assert torch.count_nonzero(sub.conv2.weight) == 0 and torch.count_nonzero(sub.conv2.bias) == 0
        heads.append(sub.conv1.weight.flatten())
        for r in (sub.res1, sub.res2, sub.res3):
            u1.append(r.conv1.weight.flatten())
            u2.append(r.conv2.weight.flatten())
            ca0.append(r.so.conv_du[0].weight.flatten())
            ca2.append(r.so.conv_du[2].weight.flatten())
    for name, p in m.named_parameters():
        if name.endswith("bias") and ".soca." not in name:
            assert torch.count_nonzero(p) == 0, name
        if "prelu" in name or name.endswith("conv_du.1.weight"):
            assert torch.allclose(p, torch.full_like(p, 0.2)), name
    # head: xavier_normal x 0.1, fan_in 288, fan_out 576
    assert torch.cat(heads).std().item() == pytest.approx(0.1 * math.sqrt(2 / (288 + 576)), rel=0.05)
    # units: kaiming_normal(fan_in) x 0.1
    assert torch.cat(u1).std().item() == pytest.approx(0.1 * math.sqrt(2 / 576), rel=0.05)
    assert torch.cat(u2).std().item() == pytest.approx(0.1 * math.sqrt(2 / 1152), rel=0.05)
    assert torch.cat(ca0).std().item() == pytest.approx(0.1 * math.sqrt(2 / 64), rel=0.15)
    assert torch.cat(ca2).std().item() == pytest.approx(0.1 * math.sqrt(2 / 4), rel=0.15)


# ------------------------------------------------------------------------------- behaviour
def test_untrained_output_is_DE(default_model):
    x = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(3))
    w1 = default_model.operations[0].haar_weights1
    w2 = default_model.operations[0].haar_weights2
    ref = _ref_decode(_ref_encode(x, w1, w2), w1, w2)
    with torch.no_grad():
        assert torch.equal(default_model.enhance(x), ref)
        assert torch.equal(default_model.degrade(x), ref)
        h = torch.randn(1, 64, 5, 7)
        assert torch.equal(default_model.features_enhance(h), h)
        assert torch.equal(default_model.features_degrade(h), h)


def test_invertibility_perturbed_8_blocks():
    torch.manual_seed(0)
    m = _perturb(DSN(), seed=1, scale=0.01)
    h = torch.randn(1, 64, 7, 9, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        e = m.features_enhance(h)
        assert (e - h).abs().max() > 0.1  # the perturbed IFT is far from the identity
        assert (m.features_degrade(e) - h).abs().max() < 1e-4
        d = m.features_degrade(h)
        assert (d - h).abs().max() > 0.1
        assert (m.features_enhance(d) - h).abs().max() < 1e-4


def test_invertibility_float64_tight():
    torch.manual_seed(0)
    m = _perturb(DSN(n_blocks=2), seed=2, scale=0.01).double()
    h = torch.randn(2, 64, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (m.features_degrade(m.features_enhance(h)) - h).abs().max() < 1e-10
        assert (m.features_enhance(m.features_degrade(h)) - h).abs().max() < 1e-10


def test_odd_shape_and_batch(default_model):
    x = torch.rand(2, 3, 7, 9)
    with torch.no_grad():
        assert default_model.enhance(x).shape == (2, 3, 7, 9)
        assert default_model.degrade(x).shape == (2, 3, 7, 9)


def test_forward_rev_flag():
    torch.manual_seed(0)
    m = _perturb(DSN(n_blocks=1), seed=3)
    x = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        enh, deg = m.enhance(x), m.degrade(x)
        assert not torch.allclose(enh, deg)
        assert torch.equal(m(x), enh)
        assert torch.equal(m(x, rev=True), enh)
        assert torch.equal(m(x, rev=False), deg)
        # the official module-level semantics: iterate operations with the rev flag
        out = x
        for op in reversed(m.operations):
            out = op(out, rev=True)
        assert torch.equal(out, enh)
        out = x
        for op in m.operations:
            out = op(out, rev=False)
        assert torch.equal(out, deg)


def test_invblock_formulas():
    torch.manual_seed(0)
    m = _perturb(DSN(n_blocks=1), seed=6, scale=0.01)
    blk = m.operations[1]
    x = torch.randn(1, 64, 5, 6)
    a, b = x[:, :32], x[:, 32:]
    with torch.no_grad():
        # degradation direction (paper Eq. 4 / code rev=False)
        a2 = a + blk.F(b)
        b2 = b * torch.exp(2 * torch.sigmoid(blk.H(a2)) - 1) + blk.G(a2)
        assert torch.allclose(blk.degrade(x), torch.cat([a2, b2], 1), atol=1e-6)
        # enhancement direction (paper Eq. 3 / code rev=True)
        b3 = (b - blk.G(a)) / torch.exp(2 * torch.sigmoid(blk.H(a)) - 1)
        a3 = a - blk.F(b3)
        assert torch.allclose(blk.enhance(x), torch.cat([a3, b3], 1), atol=1e-6)


def _manual_unit(unit, u):
    t = F.conv2d(u, unit.conv1.weight, unit.conv1.bias, padding=1)
    t = F.prelu(t, unit.prelu.weight)
    t = F.conv2d(t, unit.conv2.weight, unit.conv2.bias, padding=1)
    cd = unit.so.conv_du
    w = t.mean(dim=(2, 3), keepdim=True)
    w = F.prelu(F.conv2d(w, cd[0].weight, cd[0].bias), cd[1].weight)
    w = torch.sigmoid(F.conv2d(w, cd[2].weight, cd[2].bias))
    return u + t * w


@pytest.mark.parametrize("kind", ["rram", "chain", "rram_tied"])
def test_rram_wiring(kind):
    torch.manual_seed(0)
    skip = kind != "chain"
    sub = ResidualAttentionSubnet(32, 32, skip=skip, tied=(kind == "rram_tied"),
                                  unused=None if kind == "rram_tied" else "ca")
    _perturb(sub, seed=7, scale=0.02)
    x = torch.randn(1, 32, 6, 5)
    units = [sub.res] * 3 if kind == "rram_tied" else [sub.res1, sub.res2, sub.res3]
    with torch.no_grad():
        x1 = F.prelu(sub.conv1(x), sub.prelu.weight)
        if skip:
            x2 = _manual_unit(units[0], x1)
            x3 = _manual_unit(units[1], x2 + x1)
            x4 = _manual_unit(units[2], x3 + x2 + x1)
        else:
            x4 = _manual_unit(units[2], _manual_unit(units[1], _manual_unit(units[0], x1)))
        ref = sub.conv2(x4)
        assert torch.allclose(sub(x), ref, atol=1e-5)


# ------------------------------------------------------------------------------- variants
HEAD, TAIL, PRELU = 32 * 64 * 9 + 64, 64 * 32 * 9 + 32, 1
CA = (64 * 4 + 4) + 1 + (4 * 64 + 64)          # 581
SE = 64 * 4 + 1 + 4 * 64                         # 513
UNIT_CORE = (64 * 128 * 9 + 128) + (128 * 64 * 9 + 64) + 1  # 147,649
DENSE = sum(cin * 9 * cout + cout for cin, cout in [(32, 32), (64, 32), (96, 32), (128, 32), (160, 32)]) + 1
RESNET = HEAD + 3 * (64 * 64 * 9 + 64) + TAIL + 1

# name -> (kwargs, per-subnet trainable incl. unused, per-subnet used, starts as D(E(x)))
VARIANTS = {
    "rram": ({}, HEAD + 3 * (UNIT_CORE + CA) + TAIL + PRELU + CA, HEAD + 3 * (UNIT_CORE + CA) + TAIL + PRELU, True),
    "chain": ({"subnet": "chain"}, HEAD + 3 * (UNIT_CORE + CA) + TAIL + PRELU + CA,
              HEAD + 3 * (UNIT_CORE + CA) + TAIL + PRELU, True),
    "rram_tied": ({"subnet": "rram_tied"}, HEAD + UNIT_CORE + CA + TAIL + PRELU,
                  HEAD + UNIT_CORE + CA + TAIL + PRELU, True),
    "no_attention": ({"subnet": "no_attention"}, HEAD + 3 * UNIT_CORE + TAIL + PRELU,
                     HEAD + 3 * UNIT_CORE + TAIL + PRELU, True),
    "se_resblk": ({"subnet": "se_resblk"}, HEAD + 3 * (UNIT_CORE + SE) + TAIL + PRELU + SE,
                  HEAD + 3 * (UNIT_CORE + SE) + TAIL + PRELU, True),
    "resblk": ({"subnet": "resblk"}, RESNET, RESNET, False),
    "dense": ({"subnet": "dense"}, DENSE, DENSE, True),
    "two_round": ({"rounds": 2}, HEAD + 2 * (UNIT_CORE + CA) + TAIL + PRELU + CA,
                  HEAD + 2 * (UNIT_CORE + CA) + TAIL + PRELU, True),
    "tied_two_round": ({"subnet": "rram_tied", "rounds": 2}, HEAD + UNIT_CORE + CA + TAIL + PRELU,
                       HEAD + UNIT_CORE + CA + TAIL + PRELU, True),
    "haar": ({"encoder": "haar"}, HEAD + 3 * (UNIT_CORE + CA) + TAIL + PRELU + CA,
             HEAD + 3 * (UNIT_CORE + CA) + TAIL + PRELU, True),
}


def test_component_arithmetic():
    # guard the expected-value table against itself: these are the dsn_reference 1.6 numbers
    assert VARIANTS["rram"][1] == 482_232 and CA == 581 and UNIT_CORE + CA == 148_230


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant(name):
    kwargs, per_sub, per_sub_used, starts_identity = VARIANTS[name]
    torch.manual_seed(0)
    nb = 2
    m = DSN(n_blocks=nb, **kwargs)
    s = parameter_summary(m)
    assert s["trainable"] == 3 * nb * per_sub
    assert s["trainable_used"] == 3 * nb * per_sub_used
    assert s["frozen"] == FROZEN
    x = torch.rand(1, 3, 7, 5, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        de = m.reconstruct(x)
        enh = m.enhance(x)
        assert enh.shape == x.shape and torch.isfinite(enh).all()
        if starts_identity:
            assert torch.equal(enh, de)
            assert torch.equal(m.degrade(x), de)
        else:  # official ResidualNet has a global identity skip: F(b) = b at init
            assert not torch.allclose(enh, de, atol=1e-3)
            b = torch.randn(1, 32, 4, 4)
            assert torch.equal(m.operations[1].F(b), b)
        _perturb(m, seed=9, scale=0.01)
        h = torch.randn(1, 64, 5, 4, generator=torch.Generator().manual_seed(10))
        e = m.features_enhance(h)
        assert (e - h).abs().max() > 1e-3
        assert (m.features_degrade(e) - h).abs().max() < 1e-4
        assert m.degrade(x).shape == x.shape


@pytest.mark.parametrize("subnet", ["rram", "rram_tied", "chain", "no_attention", "se_resblk"])
def test_fast_inference_is_bit_identical_and_leaves_training_alone(subnet):
    torch.manual_seed(0)
    plain = _perturb(DSN(n_blocks=2, subnet=subnet, rounds=3), seed=11, scale=0.05)
    fast = copy.deepcopy(plain).set_fast_inference(True, channels_last=False)
    x = torch.rand(2, 3, 9, 13, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        ref = plain.enhance(x)
        assert (ref - plain.reconstruct(x)).abs().max() > 1e-2   # the blocks really act
        assert torch.equal(fast.enhance(x), ref)
        assert torch.equal(fast.degrade(x), plain.degrade(x))
    with torch.inference_mode():
        assert torch.equal(fast.enhance(x), ref)
    # autograd on: the out-of-place path, same values and gradients
    xg = x.clone().requires_grad_(True)
    fast.enhance(xg).square().sum().backward()
    xp = x.clone().requires_grad_(True)
    plain.enhance(xp).square().sum().backward()
    assert torch.equal(xg.grad, xp.grad)
    # channels-last storage: same function up to float rounding
    cl = copy.deepcopy(plain).set_fast_inference(True, channels_last=True)
    assert cl.inference_path() == {"inplace": True, "channels_last": True, "fused_conv_prelu": True}
    assert cl.operations[1].F.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert (cl.enhance(x) - ref).abs().max() < 1e-5 * ref.abs().max()
    assert copy.deepcopy(cl).set_fast_inference(False).inference_path() == {
        "inplace": False, "channels_last": False, "fused_conv_prelu": False}


def test_four_blocks_and_unused_excluded():
    m = DSN(n_blocks=4)
    assert len(m.operations) == 6
    s = parameter_summary(m)
    assert s["trainable"] == 12 * 482_232 and s["unused"] == 12 * 581 and s["state_dict_keys"] == 12 * 40 + 4
    assert [(k, tuple(v.shape)) for k, v in m.state_dict().items()] == official_key_layout(4)


def test_bad_options():
    with pytest.raises(ValueError):
        DSN(n_blocks=1, subnet="nope")
    with pytest.raises(ValueError):
        DSN(n_blocks=1, subnet="dense", rounds=2)
    with pytest.raises(ValueError):
        DSN(n_blocks=1, encoder="wavelet")
    w1, w2, _ = fallback_encoder()
    with pytest.raises(ValueError):
        DSN(n_blocks=1, encoder="haar", encoder_weights=(w1, w2))
    with pytest.raises(ValueError):
        DSN(n_blocks=1, encoder_weights=(w1[:, :, :2], w2))


# ------------------------------------------------------------------------------- official I/O
def test_export_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    src = _perturb(DSN(), seed=11, scale=0.01)
    sd = export_official_state_dict(src)
    assert len(sd) == 964 and list(sd) == [k for k, _ in official_key_layout(8)]
    path = tmp_path / "ckpt_G.pth"
    torch.save(sd, path)
    torch.manual_seed(123)
    dst = DSN(encoder_weights=haar_encoder())  # different weights and different encoder tensors
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        assert not torch.allclose(dst.enhance(x), src.enhance(x))
        info = load_official_state_dict(dst, str(path))
        assert torch.equal(dst.enhance(x), src.enhance(x))
        assert torch.equal(dst.degrade(x), src.degrade(x))
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["n_keys"] == 964
    assert dst.encoder_info["kind"] == "dsn_checkpoint"
    assert dst.encoder_info["tensors_sha256"] == src.encoder_info["tensors_sha256"]
    # a DataParallel-style "module." prefix is stripped
    dst2 = DSN(n_blocks=8)
    load_official_state_dict(dst2, {"module." + k: v for k, v in sd.items()})
    for k, v in dst2.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_loader_rejects_bad_dicts(default_model):
    sd = export_official_state_dict(default_model)
    missing = dict(sd)
    del missing["operations.3.G.res2.so.conv_du.2.bias"]
    with pytest.raises(ValueError, match=r"operations\.3\.G\.res2\.so\.conv_du\.2\.bias") as ei:
        load_official_state_dict(DSN(n_blocks=8), missing)
    assert "\n" not in str(ei.value)
    differ = dict(sd)
    differ["operations.9.haar_weights1"] = sd["operations.9.haar_weights1"] + 1e-3
    with pytest.raises(ValueError, match="differ"):
        load_official_state_dict(DSN(n_blocks=8), differ)
    shape = dict(sd)
    shape["operations.1.F.conv1.bias"] = torch.zeros(65)
    with pytest.raises(ValueError, match=r"operations\.1\.F\.conv1\.bias"):
        load_official_state_dict(DSN(n_blocks=8), shape)
    with pytest.raises(ValueError, match="unexpected"):
        load_official_state_dict(DSN(n_blocks=4), sd)


# ------------------------------------------------------------------------------- encoder tensors
def _save(obj, path):
    torch.save(obj, path)
    return str(path)


def test_encoder_loader_accepts_three_formats(tmp_path):
    g = torch.Generator().manual_seed(12)
    w1, w2 = torch.randn(64, 3, 3, 3, generator=g), torch.randn(64, 64, 3, 3, generator=g)
    tv = _save({"features.0.weight": w1, "features.0.bias": torch.zeros(64), "features.2.weight": w2,
                "features.2.bias": torch.zeros(64), "features.5.weight": torch.zeros(128, 64, 3, 3)},
               tmp_path / "tv.pth")
    caffe = _save({"conv1_1.weight": w1, "conv1_1.bias": torch.zeros(64), "conv1_2.weight": w2,
                   "conv1_2.bias": torch.zeros(64), "conv2_1.weight": torch.zeros(128, 64, 3, 3)},
                  tmp_path / "vgg16.weight")
    a1, a2, ia = load_vgg16_conv1(tv)
    b1, b2, ib = load_vgg16_conv1(caffe)
    assert ia["kind"] == "torchvision_v1" and ib["kind"] == "caffe_t7"
    for t1, t2 in ((a1, a2), (b1, b2)):
        assert torch.equal(t1, w1) and torch.equal(t2, w2)
    with open(tv, "rb") as fh:
        assert ia["sha256"] == hashlib.sha256(fh.read()).hexdigest()
    assert ia["tensors_sha256"] == ib["tensors_sha256"] == tensor_sha256(w1, w2)
    assert ia["sha256"] != ib["sha256"]
    # a DSN built from them, exported, and read back as a checkpoint gives the same tensors
    m = DSN(n_blocks=1, encoder_weights=(b1, b2, ib))
    assert m.encoder_info["kind"] == "caffe_t7"
    assert torch.equal(m.operations[2].haar_weights2, w2)
    ck = _save(export_official_state_dict(m), tmp_path / "1_G.pth")
    c1, c2, ic = load_vgg16_conv1(ck)
    assert ic["kind"] == "dsn_checkpoint" and ic["tensors_sha256"] == ib["tensors_sha256"]
    # torchvision-style file names carry a sha256 prefix
    named = tmp_path / f"vgg16-{ia['sha256'][:8]}.pth"
    named.write_bytes(open(tv, "rb").read())
    assert load_vgg16_conv1(str(named))[2]["filename_hash_ok"] is True
    wrong = tmp_path / "vgg16-00000000.pth"
    wrong.write_bytes(open(tv, "rb").read())
    assert load_vgg16_conv1(str(wrong))[2]["filename_hash_ok"] is False


def test_encoder_loader_rejects(tmp_path):
    g = torch.Generator().manual_seed(13)
    cases = {
        "shape.pth": {"features.0.weight": torch.randn(64, 3, 5, 5, generator=g),
                      "features.2.weight": torch.randn(64, 64, 3, 3, generator=g)},
        "shape2.pth": {"conv1_1.weight": torch.randn(64, 3, 3, 3, generator=g),
                       "conv1_2.weight": torch.randn(128, 64, 3, 3, generator=g)},
        "missing.pth": {"features.0.weight": torch.randn(64, 3, 3, 3, generator=g)},
        "other.pth": {"layer1.weight": torch.randn(3, 3)},
    }
    for name, sd in cases.items():
        with pytest.raises(ValueError) as ei:
            load_vgg16_conv1(_save(sd, tmp_path / name))
        assert "\n" not in str(ei.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a torch file")
    with pytest.raises(ValueError):
        load_vgg16_conv1(str(junk))
    with pytest.raises(ValueError):
        load_vgg16_conv1(str(tmp_path / "absent.pth"))


def test_fallback_encoder_deterministic_and_parseval():
    w1, w2, info = fallback_encoder(0)
    v1, v2, _ = fallback_encoder(0)
    assert torch.equal(w1, v1) and torch.equal(w2, v2)
    assert info["kind"].startswith("fallback_")
    # pinned: the construction is closed-form, so these bytes are the same on every machine
    assert info["tensors_sha256"] == "ed1f6991dc22c8d325ee70060c23983b80f4394ef716bcd38d54ac2c5e3799c5"
    assert not torch.equal(fallback_encoder(1)[0], w1)
    assert torch.all(w1.abs() == torch.tensor(1 / 24, dtype=torch.float32))
    # rows of W1 (64 x 27) have orthonormal columns up to the 1/3 window factor
    m = w1.double().reshape(64, 27) * 3
    assert torch.allclose(m.T @ m, torch.eye(27, dtype=torch.float64), atol=1e-6)
    # E^T E is diagonal: window count / 9 (1 inside, 2/3 on edges, 4/9 at corners)
    x = torch.rand(1, 3, 6, 7, dtype=torch.float64)
    y = decode(encode(x, w1.double(), w2.double()), w1.double(), w2.double())
    cnt = F.conv2d(torch.ones(1, 1, 6, 7, dtype=torch.float64), torch.ones(1, 1, 3, 3, dtype=torch.float64), padding=1)
    assert torch.allclose(y, x * cnt / 9, atol=1e-6)
    g = encoder_gain(w1, w2)
    assert g["interior_gain"] == pytest.approx(1.0, abs=1e-6)
    assert g["spectral_norm"] == pytest.approx(1.0, abs=1e-5)


def test_haar_encoder_frame():
    w1, w2, info = haar_encoder()
    assert info["kind"] == "haar_undecimated_packet"
    x = torch.rand(1, 3, 13, 12, dtype=torch.float64)
    h = encode(x, w1.double(), w2.double())
    assert h.shape == (1, 64, 13, 12)
    assert (h.pow(2).mean(dim=(0, 2, 3)) > 0).all()  # all 64 channels carry signal
    y = decode(h, w1.double(), w2.double())
    assert torch.allclose(y[..., 3:-3, 3:-3], x[..., 3:-3, 3:-3], atol=1e-12)  # Parseval inside
    assert not torch.allclose(y, x, atol=1e-3)  # zero padding loses energy at the border
    assert encoder_gain(w1, w2)["interior_gain"] == pytest.approx(1.0, abs=1e-12)

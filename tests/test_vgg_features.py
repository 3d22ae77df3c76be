"""bench/vgg_features.py: layout, shapes, the seeded substitute, loading torchvision-style files."""

from __future__ import annotations

import pytest
import torch

from bench.errors import BenchError
from bench.vgg_features import LAYERS, VggFeatures, vgg16_features

torch.set_num_threads(1)


def _torchvision_like_state_dict(seed: int = 3) -> dict[str, torch.Tensor]:
    """A synthetic state dict with torchvision's vgg16() key names and shapes (plus a classifier)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    cin = 3
    conv_idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    chans = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    for idx, cout in zip(conv_idx, chans):
        sd[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        sd[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.01
        cin = cout
    sd["classifier.0.weight"] = torch.zeros(8, 4)  # ignored (shape deliberately not the real one)
    return sd


def test_layer_names_follow_torchvision_indices():
    assert LAYERS[0] == "conv1_1" and LAYERS[1] == "relu1_1" and LAYERS[4] == "pool1"
    assert LAYERS.index("relu5_1") == 25 and LAYERS.index("relu5_3") == 29 and LAYERS.index("pool5") == 30
    net = VggFeatures("pool5")
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.features) == 13
    assert sum(p.numel() for p in net.parameters()) == 14_714_688  # torchvision vgg16().features
    assert isinstance(net.features[2], torch.nn.Conv2d) and isinstance(net.features[30], torch.nn.MaxPool2d)


def test_shapes_frozen_and_multi():
    net, info = vgg16_features("cpu", "relu5_1")
    assert info["kind"] == "substitute_random_vgg16" and info["faithful"] is False and "seed" in info
    assert info["substitutes"]
    assert not net.training and all(not p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training
    x = torch.rand(1, 3, 37, 53)
    y = net(x)
    assert y.shape == (1, 512, 37 // 16, 53 // 16)
    d = net.multi(x, ["relu1_2", "relu3_3", "relu5_1"])
    assert list(d) == ["relu1_2", "relu3_3", "relu5_1"]
    assert d["relu1_2"].shape == (1, 64, 37, 53) and d["relu3_3"].shape == (1, 256, 9, 13)
    torch.testing.assert_close(d["relu5_1"], y)
    with pytest.raises(BenchError):
        net.multi(x, ["relu5_3"])  # beyond last_layer
    with pytest.raises(BenchError):
        vgg16_features("cpu", "relu6_1")


def test_substitute_is_deterministic_and_seeded():
    a, ia = vgg16_features("cpu", "relu2_2")
    torch.manual_seed(999)  # the global RNG must not matter
    b, _ = vgg16_features("cpu", "relu2_2")
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    c, ic = vgg16_features("cpu", "relu2_2", seed=ia["seed"] + 1)
    assert ic["seed"] != ia["seed"]
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    # kaiming fan_out: conv1_1 std ≈ sqrt(2/(64*9))
    w = a.features[0].weight
    assert abs(float(w.std()) - (2 / 576) ** 0.5) < 0.01
    # the substitute's features are not degenerate at relu5_1
    f, _ = vgg16_features("cpu", "relu5_1")
    y = f(torch.rand(1, 3, 64, 64))
    assert float(y.abs().mean()) > 1e-4


def test_imagenet_normalisation_inside():
    net = VggFeatures("relu1_1")
    x = torch.rand(1, 3, 5, 7)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(net.normalize(x), (x - mean) / std)
    caffe = VggFeatures("relu1_1", "caffe_nomean")
    torch.testing.assert_close(caffe.normalize(x), x[:, [2, 1, 0]] * 255)


def test_loads_synthetic_torchvision_file_explicitly(tmp_path):
    sd = _torchvision_like_state_dict()
    path = tmp_path / "vgg16-synthetic.pth"
    torch.save(sd, path)
    net, info = vgg16_features("cpu", "relu5_3", weights=path)
    assert info["kind"] == "torchvision_imagenet" and info["preprocess"] == "imagenet"
    assert info["faithful"] is False  # the sha256 is not the one manifests/weights.yaml knows
    assert len(info["sha256"]) == 64
    torch.testing.assert_close(net.features[28].weight, sd["features.28.weight"])
    torch.testing.assert_close(net.features[0].bias, sd["features.0.bias"])
    # the module computes exactly the torchvision features on normalised input
    x = torch.rand(1, 3, 16, 16)
    h = net.normalize(x)
    h = torch.relu(torch.nn.functional.conv2d(h, sd["features.0.weight"], sd["features.0.bias"], padding=1))
    torch.testing.assert_close(net.multi(x, ["relu1_1"])["relu1_1"], h)
    # a state dict missing a conv is refused
    del sd["features.26.bias"]
    torch.save(sd, path)
    with pytest.raises(BenchError, match="features.26.bias"):
        vgg16_features("cpu", "relu5_3", weights=path)


def test_uses_the_imported_record_and_checks_its_hash(tmp_path):
    from bench.fsutil import sha256_file, write_yaml
    from bench.weights import VGG_RECORD, weights_dir

    sd = _torchvision_like_state_dict(seed=5)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(sd, path)
    rec = weights_dir() / VGG_RECORD
    rec.parent.mkdir(parents=True, exist_ok=True)
    write_yaml(rec, {"kind": "torchvision_v1", "source_path": str(path), "source_sha256": sha256_file(path)})
    net, info = vgg16_features("cpu", "relu1_2")
    assert info["kind"] == "torchvision_imagenet" and info["sha256"] == sha256_file(path)
    assert info["faithful"] is False  # synthetic bytes differ from the real 397923af… file
    torch.testing.assert_close(net.features[2].weight, sd["features.2.weight"])
    # altered file: an error, not a silent substitute
    torch.save(_torchvision_like_state_dict(seed=6), path)
    with pytest.raises(BenchError, match="differs from the one recorded"):
        vgg16_features("cpu", "relu1_2")
    # source gone: the substitute, saying why
    path.unlink()
    _, info = vgg16_features("cpu", "relu1_2")
    assert info["kind"] == "substitute_random_vgg16" and "no longer there" in info["note"]
    # use_imported=False forces the substitute
    torch.save(sd, path)
    _, info = vgg16_features("cpu", "relu1_2", use_imported=False)
    assert info["kind"] == "substitute_random_vgg16"


def test_caffe_layout_file(tmp_path):
    sd = _torchvision_like_state_dict(seed=7)
    names = [n for n in LAYERS if n.startswith("conv")]
    idx = [LAYERS.index(n) for n in names]
    caffe = {}
    for n, i in zip(names, idx):
        caffe[f"{n}.weight"] = sd[f"features.{i}.weight"]
        caffe[f"{n}.bias"] = sd[f"features.{i}.bias"]
    path = tmp_path / "vgg16.weight"
    torch.save(caffe, path)
    net, info = vgg16_features("cpu", "relu5_1", weights=path)
    assert info["kind"] == "caffe_vgg16" and info["preprocess"] == "caffe" and info["faithful"] is False
    torch.testing.assert_close(net.features[24].weight, sd["features.24.weight"])


def test_drop_pools_keeps_indices_and_weights():
    full, _ = vgg16_features("cpu", "relu5_1")
    nopool, info = vgg16_features("cpu", "relu5_1", drop_pools=("pool4",))
    assert info["dropped_pools"] == ["pool4"] and isinstance(nopool.features[23], torch.nn.Identity)
    for a, b in zip(full.parameters(), nopool.parameters()):
        assert torch.equal(a, b)
    x = torch.rand(1, 3, 64, 64)
    assert full(x).shape == (1, 512, 4, 4) and nopool(x).shape == (1, 512, 8, 8)
    # up to relu4_3 both agree
    torch.testing.assert_close(full.multi(x, ["relu4_3"])["relu4_3"], nopool.multi(x, ["relu4_3"])["relu4_3"])
    with pytest.raises(BenchError):
        VggFeatures("relu5_1", drop_pools=("relu4_3",))

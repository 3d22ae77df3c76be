"""A frozen VGG-16 feature extractor shared by the methods whose losses or states use VGG features.

EnlightenGAN (self feature-preserving loss on relu5_1) and Distort-and-Recover (the agent's state) were
trained with ImageNet VGG-16 features, which cannot be downloaded here (baselines.md §0.1). This module
builds the convolutional part of VGG-16 in torchvision's ``features`` layout (so a torchvision state dict
loads key for key) up to a named layer, and chooses its weights:

1. an explicit ``weights=FILE`` argument, or else
2. the file recorded by ``bench weights import vgg16 FILE`` (``$BENCH_DATA/_weights/vgg16_conv1.yaml``,
   fields ``source_path``/``source_sha256``/``kind``), provided the file is still there. Its sha256 is
   re-computed and must equal the recorded one (a mismatch is an error, never a silent fallback);
3. otherwise the documented substitute: a deterministic, seeded, randomly initialised VGG-16 (kaiming-normal
   ``fan_out`` weights as torchvision initialises VGG, zero biases, drawn from a private
   ``torch.Generator`` on the CPU so every device and every run gets the same tensors). Its features give
   a "random-feature perceptual loss"; they are *not* ImageNet features, and the info says so
   (``faithful: False``).

Accepted files (``torch.load(weights_only=True)`` state dicts, an optional ``module.`` prefix or a
``{"state_dict": ...}`` wrapper ignored):

- torchvision ``vgg16-397923af.pth`` (keys ``features.N.weight``/``bias``; classifier keys ignored):
  kind ``torchvision_imagenet``. Faithful when the file's sha256 equals the one ``manifests/weights.yaml``
  knows for it (``397923af…``), otherwise flagged as an unverified file.
- the Lua/Caffe-converted ``vgg16.weight`` of fast-neural-style / EnlightenGAN (keys ``conv1_1.weight`` …
  ``conv5_3.bias``): kind ``caffe_vgg16``. Its network expects BGR in [0, 255]; see ``preprocess``. Faithful
  only if ``manifests/weights.yaml`` records its hash and it matches (none is recorded today).

Input is RGB in [0, 1]; normalisation happens inside (``preprocess``):

``"imagenet"``    (x − mean) / std with torchvision's ImageNet statistics (default for torchvision weights
                  and for the substitute);
``"caffe"``       BGR, ×255, minus the Caffe BGR means (103.939, 116.779, 123.68) (default for Caffe weights);
``"caffe_nomean"`` BGR, ×255, no mean subtraction: EnlightenGAN's official ``vgg_preprocess`` with its
                  ``--vgg_mean`` flag off (the released setting).

Usage::

    net, info = vgg16_features(device, "relu5_1")
    f = net(x)                                  # features of relu5_1
    d = net.multi(x, ["relu1_2", "relu5_1"])    # several layers in one pass
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .errors import BenchError

__all__ = ["LAYERS", "VggFeatures", "vgg16_features", "load_vgg16_state_dict", "SUBSTITUTE_SEED"]

# torchvision's vgg16().features: index -> name
_CFG = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
LAYERS: list[str] = []
_CONV_INDEX: dict[str, int] = {}
for _b, _chs in enumerate(_CFG, start=1):
    for _i, _ in enumerate(_chs, start=1):
        _CONV_INDEX[f"conv{_b}_{_i}"] = len(LAYERS)
        LAYERS += [f"conv{_b}_{_i}", f"relu{_b}_{_i}"]
    LAYERS.append(f"pool{_b}")
assert len(LAYERS) == 31 and LAYERS[29] == "relu5_3" and LAYERS[30] == "pool5"

SUBSTITUTE_SEED = 20210711  # fixed: the substitute is one network, not one per run
PREPROCESS = ("imagenet", "caffe", "caffe_nomean")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_sha_cache: dict[tuple[str, int, int], str] = {}


class VggFeatures(nn.Module):
    """VGG-16 ``features`` (torchvision indices) up to ``last_layer``; frozen, eval mode, input RGB [0,1]."""

    def __init__(self, last_layer: str = "relu5_3", preprocess: str = "imagenet", drop_pools: Sequence[str] = ()):
        super().__init__()
        bad = [p for p in drop_pools if p not in LAYERS or not p.startswith("pool")]
        if bad:
            raise BenchError(f"drop_pools: {bad[0]!r} is not a VGG-16 pooling layer (pool1 … pool5)")
        self.drop_pools = tuple(drop_pools)
        if last_layer not in LAYERS:
            raise BenchError(f"unknown VGG-16 layer {last_layer!r}; choose one of {', '.join(LAYERS)}")
        if preprocess not in PREPROCESS:
            raise BenchError(f"unknown VGG preprocessing {preprocess!r}; choose one of {', '.join(PREPROCESS)}")
        self.last_layer, self.preprocess = last_layer, preprocess
        n = LAYERS.index(last_layer) + 1
        mods: list[nn.Module] = []
        cin = 3
        for name in LAYERS[:n]:
            if name.startswith("conv"):
                b, i = (int(s) for s in name[4:].split("_"))
                cout = _CFG[b - 1][i - 1]
                mods.append(nn.Conv2d(cin, cout, 3, padding=1))
                cin = cout
            elif name.startswith("relu"):
                mods.append(nn.ReLU(inplace=False))
            elif name in self.drop_pools:
                mods.append(nn.Identity())  # keeps the torchvision indices (pools have no parameters)
            else:
                mods.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*mods)
        if preprocess == "imagenet":
            mean, scale = torch.tensor(_IMAGENET_MEAN), 1.0 / torch.tensor(_IMAGENET_STD)
        else:
            mean = torch.tensor(_CAFFE_MEAN_BGR if preprocess == "caffe" else (0.0, 0.0, 0.0))
            scale = torch.ones(3)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def freeze(self) -> "VggFeatures":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "VggFeatures":  # always eval: no dropout/BN here, but keep it explicit
        return super().train(False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocess == "imagenet":
            return (x - self.mean) * self.scale
        return x.flip(1) * 255.0 - self.mean  # RGB -> BGR, [0,255], minus mean (zero for caffe_nomean)

    def multi(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Features of several layers (each must be at or before ``last_layer``) in one pass."""
        want = {}
        for name in layers:
            if name not in LAYERS[: len(self.features)]:
                raise BenchError(f"layer {name!r} is not in this VGG-16 (built up to {self.last_layer})")
            want[LAYERS.index(name)] = name
        out: dict[str, torch.Tensor] = {}
        h = self.normalize(x)
        last = max(want) if want else -1
        for idx, mod in enumerate(self.features):
            if idx > last:
                break
            h = mod(h)
            if idx in want:
                out[want[idx]] = h
        return {name: out[name] for name in layers}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.normalize(x))


# ------------------------------------------------------------------------------------------------
# weights
# ------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    from .fsutil import sha256_file

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        _sha_cache[key] = sha256_file(path)
    return _sha_cache[key]


def load_vgg16_state_dict(obj: Any, where: str = "state dict") -> tuple[dict[str, torch.Tensor], str]:
    """Normalise a torchvision or Caffe/Lua VGG-16 state dict to torchvision ``features.N.*`` keys.

    Returns (state dict of all 13 convs' weights and biases, kind). Raises BenchError on a missing key or a
    wrong shape."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise BenchError(f"{where}: expected a VGG-16 state dict, got {type(obj).__name__}")
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}
    if any(k.startswith("features.") for k in sd):
        kind, key = "torchvision_imagenet", (lambda name, p: f"features.{_CONV_INDEX[name]}.{p}")
    elif "conv1_1.weight" in sd:
        kind, key = "caffe_vgg16", (lambda name, p: f"{name}.{p}")
    else:
        first = ", ".join(list(sd)[:4]) or "<empty>"
        raise BenchError(f"{where}: not a VGG-16 state dict (need features.N.* or conv1_1.* keys; first keys: {first})")
    out: dict[str, torch.Tensor] = {}
    cin = 3
    for name, idx in _CONV_INDEX.items():
        b, i = (int(s) for s in name[4:].split("_"))
        cout = _CFG[b - 1][i - 1]
        for p, shape in (("weight", (cout, cin, 3, 3)), ("bias", (cout,))):
            k = key(name, p)
            if k not in sd:
                raise BenchError(f"{where}: VGG-16 state dict lacks {k!r}")
            t = sd[k]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise BenchError(f"{where}: {k} has shape {got}, expected {shape}")
            out[f"features.{idx}.{p}"] = t.detach().to(torch.float32)
        cin = cout
    return out, kind


def _random_init(net: VggFeatures, seed: int) -> None:
    """torchvision's VGG init (kaiming normal, fan_out, relu; zero bias) from a private CPU generator."""
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in net.features:
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                std = (2.0 / fan_out) ** 0.5
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                m.bias.zero_()


def _recorded_file() -> tuple[Path | None, dict[str, Any], str]:
    """(source file, record, note) from ``bench weights import vgg16``; file None when unusable."""
    from .fsutil import read_yaml
    from .weights import VGG_RECORD, weights_dir

    path = weights_dir() / VGG_RECORD
    if not path.exists():
        return None, {}, "no VGG-16 file imported (bench weights import vgg16 FILE)"
    record = read_yaml(path) or {}
    src = record.get("source_path")
    if not src:
        return None, record, f"{path} records no source_path, so the full VGG-16 file cannot be found"
    src = Path(str(src))
    if record.get("kind") == "dsn_checkpoint":
        return None, record, f"the imported file {src} is a DSN checkpoint (conv1 only), not a full VGG-16"
    if not src.is_file():
        return None, record, f"the imported VGG-16 file {src} is no longer there"
    return src, record, f"imported with bench weights import vgg16 ({path})"


def _manifest_sha(kind: str) -> str | None:
    from .weights import manifest_entries

    want = {"torchvision_imagenet": "torchvision_v1", "caffe_vgg16": "caffe_t7"}[kind]
    for e in manifest_entries().values():
        if e.get("kind") == want and e.get("sha256") not in (None, "", "unknown"):
            return str(e["sha256"])
    return None


def vgg16_features(device: torch.device | str, last_layer: str = "relu5_3", *, weights: str | os.PathLike | None = None,
                   use_imported: bool = True, preprocess: str = "auto", seed: int = SUBSTITUTE_SEED,
                   drop_pools: Sequence[str] = ()) -> tuple[VggFeatures, dict[str, Any]]:
    """A frozen eval-mode VGG-16 feature module up to ``last_layer`` on ``device``, and what it is.

    Args:
        weights: a VGG-16 state-dict file (torchvision or Caffe-converted); None = the imported one if any.
        use_imported: when ``weights`` is None, look for the file ``bench weights import vgg16`` recorded
            (False forces the substitute).
        preprocess: ``auto`` (imagenet for torchvision weights and the substitute, caffe for Caffe weights),
            ``imagenet``, ``caffe`` or ``caffe_nomean``.
        seed: seed of the random substitute.
        drop_pools: pooling layers to leave out (e.g. ``("pool4",)``: EnlightenGAN's official ``Vgg16`` computes
            relu5_1 without the fourth max-pool unless ``--vgg_maxpooling`` is set). Indices stay torchvision's.

    Returns ``(module, info)``; info has ``kind`` (``torchvision_imagenet``, ``caffe_vgg16`` or
    ``substitute_random_vgg16``), ``faithful``, ``sha256`` (files) or ``seed`` (substitute), ``last_layer``,
    ``preprocess``, ``source`` and ``note``; the substitute also ``substitutes``.
    """
    if preprocess != "auto" and preprocess not in PREPROCESS:
        raise BenchError(f"unknown VGG preprocessing {preprocess!r}; choose auto or one of {', '.join(PREPROCESS)}")
    record: dict[str, Any] = {}
    if weights is not None:
        src: Path | None = Path(weights).expanduser()
        if not src.is_file():
            raise BenchError(f"VGG-16 weights file not found: {src}")
        note = "given explicitly"
    elif use_imported:
        src, record, note = _recorded_file()
    else:
        src, note = None, "substitute requested (use_imported=False)"

    if src is None:
        pre = "imagenet" if preprocess == "auto" else preprocess
        net = VggFeatures(last_layer, pre, drop_pools)
        _random_init(net, seed)
        info = {"kind": "substitute_random_vgg16", "faithful": False, "seed": int(seed), "last_layer": last_layer,
                "preprocess": pre, "dropped_pools": list(drop_pools), "source": None, "note": note,
                "substitutes": [f"ImageNet VGG-16 -> seeded random-initialised VGG-16 (seed {seed}, kaiming-normal "
                                "fan_out, zero bias): a random-feature perceptual loss"]}
        return net.freeze().to(device), info

    sha = _sha256(src)
    if record and record.get("source_sha256") and sha != record.get("source_sha256"):
        raise BenchError(f"{src}: sha256 {sha[:16]}… differs from the one recorded at import "
                         f"({str(record.get('source_sha256'))[:16]}…); re-run bench weights import vgg16 FILE")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # zip/pickle errors, weights_only refusals
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BenchError(f"{src}: not a loadable torch file ({type(e).__name__}: {first[:160]})") from None
    sd, kind = load_vgg16_state_dict(obj, str(src))
    pre = preprocess if preprocess != "auto" else ("imagenet" if kind == "torchvision_imagenet" else "caffe")
    net = VggFeatures(last_layer, pre, drop_pools)
    own = net.state_dict()
    net.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=True)
    known = _manifest_sha(kind)
    faithful = known is not None and known == sha
    if faithful:
        reason = "file sha256 matches manifests/weights.yaml"
    elif known is not None:
        reason = "file sha256 differs from the one manifests/weights.yaml knows for this kind of file"
    else:
        reason = "manifests/weights.yaml records no sha256 for this kind of file, so it cannot be verified"
    info = {"kind": kind, "faithful": faithful, "faithful_reason": reason, "sha256": sha,
            "source": str(src.resolve()), "last_layer": last_layer, "preprocess": pre,
            "dropped_pools": list(drop_pools), "note": note}
    return net.freeze().to(device), info

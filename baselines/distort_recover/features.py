"""The deep part of the Distort-and-Recover state: VGG-16 fc6 (4,096 values), L2-normalised.

The official ``model_vgg.py`` runs VGG-16 (from ``vgg16_pretrain.npy``, ImageNet) on the 224×224 image and
returns **fc6** (the first fully connected layer, before its ReLU) normalised with
``tf.nn.l2_normalize(fc6, -1, epsilon=1)``, i.e. ``x / sqrt(max(||x||², 1))``. (baselines.md calls this
"fc7"; the code stops at fc6.)

Here the convolutional part comes from the shared ``bench.vgg_features`` module (which picks an ImageNet file
when one is given or imported, else its documented seeded random substitute), built up to ``pool5``; torchvision's
``AdaptiveAvgPool2d((7, 7))`` (an identity at 224×224) and fc6 are added on top:

* with a torchvision ``vgg16-397923af.pth``-style file, fc6 is that file's ``classifier.0`` (faithful when the
  shared module says the file is the known ImageNet one);
* otherwise (the substitute, or a Caffe conv-only file) fc6 is a seeded random layer initialised like
  torchvision initialises VGG's linear layers (normal(0, 0.01), zero bias), from a private generator so it is
  the same on every machine. It is recorded as a substitute (``faithful: False``).

``kind="none"`` gives an empty deep feature (a histogram + history state), a documented option of baselines.md
for machines without the 420 MB fc6.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError

__all__ = ["DEEP_KINDS", "FC6_SEED", "DeepFeatures", "l2_normalize_eps1"]

DEEP_KINDS = ("fc6", "none")
FC6_SEED = 20180618   # the substitute fc6 is one fixed layer, not one per run
FC6_IN, FC6_OUT = 512 * 7 * 7, 4096


def l2_normalize_eps1(x: torch.Tensor) -> torch.Tensor:
    """``tf.nn.l2_normalize(x, -1, epsilon=1)``: ``x / sqrt(max(sum(x²), 1))``."""
    return x * torch.rsqrt(torch.clamp((x * x).sum(dim=-1, keepdim=True), min=1.0))


class DeepFeatures(nn.Module):
    """Frozen: N×3×S×S RGB in [0, 1] -> N×4096 (``fc6``) or N×0 (``none``)."""

    def __init__(self, kind: str = "fc6", device: torch.device | str = "cpu", vgg_weights: str = "",
                 use_imported: bool = True):
        super().__init__()
        if kind not in DEEP_KINDS:
            raise BenchError(f"distort-recover: deep_features={kind!r}; choose one of {', '.join(DEEP_KINDS)}")
        self.kind = kind
        self.info: dict[str, Any] = {"deep_features": kind}
        if kind == "none":
            self.dim = 0
            self.conv = None
            self.fc6 = None
            self.info.update(faithful=False, substitutes=[
                "VGG-16 fc6 state (4,096 values) -> none: the state is the Lab histogram and the action history only"])
            return
        from bench.vgg_features import vgg16_features

        self.dim = FC6_OUT
        conv, vinfo = vgg16_features(device, "pool5", weights=vgg_weights or None, use_imported=use_imported)
        self.conv = conv
        self.fc6 = nn.Linear(FC6_IN, FC6_OUT).to(device)
        fc6_source = None
        if vinfo.get("kind") == "torchvision_imagenet" and vinfo.get("source"):
            fc6_source = self._load_fc6(Path(str(vinfo["source"])))
        if fc6_source is None:
            g = torch.Generator().manual_seed(FC6_SEED)
            with torch.no_grad():
                self.fc6.weight.copy_(torch.randn(FC6_OUT, FC6_IN, generator=g) * 0.01)
                self.fc6.bias.zero_()
        for p in self.fc6.parameters():
            p.requires_grad_(False)
        conv_faithful = bool(vinfo.get("faithful"))
        faithful = conv_faithful and fc6_source is not None
        subs = []
        if not conv_faithful:
            what = ("seeded random-initialised VGG-16 conv layers (bench.vgg_features substitute, seed "
                    f"{vinfo.get('seed')})" if vinfo.get("kind") == "substitute_random_vgg16"
                    else f"{vinfo.get('kind')} file not verified as ImageNet VGG-16 ({vinfo.get('faithful_reason')})")
            subs.append(f"ImageNet VGG-16 conv1_1..pool5 -> {what}")
        if fc6_source is None:
            subs.append(f"ImageNet VGG-16 fc6 -> seeded random linear layer 25088->4096 (seed {FC6_SEED}, "
                        "normal(0, 0.01), zero bias)")
        self.info.update({
            "faithful": faithful,
            "vgg": {k: v for k, v in vinfo.items() if k != "substitutes"},
            "fc6": ("classifier.0 of " + str(fc6_source)) if fc6_source else f"random (seed {FC6_SEED})",
            "normalisation": "fc6 pre-ReLU, x / sqrt(max(||x||^2, 1)) (tf.nn.l2_normalize epsilon=1)",
        })
        if subs:
            self.info["substitutes"] = subs
        self.eval()

    def _load_fc6(self, path: Path) -> Path | None:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        sd = {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}
        w, b = sd.get("classifier.0.weight"), sd.get("classifier.0.bias")
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != (FC6_OUT, FC6_IN) or \
                not isinstance(b, torch.Tensor) or tuple(b.shape) != (FC6_OUT,):
            return None
        with torch.no_grad():
            self.fc6.weight.copy_(w.float())
            self.fc6.bias.copy_(b.float())
        return path

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must agree on (the state a Q-network was trained on)."""
        if self.kind == "none":
            return {"deep_features": "none"}
        v = self.info["vgg"]
        return {"deep_features": "fc6", "vgg_kind": v.get("kind"), "vgg_sha256": v.get("sha256"),
                "vgg_seed": v.get("seed"), "fc6": "file" if not str(self.info["fc6"]).startswith("random")
                else f"random:{FC6_SEED}", "preprocess": v.get("preprocess")}

    def train(self, mode: bool = True) -> "DeepFeatures":
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return x.new_zeros(x.shape[0], 0, dtype=torch.float32)
        p = self.conv(x.float())
        p = F.adaptive_avg_pool2d(p, (7, 7))
        return l2_normalize_eps1(self.fc6(p.flatten(1)))

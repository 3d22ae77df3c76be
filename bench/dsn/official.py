"""Strict import/export of DSN state dicts in the official key layout (``dsn_reference.md`` 1.7).

The official generator is saved as ``torch.save(InvRescaleNet.state_dict())`` (no ``module.``
prefix; the loader strips one if present), 964 float32 tensors for the default configuration::

    operations.0.haar_weights1 (64,3,3,3), operations.0.haar_weights2 (64,64,3,3)
    operations.{1..8}.{F,G,H}.<40 RRAM tensors>     (registration order F, G, H)
    operations.9.haar_weights1, operations.9.haar_weights2  (same values as operations.0)

Because :class:`bench.dsn.model.DSN` uses the official attribute names, loading is a strict
``load_state_dict`` plus validation, and export is the model's own ``state_dict``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Tuple, Union

import torch

from bench.dsn.encoder import tensor_sha256
from bench.fsutil import sha256_file

__all__ = [
    "official_key_layout",
    "layout",
    "load_official_state_dict",
    "export_official_state_dict",
    "read_state_dict",
]

_RRAM_SUFFIXES: List[Tuple[str, Tuple[int, ...]]] = (
    [("conv1.weight", (64, 32, 3, 3)), ("conv1.bias", (64,))]
    + [
        item
        for r in (1, 2, 3)
        for item in (
            (f"res{r}.conv1.weight", (128, 64, 3, 3)),
            (f"res{r}.conv1.bias", (128,)),
            (f"res{r}.conv2.weight", (64, 128, 3, 3)),
            (f"res{r}.conv2.bias", (64,)),
            (f"res{r}.prelu.weight", (1,)),
            (f"res{r}.so.conv_du.0.weight", (4, 64, 1, 1)),
            (f"res{r}.so.conv_du.0.bias", (4,)),
            (f"res{r}.so.conv_du.1.weight", (1,)),
            (f"res{r}.so.conv_du.2.weight", (64, 4, 1, 1)),
            (f"res{r}.so.conv_du.2.bias", (64,)),
        )
    ]
    + [
        ("conv2.weight", (32, 64, 3, 3)),
        ("conv2.bias", (32,)),
        ("prelu.weight", (1,)),
        ("soca.conv_du.0.weight", (4, 64, 1, 1)),
        ("soca.conv_du.0.bias", (4,)),
        ("soca.conv_du.1.weight", (1,)),
        ("soca.conv_du.2.weight", (64, 4, 1, 1)),
        ("soca.conv_du.2.bias", (64,)),
    ]
)


def official_key_layout(n_blocks: int = 8) -> List[Tuple[str, Tuple[int, ...]]]:
    """The official (key, shape) list, in order, written out from ``dsn_reference.md`` 1.7 (not
    derived from our model, so it can check it).  Valid for the RRAM subnets ``ResAT2Net_skip``
    and ``ResAT2Net`` (our ``subnet="rram"``/``"chain"`` with ``rounds=3``).  964 entries for 8 blocks.
    """
    enc = [("haar_weights1", (64, 3, 3, 3)), ("haar_weights2", (64, 64, 3, 3))]
    out = [(f"operations.0.{k}", s) for k, s in enc]
    for i in range(1, n_blocks + 1):
        for sub in ("F", "G", "H"):
            out += [(f"operations.{i}.{sub}.{k}", s) for k, s in _RRAM_SUFFIXES]
    out += [(f"operations.{n_blocks + 1}.{k}", s) for k, s in enc]
    return out


def _check_encoder_copies(state: Dict[str, torch.Tensor], last: int = 9) -> Dict[str, torch.Tensor]:
    """``finish`` of :func:`layout`: the two encoder copies must hold identical tensors."""
    from bench.official.layout import LayoutError

    for j in (1, 2):
        a, b = f"operations.0.haar_weights{j}", f"operations.{last}.haar_weights{j}"
        if not torch.equal(state[a], state[b]):
            raise LayoutError(f"official file: encoder copies differ: {a} != {b} (the two E/D copies must hold "
                              "identical tensors)")
    return state


def layout():
    """The generic importer's view of the official generator file (``bench weights import official --method
    ours``): the 964 names of :func:`official_key_layout` (the default 8 blocks, RRAM subnets), each copied to
    the tensor of the same name (our attribute names are the official ones), then ``operations.0`` and
    ``operations.9`` ``haar_weights{1,2}`` checked equal. A ``module.`` prefix is stripped and a
    ``{"state_dict": ...}``/``{"params": ...}`` wrapper unwrapped, as :func:`read_state_dict` does."""
    from bench.official.layout import OfficialLayout, Part, same_name_rules

    names = [k for k, _ in official_key_layout()]
    return OfficialLayout(
        method="ours",
        parts=(Part("", "torch", same_name_rules(names), release_path="codes/pretrained_model/fiveK_G.pth",
                    locate=("fiveK_G.pth", "_G.pth"), containers=("state_dict", "params")),),
        description="InvRescaleNet state dict, 964 tensors: operations.0/9.haar_weights{1,2} (the frozen VGG "
                    "conv1 encoder/decoder copies, equal) and operations.1-8.{F,G,H} RRAM subnets; names as ours",
        test_pipeline="codes/test.py (dsn_reference.md section 3): whole image at native resolution, batch 1, "
                      "netG(low, rev=True), no tiling/resizing/padding; utils.util.tensor2img: clamp [0,1], *255, "
                      "round, uint8",
        official_quantize="round",
        finish=_check_encoder_copies,
    )


def _short(keys: List[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


def read_state_dict(path_or_state_dict: Union[str, os.PathLike, Mapping[str, Any]]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Return ``(state_dict, info)``: load a file (``weights_only=True``) or take a mapping,
    unwrap a ``{"state_dict": ...}``/``{"params": ...}`` container, strip ``module.`` prefixes."""
    info: Dict[str, Any] = {"path": None, "sha256": None}
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = os.fspath(path_or_state_dict)
        if not os.path.isfile(path):
            raise ValueError(f"checkpoint not found: {path}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"{path}: not a loadable torch state dict ({type(exc).__name__}: {msg[:160]})") from None
        info = {"path": os.path.abspath(path), "sha256": sha256_file(path)}
    else:
        obj = path_or_state_dict
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict (mapping of names to tensors), got {type(obj).__name__}")
    for wrapper in ("state_dict", "params"):
        if wrapper in obj and isinstance(obj[wrapper], Mapping) and not any(
            str(k).startswith("operations.") for k in obj
        ):
            obj = obj[wrapper]
            break
    sd: Dict[str, Any] = OrderedDict()
    for k, v in obj.items():
        key = str(k)
        if key.startswith("module."):
            key = key[len("module."):]
        sd[key] = v
    return sd, info


def _encoder_indices(model: torch.nn.Module) -> Tuple[int, int]:
    n = len(model.operations)  # type: ignore[attr-defined]
    return 0, n - 1


def load_official_state_dict(model: torch.nn.Module,
                             path_or_state_dict: Union[str, os.PathLike, Mapping[str, Any]]) -> Dict[str, Any]:
    """Strictly load an official-layout state dict (file path or mapping) into ``model``.

    Checks, each failing with a one-line ``ValueError``: the key set equals the model's (naming the
    first few missing/unexpected keys), every value is a tensor of the model's shape, and the
    encoder copies ``operations.0.haar_weights{1,2}`` equal ``operations.<last>.haar_weights{1,2}``.
    Then ``model.load_state_dict(..., strict=True)`` and ``model.encoder_info`` is set to
    ``kind="dsn_checkpoint"``.  Returns an info dict (path, file sha256, number of keys,
    ``tensors_sha256`` of the encoder tensors).
    """
    sd, info = read_state_dict(path_or_state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_short(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_short(unexpected)})")
        raise ValueError(f"state dict does not match the DSN layout {getattr(model, 'config', '')}: " + "; ".join(parts))
    bad_type = [k for k in expected if not isinstance(sd[k], torch.Tensor)]
    if bad_type:
        raise ValueError(f"state dict values are not tensors: {_short(bad_type)}")
    bad_shape = [
        f"{k} {tuple(sd[k].shape)}!={tuple(expected[k].shape)}"
        for k in expected
        if tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    if bad_shape:
        raise ValueError(f"{len(bad_shape)} shape mismatches: {_short(bad_shape)}")
    first, last = _encoder_indices(model)
    for j in (1, 2):
        a, b = f"operations.{first}.haar_weights{j}", f"operations.{last}.haar_weights{j}"
        if not torch.equal(sd[a].detach().cpu(), sd[b].detach().cpu()):
            raise ValueError(f"encoder copies differ: {a} != {b} (the two E/D copies must hold identical tensors)")
    model.load_state_dict(sd, strict=True)
    w1, w2 = sd[f"operations.{first}.haar_weights1"], sd[f"operations.{first}.haar_weights2"]
    enc_hash = tensor_sha256(w1, w2)
    info.update({"n_keys": len(sd), "tensors_sha256": enc_hash})
    if hasattr(model, "encoder_info"):
        model.encoder_info = {  # type: ignore[attr-defined]
            "kind": "dsn_checkpoint",
            "sha256": info["sha256"] if info["sha256"] else enc_hash,
            "path": info["path"],
            "tensors_sha256": enc_hash,
        }
    return info


def export_official_state_dict(model: torch.nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """The model's state dict as detached, contiguous CPU float32 clones, in registration order.

    For ``subnet in ("rram", "chain")`` with ``rounds=3`` the (key, shape) sequence is checked
    against :func:`official_key_layout` (964 keys for 8 blocks) and a mismatch raises
    ``ValueError``.  Other variants export in the same naming convention (the official class
    attribute names where such a class exists) without that check.  Raises ``ValueError`` if the
    two encoder copies differ.
    """
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(torch.float32)
        out[k] = t.contiguous().clone()
    first, last = _encoder_indices(model)
    for j in (1, 2):
        a, b = f"operations.{first}.haar_weights{j}", f"operations.{last}.haar_weights{j}"
        if not torch.equal(out[a], out[b]):
            raise ValueError(f"encoder copies differ: {a} != {b}")
    cfg = getattr(model, "config", {})
    if cfg.get("subnet") in ("rram", "chain") and cfg.get("rounds") == 3:
        layout = official_key_layout(cfg["n_blocks"])
        got = [(k, tuple(v.shape)) for k, v in out.items()]
        if got != layout:
            diff = [f"{g[0]}{g[1]} vs {e[0]}{e[1]}" for g, e in zip(got, layout) if g != e]
            raise ValueError(
                f"exported layout differs from the official one ({len(got)} vs {len(layout)} keys): {_short(diff)}"
            )
    return out

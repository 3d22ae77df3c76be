"""How an official checkpoint's tensors become our network's state dict, checked strictly.

An :class:`OfficialLayout` (one per method, in ``baselines/<m>/official.py`` or ``bench/dsn``) lists the
official files it needs as :class:`Part` s. Each part says where its file sits in the official release, how its
tensors are named, and which :class:`Rule` fills each of our tensors (``target``) from which official tensor
(``source``) through which :class:`Transform` (TF's HWIO convolutions to OIHW, dense (in, out) to (out, in),
the NHWC flatten before a dense layer, a BGR first layer, ...). :func:`convert` and :func:`dry_run` apply them:

* every tensor of our state dict is filled by exactly one rule or listed in ``keep`` (a fixed buffer we
  build ourselves, never trained);
* every official tensor is used by a rule or matches an ``ignore`` pattern (optimiser slots, discriminators,
  stale variables), each pattern with the reason it is ignored;
* every shape, after the transform, equals ours.

The first failure is one line naming the tensor (:class:`LayoutError`). A dry run checks the same from names
and shapes alone (a TF index without its data shard is enough).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

__all__ = ["LayoutError", "Transform", "COPY", "CONV", "DECONV", "DENSE", "bgr_input", "flatten_dense",
           "Rule", "Part", "OfficialLayout", "convert", "dry_run", "same_name_rules"]


class LayoutError(ValueError):
    """An official file that does not fit our network; one line naming the first offending tensor."""


@dataclass(frozen=True)
class Transform:
    """An array re-layout: ``apply`` on values, ``shape`` on shapes (for the dry run)."""
    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    shape: Callable[[tuple[int, ...]], tuple[int, ...]]

    def __repr__(self) -> str:
        return self.name


def _perm(name: str, axes: tuple[int, ...]) -> Transform:
    def shape(s: tuple[int, ...]) -> tuple[int, ...]:
        if len(s) != len(axes):
            raise LayoutError(f"{name} expects a {len(axes)}-d tensor, got shape {s}")
        return tuple(s[a] for a in axes)

    return Transform(name, lambda a: np.ascontiguousarray(np.transpose(a, axes)), shape)


COPY = Transform("copy", lambda a: a, lambda s: tuple(s))
#: TF conv2d kernel (kh, kw, in, out) -> torch Conv2d weight (out, in, kh, kw)
CONV = _perm("conv HWIO->OIHW", (3, 2, 0, 1))
#: TF conv2d_transpose kernel (kh, kw, out, in) -> torch ConvTranspose2d weight (in, out, kh, kw); no flip (both
#: are the adjoint of the same correlation)
DECONV = _perm("deconv HWOI->IOHW", (3, 2, 0, 1))
#: TF dense kernel (in, out) -> torch Linear weight (out, in)
DENSE = _perm("dense (in,out)->(out,in)", (1, 0))


def bgr_input(base: Transform = CONV) -> Transform:
    """``base``, then reverse the input-channel axis: the official first layer reads BGR, ours RGB."""
    def apply(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(base.apply(a)[:, ::-1])

    return Transform(f"{base.name}, BGR->RGB inputs", apply, base.shape)


def flatten_dense(h: int, w: int, c: int) -> Transform:
    """A dense layer after a flatten: TF flattens NHWC (index (y, x, ch)), ours NCHW (index (ch, y, x))."""
    def shape(s: tuple[int, ...]) -> tuple[int, ...]:
        if len(s) != 2 or s[0] != h * w * c:
            raise LayoutError(f"dense after an {h}x{w}x{c} flatten expects ({h * w * c}, out), got {s}")
        return (s[1], s[0])

    def apply(a: np.ndarray) -> np.ndarray:
        out = a.shape[1]
        return np.ascontiguousarray(a.reshape(h, w, c, out).transpose(3, 2, 0, 1).reshape(out, c * h * w))

    return Transform(f"dense after NHWC flatten {h}x{w}x{c}", apply, shape)


@dataclass(frozen=True)
class Rule:
    target: str                     # our state-dict key
    source: str                     # the official tensor's name (after the part's prefix stripping)
    transform: Transform = COPY


@dataclass(frozen=True)
class Part:
    """One official file (a torch state dict or a TF checkpoint) of a method's release."""
    name: str                        # e.g. "decom"; "" for a single-file method
    format: str                      # "torch" | "tf"
    rules: tuple[Rule, ...]
    ignore: tuple[tuple[str, str], ...] = ()   # (regex on official names, why it is not used)
    # where the file sits in the official release (relative path or folder), for the messages and for finding
    # the part inside a folder the user gives
    release_path: str = ""
    locate: tuple[str, ...] = ()     # sub-folder/file names that identify this part inside a given folder
    strip_prefixes: tuple[str, ...] = ("module.",)   # torch: DataParallel and wrapper prefixes
    containers: tuple[str, ...] = ("state_dict", "model", "params", "net", "generator")  # torch: wrapper keys


@dataclass(frozen=True)
class OfficialLayout:
    method: str
    parts: tuple[Part, ...]
    keep: tuple[tuple[str, str], ...] = ()   # (regex on our keys, why it keeps its built value)
    description: str = ""
    # config overrides that make our test-time pipeline the official test script's (recorded when applied)
    test_overrides: Mapping[str, str] = field(default_factory=dict)
    test_pipeline: str = ""          # what the official test script does, with file and line
    official_quantize: str = "round"  # the official test script's 8-bit conversion: round | truncate
    # a fix-up run on the converted state dict (e.g. a tensor built from two official ones); returns it
    finish: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None

    def part(self, name: str) -> Part:
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(name)


def same_name_rules(names: Sequence[str], transform: Transform = COPY,
                    rename: Callable[[str], str] = lambda k: k) -> tuple[Rule, ...]:
    """One rule per name whose official and our names agree (after ``rename`` of ours to theirs)."""
    return tuple(Rule(k, rename(k), transform) for k in names)


def _ignored(part: Part, name: str) -> str | None:
    for pattern, why in part.ignore:
        if re.search(pattern, name):
            return why
    return None


def _kept(layout: OfficialLayout, key: str) -> bool:
    return any(re.search(p, key) for p, _ in layout.keep)


def _label(part: Part) -> str:
    return f"official {part.name} file" if part.name else "official file"


def _check(layout: OfficialLayout, ours: Mapping[str, tuple[int, ...]],
           sources: Mapping[str, Mapping[str, tuple[int, ...]]]) -> list[tuple[Part, Rule]]:
    """The strict checks of the module doc on shapes; returns the (part, rule) pairs to apply."""
    owner: dict[str, str] = {}
    plan: list[tuple[Part, Rule]] = []
    for part in layout.parts:
        have = sources[part.name]
        used: set[str] = set()
        for rule in part.rules:
            if rule.target not in ours:
                raise LayoutError(f"layout error: {rule.target} (from {rule.source}) is not a tensor of our "
                                  f"{layout.method} network")
            if rule.target in owner:
                raise LayoutError(f"layout error: {rule.target} is filled twice ({owner[rule.target]}, {rule.source})")
            owner[rule.target] = rule.source
            if rule.source not in have:
                raise LayoutError(f"{_label(part)} lacks tensor {rule.source} (needed for our {rule.target}); "
                                  f"not an official {layout.method} file?")
            got = rule.transform.shape(tuple(have[rule.source]))
            if tuple(got) != tuple(ours[rule.target]):
                raise LayoutError(f"{_label(part)}: {rule.source} has shape {tuple(have[rule.source])}, which maps "
                                  f"to {tuple(got)}, but our {rule.target} is {tuple(ours[rule.target])}")
            used.add(rule.source)
            plan.append((part, rule))
        extra = [n for n in have if n not in used and _ignored(part, n) is None]
        if extra:
            more = f" (+{len(extra) - 1} more)" if len(extra) > 1 else ""
            raise LayoutError(f"{_label(part)} has tensor {extra[0]}{more} that our {layout.method} network does "
                              "not use; wrong method or a different version of it?")
    unfilled = [k for k in ours if k not in owner and not _kept(layout, k)]
    if unfilled:
        more = f" (+{len(unfilled) - 1} more)" if len(unfilled) > 1 else ""
        raise LayoutError(f"our {layout.method} tensor {unfilled[0]}{more} has no source in the official files")
    return plan


def dry_run(layout: OfficialLayout, model_state: Mapping[str, torch.Tensor],
            sources: Mapping[str, Mapping[str, tuple[int, ...]]]) -> dict[str, Any]:
    """Names and shapes only: raises :class:`LayoutError` or returns a summary (used, ignored, kept counts)."""
    ours = {k: tuple(v.shape) for k, v in model_state.items()}
    plan = _check(layout, ours, sources)
    ignored = {p.name: sorted(n for n in sources[p.name] if n not in {r.source for r in p.rules}) for p in layout.parts}
    return {"filled": len(plan), "kept": sorted(k for k in ours if _kept(layout, k)),
            "ignored": {k: len(v) for k, v in ignored.items()},
            "official_tensors": {p.name: len(sources[p.name]) for p in layout.parts}}


def convert(layout: OfficialLayout, model_state: Mapping[str, torch.Tensor],
            sources: Mapping[str, Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Our full state dict from the official tensors (arrays or tensors per part), after the strict checks.

    Kept tensors keep ``model_state``'s values; dtypes follow ours."""
    shapes = {p: {n: (tuple(v.shape) if hasattr(v, "shape") else np.shape(v)) for n, v in s.items()} for p, s in sources.items()}
    ours = {k: tuple(v.shape) for k, v in model_state.items()}
    plan = _check(layout, ours, shapes)
    out: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in model_state.items() if _kept(layout, k)}
    for part, rule in plan:
        value = sources[part.name][rule.source]
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        ref = model_state[rule.target]
        out[rule.target] = torch.from_numpy(np.ascontiguousarray(rule.transform.apply(arr))).to(ref.dtype)
    if layout.finish is not None:
        out = layout.finish(out)
    return {k: out[k] for k in model_state}

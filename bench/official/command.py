"""``bench weights import official``: the command around :mod:`bench.official.importer` -- DSN's extra encoder
facts, and what is printed (files and their manifest entries, reading time and memory, the label,
contamination, the official test pipeline and how to run with the import)."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from ..registry import canonical
from ..weights import faithfulness, imported_vgg16
from .importer import import_official as generic

__all__ = ["import_official", "print_official"]


def import_official(method: str, paths: Sequence[str | os.PathLike], dry: bool = False) -> dict[str, Any]:
    """``bench.official.importer.import_official``; for ``ours`` also the facts of its frozen VGG tensors."""
    facts = _dsn_encoder_facts if canonical(method) == "ours" and not dry else None
    return generic(method, paths, dry=dry, facts=facts)


def _dsn_encoder_facts(state: Mapping[str, Any]) -> dict[str, Any]:
    """What the converted DSN file's frozen encoder tensors are (the layout checked its two copies equal)."""
    from ..dsn.encoder import tensor_sha256

    sha = tensor_sha256(state["operations.0.haar_weights1"], state["operations.0.haar_weights2"])
    vgg = imported_vgg16()
    faithful, reason = faithfulness("dsn_checkpoint", None, sha)
    return {"encoder_tensors_sha256": sha, "faithful_encoder": faithful, "faithful_reason": reason,
            "encoder_matches_imported_vgg16": None if vgg is None else vgg[2].get("tensors_sha256") == sha}


def print_official(r: dict[str, Any]) -> None:
    reading = r.get("reading") or {}
    for f in r.get("files") or []:
        print(f"  {f.get('part') or 'file'} {f.get('role')}: {f.get('path')} ({f.get('size'):,} B) sha256 "
              f"{f.get('sha256')} [{f.get('manifest_id') or 'not in manifests/weights.yaml'}]")
    for part, st in reading.items():
        mem = f", peak {st['peak_bytes'] / 2**20:.1f} MiB" if "peak_bytes" in st else ""
        missing = "".join(f"; data shard {m['name']} absent ({m['expected_bytes']:,} B expected)"
                          for m in st.get("missing_shards") or [])
        print(f"  read {part}: {st['seconds'] * 1000:.1f} ms{mem}{missing}")
    if r.get("dry_run"):
        print(f"dry run OK: {r['method']}: {r['filled']} of our tensors map from the official names and shapes "
              f"({sum(r['official_tensors'].values())} official tensors, {sum(r['ignored'].values())} ignored, "
              f"{len(r['kept'])} kept)")
        return
    print(f"official {r['method']} weights imported [{r['label']}]"
          + ("" if r["verified"] else f" ({r.get('unverified_reason')})"))
    if r.get("trained_on"):
        print(f"  trained on: {r['trained_on']}")
    for dataset, why in (r.get("contamination") or {}).items():
        print(f"  {'CONTAMINATED' if str(why).startswith('yes') else 'possible overlap'} on {dataset}: {why}")
    if r.get("encoder_tensors_sha256"):
        print(f"  encoder tensors sha256 {r['encoder_tensors_sha256']}; faithful: "
              f"{'yes' if r['faithful_encoder'] else 'no'} ({r['faithful_reason']})")
    print(f"  stored: {r['stored']} (sha256 {r['stored_sha256'][:16]}…)")
    print(f"  official test pipeline: {r.get('test_pipeline') or 'as ours'}; its 8-bit conversion: "
          f"{r.get('official_quantize')} (bench run --quantize {r.get('official_quantize')} to match it)")
    print(f"  use: bench run --method {r['method']} --dataset D --weights official:{r['method']}")

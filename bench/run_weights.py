"""Which weights a run uses when ``--weights`` is given: a converted official import (``official:M[@ID]``) or a
file, checked against what was recorded when it was trained or imported, and whether they count as official
(then the official test script's pipeline applies: :func:`official_pipeline`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import BenchError
from .fsutil import sha256_file
from .methods.base import Method
from .methods.torch_method import official_summary
from .official.importer import resolve_official
from .records import notice, weights_provenance
from .weights import find_entry

__all__ = ["user_weights", "official_pipeline"]


def user_weights(cls: type[Method], weights: Path | str) -> tuple[Path, dict[str, Any]]:
    """``--weights``: ``official:M[@ID]`` (a converted import, re-hashed) or a file. A file is official when it
    matches an official entry of manifests/weights.yaml for this method or is a state dict that is no checkpoint
    of this project (the adapter then loads it by its official layout)."""

    text = str(weights)
    if text.startswith("official:"):
        stored, record = resolve_official(text)
        if record.get("method") != cls.name:
            raise BenchError(f"--weights {text} holds {record.get('method')} weights, not {cls.name}")
        return stored, {"source": "official", "path": str(stored), "sha256": record["stored_sha256"],
                        "official": official_summary(record), "verified": True,   # re-hashed against its record
                        "verified_by": f"official import {record.get('method')}@{record.get('id')}"}
    path = Path(text).expanduser()
    if path.is_dir():
        raise BenchError(f"--weights {path} is a folder; import an official checkpoint folder first with "
                         f"bench weights import official --method {cls.name} {path}, then use --weights official:{cls.name}")
    if not path.is_file():
        raise BenchError(f"--weights {path} does not exist")
    sha = sha256_file(path)
    info: dict[str, Any] = {"source": "user", "path": str(path), "sha256": sha}
    found = find_entry(None, sha, None)
    if found and found[1].get("method") == cls.name:
        info.update(source="official", manifest_id=found[0], verified=True,
                    verified_by=f"manifests/weights.yaml {found[0]}")
    else:
        info.update(weights_provenance(path, sha))   # refuses a file that differs from its training/import record
        if cls.trainable and _is_foreign_state_dict(path):
            info.update(source="official")
        if not info["verified"]:
            notice(f"--weights {path}: {info['unverified']}; the run is marked unverified")
    return path, info


def _is_foreign_state_dict(path: Path) -> bool:
    from .training import STATE_FORMAT, WEIGHTS_FORMAT, load_torch

    try:
        obj = load_torch(path)
    except BenchError:
        return False
    if isinstance(obj, dict) and obj.get("format") in (WEIGHTS_FORMAT, STATE_FORMAT):
        return (obj.get("meta") or {}).get("weights_source") == "official"
    return isinstance(obj, dict)


def official_pipeline(cls: type[Method]) -> tuple[dict[str, str], str, str]:
    """(config overrides, description, 8-bit conversion) of the official test script for official weights."""
    layout = cls.official_layout() if hasattr(cls, "official_layout") else None
    if layout is None:
        return {}, "", "round"
    return dict(layout.test_overrides), layout.test_pipeline, layout.official_quantize

"""What ``bench ls methods`` shows, without importing torch or building a network.

Building all 16 default networks to count their parameters took over a minute on a loaded 2-core machine,
and importing torch alone takes ~2 s there. So the listing reads ``catalog.json`` (beside this module): for
each registered method its display name, family, whether it trains, its adapter ``version`` and its trainable
parameter count as built with the default config. The file is derived data, never edited by hand:
``tests/test_catalog.py`` builds every network and fails when a class attribute or a count disagrees, naming
the command that rewrites it::

    python -m bench.methods.catalog            # rebuild catalog.json from the adapters

A method registered but missing from the file is measured on the spot (and the listing says so).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

CATALOG_PATH = Path(__file__).with_name("catalog.json")
FIELDS = ("display", "family", "trainable", "params", "version")
REBUILD = "python -m bench.methods.catalog"


def class_facts(cls: Any) -> dict[str, Any]:
    """The listing's columns read from an adapter class (cheap: no network is built)."""
    return {"display": cls.display_name, "family": cls.family, "trainable": bool(cls.trainable),
            "version": int(cls.version)}


def count_parameters(cls: Any) -> int:
    """Trainable parameters of the default network, as ``bench run`` builds it (0 for methods that do not train)."""
    if not cls.trainable:
        return 0
    import torch

    method = cls(cls.Config())
    method.setup(torch.device("cpu"), None)
    return int(method.trainable_parameters())


def measure(name: str) -> dict[str, Any]:
    from ..registry import load_method_class

    cls = load_method_class(name)
    return {**class_facts(cls), "params": count_parameters(cls)}


def load_catalog(path: Path = CATALOG_PATH) -> dict[str, dict[str, Any]]:
    """name -> facts; {} when the file is absent or unreadable (the listing then measures)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    methods = doc.get("methods") if isinstance(doc, dict) else None
    if not isinstance(methods, dict):
        return {}
    return {k: v for k, v in methods.items() if isinstance(v, dict) and all(f in v for f in FIELDS)}


def listing() -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for ``bench ls methods`` in registry order, and the names that had to be measured now."""
    from ..registry import METHODS

    cat = load_catalog()
    rows, measured = [], []
    for name in METHODS:
        facts = cat.get(name)
        if facts is None:
            facts = measure(name)
            measured.append(name)
        rows.append({"name": name, **{f: facts[f] for f in FIELDS}})
    return rows, measured


def build_catalog() -> dict[str, Any]:
    from ..registry import METHODS

    return {"about": f"derived from the adapters by `{REBUILD}`; checked by tests/test_catalog.py",
            "methods": {name: measure(name) for name in METHODS}}


def main() -> int:
    from ..fsutil import write_text

    doc = build_catalog()
    write_text(CATALOG_PATH, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {CATALOG_PATH} ({len(doc['methods'])} methods)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

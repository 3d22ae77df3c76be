"""``bench ls methods`` reads bench/methods/catalog.json instead of building 16 networks: the file must agree
with the adapters, counted here by building each default network."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.methods import catalog
from bench.registry import METHODS, load_method_class


def test_catalog_lists_every_registered_method_and_nothing_else():
    assert list(catalog.load_catalog()) == list(METHODS), f"rebuild it: {catalog.REBUILD}"


@pytest.mark.parametrize("name", list(METHODS))
def test_catalog_entry_matches_the_adapter_and_its_built_network(name):
    entry = catalog.load_catalog()[name]
    cls = load_method_class(name)
    assert {k: entry[k] for k in ("display", "family", "trainable", "version")} == catalog.class_facts(cls), \
        f"{name}: stale catalog entry; rebuild it: {catalog.REBUILD}"
    # counted independently of catalog.count_parameters: every requires_grad tensor of the built network
    if cls.trainable:
        import torch

        m = cls(cls.Config())
        m.setup(torch.device("cpu"), None)
        assert m.trainable_parameters() == entry["params"], f"{name}: stale parameter count; {catalog.REBUILD}"
    else:
        assert entry["params"] == 0


def test_listing_imports_neither_torch_nor_an_adapter():
    code = ("import sys; from bench.cli import main; main(['ls', 'methods', '--format', 'csv']); "
            "bad = [m for m in ('torch', 'numpy', 'baselines', 'bench.dsn') if m in sys.modules]; "
            "print('IMPORTED', bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "IMPORTED []" in out
    assert "ours,DSN (ours),supervised,yes,11559624,1" in out


def test_a_method_missing_from_the_catalog_is_counted_and_named(tmp_path, monkeypatch, capsys):
    import json

    path = tmp_path / "catalog.json"
    full = catalog.load_catalog()
    del full["zero-dce"]
    path.write_text(json.dumps({"methods": full}), encoding="utf-8")
    monkeypatch.setattr(catalog, "CATALOG_PATH", path)
    monkeypatch.setattr(catalog.load_catalog, "__defaults__", (path,))
    from bench.cli import main

    assert main(["ls", "methods", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert "zero-dce,Zero-DCE,zero-reference,yes,79416," in out
    assert "zero-dce not in bench/methods/catalog.json" in err

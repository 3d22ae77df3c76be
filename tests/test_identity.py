"""Adding an option to a method must not rename (and so re-do) finished trainings and runs: options added
late (``Method.late_options``) stay out of the identities while they hold their old value."""

from __future__ import annotations

import dataclasses

import pytest

from bench.data.manifest import load_manifest
from bench.fsutil import canonical_hash
from bench.registry import load_method_class
from bench.run import run_identity, train_identity

# the demo-set identities of the default configs before the memory and training-speed options existed
# (computed at commit 1a3dede, whose DSNConfig had none of them)
BEFORE = {"ours": ("f89bc0acf3a0", "05126bcaafa1"), "zero-dce": ("60b668f2c9f7", "1df365ef562c"),
          "lime": ("4d4700b08f33", "db7219c4b669")}


def _ids(name, **changes):
    cls = load_method_class(name)
    cfg = dataclasses.replace(cls.Config(), **changes)
    try:
        cfg.validate()
    except AttributeError:
        pass
    m = load_manifest("demo")
    return (canonical_hash(train_identity(cls, cfg, m, 0, "quick"))[:12],
            canonical_hash(run_identity(name, cls, cfg, None, m, "test", 0, "quick"))[:12])


@pytest.mark.parametrize("name", list(BEFORE))
def test_default_identities_are_those_from_before_the_late_options(name):
    assert _ids(name) == BEFORE[name]


@pytest.mark.parametrize("option, value", [("memory", "blocks"), ("memory", "reversible"),
                                           ("channels_last_train", True), ("optimizer_impl", "foreach"),
                                           ("loader_workers", 2)])
def test_a_late_option_away_from_its_old_value_is_part_of_both_identities(option, value):
    train, run = _ids("ours", **{option: value})
    assert train != BEFORE["ours"][0] and run != BEFORE["ours"][1]


def test_a_test_time_late_option_changes_the_run_but_never_retrains():
    train, run = _ids("ours", allocator="reuse_heap")
    assert train == BEFORE["ours"][0] and run != BEFORE["ours"][1]

"""How the LOL-v1 manifests are made from the dataset's published checksums.

Two manifests share the same 500 files (storage ``lol_v1``):

* ``lol-485-15``: the standard split, ``our485`` for training and ``eval15`` for testing.
* ``lol``: the paper's 400/100 split. The paper never published which 100 pairs it tested on, so we
  pin our own rule: the test set is all 15 ``eval15`` pairs plus 85 ``our485`` pairs drawn with a
  seeded shuffle, and the remaining 400 train. Keeping ``eval15`` on the test side means a model
  trained on either split has never seen ``eval15``.

In both, ``our485`` holds 66 groups of pairs whose normal-light images are byte-identical (152 pairs).
A group is never split across train/val/test, so no test ground truth is also a training target.
The validation lists are carved from train by the same group-aware seeded draw and are a subset of
train (methods that select checkpoints train on ``train`` minus ``val``).

``python -m bench.data.lol OUR485_SHA256 EVAL15_SHA256SUMS`` rewrites the two YAML files; a test
regenerates them from the checksum lists in ../shared/data and compares.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..paths import manifests_root
from .manifest import Manifest, Pair

SPLIT_SEED = 20211011  # ICCV 2021's opening day; any fixed value would do, this one is recorded.
HOW_TO_GET = (
    "Download LOLdataset.zip from the LOL project page (https://daooshee.github.io/BMVC2018website/) and pass "
    "the zip, or the folder holding our485/ and eval15/, as --root."
)


def _read_sums(path: Path, prefix: str = "") -> dict[str, str]:
    sums = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            digest, rel = line.split(maxsplit=1)
            sums[prefix + rel.strip().lstrip("*")] = digest
    return sums


def _pairs(sums: dict[str, str], folder: str) -> list[Pair]:
    ids = sorted({Path(r).stem for r in sums if r.startswith(folder + "/low/")}, key=int)
    return [Pair(i, f"{folder}/low/{i}.png", sums[f"{folder}/low/{i}.png"],
                 f"{folder}/high/{i}.png", sums[f"{folder}/high/{i}.png"]) for i in ids]


def _groups(pairs: list[Pair]) -> list[list[Pair]]:
    """Pairs grouped by identical ground truth, in a stable order (by smallest numeric ID)."""
    by_hash: dict[str, list[Pair]] = defaultdict(list)
    for p in pairs:
        by_hash[p.high_sha256].append(p)
    return sorted(by_hash.values(), key=lambda g: min(int(p.id) for p in g))


def draw_groups(pairs: list[Pair], n: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Take exactly ``n`` pairs in whole identical-GT groups (seeded shuffle); return (taken, rest)."""
    groups = _groups(pairs)
    order = np.random.default_rng(seed).permutation(len(groups))
    taken: list[Pair] = []
    for gi in order:
        g = groups[gi]
        if len(taken) + len(g) <= n:
            taken.extend(g)
        if len(taken) == n:
            break
    if len(taken) != n:
        raise ValueError(f"could not draw exactly {n} pairs in whole groups")
    chosen = {p.id for p in taken}
    key = lambda p: int(p.id)  # noqa: E731
    return sorted(taken, key=key), sorted((p for p in pairs if p.id not in chosen), key=key)


def _manifest(name: str, description: str, rule: str, train, val, test) -> Manifest:
    return Manifest(
        name=name, version=1, description=description, paired=True, storage="lol_v1",
        source={"kind": "files", "how_to_get": HOW_TO_GET,
                "layout": "our485/{low,high}/N.png and eval15/{low,high}/N.png as in LOLdataset.zip"},
        splits={"train": train, "val": val, "test": test}, split_rule=rule,
    )


def build(our485_sums: Path, eval15_sums: Path) -> tuple[Manifest, Manifest]:
    sums = _read_sums(our485_sums)
    sums.update(_read_sums(eval15_sums, prefix="eval15/"))
    our485, eval15 = _pairs(sums, "our485"), _pairs(sums, "eval15")
    assert len(our485) == 485 and len(eval15) == 15, (len(our485), len(eval15))

    val15, _ = draw_groups(our485, 15, SPLIT_SEED + 1)
    standard = _manifest(
        "lol-485-15", "LOL-v1, the standard split: our485 train, eval15 test (600x400 PNG pairs).",
        f"train = our485 (485); test = eval15 (15); val = 15 our485 pairs drawn in whole identical-GT groups "
        f"(numpy default_rng({SPLIT_SEED + 1}) permutation of the groups), a subset of train.",
        our485, val15, eval15,
    )

    extra_test, train400 = draw_groups(our485, 85, SPLIT_SEED)
    val20, _ = draw_groups(train400, 20, SPLIT_SEED + 2)
    paper = _manifest(
        "lol", "LOL-v1 with the DSN paper's 400/100 split sizes (the paper's own test list is unpublished; "
        "this is the harness's pinned split).",
        f"test = eval15 (15) + 85 our485 pairs; train = the other 400 our485 pairs; our485 pairs are drawn in "
        f"whole groups of byte-identical ground truths (66 groups, 152 pairs) by a numpy default_rng({SPLIT_SEED}) "
        f"permutation of the groups, so no test ground truth appears in train; val = 20 train pairs drawn the same "
        f"way with seed {SPLIT_SEED + 2}, a subset of train.",
        train400, val20, eval15 + extra_test,
    )
    return paper, standard


def main(argv: list[str]) -> None:
    paper, standard = build(Path(argv[0]), Path(argv[1]))
    for m in (paper, standard):
        m.save(manifests_root() / "datasets" / f"{m.name}.yaml")
        print(f"wrote {m.name}: " + ", ".join(f"{s} {len(p)}" for s, p in m.splits.items()))


if __name__ == "__main__":
    main(sys.argv[1:])

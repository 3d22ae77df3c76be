"""The embedded ``demo`` set: real photographs shipped inside installed packages, made low-light.

Each photo from ``underexpose.demo_photos()`` (scikit-image's bundled data, matplotlib's sample data)
is box-downsampled by an integer factor to a long side of at most 256 px (exact integer arithmetic,
so every machine gets the same bytes), kept as the normal-light image, and passed through the
documented underexposure model (``bench.data.underexpose``: exposure scaling, Poisson–Gaussian sensor
noise, tone curve, 8-bit rounding) with a per-photo seed. No download, and small enough for CPU.

The committed manifest records the expected sha256 of every file; a build that differs (e.g. under
another NumPy major version) is kept but flagged, and its fingerprint differs, so its numbers never
mix with the reference build's.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from tqdm import tqdm

from ..errors import BenchError
from ..fsutil import sha256_file
from .manifest import Manifest, Pair, lock_path
from .prepare import PrepareReport

MAX_SIDE = 256
DEMO_SEED = 2021
TEST_IDS = ("skimage-coffee", "mpl-grace_hopper")
VAL_IDS = ("skimage-chelsea",)


def box_downsample(img: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Mean of k×k blocks (k the smallest integer bringing the long side ≤ max_side), rounded half up."""
    k = max(1, math.ceil(max(img.shape[:2]) / max_side))
    h, w = (img.shape[0] // k) * k, (img.shape[1] // k) * k
    blocks = img[:h, :w].astype(np.int64).reshape(h // k, k, w // k, k, 3).sum(axis=(1, 3))
    n = k * k
    return ((2 * blocks + n) // (2 * n)).astype(np.uint8)


def demo_pairs() -> list[tuple[str, np.ndarray, np.ndarray, dict]]:
    from .underexpose import demo_photos, underexpose
    from .fivek import image_seed

    pairs = []
    for pid, load in demo_photos():
        high = box_downsample(load())
        low, params = underexpose(high, image_seed(DEMO_SEED, pid))
        pairs.append((pid, low, high, params))
    return pairs


def build_demo(m: Manifest, progress: bool = True) -> PrepareReport:
    from ..imageio import write_png

    from ..fsutil import sweep_stale_temporaries

    sweep_stale_temporaries(m.root)
    built: dict[str, Pair] = {}
    params: dict[str, dict] = {}
    for pid, low, high, p in tqdm(demo_pairs(), desc="build demo", unit="img", disable=not progress, leave=False):
        lo_rel, hi_rel = f"low/{pid}.png", f"high/{pid}.png"
        write_png(m.file_path(lo_rel), low)
        write_png(m.file_path(hi_rel), high)
        built[pid] = Pair(pid, lo_rel, sha256_file(m.file_path(lo_rel)), hi_rel, sha256_file(m.file_path(hi_rel)))
        params[pid] = p
    splits = {s: [built[p.id] for p in ps if p.id in built] for s, ps in m.splits.items()}
    expected = {p.id: (p.low_sha256, p.high_sha256) for ps in m.splits.values() for p in ps}
    differs = sorted(i for i, p in built.items() if expected.get(i) != (p.low_sha256, p.high_sha256))
    missing = sorted(set(expected) - set(built))
    if missing:
        raise BenchError(f"demo: installed packages lack photos {', '.join(missing)} (scikit-image/matplotlib data)")
    if differs:
        print(f"warning: demo build differs from the recorded manifest for {', '.join(differs)} "
              "(other numpy/Pillow/scikit-image versions?); runs on it get a different fingerprint", file=sys.stderr)
    from .distort import library_versions

    lock = Manifest(m.name, m.version, m.description, m.paired, m.storage, dict(m.source), splits, m.split_rule,
                    extra={"matches_reference": not differs, "underexposure": params, "libraries": library_versions()})
    lock.save(lock_path(m), sealed=True, what="the lock file")
    return PrepareReport(m.name, {s: len(v) for s, v in splits.items()}, m.root)


def ensure_demo(m: Manifest, progress: bool = True) -> None:
    """Build the demo set on first use, or rebuild it if its files were removed or altered."""
    from ..fsutil import read_yaml, sweep_stale_temporaries
    from .manifest import INTEGRITY_KEY, locked, verify_pairs

    sweep_stale_temporaries(m.root)
    lp = lock_path(m)
    if lp.exists():
        try:
            d = read_yaml(lp, "lock file")
            if isinstance(d, dict) and INTEGRITY_KEY in d:  # an older lock (no record) is simply rebuilt
                lm = locked(m)
                if not verify_pairs(lm, [p for ps in lm.splits.values() for p in ps]):
                    return
        except BenchError:
            pass  # a damaged lock: the set is rebuilt (it is made here, from installed packages)
    build_demo(m, progress)


def write_reference_manifest(path) -> None:
    """Maintainer tool: record this machine's demo build as the reference (``python -m bench.data.demo``)."""
    from ..fsutil import sha256_bytes
    from ..imageio import write_png  # noqa: F401  (PNG bytes must come from the same writer)
    import io
    from PIL import Image

    def png_sha(a: np.ndarray) -> str:
        buf = io.BytesIO()
        Image.fromarray(a, "RGB").save(buf, format="PNG", compress_level=6)
        return sha256_bytes(buf.getvalue())

    pairs = demo_pairs()
    rows = {pid: Pair(pid, f"low/{pid}.png", png_sha(lo), f"high/{pid}.png", png_sha(hi)) for pid, lo, hi, _ in pairs}
    ids = [pid for pid, *_ in pairs]
    train = [rows[i] for i in ids if i not in TEST_IDS]
    m = Manifest(
        name="demo", version=1,
        description="Embedded demo set: photographs shipped by scikit-image and matplotlib, box-downsampled to a long "
                    "side <= 256 px, darkened by the documented underexposure model. Built on first use, no download.",
        paired=True, storage="demo",
        source={"kind": "demo", "how_to_get": "built automatically: bench data prepare demo",
                "underexposure_model": "bench.data.underexpose (sRGB linearise, exposure k log-U[0.03,0.15], "
                                       "Poisson-Gaussian noise, sRGB curve with gamma jitter, 8-bit rounding)",
                "seed": DEMO_SEED, "resolution_rule": f"box downsample, long side <= {MAX_SIDE}", "gt_format": "PNG"},
        split_rule=f"test = {', '.join(TEST_IDS)}; val = {', '.join(VAL_IDS)} (a subset of train); train = the rest",
        splits={"train": train, "val": [rows[i] for i in VAL_IDS], "test": [rows[i] for i in TEST_IDS]},
    )
    m.save(path)


if __name__ == "__main__":
    from ..paths import manifests_root

    write_reference_manifest(manifests_root() / "datasets" / "demo.yaml")
    print("wrote manifests/datasets/demo.yaml")

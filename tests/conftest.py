"""Shared fixtures: every test gets its own data and results folders; real pairs come from ../shared/data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
SHARED_WEIGHTS = Path(os.environ.get("BENCH_SHARED_WEIGHTS", REPO.parent / "shared" / "weights"))


@pytest.fixture(autouse=True)
def bench_env(tmp_path, monkeypatch):
    """Isolate $BENCH_DATA and $BENCH_RESULTS so tests never touch the user's folders."""
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "results"))
    return tmp_path


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "lol_v1").is_dir():
        pytest.skip(f"real test pairs not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def shared_weights() -> Path:
    """The official weight files and the official code's outputs with them (test fixtures only; SOURCES.md)."""
    if not (SHARED_WEIGHTS / "SOURCES.md").is_file():
        pytest.skip(f"official weight fixtures not found at {SHARED_WEIGHTS}")
    return SHARED_WEIGHTS


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def independent_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """The paper's formula written out: float64 MSE over all pixels and channels, 20·log10(255/√MSE)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 20 * np.log10(255.0 / np.sqrt(mse))


def independent_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """BasicSR/MATLAB SSIM written out with an explicit 2-D 'valid' convolution, per channel, averaged."""
    from scipy.signal import convolve2d

    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    g /= g.sum()
    win = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for ch in range(a.shape[2]):
        i1, i2 = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        f = lambda z: convolve2d(z, win, mode="valid")  # noqa: E731
        mu1, mu2 = f(i1), f(i2)
        s11, s22, s12 = f(i1 * i1) - mu1**2, f(i2 * i2) - mu2**2, f(i1 * i2) - mu1 * mu2
        m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
        vals.append(m.mean())
    return float(np.mean(vals))


@pytest.fixture(scope="session")
def built_demo(tmp_path_factory):
    """The demo set built once per test session (each test copies it into its own $BENCH_DATA)."""
    root = tmp_path_factory.mktemp("demo_data")
    old = os.environ.get("BENCH_DATA")
    os.environ["BENCH_DATA"] = str(root)
    try:
        from bench.run import open_dataset

        open_dataset("demo", progress=False)
    finally:
        if old is None:
            os.environ.pop("BENCH_DATA", None)
        else:
            os.environ["BENCH_DATA"] = old
    return root


@pytest.fixture
def demo(built_demo):
    dest = Path(os.environ["BENCH_DATA"])
    shutil.copytree(built_demo, dest, dirs_exist_ok=True)
    return dest


@pytest.fixture
def fake_methods(monkeypatch):
    """The small real methods of tests/fake_methods.py, registered for one test, counters reset."""
    from bench import registry
    import fake_methods

    monkeypatch.setitem(registry.METHODS, "gain", "fake_methods:Gain")
    monkeypatch.setitem(registry.METHODS, "fitgain", "fake_methods:FitGain")
    fake_methods.Gain.calls = 0
    fake_methods.FitGain.trained = 0
    return fake_methods

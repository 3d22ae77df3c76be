"""bench/dsn/allocator.py: glibc mallopt heap reuse for DSN's CPU inference, with bench/large_pages.py's huge
pages (never asserts timings)."""

import subprocess
import sys
import textwrap

import pytest
import torch

from bench.dsn import allocator
from bench.dsn.adapter import DSNMethod
from bench.methods.base import build_config


def _cfg(**sets):
    return build_config(DSNMethod, "smoke", {k: str(v) for k, v in sets.items()}, "demo")


@pytest.fixture
def fake_glibc(monkeypatch):
    """A fresh process state and a recording stand-in for mallopt (the test process's allocator is untouched)."""
    calls = []

    def mallopt(param, value):
        calls.append((param, value))
        return 1

    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(allocator, "mallopt_function", lambda: (mallopt, "glibc 9.99 (fake)"))
    for k in allocator._ENV + ("GLIBC_TUNABLES",):
        monkeypatch.delenv(k, raising=False)
    return calls


def test_reuse_heap_applies_the_settings_once_and_records_them(fake_glibc):
    assert allocator.allocator_state() == {"default": "glibc defaults (reuse_heap not applied)"}
    rec = allocator.reuse_heap()
    assert fake_glibc == [(-3, 128 * 2**20), (-1, -1)]          # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    assert rec["mallopt"] == {"M_MMAP_THRESHOLD": 134217728, "M_TRIM_THRESHOLD": -1}
    assert rec["libc"] == "glibc 9.99 (fake)" and "never trimmed" in rec["effect"]
    assert allocator.reuse_heap() == rec and len(fake_glibc) == 2  # sticky: applied once per process
    assert allocator.allocator_state() == rec


def test_no_op_with_a_reason_without_glibc_or_when_the_environment_decides(monkeypatch, fake_glibc):
    monkeypatch.setattr(allocator, "mallopt_function", lambda: (None, "not glibc (simulated)"))
    assert allocator.reuse_heap() == {"unavailable": "not glibc (simulated)"}
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(allocator, "mallopt_function", lambda: (lambda p, v: 0, "glibc 9.99 (fake)"))
    assert "refused" in allocator.reuse_heap()["unavailable"]
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(allocator, "mallopt_function", lambda: (lambda p, v: pytest.fail("called"), "glibc"))
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1000000")
    assert "MALLOC_MMAP_THRESHOLD_" in allocator.reuse_heap()["skipped"]


def test_the_real_feature_detection_answers():
    fn, why = allocator.mallopt_function()
    assert (fn is None) != why.startswith("glibc ")


def test_setup_applies_it_on_the_cpu_fast_path_and_records_it(monkeypatch, fake_glibc):
    from bench import large_pages

    off = DSNMethod(_cfg(n_blocks=1, allocator="glibc"))                  # glibc's own settings, asked for
    assert off.setup(torch.device("cpu"))["inference_path"]["allocator"]["default"] and fake_glibc == []
    # the default applies it only where torch allocates the maps on huge pages (else the heap fragments)
    monkeypatch.setattr(large_pages, "active", lambda: False)
    rec = DSNMethod(_cfg(n_blocks=1)).setup(torch.device("cpu"))["inference_path"]["allocator"]
    assert "huge-page path is off" in rec["default"] and fake_glibc == []
    monkeypatch.setattr(large_pages, "active", lambda: True)
    fast = DSNMethod(_cfg(n_blocks=1))
    path = fast.setup(torch.device("cpu"))["inference_path"]
    assert path["allocator"]["mallopt"] == {"M_MMAP_THRESHOLD": 134217728, "M_TRIM_THRESHOLD": -1}
    assert path["inplace"] and path["channels_last"] and len(fake_glibc) == 2
    assert DSNMethod(_cfg(n_blocks=1, allocator="reuse_heap")).setup(torch.device("cpu"))[
        "inference_path"]["allocator"] == path["allocator"] and len(fake_glibc) == 2   # once per process
    # the plain path does not apply it (it reports the process's state, which the fast setup changed)
    calls = len(fake_glibc)
    plain = DSNMethod(_cfg(n_blocks=1, inference="plain", allocator="reuse_heap"))
    assert plain.setup(torch.device("cpu"))["inference_path"]["allocator"] == path["allocator"]
    assert len(fake_glibc) == calls


def test_plain_setup_and_training_never_apply_it(monkeypatch, fake_glibc):
    from bench import large_pages

    monkeypatch.setattr(large_pages, "active", lambda: True)
    plain = DSNMethod(_cfg(n_blocks=1, inference="plain", allocator="reuse_heap"))
    rec = plain.setup(torch.device("cpu"))["inference_path"]["allocator"]
    assert rec == {"default": "glibc defaults (reuse_heap not applied)"} and fake_glibc == []
    # a training step (autograd on) of a freshly built model: the allocator is left alone
    m = DSNMethod(_cfg(n_blocks=1, allocator="reuse_heap"))
    model = m.fresh_model(0)
    model.train()
    x = torch.rand(1, 3, 8, 9)
    model.enhance(x).square().sum().backward()
    assert fake_glibc == [] and allocator.allocator_state()["default"]


def test_unavailable_is_recorded_in_the_provenance(monkeypatch, fake_glibc):
    monkeypatch.setattr(allocator, "mallopt_function", lambda: (None, "platform win32 (simulated)"))
    m = DSNMethod(_cfg(n_blocks=1, allocator="reuse_heap"))
    assert m.setup(torch.device("cpu"))["inference_path"]["allocator"] == {
        "unavailable": "platform win32 (simulated)"}


_CHILD = textwrap.dedent("""
    import sys
    from bench import large_pages
    large_pages.enable_at_startup()               # as bench's entry point does, before torch is imported
    import torch
    from bench.dsn.adapter import DSNMethod
    from bench.methods.base import build_config
    torch.set_num_threads(1)
    m = DSNMethod(build_config(DSNMethod, "smoke", {"n_blocks": "2", "allocator": sys.argv[1]}, "demo"))
    torch.manual_seed(0)                          # setup builds (initialises) the network
    prov = m.setup(torch.device("cpu"))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in m.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    x = torch.rand(1, 3, 96, 128, generator=g)   # 64-channel maps of 3 MiB: mmapped by default, heap here,
    ys = [m.enhance(x) for _ in range(3)]        # and >= 2 MiB, so on torch's huge-page path with it on;
                                                 # later passes reuse freed (non-zeroed) heap memory
    torch.save({"y": ys, "allocator": prov["inference_path"]["allocator"], "pages": large_pages.state()},
               sys.argv[2])
""")


@pytest.mark.skipif(allocator.mallopt_function()[0] is None, reason="needs glibc")
def test_outputs_are_bit_identical_with_bench_runs_memory_settings(tmp_path):
    import os

    from bench import large_pages

    out = {}
    for mode, pages in (("glibc", "0"), ("default", None)):      # plain process vs what `bench run` sets up
        env = {k: v for k, v in os.environ.items() if k != large_pages.ENV}
        if pages is not None:
            env[large_pages.ENV] = pages
        subprocess.run([sys.executable, "-c", _CHILD, mode, str(tmp_path / f"{mode}.pt")], check=True,
                       timeout=300, env=env)
        out[mode] = torch.load(tmp_path / f"{mode}.pt")
    assert out["glibc"]["allocator"] == {"default": "glibc defaults (reuse_heap not applied)"}
    assert out["glibc"]["pages"]["torch_huge_page_path"] is False
    huge = large_pages.offered()
    assert out["default"]["pages"]["torch_huge_page_path"] is huge
    if huge:                                  # bench run's setting: huge pages, then the heap reuse
        assert out["default"]["allocator"]["mallopt"]["M_MMAP_THRESHOLD"] == 128 * 2**20
    else:                                     # no huge pages: the heap reuse is not applied by default
        assert "huge-page path is off" in out["default"]["allocator"]["default"]
    assert out["default"]["pages"]["set_by"] == ("bench" if huge else None)
    for a, b in zip(out["glibc"]["y"], out["default"]["y"]):
        assert torch.equal(a, b)
    assert torch.equal(out["default"]["y"][0], out["default"]["y"][2])


def test_the_option_is_checked_and_a_test_time_option():
    from bench.errors import BenchError

    assert "allocator" in DSNMethod.test_time_options        # switching it never retrains
    with pytest.raises(BenchError, match="allocator option of ours"):
        _cfg(allocator="jemalloc")

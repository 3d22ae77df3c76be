"""bench/large_pages.py: huge pages for big CPU tensors, asked for by bench's entry point before torch starts."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from bench import large_pages


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(large_pages, "_decision", None)
    monkeypatch.delenv(large_pages.ENV, raising=False)
    return monkeypatch


def test_the_kernel_mode_is_read_from_sysfs(tmp_path):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert large_pages.system_mode(f) == "madvise"
    f.write_text("[never]\n")
    assert large_pages.system_mode(f) == "never"
    assert large_pages.system_mode(tmp_path / "missing") is None
    assert large_pages.offered("madvise") is sys.platform.startswith("linux") and not large_pages.offered("never")


def test_startup_sets_the_variable_only_when_it_can_still_work(fresh):
    fresh.setattr(large_pages, "system_mode", lambda: "madvise")
    fresh.setattr(sys, "platform", "linux")
    # torch is imported in this test process: too late, nothing is set
    rec = large_pages.enable_at_startup()
    assert rec["set_by"] is None and "too late" in rec["reason"] and large_pages.ENV not in os.environ
    large_pages._decision = None
    fresh.delitem(sys.modules, "torch")
    assert large_pages.enable_at_startup() == {"set_by": "bench", "value": "1", "kernel_mode": "madvise"}
    assert os.environ[large_pages.ENV] == "1"
    assert large_pages.enable_at_startup()["set_by"] == "bench"       # decided once per process


def test_the_users_setting_and_a_kernel_without_thp_are_left_alone(fresh):
    fresh.delitem(sys.modules, "torch")
    fresh.setenv(large_pages.ENV, "0")
    assert large_pages.enable_at_startup()["set_by"] == "user" and os.environ[large_pages.ENV] == "0"
    large_pages._decision = None
    fresh.delenv(large_pages.ENV)
    fresh.setattr(large_pages, "system_mode", lambda: "never")
    rec = large_pages.enable_at_startup()
    assert rec["set_by"] is None and "'never'" in rec["reason"] and large_pages.ENV not in os.environ
    assert large_pages.ENV not in large_pages.child_environment({})


def test_workers_get_the_variable_unless_the_user_chose(monkeypatch):
    monkeypatch.setattr(large_pages, "system_mode", lambda: "always")
    assert large_pages.child_environment({"A": "b"}) == {"A": "b", large_pages.ENV: "1"}
    assert large_pages.child_environment({large_pages.ENV: "0"}) == {large_pages.ENV: "0"}


def test_the_cli_asks_for_it_except_for_perf(monkeypatch, tmp_path):
    from bench import cli

    calls = []
    monkeypatch.setattr(large_pages, "enable_at_startup", lambda: calls.append(1))
    assert cli.main(["ls", "datasets"]) == 0 and calls == [1]
    # bench perf keeps this process plain and spawns its workers with child_environment()
    (tmp_path / "fake_perf.py").write_text("def run(args):\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.PERF, "metrics", "fake_perf:run")
    assert cli.main(["perf", "metrics"]) == 0 and calls == [1]


_CHILD = textwrap.dedent("""
    import json, sys
    from bench import large_pages
    large_pages.enable_at_startup()
    import torch
    x = torch.ones(64, 200, 300)      # 15 MiB
    print(json.dumps(large_pages.state()))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="THP is a Linux feature")
@pytest.mark.parametrize("user", [None, "0"])
def test_in_a_fresh_process_torch_really_takes_its_huge_page_path(user):
    env = {k: v for k, v in os.environ.items() if k != large_pages.ENV}
    if user is not None:
        env[large_pages.ENV] = user
    rec = json.loads(subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True,
                                    check=True, timeout=120).stdout)
    if user == "0":
        assert rec["set_by"] == "user" and rec["torch_huge_page_path"] is False
    elif large_pages.offered():
        assert rec["set_by"] == "bench" and rec["value"] == "1" and rec["torch_huge_page_path"] is True
    else:
        assert rec["set_by"] is None and rec["torch_huge_page_path"] is False


def test_cpu_provenance_records_it():
    import torch

    from bench.provenance import environment

    rec = environment(torch.device("cpu"))["large_pages"]
    assert rec["variable"] == large_pages.ENV and isinstance(rec["torch_huge_page_path"], bool)
    assert "kernel_mode" in rec

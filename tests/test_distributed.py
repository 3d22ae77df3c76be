"""bench/distributed.py: torchrun + gloo on 2 CPU processes equals one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.distributed import Dist, current, ddp_step, init_from_env, unwrap
from bench.errors import BenchError
from bench.training import Batch

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_two_gloo_ranks_match_one_process(tmp_path):
    steps = "2"
    subprocess.run([sys.executable, str(WORKER), str(tmp_path), steps], check=True, cwd=REPO, env=_env(),
                   timeout=120)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(WORKER), str(tmp_path), steps], check=True, cwd=REPO, env=_env(), timeout=180,
                   capture_output=True)
    single = _weights(tmp_path / "weights_rank0_of1.pt")
    r0, r1 = _weights(tmp_path / "weights_rank0_of2.pt"), _weights(tmp_path / "weights_rank1_of2.pt")
    # the two ranks hold bit-identical weights
    assert r0["model"].keys() == r1["model"].keys() == single["model"].keys()
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    # ... equal to one process with the same global batch, to float summation order (lr 2e-4: one Adam
    # step moves a weight by ~2e-4, so 2e-5 is a tenth of a step)
    worst = max((r0["model"][k] - single["model"][k]).abs().max().item() for k in single["model"])
    assert worst < 2e-5, worst
    # the never-called soca modules get no gradient in either (so Adam leaves them alone in both)
    assert r0["unused_no_grad"] == single["unused_no_grad"] and len(single["unused_no_grad"]) == 15
    assert all(".soca." in n for n in single["unused_no_grad"])
    # rank 0 alone wrote the log; its loss is the global-batch loss (averaged over ranks)
    one = (tmp_path / "log_1.csv").read_text().splitlines()[1:]
    two = (tmp_path / "log_2.csv").read_text().splitlines()[1:]
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        la, lb = float(a.split(",")[1]), float(b.split(",")[1])
        assert abs(la - lb) <= 1e-5 * abs(la), (a, b)


def test_single_process_is_a_no_op(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    d = init_from_env("cpu")
    assert not d.enabled and d.is_main() and d.device.type == "cpu" and current() is d
    b = Batch(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4), ["a", "b"])
    assert d.shard(b) is b
    fn = lambda batch: {"loss": torch.zeros(())}  # noqa: E731
    assert ddp_step(torch.nn.Linear(1, 1), fn, d) is fn
    assert d.mean({"loss": 3.0}) == {"loss": 3.0}
    with d.main_only() as main:
        assert main
    d.close()
    assert current() == Dist()


def test_shard_splits_the_global_batch_contiguously():
    low = torch.arange(4.0).view(4, 1, 1, 1)
    b = Batch(low, low + 10, ["a", "b", "c", "d"])
    parts = [Dist(rank=r, world_size=2).shard(b) for r in range(2)]
    assert parts[0].ids == ["a", "b"] and parts[1].ids == ["c", "d"]
    assert torch.equal(torch.cat([p.low for p in parts]), low)
    assert torch.equal(parts[1].high, low[2:] + 10)
    with pytest.raises(BenchError, match="not divisible"):
        Dist(rank=0, world_size=3).shard(b)
    assert Dist(rank=1, world_size=2).per_rank(2) == 1
    m = torch.nn.Linear(2, 2)
    assert unwrap(m) is m


def test_partial_torchrun_environment_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(BenchError, match="torchrun"):
        init_from_env("cpu")

"""Several GPUs (or CPU processes) through ``torchrun``: DistributedDataParallel with the same global batch.

Launch::

    torchrun --standalone --nproc_per_node=4 -m bench.cli train --method ours --dataset lol

What this module provides (the Trainer calls it; a single process gets a no-op ``Dist``):

- :func:`init_from_env` reads torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (``MASTER_ADDR``/
  ``MASTER_PORT`` via ``env://``) and starts the process group: **nccl** on CUDA (each process on
  ``cuda:LOCAL_RANK``), **gloo** on the CPU.
- **Same global batch.** Every rank runs the *same* sampler (same seed, same RNG stream), draws the
  whole global batch and keeps its contiguous share (:meth:`Dist.shard`). The batch a rank trains
  on, the crop positions and the resume point are therefore identical to a single-process run; the
  global batch (2 for DSN) must be divisible by the world size.
- **Same loss.** DDP averages gradients over ranks; a loss averaged over the batch on each rank
  (DSN's L2 is summed over pixels and *averaged over the batch*) thus gives the gradient of the
  global-batch loss, so gradient clipping and Adam see what a single process sees (to float
  summation order).
- :func:`ddp_step` wraps the *whole training step* in one module, so a step that calls several
  methods of the model (DSN's ``enhance`` and ``degrade``) is one DDP forward followed by one backward.
  ``find_unused_parameters=True`` by default: DSN builds modules that are never called (the official
  ``soca``); their gradients stay ``None`` on every rank, so Adam skips them exactly as in one process.
- Rank-0-only side effects: :meth:`Dist.is_main`, :meth:`Dist.main_only`, :meth:`Dist.barrier`;
  :meth:`Dist.mean` averages logged loss terms over ranks.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.distributed as dist
import torch.nn as nn

from .errors import BenchError

__all__ = ["Dist", "init_from_env", "current", "ddp_step", "StepModule", "unwrap", "launched_by_torchrun"]

_CURRENT: "Dist | None" = None


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Dist:
    """Where this process stands in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    @contextlib.contextmanager
    def main_only(self) -> Iterator[bool]:
        """``with d.main_only() as main: if main: write(...)`` -- every rank waits until rank 0 is done."""
        try:
            yield self.is_main()
        finally:
            self.barrier()

    def per_rank(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            raise BenchError(f"global batch {global_batch} is not divisible by {self.world_size} processes")
        return global_batch // self.world_size

    def shard(self, batch: Any) -> Any:
        """This rank's contiguous share of a global batch (a ``training.Batch``, a tensor, or a dataclass/
        mapping of tensors and lists whose first dimension is the batch)."""
        if not self.enabled:
            return batch
        import dataclasses

        def part(v: Any) -> Any:
            if isinstance(v, torch.Tensor) or isinstance(v, (list, tuple)):
                n = self.per_rank(len(v))
                out = v[self.rank * n:(self.rank + 1) * n]
                return out
            return v

        if isinstance(batch, torch.Tensor):
            return part(batch)
        if dataclasses.is_dataclass(batch):
            return dataclasses.replace(batch, **{f.name: part(getattr(batch, f.name))
                                                 for f in dataclasses.fields(batch)})
        if isinstance(batch, Mapping):
            return type(batch)({k: part(v) for k, v in batch.items()})
        raise TypeError(f"cannot shard a {type(batch).__name__}")

    def mean(self, values: Mapping[str, float]) -> dict[str, float]:
        """Average scalar log values over ranks (the global-batch loss for the log)."""
        if not self.enabled or not values:
            return dict(values)
        keys = list(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                         device=self.device if self.backend == "nccl" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= self.world_size
        return {k: float(v) for k, v in zip(keys, t.tolist())}

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        global _CURRENT
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
        if _CURRENT is self:
            _CURRENT = None


def init_from_env(device: str | torch.device = "auto", timeout_s: float = 1800.0) -> Dist:
    """Start the process group from torchrun's environment (a one-process ``Dist`` when not launched so).

    ``device``: ``auto`` (CUDA if available), ``cuda`` or ``cpu``; on CUDA each process uses
    ``cuda:LOCAL_RANK`` and nccl, on the CPU gloo.
    """
    want = str(device)
    use_cuda = torch.cuda.is_available() if want == "auto" else torch.device(want).type == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise BenchError("device cuda requested but no CUDA device is available")
    global _CURRENT
    if not launched_by_torchrun():
        _CURRENT = Dist(device=torch.device("cuda") if use_cuda else torch.device("cpu"))
        return _CURRENT
    try:
        rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    except KeyError as e:
        raise BenchError(f"WORLD_SIZE is set but {e.args[0]} is not: launch with torchrun") from None
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise BenchError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(local)
        dev, backend = torch.device("cuda", local), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://", "rank": rank, "world_size": world,
                                  "timeout": datetime.timedelta(seconds=timeout_s)}
        if backend == "nccl":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
    _CURRENT = Dist(rank=rank, world_size=world, local_rank=local, backend=backend, device=dev)
    return _CURRENT


def current() -> Dist:
    """The job this process belongs to, as set by the last :func:`init_from_env` (``bench train`` calls it
    once at start-up); a one-process ``Dist`` if it was never called. The Trainer reads it, so adapters
    need no new argument."""
    return _CURRENT if _CURRENT is not None else Dist()


class StepModule(nn.Module):
    """One training step as a module: ``forward(batch) -> step_fn(batch)`` (a dict of loss terms).
    ``model`` is registered so DDP sees (and synchronises) its parameters."""

    def __init__(self, model: nn.Module, step_fn: Callable[[Any], Mapping[str, Any]]):
        super().__init__()
        self.model = model
        self.step_fn = step_fn

    def forward(self, batch: Any) -> Mapping[str, Any]:
        return self.step_fn(batch)


def ddp_step(model: nn.Module, step_fn: Callable[[Any], Mapping[str, Any]], d: Dist, *,
             find_unused_parameters: bool = True) -> Callable[[Any], Mapping[str, Any]]:
    """``step_fn`` as a DDP module when ``d`` is distributed (the plain function otherwise).

    The batch is passed through untouched (``device_ids=None``: it is already on this rank's device).
    DDP broadcasts rank 0's parameters at construction, so every rank starts from the same weights.
    """
    if not d.enabled:
        return step_fn
    from torch.nn.parallel import DistributedDataParallel as DDP

    wrapped = DDP(StepModule(model, step_fn), device_ids=None, find_unused_parameters=find_unused_parameters)
    return wrapped


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP/StepModule wrapper (for ``state_dict`` and checkpoints)."""
    m = getattr(model, "module", model)
    return getattr(m, "model", m) if isinstance(m, StepModule) else m

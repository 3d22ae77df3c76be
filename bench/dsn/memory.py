"""Activation memory of DSN training: how the stack of invertible blocks keeps what backward needs.

A paper step (batch 2, 180² crops, both directions) keeps about 17 GiB of activations under plain autograd:
every block's three subnets hold full-resolution 64-128-channel maps for backward, twice (enhance and
degrade). The options (``DSNConfig.memory``, applied by :meth:`bench.dsn.model.DSN.set_memory`):

``full``
    plain autograd (the default; what the official code does).
``blocks``
    each block's forward is recomputed during backward (``torch.utils.checkpoint``, non-reentrant): only the
    blocks' inputs are kept. The recomputation repeats the same kernels on the same inputs and backward walks
    the same graph, so on CPU the gradients are **bit-identical** to ``full`` (tested); it costs one more
    forward of the blocks.
``reversible``
    only the stack's input and output are kept. Backward rebuilds each block's input from its output with the
    block's inverse (InvBlock.enhance and InvBlock.degrade invert each other), re-runs that block with autograd
    on and backpropagates through it (``torch.autograd.grad`` w.r.t. the block's input and parameters), then
    moves to the previous block -- the reversible-network trick (Gomez et al., 2017). It costs one inverse and
    one forward of the blocks more than ``full``. Not for mixed precision: an input rebuilt from half-precision
    outputs loses its low bits, so ``DSNConfig.validate`` refuses it with amp.

    The rebuilt inputs differ from the true ones by float rounding, amplified by every inverse on the way
    back, so the gradients differ from ``full`` by float error. Measured on CPU (fp32, batch 2 of 24² crops,
    every trainable tensor random, convolutions fan-in scaled by 0.45, both directions;
    ``tests/test_dsn_memory.py``), as the largest |difference| of any gradient element over the largest
    |gradient|, and as ||difference|| / ||gradient|| over all tensors together:

    - 3 blocks: 5e-7 and 1.3e-7 (worst single tensor 4e-5; the degrade direction alone 1.7e-6, 1.3e-4);
    - 8 blocks: 3e-4 and 9e-5; the worst single tensor, a PReLU slope (a sum over every pixel, with
      cancellation), is 13 % off -- fp32 ``full`` itself is 1e-3 away from fp64 on such tensors. The same
      code in fp64 agrees with fp64 ``full`` to 1e-13, so this is rounding, not a wrong gradient.

    The error grows with the blocks' gain: with the convolutions scaled by 0.3 instead, 8 blocks give 1.5e-5
    and 8e-5 (worst tensor 2e-4). The tests hold 3 blocks under 1e-5 (max) and 1e-3 (per tensor), 8 blocks
    under 2e-3 (max) and 1e-3 (all tensors).

Only the blocks take part: the frozen encoder/decoder around the stack and the losses stay on the normal
autograd path, and none of this runs while autograd is off (inference keeps its own path).
"""

from __future__ import annotations

from typing import Any, List, Sequence

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

__all__ = ["MEMORY_MODES", "run_blocks"]

MEMORY_MODES = ("full", "blocks", "reversible")
_DIRECTIONS = {"enhance": "degrade", "degrade": "enhance"}   # each block direction's inverse


def _trainable(blocks: Sequence[nn.Module]) -> List[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for blk in blocks:
        for p in blk.parameters():
            if p.requires_grad:
                seen.setdefault(id(p), p)
    return list(seen.values())


def run_blocks(blocks: Sequence[nn.Module], h: torch.Tensor, direction: str, mode: str) -> torch.Tensor:
    """``h`` through ``blocks`` in the order given, each applying its ``direction`` ("enhance"/"degrade")."""
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be 'enhance' or 'degrade', got {direction!r}")
    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown memory mode {mode!r}; choose one of {', '.join(MEMORY_MODES)}")
    params = _trainable(blocks)
    # nothing to differentiate: the plain loop is all backward could use (and is what inference runs)
    if mode == "full" or not torch.is_grad_enabled() or not (params or h.requires_grad):
        for blk in blocks:
            h = getattr(blk, direction)(h)
        return h
    if mode == "blocks":
        for blk in blocks:
            # preserve_rng_state: the blocks draw no random numbers today; should one ever do, the
            # recomputation must see the same draws or the gradients would silently stop matching
            h = checkpoint(getattr(blk, direction), h, use_reentrant=False, preserve_rng_state=True)
        return h
    if any(torch.is_autocast_enabled(t) for t in ("cpu", "cuda")):
        raise RuntimeError("memory=reversible does not run under autocast: inputs rebuilt from half-precision "
                           "outputs lose their low bits; use memory=blocks with amp")
    return _ReversibleStack.apply(h, _Stack(blocks, direction, params), *params)


class _Stack:
    """What backward needs besides tensors: the blocks, their direction and where each parameter sits."""

    def __init__(self, blocks: Sequence[nn.Module], direction: str, params: Sequence[nn.Parameter]):
        self.blocks = list(blocks)
        self.direction = direction
        self.inverse = _DIRECTIONS[direction]
        index = {id(p): i for i, p in enumerate(params)}
        self.param_index = [[index[id(p)] for p in b.parameters() if p.requires_grad]
                            for b in self.blocks]
        self.params = list(params)


class _ReversibleStack(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, stack: _Stack, *params: nn.Parameter) -> torch.Tensor:
        # autograd is off in here: none of the blocks' intermediate maps is kept. The stack's input is kept
        # besides its output: it is one map (the encoder's output), and rebuilding it would cost the inverse
        # that carries the largest accumulated error
        x = h
        for blk in stack.blocks:
            h = getattr(blk, stack.direction)(h)
        ctx.stack = stack
        ctx.save_for_backward(x, h)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        stack: _Stack = ctx.stack
        first, y = (t.detach() for t in ctx.saved_tensors)
        grads: List[torch.Tensor | None] = [None] * len(stack.params)
        for i in range(len(stack.blocks) - 1, -1, -1):
            blk = stack.blocks[i]
            if i == 0:
                x = first
            else:
                with torch.no_grad():
                    x = getattr(blk, stack.inverse)(y)
            del y   # the output is no longer needed once its input is rebuilt
            # the first block's input is the encoder's output, which needs no gradient in DSN training
            need_x = i > 0 or ctx.needs_input_grad[0]
            own = [stack.params[j] for j in stack.param_index[i]]
            with torch.enable_grad():
                xg = x.detach().requires_grad_(need_x)
                out = getattr(blk, stack.direction)(xg)
                got = torch.autograd.grad(out, ([xg] if need_x else []) + own, grad, allow_unused=True)
            del out
            grad = got[0] if need_x else None
            for j, g in zip(stack.param_index[i], got[1:] if need_x else got):
                if g is not None:
                    grads[j] = g if grads[j] is None else grads[j] + g
            y = x
        return (grad, None, *grads)

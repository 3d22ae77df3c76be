"""Worker for tests/test_distributed.py: a few DSN training steps, single-process or under torchrun.

    python tests/ddp_worker.py OUT_DIR STEPS                     # one process, global batch 2
    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT_DIR STEPS

Each rank saves its final weights to OUT_DIR/weights_rank<R>_of<W>.pt; rank 0 alone writes
OUT_DIR/log_<W>.csv (global-batch loss averaged over ranks), as the Trainer would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from bench.distributed import ddp_step, init_from_env, unwrap
from bench.dsn.losses import l2_loss, quantize_ste
from bench.dsn.model import DSN
from bench.training import CropSampler, seed_all
from train_pairs import ArrayPair

GLOBAL_BATCH = 2


def pairs():
    rng = np.random.default_rng(7)
    out = []
    for i, (h, w) in enumerate([(20, 24), (18, 22), (24, 20)]):
        high = rng.integers(40, 255, (h, w, 3), dtype=np.uint8)
        out.append(ArrayPair(f"p{i}", (high * 0.3).astype(np.uint8), high))
    return out


def main(out_dir: Path, steps: int) -> None:
    torch.set_num_threads(1)
    d = init_from_env("cpu")
    seed_all(0)
    model = DSN(n_blocks=1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-5)
    sampler = CropSampler(pairs(), crop=16, batch=GLOBAL_BATCH, seed=0)  # the same stream on every rank

    def step_fn(b):
        fwd = l2_loss(model.enhance(b.low), b.high)
        bwd = l2_loss(model.degrade(quantize_ste(b.high)), b.low)
        return {"loss": fwd + bwd, "loss_forward": fwd, "loss_backward": bwd}

    step = ddp_step(model, step_fn, d)
    rows = []
    for _ in range(steps):
        batch = d.shard(sampler.next_batch())
        assert batch.low.shape[0] == GLOBAL_BATCH // d.world_size
        opt.zero_grad(set_to_none=True)
        terms = step(batch)
        terms["loss"].backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, 10.0))
        opt.step()
        rows.append({**d.mean({k: float(v.detach()) for k, v in terms.items()}), "grad_norm": norm})
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    torch.save({"model": sd, "unused_no_grad": unused}, out_dir / f"weights_rank{d.rank}_of{d.world_size}.pt")
    with d.main_only() as main:
        if main:
            lines = ["step,loss,loss_forward,loss_backward,grad_norm"]
            lines += [f"{i + 1},{r['loss']:.9g},{r['loss_forward']:.9g},{r['loss_backward']:.9g},{r['grad_norm']:.9g}"
                      for i, r in enumerate(rows)]
            (out_dir / f"log_{d.world_size}.csv").write_text("\n".join(lines) + "\n")
    d.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))

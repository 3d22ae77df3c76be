"""The White-Box training loop (official ``net.py: GAN.train``), with checkpoints and resume.

``bench.training.Trainer`` runs one optimiser on one loss per iteration; White-Box alternates three Adam
optimisers (actor, value, critic) inside an iteration, keeps a trajectory pool between iterations and feeds the
critic from it, so it has its own loop here, built on the shared pieces (``derive_seed``, ``seed_all``,
``capture_rng``/``restore_rng``, ``save_torch``/``load_torch``, the ``bench-weights`` file format).

One iteration ``t`` (0 … ``iterations``, inclusive as in the original):

1. ``giters`` generator steps (100 at t = 0, with the learning rate 0 so that the pool fills with finished
   trajectories; 1 afterwards): a batch of unfinished pool records → one agent step (filter sampled from π) →
   actor and value Adam steps on ``g_loss`` / ``v_loss`` (``rl.actor_value_losses``) → results back into the pool;
2. ``citers`` critic steps (100 while t < 10 and when t % 500 == 0, else 5): finished pool images against a batch
   of target images, WGAN loss + one-sided gradient penalty.

Learning rates: critic ``base_lr · 0.1^(3t/T)``, actor ``0.3 ×`` that, value ``10 ×`` the actor's (continuous
decay, ×0.1 per third of training); Adam β = (0.5, 0.9).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from bench.training import (STATE_FORMAT, WEIGHTS_FORMAT, TrainDir, capture_rng, derive_seed, latest_state,
                            restore_rng, save_torch, seed_all)

from .data import FakeProvider, RealProvider
from .memory import ImagePool
from .networks import WhiteBoxNets
from .rl import RLConfig, actor_value_losses, agent_step, critic_loss

__all__ = ["WhiteBoxTraining", "lr_schedule"]

log = logging.getLogger("bench.white_box")
COLUMNS = ["iteration", "g_loss", "v_loss", "reward", "penalty", "emd", "c_loss", "gp", "lr_g", "lr_c", "seconds"]


def lr_schedule(c: Any, t: int) -> tuple[float, float, float]:
    """(actor, value, critic) learning rates at iteration t."""
    decay = c.lr_decay ** (t * c.lr_segments / c.iterations)
    lr_c = c.critic_lr_mul * c.base_lr * decay
    lr_g = c.generator_lr_mul * c.base_lr * decay
    return lr_g, c.value_lr_mul * lr_g, lr_c


class WhiteBoxTraining:
    def __init__(self, nets: WhiteBoxNets, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], config: Any,
                 rl: RLConfig, out_dir: Path, seed: int, device: torch.device, meta: Mapping[str, Any],
                 progress: bool = True):
        c = self.c = config
        self.nets, self.rl, self.out_dir, self.seed, self.device = nets, rl, Path(out_dir), int(seed), device
        self.meta, self.progress = dict(meta), progress
        fake = FakeProvider(inputs, random.Random(derive_seed(seed, "fake-data")), c.main_size, c.image_size,
                            c.augmentation_factor)
        self.real = RealProvider(targets, random.Random(derive_seed(seed, "real-data")), c.main_size, c.image_size,
                                 c.augmentation_factor)
        self.pool = ImagePool(fake, c.pool_size, c.batch, random.Random(derive_seed(seed, "pool")), device,
                              rl.max_trajectory_length, c.over_length_keep_prob)
        betas = tuple(c.betas)
        self.opt_g = torch.optim.Adam(nets.agent.parameters(), lr=0.0, betas=betas)
        self.opt_v = torch.optim.Adam(nets.value.parameters(), lr=0.0, betas=betas)
        self.opt_c = torch.optim.Adam(nets.critic.parameters(), lr=0.0, betas=betas)
        self.iteration = 0           # completed loop iterations
        self.elapsed = 0.0
        self.files = TrainDir(self.out_dir, self.identity())

    # ---- settings identity (what a resumed run must agree on) --------------------------------------
    def identity(self) -> dict[str, Any]:
        return {"config": self.meta.get("config"), "seed": self.seed}

    # ---- one iteration ---------------------------------------------------------------------------
    def generator_step(self, t: int, lr_g: float, lr_v: float) -> dict[str, float]:
        c, nets = self.c, self.nets
        images, states = self.pool.next_fake_batch(c.batch)
        res = agent_step(nets.agent, images, states, self.rl, is_train=True, progress=t / c.iterations)
        losses = actor_value_losses(res, images, states, nets.critic, nets.value, self.rl)
        g_params = list(nets.agent.parameters())
        v_params = list(nets.value.parameters())
        g_grads = torch.autograd.grad(losses["g_loss"], g_params, retain_graph=True, allow_unused=True)
        v_grads = torch.autograd.grad(losses["v_loss"], v_params, allow_unused=True)
        for opt, params, grads, lr in ((self.opt_g, g_params, g_grads, lr_g), (self.opt_v, v_params, v_grads, lr_v)):
            for p, g in zip(params, grads):
                p.grad = torch.zeros_like(p) if g is None else g
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            opt.zero_grad(set_to_none=True)
        self.pool.replace(res.output.detach(), res.new_states.detach())
        return {k: float(v.detach()) for k, v in losses.items()}

    def critic_step(self, lr_c: float) -> dict[str, float]:
        c, critic = self.c, self.nets.critic
        fake = self.pool.replay_fake_batch(c.batch)
        real = self.real.next_batch(c.batch, self.device)
        out = critic_loss(critic, fake, real, self.rl)
        params = list(critic.parameters())
        grads = torch.autograd.grad(out["loss"], params)
        for p, g in zip(params, grads):
            p.grad = g
        for group in self.opt_c.param_groups:
            group["lr"] = lr_c
        self.opt_c.step()
        self.opt_c.zero_grad(set_to_none=True)
        return {k: float(v.detach()) for k, v in out.items()}

    def iterate(self, t: int) -> dict[str, float]:
        c = self.c
        lr_g, lr_v, lr_c = lr_schedule(c, t)
        if t == 0:
            lr_g = lr_v = 0.0          # the official first iteration only fills the pool (Adam moments still move)
        citers = c.citers_init if (t < c.critic_initialization or t % c.citers_burst_every == 0) else c.citers
        giters = c.giters_first if t == 0 else c.giters
        g_rows = [self.generator_step(t, lr_g, lr_v) for _ in range(giters)]
        c_rows = [self.critic_step(lr_c) for _ in range(citers)]
        row = {k: float(np.mean([r[k] for r in g_rows])) for k in ("g_loss", "v_loss", "reward", "penalty")}
        row.update({"emd": float(np.mean([r["emd"] for r in c_rows])) if c_rows else float("nan"),
                    "c_loss": float(np.mean([r["loss"] for r in c_rows])) if c_rows else float("nan"),
                    "gp": float(np.mean([r["gp"] for r in c_rows])) if c_rows else float("nan"),
                    "lr_g": lr_g, "lr_c": lr_c})
        return row

    # ---- checkpoints -----------------------------------------------------------------------------
    def save_state(self) -> Path:
        return self.files.write_state(
            {"format": STATE_FORMAT, "version": 1, "iteration": self.iteration, "elapsed": self.elapsed,
             "settings": self.identity(), "model": self.nets.state_dict(),
             "opt_g": self.opt_g.state_dict(), "opt_v": self.opt_v.state_dict(),
             "opt_c": self.opt_c.state_dict(), "pool": self.pool.state_dict(),
             "fake": self.pool.provider.state_dict(), "real": self.real.state_dict(), "rng": capture_rng(),
             "meta": self.meta}, self.iteration)

    def load_state(self, path: Path) -> None:
        st = self.files.read_state(path)
        self.nets.load_state_dict(st["model"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_v.load_state_dict(st["opt_v"])
        self.opt_c.load_state_dict(st["opt_c"])
        self.pool.load_state_dict(st["pool"])
        self.pool.provider.load_state_dict(st["fake"])
        self.real.load_state_dict(st["real"])
        restore_rng(st["rng"])
        self.iteration, self.elapsed = int(st["iteration"]), float(st["elapsed"])

    # ---- the loop --------------------------------------------------------------------------------
    def run(self) -> Path:
        c = self.c
        self.out_dir.mkdir(parents=True, exist_ok=True)
        finished = self.files.finished()
        if finished is not None:
            return finished
        seed_all(derive_seed(self.seed, "white-box-loop"))
        latest = latest_state(self.out_dir)
        if latest is not None:
            self.load_state(latest)
            log.info("white-box: resuming from %s", latest)
        self.files.truncate_csv(self.files.log_path, self.iteration)
        total = c.iterations + 1
        self.nets.train()
        bar = tqdm(total=total, initial=self.iteration, desc="train white-box", unit="it", disable=not self.progress,
                   dynamic_ncols=True)
        try:
            while self.iteration < total:
                t0 = time.perf_counter()
                row = self.iterate(self.iteration)
                self.iteration += 1
                self.elapsed += time.perf_counter() - t0
                self.files.append_csv(self.files.log_path, COLUMNS,
                                      [self.iteration, *(f"{float(row[k]):.6g}" for k in COLUMNS[1:-1]),
                                       f"{self.elapsed:.6g}"])
                bar.update(1)
                bar.set_postfix(g=f"{row['g_loss']:.3g}", emd=f"{row['emd']:.3g}", refresh=False)
                if (c.checkpoint_every > 0 and self.iteration % c.checkpoint_every == 0) or self.iteration == total:
                    self.save_state()
        finally:
            bar.close()
        self.nets.eval()
        final = self.out_dir / "model_final.pt"
        save_torch({"format": WEIGHTS_FORMAT, "version": 1, "iteration": self.iteration, "selected": "last",
                    "model": self.nets.state_dict(), "meta": self.meta}, final)
        self.files.finish(final, self.iteration, keep_final_state=False)
        return final

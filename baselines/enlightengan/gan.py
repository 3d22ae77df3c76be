"""EnlightenGAN's unpaired data, one training step, and the alternating G / D / patch-D loop.

``bench.training.Trainer`` drives one optimiser; EnlightenGAN updates three (G, then the global D and the patch
D from the same forward pass, as the official ``optimize_parameters``). This module builds the loop from the
shared pieces instead: ``CropSampler`` (two of them, independently seeded, for the two unpaired domains),
``derive_seed``/``seed_all``, ``capture_rng``/``restore_rng``, ``save_torch``/``load_torch``/``latest_state``
and the same file conventions as ``Trainer`` (``state_<iteration>.pt`` checkpoints with resume,
``train_log.csv``, ``train_settings.json``, ``model_final.pt`` in the ``bench-weights`` format, ``train_done.json``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from tqdm import tqdm

from bench.errors import BenchError
from bench.fsutil import write_json
from bench.methods.base import TrainPair
from bench.training import (
    STATE_FORMAT,
    WEIGHTS_FORMAT,
    CropSampler,
    TrainDir,
    capture_rng,
    derive_seed,
    latest_state,
    restore_rng,
    save_torch,
    seed_all,
)

from . import losses as L
from .model import attention_map

__all__ = ["UnpairedBatch", "UnpairedSampler", "GanSettings", "EnlightenGANStep", "GanTrainer", "lr_at"]


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
@dataclass
class UnpairedBatch:
    real_a: torch.Tensor      # low crops in [0, 1] (the official real_A: used by the VGG loss)
    input_a: torch.Tensor     # the generator's input: real_a, darkened ×1/2…1/4 with p = 0.5 (--vary)
    real_b: torch.Tensor      # normal-light crops in [0, 1], drawn independently (unpaired)
    ids_a: list[str]
    ids_b: list[str]


class UnpairedSampler:
    """Domain A = the low images, domain B = the normal-light images, each visited in its own random order
    with its own random crops (two ``CropSampler``s seeded from different streams, so no pairing survives),
    then the official augmentation per sample: horizontal and vertical flips (p = 0.5 each) and, with
    ``vary``, a darkening of the generator input by a factor drawn from randint(low_times, high_times)/100
    with p = 0.5 (``data/unaligned_dataset.py``)."""

    def __init__(self, low_pairs: Sequence[TrainPair], high_pairs: Sequence[TrainPair], crop: int, batch: int,
                 seed: int, *, flips: bool = True, vary: bool = True, low_times: int = 200, high_times: int = 400,
                 device: torch.device | str = "cpu", progress: bool = False):
        self.a = CropSampler(low_pairs, crop, batch, derive_seed(seed, "enlightengan", "domain-A"), use_high=False,
                             augment=False, device=device, progress=progress)
        self.b = CropSampler(high_pairs, crop, batch, derive_seed(seed, "enlightengan", "domain-B"), use_high=False,
                             augment=False, device=device, progress=progress)
        self.flips, self.vary = bool(flips), bool(vary)
        self.low_times, self.high_times = int(low_times), int(high_times)
        self.batch, self.crop = int(batch), self.a.crop
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "enlightengan", "augment"))

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))  # the official UnalignedDataset length

    @property
    def iterations_per_epoch(self) -> int:
        return math.ceil(len(self) / self.batch)

    def describe(self) -> dict[str, Any]:
        return {"domain_A": self.a.describe(), "domain_B": self.b.describe(), "flips": self.flips,
                "vary": [self.low_times, self.high_times] if self.vary else None, "paired": False}

    def _rand(self) -> float:
        return float(torch.rand(1, generator=self.generator))

    def next_batch(self) -> UnpairedBatch:
        ba, bb = self.a.next_batch(), self.b.next_batch()
        real_a, real_b = ba.low.clone(), bb.low.clone()
        input_a = real_a.clone()
        for i in range(real_a.shape[0]):
            if self.flips and self._rand() < 0.5:
                real_a[i], real_b[i] = real_a[i].flip(-1), real_b[i].flip(-1)
            if self.flips and self._rand() < 0.5:
                real_a[i], real_b[i] = real_a[i].flip(-2), real_b[i].flip(-2)
            if self.vary and self.flips and self._rand() < 0.5:
                times = int(torch.randint(self.low_times, self.high_times + 1, (1,), generator=self.generator)) / 100.0
                input_a[i] = real_a[i] / times
            else:
                input_a[i] = real_a[i]
        return UnpairedBatch(real_a, input_a, real_b, ba.ids, bb.ids)

    def patch_offsets(self, h: int, w: int, size: int, n: int) -> list[tuple[int, int]]:
        """``n`` (top, left) offsets as the official ``random.randint(0, max(0, side - size - 1))``."""
        hi_h, hi_w = max(0, h - size - 1), max(0, w - size - 1)
        out = []
        for _ in range(n):
            left = int(torch.randint(0, hi_w + 1, (1,), generator=self.generator))
            top = int(torch.randint(0, hi_h + 1, (1,), generator=self.generator))
            out.append((top, left))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"A": self.a.state_dict(), "B": self.b.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.a.load_state_dict(state["A"])
        self.b.load_state_dict(state["B"])
        self.generator.set_state(state["generator"])


# ------------------------------------------------------------------------------------------------
# one step's losses
# ------------------------------------------------------------------------------------------------
class EnlightenGANStep:
    """The official objectives on one batch (see ``losses.py``). Images enter in [0, 1] and are mapped to
    [−1, 1] as the official data pipeline does."""

    def __init__(self, G: torch.nn.Module, D: torch.nn.Module, DP: torch.nn.Module, vgg: torch.nn.Module | None, *,
                 patch: int = 32, n_patches: int = 5, w_vgg: float = 1.0, vgg_instance_norm: bool = True,
                 use_ragan: bool = True, attention: str = "luminance"):
        self.G, self.D, self.DP, self.vgg = G, D, DP, vgg
        self.patch, self.n_patches, self.w_vgg = int(patch), int(n_patches), float(w_vgg)
        self.vgg_instance_norm, self.use_ragan, self.attention = bool(vgg_instance_norm), bool(use_ragan), attention

    def forward(self, batch: UnpairedBatch) -> dict[str, torch.Tensor]:
        real_a, real_b = batch.real_a * 2 - 1, batch.real_b * 2 - 1
        inp = batch.input_a * 2 - 1
        gray = attention_map(batch.input_a, self.attention)
        fake, latent = self.G(inp, gray)
        return {"real_a": real_a, "real_b": real_b, "input": inp, "gray": gray, "fake": fake, "latent": latent}

    def generator_loss(self, t: Mapping[str, torch.Tensor], offsets: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        fake, real_b, real_a = t["fake"], t["real_b"], t["real_a"]
        pred_fake, pred_real = self.D(fake), self.D(real_b)
        g_global = L.ragan_g_loss(pred_real, pred_fake) if self.use_ragan else L.lsgan_g_loss(pred_fake)
        patches = L.crop_patches([fake, real_b, real_a], offsets, self.patch)
        g_patch = sum(L.lsgan_g_loss(self.DP(fp)) for fp, _, _ in patches) / len(patches)
        terms = {"loss_G_global": g_global, "loss_G_patch": g_patch}
        loss = g_global + g_patch
        if self.vgg is not None and self.w_vgg > 0:
            sfp = L.sfp_loss(self.vgg, fake, real_a, self.vgg_instance_norm)
            sfp_p = sum(L.sfp_loss(self.vgg, fp, ap, self.vgg_instance_norm) for fp, _, ap in patches) / len(patches)
            vgg_term = sfp + sfp_p
            terms["loss_sfp"] = vgg_term
            loss = loss + self.w_vgg * vgg_term
        terms = {"loss_G": loss, **terms}
        return terms

    def discriminator_losses(self, t: Mapping[str, torch.Tensor],
                             offsets: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        fake, real_b = t["fake"].detach(), t["real_b"]
        pred_real, pred_fake = self.D(real_b), self.D(fake)
        d = L.ragan_d_loss(pred_real, pred_fake) if self.use_ragan else L.lsgan_d_loss(pred_real, pred_fake)
        patches = L.crop_patches([fake, real_b], offsets, self.patch)
        dp = sum(L.lsgan_d_loss(self.DP(rp), self.DP(fp)) for fp, rp in patches) / len(patches)
        return {"loss_D": d, "loss_DP": dp}


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------
@dataclass
class GanSettings:
    iterations: int
    iterations_per_epoch: int
    lr: float
    beta1: float = 0.5
    niter: int = 100                 # epochs at the initial learning rate
    niter_decay: int = 100           # epochs of linear decay to zero
    checkpoint_every: int = 1000     # 0 = only at the end
    keep_final_state: bool = False

    def identity(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("checkpoint_every")
        d.pop("keep_final_state")
        return d


def lr_at(iteration: int, s: GanSettings) -> float:
    """The official schedule: ``update_learning_rate`` runs after every epoch > niter and subtracts
    lr/niter_decay, so (1-based) epoch e uses lr·(1 − max(0, e − niter − 1)/niter_decay)."""
    epoch = iteration // max(1, s.iterations_per_epoch) + 1
    if s.niter_decay <= 0:
        return s.lr
    return s.lr * max(0.0, 1.0 - max(0, epoch - s.niter - 1) / s.niter_decay)


class GanTrainer:
    def __init__(self, G: torch.nn.Module, D: torch.nn.Module, DP: torch.nn.Module, step: EnlightenGANStep,
                 sampler: UnpairedSampler, out_dir: Path, settings: GanSettings, *, seed: int, meta: Mapping[str, Any],
                 device: torch.device, progress: bool = True, n_patches: int = 5, patch: int = 32):
        self.G, self.D, self.DP, self.step, self.sampler = G, D, DP, step, sampler
        self.out_dir, self.settings, self.seed = Path(out_dir), settings, int(seed)
        self.files = TrainDir(self.out_dir, settings.identity())
        self.meta, self.device, self.progress = dict(meta), device, progress
        self.n_patches, self.patch = int(n_patches), int(patch)
        betas = (settings.beta1, 0.999)
        self.opt_g = torch.optim.Adam(G.parameters(), lr=settings.lr, betas=betas)
        self.opt_d = torch.optim.Adam(D.parameters(), lr=settings.lr, betas=betas)
        self.opt_dp = torch.optim.Adam(DP.parameters(), lr=settings.lr, betas=betas)
        self.iteration, self.elapsed = 0, 0.0
        self.columns: list[str] | None = None
        self.on_iteration_end: Callable[[int], None] | None = None

    # ---- files (bench.training.TrainDir) ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "version": 1, "iteration": self.iteration, "elapsed": self.elapsed,
                "model": self.G.state_dict(), "D": self.D.state_dict(), "DP": self.DP.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "opt_dp": self.opt_dp.state_dict(),
                "rng": capture_rng(), "sampler": self.sampler.state_dict(), "settings": self.settings.identity(),
                "columns": self.columns, "meta": self.meta}

    def save_state(self) -> Path:
        return self.files.write_state(self.state_dict(), self.iteration)

    def load_state(self, path: Path) -> None:
        st = self.files.read_state(path)
        self.G.load_state_dict(st["model"])
        self.D.load_state_dict(st["D"])
        self.DP.load_state_dict(st["DP"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        self.opt_dp.load_state_dict(st["opt_dp"])
        restore_rng(st["rng"])
        self.sampler.load_state_dict(st["sampler"])
        self.iteration, self.elapsed = int(st["iteration"]), float(st["elapsed"])
        self.columns = st.get("columns")

    # ---- one iteration ----------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        lr = lr_at(self.iteration, self.settings)
        for opt in (self.opt_g, self.opt_d, self.opt_dp):
            for group in opt.param_groups:
                group["lr"] = lr
        batch = self.sampler.next_batch()
        t = self.step.forward(batch)
        h, w = t["fake"].shape[-2:]
        offsets = self.sampler.patch_offsets(h, w, self.patch, 1 + self.n_patches)
        # generator (the discriminators are frozen for this backward pass only)
        for p in list(self.D.parameters()) + list(self.DP.parameters()):
            p.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        g_terms = self.step.generator_loss(t, offsets)
        g_terms["loss_G"].backward()
        self.opt_g.step()
        for p in list(self.D.parameters()) + list(self.DP.parameters()):
            p.requires_grad_(True)
        # discriminators, on the same (detached) outputs and patches
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_dp.zero_grad(set_to_none=True)
        d_terms = self.step.discriminator_losses(t, offsets)
        d_terms["loss_D"].backward()
        d_terms["loss_DP"].backward()
        self.opt_d.step()
        self.opt_dp.step()
        values = {k: float(v.detach()) for k, v in {**g_terms, **d_terms}.items()}
        values["lr"] = lr
        return values

    # ---- the loop ---------------------------------------------------------------------------
    def run(self) -> Path:
        s = self.settings
        self.out_dir.mkdir(parents=True, exist_ok=True)
        finished = self.files.finished()
        if finished is not None:
            return finished
        seed_all(self.seed)
        latest = latest_state(self.out_dir)
        resumed = None
        if latest is not None:
            self.load_state(latest)
            resumed = str(latest)
        self.files.truncate_csv(self.files.log_path, self.iteration)
        write_json(self.out_dir / "train_settings.json",
                   {"settings": asdict(s), "sampler": self.sampler.describe(), "seed": self.seed,
                    "device": str(self.device), "resumed_from": resumed, "meta": self.meta})
        self.G.train()
        self.D.train()
        self.DP.train()
        bar = tqdm(total=s.iterations, initial=self.iteration, desc="train enlightengan", unit="it",
                   disable=not self.progress, dynamic_ncols=True)
        try:
            while self.iteration < s.iterations:
                t0 = time.perf_counter()
                values = self.train_step()
                lr = values.pop("lr")
                if not all(math.isfinite(v) for v in values.values()):
                    raise BenchError(f"enlightengan: a loss became non-finite at iteration {self.iteration + 1} "
                                     f"({values}); the last checkpoint is kept in {self.out_dir}")
                self.iteration += 1
                self.elapsed += time.perf_counter() - t0
                if self.columns is None:
                    self.columns = list(values)
                self.files.append_log(self.iteration, self.columns, values, lr, self.elapsed)
                bar.update(1)
                bar.set_postfix(G=f"{values['loss_G']:.3g}", D=f"{values['loss_D']:.3g}", refresh=False)
                if (s.checkpoint_every > 0 and self.iteration % s.checkpoint_every == 0) or self.iteration == s.iterations:
                    self.save_state()
                if self.on_iteration_end is not None:
                    self.on_iteration_end(self.iteration)
        finally:
            bar.close()
        final = self.out_dir / "model_final.pt"
        save_torch({"format": WEIGHTS_FORMAT, "version": 1, "iteration": self.iteration, "selected": "last",
                    "model": self.G.state_dict(), "meta": self.meta}, final)
        self.files.finish(final, self.iteration, s.keep_final_state)
        return final

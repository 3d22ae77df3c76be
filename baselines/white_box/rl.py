"""One agent step, its penalties and rewards, and the actor/value/critic losses (official ``agent.py``, ``net.py``).

State (11 values per image): ``[submitted, stopped, step, used_E, used_G, used_W, used_S+, used_T, used_Ct, used_BW,
used_C]``. A step applies the chosen filter; the trajectory is *submitted* (and stopped) exactly when the step count
reaches ``test_steps`` (5): the official ``agent_generator`` has no separate stop action
(``submitted = is_last_step``), so the early-stop penalty is always 0 and every trajectory has ``test_steps``
steps, in training and at test time.

Penalty (subtracted from the reward) = ``mean(max(out − 1, 0)²)`` + ``(1 − progress)·0.05·(ln 8 − entropy)``
+ ``1.0·[filter already used]`` + ``1.0·[submitted before the last step]`` (0).

Reward = ``(critic(out) − critic(in)) · 0.05 − penalty`` (WGAN, ``all_reward = 1``); ``critic(in)`` is a constant.
Q = reward + (1 − stopped)·γ·V(out, new state) (γ = 1; V zeroed past ``maximum_trajectory_length``);
advantage = stop_grad(Q) − V(in, state). Losses: value ``mean(advantage²)``; actor ``mean(−Q + log π(a)·stop_grad(−advantage))``
(the deterministic policy gradient through the differentiable filters and the critic/value networks, plus
REINFORCE for the filter choice); critic ``mean(C(fake)) − mean(C(real)) + 10·mean(max(‖∇C(x̂)‖ − 1, 0)²)``
(one-sided gradient penalty, ‖·‖ = sqrt(1e-6 + Σ g²), x̂ = real + α (fake − real)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .filters import FILTERS, N_FILTERS
from .networks import STATE_STEP, STATE_STOPPED, STATE_USAGE, Agent, Critic

__all__ = ["RLConfig", "StepResult", "agent_step", "step_penalty", "step_reward", "actor_value_losses",
           "critic_loss"]


@dataclass
class RLConfig:
    test_steps: int = 5
    max_trajectory_length: int = 7
    exploration_penalty: float = 0.05
    filter_usage_penalty: float = 1.0
    early_stop_penalty: float = 1.0
    critic_logit_multiplier: float = 0.05
    all_reward: float = 1.0
    discount: float = 1.0
    use_td: bool = True
    use_penalty: bool = True
    gradient_penalty: float = 10.0


@dataclass
class StepResult:
    output: torch.Tensor          # N×3×H×W, the chosen filter applied
    new_states: torch.Tensor      # N×11
    surrogate: torch.Tensor       # N×1, log π(chosen filter)
    penalty: torch.Tensor         # N×1
    selected: torch.Tensor        # N (long)
    params: list[torch.Tensor]    # decoded parameters of every filter (N×...)
    pdf: torch.Tensor             # N×8


def step_penalty(output: torch.Tensor, entropy: torch.Tensor, one_hot: torch.Tensor, usage: torch.Tensor,
                 is_last: torch.Tensor, submitted: torch.Tensor, progress: float, c: RLConfig) -> torch.Tensor:
    over = (output - 1).clamp(min=0).pow(2).mean(dim=(1, 2, 3))[:, None]
    entropy_penalty = (1.0 - progress) * c.exploration_penalty * (-entropy + math.log(N_FILTERS))
    usage_penalty = (usage * one_hot).sum(dim=1, keepdim=True)
    early_stop = (1 - is_last) * submitted * c.early_stop_penalty
    return over + entropy_penalty + usage_penalty * c.filter_usage_penalty + early_stop


def agent_step(agent: Agent, img: torch.Tensor, states: torch.Tensor, c: RLConfig, *, is_train: bool,
               progress: float, generator: torch.Generator | None = None, use_dropout: bool = True) -> StepResult:
    params, pdf, entropy = agent(img, states, generator, use_dropout)
    if is_train:
        selected = torch.multinomial(pdf.detach().float(), 1)[:, 0]
    else:
        selected = pdf.argmax(dim=1)
    one_hot = F.one_hot(selected, N_FILTERS).to(img.dtype)
    filtered = torch.stack([f.process(img, p) for f, p in zip(FILTERS, params)], dim=1)
    output = (filtered * one_hot[:, :, None, None, None]).sum(dim=1)
    surrogate = (one_hot * torch.log(pdf + 1e-10)).sum(dim=1, keepdim=True)

    step = states[:, STATE_STEP:STATE_STEP + 1]
    is_last = ((step + 1 - c.test_steps).abs() < 1e-4).to(img.dtype)
    submitted = is_last
    usage = states[:, STATE_USAGE:]
    new_states = torch.cat([submitted, submitted, step + 1, torch.maximum(usage, one_hot)], dim=1)
    penalty = step_penalty(output, entropy, one_hot, usage, is_last, submitted, progress, c)
    return StepResult(output, new_states, surrogate, penalty, selected, params, pdf)


def step_reward(fake_logit: torch.Tensor, fake_input_logit: torch.Tensor, penalty: torch.Tensor,
                stopped: torch.Tensor, c: RLConfig) -> torch.Tensor:
    raw = (c.all_reward + (1 - c.all_reward) * stopped) * (fake_logit - fake_input_logit.detach()) \
        * c.critic_logit_multiplier
    return raw - penalty if c.use_penalty else raw


def actor_value_losses(res: StepResult, images: torch.Tensor, states: torch.Tensor, critic: Critic, value: Critic,
                       c: RLConfig) -> dict[str, torch.Tensor]:
    """The generator-side graph of ``net.py`` for one batch: g_loss (actor) and v_loss (value)."""
    fake_logit = critic(res.output)
    with torch.no_grad():
        fake_input_logit = critic(images)
    stopped = res.new_states[:, STATE_STOPPED:STATE_STOPPED + 1]
    clear_final = (res.new_states[:, STATE_STEP:STATE_STEP + 1] > c.max_trajectory_length).to(images.dtype)
    new_value = value(res.output, res.new_states) * (1.0 - clear_final)
    old_value = value(images, states)
    reward = step_reward(fake_logit, fake_input_logit, res.penalty, stopped, c)
    q = reward + (1.0 - stopped) * c.discount * new_value
    advantage = q.detach() - old_value
    v_loss = (advantage ** 2).mean()
    if c.use_td:
        routine, adv = -q, -advantage
    else:
        routine, adv = -reward, -reward
    g_loss = (routine + res.surrogate * adv.detach()).mean()
    return {"g_loss": g_loss, "v_loss": v_loss, "reward": reward.detach().mean(), "q": q.detach().mean(),
            "penalty": res.penalty.detach().mean()}


def critic_loss(critic: Critic, fake: torch.Tensor, real: torch.Tensor, c: RLConfig,
                alpha: torch.Tensor | None = None) -> dict[str, Any]:
    fake_logit, real_logit = critic(fake), critic(real)
    wdist = fake_logit.mean() - real_logit.mean()
    if alpha is None:
        alpha = torch.rand(fake.shape[0], 1, 1, 1, device=fake.device, dtype=fake.dtype)
    interp = (real + alpha * (fake - real)).detach().requires_grad_(True)
    grads = torch.autograd.grad(critic(interp).sum(), interp, create_graph=True)[0]
    norm = torch.sqrt(1e-6 + (grads ** 2).sum(dim=(1, 2, 3)))
    gp = c.gradient_penalty * (norm - 1.0).clamp(min=0).pow(2).mean()
    loss = wdist + gp if c.gradient_penalty > 0 else wdist
    return {"loss": loss, "emd": -wdist.detach(), "gp": gp.detach(), "grad_norm": norm.detach().mean()}

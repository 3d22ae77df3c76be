"""The Q-network of Distort-and-Recover (official ``q_network.py``, ``duel=False``, no batch norm).

FC ``state (12,696) -> 4096 -> 4096 -> 512 -> 12`` with ReLU between layers and a linear output. Initialisation
as the official graph: truncated normals (cut at two standard deviations, as ``tf.truncated_normal_initializer``)
with standard deviation sqrt(1/4096) for the weights of fc1-fc3 and the biases of fc1-fc2, sqrt(1/512) for the
fc3 bias and the fc4 weights, and sqrt(1/12) for the fc4 bias (sqrt(1/num_action)). The official input dropout
has keep probability 1.0 (a no-op) and is omitted.

``DQN`` holds the online network and the target network; the target is a second, independently initialised
network (the official code initialises both with ``tf.initialize_all_variables`` and first copies the online
weights into it after 1,000 learning steps), frozen (``requires_grad=False``) so only the online network counts
as trainable.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["STATE_DEEP", "STATE_HIST", "SEQ_LEN", "QNetwork", "DQN", "q_parameter_count"]

STATE_DEEP, STATE_HIST, SEQ_LEN = 4096, 8000, 50


class QNetwork(nn.Module):
    def __init__(self, in_features: int, hidden: Sequence[int] = (4096, 4096, 512), n_actions: int = 12):
        super().__init__()
        h1, h2, h3 = (int(h) for h in hidden)
        self.fc1 = nn.Linear(in_features, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, h3)
        self.fc4 = nn.Linear(h3, n_actions)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        n_actions = self.fc4.out_features

        def tn(t: torch.Tensor, std: float) -> None:
            nn.init.trunc_normal_(t, 0.0, std, -2 * std, 2 * std, generator=generator)

        with torch.no_grad():
            s4096, s512 = math.sqrt(1.0 / 4096), math.sqrt(1.0 / 512)
            tn(self.fc1.weight, s4096); tn(self.fc1.bias, s4096)      # noqa: E702
            tn(self.fc2.weight, s4096); tn(self.fc2.bias, s4096)      # noqa: E702
            tn(self.fc3.weight, s4096); tn(self.fc3.bias, s512)       # noqa: E702
            tn(self.fc4.weight, s512); tn(self.fc4.bias, math.sqrt(1.0 / n_actions))  # noqa: E702

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(s))
        h = torch.relu(self.fc2(h))
        h = torch.relu(self.fc3(h))
        return self.fc4(h)


class DQN(nn.Module):
    """Online + target Q-networks (the target frozen; copied from the online one by ``sync``)."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (4096, 4096, 512), n_actions: int = 12):
        super().__init__()
        self.online = QNetwork(in_features, hidden, n_actions)
        self.target = QNetwork(in_features, hidden, n_actions)
        for p in self.target.parameters():
            p.requires_grad_(False)

    def reset_parameters(self, seed: int) -> None:
        g = torch.Generator().manual_seed(int(seed))
        # initialise on the CPU generator whatever the device, so every device gets the same tensors
        for net in (self.online, self.target):
            dev = next(net.parameters()).device
            if dev.type != "cpu":
                cpu = QNetwork(net.fc1.in_features, (net.fc1.out_features, net.fc2.out_features,
                                                     net.fc3.out_features), net.fc4.out_features)
                cpu.reset_parameters(g)
                net.load_state_dict(cpu.state_dict())
            else:
                net.reset_parameters(g)

    @torch.no_grad()
    def sync(self) -> None:
        for t, o in zip(self.target.parameters(), self.online.parameters()):
            t.copy_(o)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.online(s)


def q_parameter_count(in_features: int = STATE_DEEP + STATE_HIST + SEQ_LEN * 12,
                      hidden: Sequence[int] = (4096, 4096, 512), n_actions: int = 12) -> int:
    dims = [in_features, *hidden, n_actions]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))

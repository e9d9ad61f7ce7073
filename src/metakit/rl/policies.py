"""Policies as plain nn.Modules whose forward gives distribution parameters, with the
distribution's maths as pure functions of those outputs, so that a policy can be called
through functional_call with per-task fast weights under vmap.

    out = policy(obs)                  # or functional_call(policy, fast_weights, obs)
    actions = policy.sample(out, generator);  policy.log_prob(out, actions);  policy.kl(old, out)
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import MetakitError


def _mlp(inputs: int, hidden: tuple[int, ...], outputs: int) -> nn.Sequential:
    layers, size = [], inputs
    for width in hidden:
        layers += [nn.Linear(size, width), nn.ReLU()]
        size = width
    return nn.Sequential(*layers, nn.Linear(size, outputs))


class GaussianMLPPolicy(nn.Module):
    """Diagonal Gaussian: an MLP gives the mean (100-100 ReLU as in the MAML paper), the log
    standard deviation is a learned vector independent of the state."""

    discrete = False

    def __init__(self, observation_size: int, action_size: int, hidden: tuple[int, ...] = (100, 100),
                 init_std: float = 1.0):
        super().__init__()
        if init_std <= 0:
            raise MetakitError(f"init_std must be > 0, got {init_std!r}")
        self.mean = _mlp(observation_size, tuple(hidden), action_size)
        self.log_std = nn.Parameter(torch.full((action_size,), math.log(init_std)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """[..., 2 * action_size]: mean, then log std (broadcast to the batch)."""
        mean = self.mean(obs)
        return torch.cat([mean, self.log_std.expand_as(mean)], -1)

    @staticmethod
    def _split(out):
        return out.chunk(2, dim=-1)

    def sample(self, out, generator=None):
        mean, log_std = self._split(out)
        return mean + log_std.exp() * torch.randn(mean.shape, generator=generator, device=mean.device)

    def log_prob(self, out, actions):
        mean, log_std = self._split(out)
        z = (actions - mean) / log_std.exp()
        return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def kl(self, old, new):
        """KL(old || new) per state."""
        (m0, s0), (m1, s1) = self._split(old), self._split(new)
        return (s1 - s0 + ((2 * s0).exp() + (m0 - m1) ** 2) / (2 * (2 * s1).exp()) - 0.5).sum(-1)

    def fisher_diagonal(self, out):
        """The Fisher information in the outputs (mean, log std): 1 / std^2 and 2."""
        _, log_std = self._split(out)
        return torch.cat([(-2 * log_std).exp(), torch.full_like(log_std, 2.0)], -1)

    def entropy(self, out):
        _, log_std = self._split(out)
        return (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)


class CategoricalMLPPolicy(nn.Module):
    """Categorical over `actions` choices; the MLP gives the logits."""

    discrete = True

    def __init__(self, observation_size: int, actions: int, hidden: tuple[int, ...] = (100, 100)):
        super().__init__()
        self.logits = _mlp(observation_size, tuple(hidden), actions)

    def forward(self, obs):
        return self.logits(obs).log_softmax(-1)

    def sample(self, out, generator=None):
        flat = out.reshape(-1, out.shape[-1]).exp()
        return torch.multinomial(flat, 1, generator=generator).view(out.shape[:-1])

    def log_prob(self, out, actions):
        return out.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def kl(self, old, new):
        return (old.exp() * (old - new)).sum(-1)

    def fisher_diagonal(self, out):
        """The Fisher information in the log-probabilities: sum_a p_a (d log p_a)(d log p_a)^T."""
        return out.exp()

    def entropy(self, out):
        return -(out.exp() * out).sum(-1)


def policy_for(env, hidden=(100, 100), **kwargs) -> nn.Module:
    """The policy family that fits the environment's action space."""
    if env.discrete:
        return CategoricalMLPPolicy(env.observation_size, env.action_size, hidden)
    return GaussianMLPPolicy(env.observation_size, env.action_size, hidden, **kwargs)

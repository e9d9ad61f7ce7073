"""Bernoulli multi-armed bandits (Duan et al. 2016): each task has k arms with success
probabilities p ~ U[0, 1]. An episode is one pull (horizon 1); RL^2 strings n of them into a
trial. The observation carries nothing (a constant 1): what the agent knows comes from its
previous actions and rewards."""
from __future__ import annotations

import torch

from ... import distributed
from ...errors import MetakitError
from .base import TaskEnv


class BernoulliBandit(TaskEnv):
    observation_size, discrete, horizon = 1, True, 1

    def __init__(self, arms: int = 5):
        super().__init__()
        if not isinstance(arms, int) or arms < 2:
            raise MetakitError(f"a bandit needs arms >= 2, got {arms!r}")
        self.action_size = arms

    def sample_tasks(self, num_tasks, generator=None):
        return torch.rand(num_tasks, self.action_size, generator=generator)  # p [T, k]

    def _reset(self, episodes, generator):
        return torch.ones(self.num_tasks, episodes, 1)

    def _step(self, actions, generator):
        p = self.tasks.gather(1, actions)  # [T, E]
        reward = (distributed.rand(*p.shape, generator=generator) < p).float()  # task-first (torchrun)
        return torch.ones(*actions.shape, 1), reward, torch.ones_like(actions, dtype=torch.bool)


class DirichletBandit(BernoulliBandit):
    """Dependent arms (Sung et al. 2017): p ~ Dirichlet(1, ..., 1), so the success probabilities
    sum to 1 and one pull tells something about every arm."""

    def sample_tasks(self, num_tasks, generator=None):
        exponential = -torch.rand(num_tasks, self.action_size, generator=generator).clamp_min(1e-12).log()
        return exponential / exponential.sum(1, keepdim=True)  # normalised Exp(1) draws are Dirichlet(1)

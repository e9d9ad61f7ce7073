"""Random tabular MDPs (Duan et al. 2016): S states, A actions, episodes of 10 steps.
Per task: transitions P(.|s, a) ~ Dirichlet(1, ..., 1), mean rewards mu(s, a) ~ N(1, 1); each
step pays a reward ~ N(mu(s, a), 1). Episodes start in state 0. Observation: one-hot state."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import distributed
from .base import TaskEnv, check_horizon


class TabularMDP(TaskEnv):
    discrete = True

    def __init__(self, states: int = 10, actions: int = 5, horizon: int = 10):
        super().__init__()
        self.states, self.action_size, self.horizon, self.observation_size = (
            states,
            actions,
            check_horizon(horizon),
            states,
        )

    def sample_tasks(self, num_tasks, generator=None):
        """[T, S, A, S + 1]: transition probabilities, then the mean reward in the last slot."""
        shape = (num_tasks, self.states, self.action_size)
        # Dirichlet(1) is a normalised vector of Exp(1) draws (seedable, unlike torch.distributions)
        exp = -torch.rand(*shape, self.states, generator=generator).clamp_min(1e-12).log()
        transitions = exp / exp.sum(-1, keepdim=True)
        mean_reward = 1 + torch.randn(*shape, 1, generator=generator)
        return torch.cat([transitions, mean_reward], dim=-1)

    def transitions(self) -> torch.Tensor:
        return self.tasks[..., :-1]

    def mean_rewards(self) -> torch.Tensor:
        return self.tasks[..., -1]

    def _reset(self, episodes, generator):
        self.state = torch.zeros(self.num_tasks, episodes, dtype=torch.long)
        return F.one_hot(self.state, self.states).float()

    def _step(self, actions, generator):
        tasks = torch.arange(self.num_tasks)[:, None]
        mean = self.mean_rewards()[tasks, self.state, actions]  # [T, E]
        # task-first draws (a task's episodes are the same on any number of torchrun ranks)
        reward = mean + distributed.randn(*mean.shape, generator=generator)
        probs = self.transitions()[tasks, self.state, actions]  # [T, E, S]
        following = distributed.categorical(probs, generator)
        self.state = torch.where(self.done, self.state, following)
        return F.one_hot(self.state, self.states).float(), reward, torch.zeros_like(self.done)

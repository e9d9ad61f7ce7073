"""2D navigation (Finn et al. 2017, section 5.3), as in the paper's code.

A point starts at the origin and moves by 0.1 times its action, clipped to [-0.1, 0.1] per
axis; the reward is minus its Euclidean distance to the task's goal (drawn U[-0.5, 0.5]^2)
after the move. The episode ends after 100 steps, or once both coordinates are within 0.01
of the goal. The scaling is the paper code's: it wraps the point in rllab's normalize(),
which maps policy actions in [-1, 1] to the move bounds [-0.1, 0.1]. Without it a Gaussian
policy's unit initial noise is ten times the largest move.
"""
from __future__ import annotations

import torch

from .base import TaskEnv, check_horizon


class Navigation2D(TaskEnv):
    observation_size, action_size, discrete, horizon = 2, 2, False, 100

    def __init__(self, horizon: int = 100, goal_range: float = 0.5, max_move: float = 0.1):
        super().__init__()
        self.horizon, self.goal_range, self.max_move = check_horizon(horizon), goal_range, max_move

    def sample_tasks(self, num_tasks, generator=None):
        return (torch.rand(num_tasks, 2, generator=generator) * 2 - 1) * self.goal_range  # goals [T, 2]

    def _reset(self, episodes, generator):
        self.position = torch.zeros(self.num_tasks, episodes, 2)
        return self.position.clone()

    def _step(self, actions, generator):
        move = (
            (actions * self.max_move)
            .clamp(-self.max_move, self.max_move)
            .masked_fill(self.done[..., None], 0.0)
        )  # done: frozen
        self.position = self.position + move
        offset = self.position - self.tasks[:, None]
        reward = -offset.norm(dim=-1)
        return self.position.clone(), reward, (offset.abs() < 0.01).all(-1)

    def initial_observations(self, count, generator=None):
        return torch.zeros(count, 2)

    def known_reward(self, task, observations, actions, next_observations):
        return -(next_observations - task).norm(dim=-1)

    def known_termination(self, task, observations, actions, next_observations):
        return ((next_observations - task).abs() < 0.01).all(-1)

"""Batched sampling: every task and every episode advance together, one env.step per time step.

Trajectories hold tensors [T, E, H, ...] (tasks, episodes, steps); mask[t, e, h] is 1 where
step h was really taken (the episode had not ended before it).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import functional_call, vmap

from .envs.base import TaskEnv


@dataclass
class Trajectories:
    observations: torch.Tensor  # [T, E, H, obs]
    actions: torch.Tensor  # [T, E, H, A] or [T, E, H] (discrete)
    rewards: torch.Tensor  # [T, E, H]
    mask: torch.Tensor  # [T, E, H], float

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode: [T, E]."""
        return (self.rewards * self.mask).sum(-1)


def per_task_policy(policy: torch.nn.Module, params: dict[str, torch.Tensor] | None) -> Callable:
    """obs [T, ...] -> outputs, with the shared weights (params None) or each task's own
    (params: name -> [T, ...], e.g. MAML's fast weights)."""
    if params is None:
        return policy
    batched = vmap(lambda p, obs: functional_call(policy, p, (obs,)))
    return lambda obs: batched(params, obs)


@torch.no_grad()
def rollout(env: TaskEnv, policy: torch.nn.Module, episodes: int, generator: torch.Generator | None = None,
            params: dict[str, torch.Tensor] | None = None) -> Trajectories:
    """Run `episodes` episodes of every task set in `env` to the horizon (or until all end)."""
    act = per_task_policy(policy, params)
    obs = env.reset(episodes, generator)
    observations, actions, rewards, masks = [], [], [], []
    alive = torch.ones(obs.shape[:2])
    for _ in range(env.horizon):
        action = policy.sample(act(obs), generator)
        observations.append(obs)
        actions.append(action)
        masks.append(alive)
        obs, reward, done = env.step(action, generator)
        rewards.append(reward)
        alive = (~done).float()
        if done.all():
            break
    stack = lambda xs: torch.stack(xs, dim=2)  # noqa: E731
    return Trajectories(stack(observations), stack(actions), stack(rewards), stack(masks))

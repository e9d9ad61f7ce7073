"""Batched sampling: every task and every episode advance together, one env.step per time step.

- `rollout`: episodes of a feed-forward policy, with shared or per-task (fast) weights
  (MAML-TRPO, MB-MPO). Trajectories hold tensors [T, E, H, ...] (tasks, episodes, steps);
  mask[t, e, h] is 1 where step h was really taken (the episode had not ended before it).
- `sample_trials`: trials of a recurrent policy whose state runs across the episodes of a
  trial (RL^2, Meta-Critic's task encoder). Trials hold tensors [B, L, ...].
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import functional_call

from .. import distributed
from ..engine import may_call_norms, run_over_tasks
from ..errors import MetakitError
from .envs.base import TaskEnv


@dataclass
class Trajectories:
    observations: torch.Tensor  # [T, E, H, obs]
    actions: torch.Tensor  # [T, E, H, A] or [T, E, H] (discrete)
    rewards: torch.Tensor  # [T, E, H]
    mask: torch.Tensor  # [T, E, H], float
    last_observations: torch.Tensor | None = None  # [T, E, obs]: after the last step (s' of step H-1)

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode: [T, E]."""
        return (self.rewards * self.mask).sum(-1)


def per_task_policy(policy: torch.nn.Module, params: dict[str, torch.Tensor] | None,
                    chunk_size: int | None = None) -> Callable:
    """obs [T, ...] -> outputs, with the shared weights (params None) or each task's own
    (params: name -> [T, ...], e.g. MAML's fast weights), mapped over tasks by the engine."""
    if params is None:
        return policy
    exact = may_call_norms(policy)
    return lambda obs: run_over_tasks(
        lambda p, o: functional_call(policy, p, (o,)), (), (params, obs), chunk_size, exact
    )


@torch.no_grad()
def rollout(
    env: TaskEnv,
    policy: torch.nn.Module,
    episodes: int,
    generator: torch.Generator | None = None,
    params: dict[str, torch.Tensor] | None = None,
) -> Trajectories:
    """Run `episodes` episodes of every task set in `env` to the horizon (or until all end).
    The environment steps where its tensors live (the CPU); the policy runs, and the episodes
    are kept, on the policy's device."""
    act = per_task_policy(policy, params)
    device = next(policy.parameters(), torch.empty(0)).device
    obs = env.reset(episodes, generator)
    env_device, obs = obs.device, obs.to(device)
    observations, actions, rewards, masks = [], [], [], []
    alive = torch.ones(obs.shape[:2], device=device)
    for _ in range(env.horizon):
        action = policy.sample(act(obs), generator)
        observations.append(obs)
        actions.append(action)
        masks.append(alive)
        obs, reward, done = (t.to(device) for t in env.step(action.to(env_device), generator))
        rewards.append(reward)
        alive = (~done).float()
        if done.all():
            break
    stack = lambda xs: torch.stack(xs, dim=2)  # noqa: E731
    return Trajectories(stack(observations), stack(actions), stack(rewards), stack(masks), obs)


@dataclass
class Trials:
    inputs: torch.Tensor  # [B, L, in]: what the recurrent policy read at each step
    actions: torch.Tensor  # [B, L]
    rewards: torch.Tensor  # [B, L]
    log_probs: torch.Tensor  # [B, L] of the sampling policy
    values: torch.Tensor  # [B, L]

    def totals(self) -> torch.Tensor:
        """Total reward of each trial: [B]."""
        return self.rewards.sum(-1)


@torch.no_grad()
def sample_trials(
    env: TaskEnv, policy, tasks: torch.Tensor, episodes: int, generator: torch.Generator | None = None
) -> Trials:
    """One trial of `episodes` episodes for each task, the policy's recurrent state carried
    across them. `policy` is a RecurrentPolicy (or anything with its `inputs` and forward)."""
    if not env.discrete:
        raise MetakitError(f"sample_trials needs a discrete-action environment, got {type(env).__name__}")
    env.set_tasks(tasks)
    batch = tasks.shape[0]
    device = next(policy.parameters(), torch.empty(0)).device  # the env steps on the CPU
    hidden, prev_action = None, torch.full((batch,), -1)
    prev_reward, prev_done = torch.zeros(batch), torch.zeros(batch, dtype=torch.bool)
    record = {k: [] for k in ("inputs", "actions", "rewards", "log_probs", "values")}
    for _ in range(episodes):
        obs = env.reset(1, generator)[:, 0]
        for _ in range(env.horizon):
            x = policy.inputs(*(t.to(device) for t in (obs, prev_action, prev_reward, prev_done)))[:, None]
            log_probs, value, hidden = policy(x, hidden)
            # drawn on the CPU generator: the same actions whatever the policy's device
            action = distributed.categorical(log_probs[:, 0].exp().cpu(), generator)
            obs, reward, done = env.step(action[:, None], generator)
            obs, reward, done = obs[:, 0], reward[:, 0], done[:, 0]
            taken = action.to(device)
            chosen = log_probs[:, 0].gather(-1, taken[:, None])[:, 0]
            for key, item in zip(record, (x[:, 0], taken, reward.to(device), chosen, value[:, 0])):
                record[key].append(item)
            prev_action, prev_reward, prev_done = action, reward, done
            if done.any():
                if not done.all():
                    raise MetakitError(
                        f"trials here need episodes of one length; {type(env).__name__} ended "
                        f"{int(done.sum())} of {batch} episodes early"
                    )
                break
    return Trials(*(torch.stack(record[k], dim=1) for k in record))

"""PPO with the clipped surrogate (Schulman et al. 2017) on one task: MB-MPO's model-free
baseline. Each step: a batch of fresh episodes, GAE advantages from a learned value network,
then `epochs` passes of shuffled minibatches over it.

    for epoch in 1..epochs, for each minibatch:
        loss = -min(r A, clip(r, 1 - eps, 1 + eps) A) + 0.5 (V(s) - R)^2,  r = pi(a|s) / pi_old(a|s)
"""

from __future__ import annotations

import torch
from torch import nn

from .envs.base import TaskEnv
from .optim import ppo_loss
from .returns import gae, normalize
from .sampling import rollout


class PPO(nn.Module):
    def __init__(
        self,
        policy: nn.Module,
        value: nn.Module,
        lr: float = 3e-4,
        epochs: int = 10,
        minibatch_size: int = 64,
        clip: float = 0.2,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        max_grad_norm: float = 0.5,
    ):
        super().__init__()
        self.policy, self.value = policy, value
        self.optimizer = torch.optim.Adam([*policy.parameters(), *value.parameters()], lr=lr, eps=1e-5)
        self.epochs, self.minibatch_size, self.clip = epochs, minibatch_size, clip
        self.gamma, self.gae_lambda, self.max_grad_norm = gamma, gae_lambda, max_grad_norm

    def step(self, env: TaskEnv, episodes: int, generator: torch.Generator | None = None) -> dict[str, float]:
        """One update from `episodes` new episodes of every task set in `env`."""
        batch = rollout(env, self.policy, episodes, generator)
        with torch.no_grad():
            values = self.value(batch.observations).squeeze(-1)
            advantages = gae(batch.rewards, values, batch.mask, self.gamma, self.gae_lambda)
            returns = advantages + values
            advantages = normalize(advantages, batch.mask, dims=tuple(range(advantages.dim())))
            old_log_prob = self.policy.log_prob(self.policy(batch.observations), batch.actions)
        valid = batch.mask.bool()
        data = [t[valid] for t in (batch.observations, batch.actions, advantages, returns, old_log_prob)]
        count = data[0].shape[0]
        for _ in range(self.epochs):
            order = torch.randperm(count, generator=generator)
            for start in range(0, count, self.minibatch_size):
                obs, actions, adv, ret, old = (t[order[start : start + self.minibatch_size]] for t in data)
                log_prob = self.policy.log_prob(self.policy(obs), actions)
                policy_loss = ppo_loss(log_prob, old, adv, torch.ones_like(adv), self.clip)
                value_loss = (self.value(obs).squeeze(-1) - ret).square().mean()
                self.optimizer.zero_grad(set_to_none=True)
                (policy_loss + 0.5 * value_loss).backward()
                nn.utils.clip_grad_norm_(
                    [*self.policy.parameters(), *self.value.parameters()], self.max_grad_norm
                )
                self.optimizer.step()
        return {
            "return_train": batch.episode_returns().mean().item(),
            "steps": float(count),
            "policy_loss": policy_loss.item(),
            "value_loss": value_loss.item(),
        }

"""TRPO (Schulman et al. 2015) on one task: MB-MPO's model-free baseline. Each step: a batch
of fresh episodes, advantages from the linear feature baseline, and one natural-gradient step
in the KL trust region with a backtracking line search (metakit.rl.optim.trpo_step)."""

from __future__ import annotations

import torch
from torch import nn

from .envs.base import TaskEnv
from .maml_trpo import advantages
from .optim import fisher_vector_product, trpo_step
from .sampling import rollout


class TRPO(nn.Module):
    def __init__(
        self,
        policy: nn.Module,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        max_kl: float = 0.01,
        cg_damping: float = 1e-5,
    ):
        super().__init__()
        self.policy, self.gamma, self.gae_lambda = policy, gamma, gae_lambda
        self.max_kl, self.cg_damping = max_kl, cg_damping

    def step(self, env: TaskEnv, episodes: int, generator: torch.Generator | None = None) -> dict[str, float]:
        """One update from `episodes` new episodes of every task set in `env`."""
        batch = rollout(env, self.policy, episodes, generator)
        adv, mask, params = (
            advantages(batch, self.gamma, self.gae_lambda),
            batch.mask,
            list(self.policy.parameters()),
        )
        weight = mask / mask.sum()  # of each state in the mean KL
        with torch.no_grad():
            old_out = self.policy(batch.observations)
        old_log_prob = self.policy.log_prob(old_out, batch.actions)

        def objectives():
            out = self.policy(batch.observations)
            ratio = (self.policy.log_prob(out, batch.actions) - old_log_prob).exp()
            return -(ratio * adv * weight).sum(), (self.policy.kl(old_out, out) * weight).sum(), out

        metric = self.policy.fisher_diagonal(old_out) * weight[..., None]
        fisher = lambda out: fisher_vector_product(out, metric, params, self.cg_damping)  # noqa: E731

        info = trpo_step(params, objectives, self.max_kl, self.cg_damping, fisher=fisher)
        return {
            "return_train": batch.episode_returns().mean().item(),
            "steps": mask.sum().item(),
            "kl": info["kl"],
            "accepted": float(info["accepted"]),
        }

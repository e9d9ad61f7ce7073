"""RL^2 (Duan et al. 2016): a recurrent policy that learns to explore within a trial.

A trial is `episodes` episodes of one task. At every step the GRU reads the observation, the
previous action (one-hot), the previous reward and whether the previous step ended an
episode; its hidden state runs through the whole trial (across episode boundaries) and starts
from zero at the next trial. The "slow" RL algorithm maximises the total reward of a trial:

    for each iteration:
        sample a trial for each of B new tasks (batched, one GRU step per time step)
        advantages: GAE(gamma, lambda) over the trial, with the policy's value head
        update: PPO's clipped loss (default) or a TRPO step, on whole-trial sequences

Under torchrun every rank draws the same tasks and samples the trials of its share (task-first
random numbers), and the statistics, losses and gradients are sums over the ranks: every rank
takes the one-process update, whatever the number of ranks.
"""
from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..errors import MetakitError
from .envs.base import TaskEnv
from .optim import ppo_loss, trpo_step
from .policies import RecurrentPolicy
from .returns import discounted_returns, gae
from .sampling import Trials, sample_trials


def batch_mean_std(x: torch.Tensor, unbiased: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of every element of the whole batch, whose rows may be
    split over torchrun ranks (two passes, as torch.std)."""
    count = distributed.total(torch.tensor(float(x.numel()), device=x.device))
    mean = distributed.total(x.sum()) / count
    var = distributed.total(((x - mean) ** 2).sum()) / (count - 1 if unbiased else count)
    return mean, var.sqrt()


class RL2(nn.Module):
    """The slow learner of RL^2 around a RecurrentPolicy: `step` samples trials and updates it."""

    def __init__(
        self,
        policy: RecurrentPolicy,
        optimizer: str = "ppo",
        lr: float = 2e-3,
        gamma: float = 0.99,
        gae_lambda: float = 0.3,
        clip: float = 0.2,
        epochs: int = 4,
        minibatches: int = 4,
        value_coef: float = 0.5,
        entropy_coef: float = 0.0,
        max_kl: float = 0.01,
        max_grad_norm: float = 1.0,
    ):
        super().__init__()
        if optimizer not in ("ppo", "trpo"):
            raise MetakitError(f"RL^2 optimizer must be 'ppo' or 'trpo', got {optimizer!r}")
        for name, value in (("epochs", epochs), ("minibatches", minibatches)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MetakitError(f"RL^2 {name} must be an integer >= 1, got {value!r}")
        self.policy, self.optimizer_name = policy, optimizer
        self.gamma, self.gae_lambda, self.clip, self.epochs, self.minibatches = (
            gamma,
            gae_lambda,
            clip,
            epochs,
            minibatches,
        )
        self.value_coef, self.entropy_coef, self.max_kl, self.max_grad_norm = (
            value_coef,
            entropy_coef,
            max_kl,
            max_grad_norm,
        )
        # PPO trains everything with Adam; with TRPO, Adam fits only the value head
        trained = policy.parameters() if optimizer == "ppo" else policy.value.parameters()
        self.adam = torch.optim.Adam(trained, lr=lr)

    def advantages(self, trials: Trials) -> torch.Tensor:
        """GAE over each whole trial (the trial is the RL^2 episode), normalised over the batch."""
        adv = gae(trials.rewards, trials.values, torch.ones_like(trials.rewards), self.gamma, self.gae_lambda)
        mean, std = batch_mean_std(adv, unbiased=False)
        return (adv - mean) / (std + 1e-8)

    def step(
        self, env: TaskEnv, num_trials: int, episodes: int, generator: torch.Generator | None = None
    ) -> dict:
        tasks = env.sample_tasks(num_trials, generator)
        with distributed.task_share(num_trials):
            trials = sample_trials(env, self.policy, distributed.shard(tasks), episodes, generator)
        adv = self.advantages(trials)
        # The value head regresses on the discounted returns, as rllab's baselines did: targets
        # bootstrapped with lambda 0.3 would carry a reward back only ~1.4 steps an iteration
        returns = discounted_returns(trials.rewards, torch.ones_like(trials.rewards), self.gamma)
        self.policy.rescale_values(batch_mean_std(returns)[1].clamp_min(1e-3).item())
        info = (
            self._ppo(trials, adv, returns, generator)
            if self.optimizer_name == "ppo"
            else self._trpo(trials, adv, returns)
        )
        return {"trial_return": distributed.average(trials.totals().mean()), **info}

    def _losses(self, trials: Trials, adv, returns, rows):
        log_probs, values, _ = self.policy(trials.inputs[rows])
        taken = log_probs.gather(-1, trials.actions[rows, :, None]).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
        # in units of the return scale, so the value and policy losses are of one size (raw,
        # the value loss's gradient on the shared GRU was 140x the policy loss's at n = 100)
        value_loss = ((values - returns[rows]) / self.policy.return_scale).pow(2).mean()
        return taken, value_loss, entropy

    def _ppo(self, trials, adv, returns, generator) -> dict:
        # minibatches of the whole batch (one permutation on every rank); each rank holds the
        # trials [first, first + local) and adds its rows' share of each minibatch's mean losses
        local = trials.actions.shape[0]
        first = distributed.rank() * local
        mask = torch.ones_like(adv)
        for _ in range(self.epochs):
            for rows in torch.randperm(local * distributed.world_size(), generator=generator).chunk(
                self.minibatches
            ):
                mine = rows[(rows >= first) & (rows < first + local)] - first
                self.adam.zero_grad()
                losses = torch.zeros(3, device=adv.device)  # policy, value, entropy: this rank's share
                if len(mine):
                    share = len(mine) / len(rows)  # exactly 1 in one process
                    taken, value_loss, entropy = self._losses(trials, adv, returns, mine)
                    policy_loss = ppo_loss(taken, trials.log_probs[mine], adv[mine], mask[mine], self.clip)
                    loss = policy_loss + self.value_coef * value_loss - self.entropy_coef * entropy
                    (share * loss).backward()
                    losses = share * torch.stack([policy_loss, value_loss, entropy]).detach()
                distributed.average_gradients(self.policy.parameters(), how="sum")
                nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.adam.step()
        policy_loss, value_loss, entropy = distributed.total(losses).tolist()
        return {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}

    def _trpo(self, trials, adv, returns) -> dict:
        rows = torch.arange(trials.actions.shape[0])
        old = self.policy(trials.inputs)[0].detach()
        params = [p for n, p in self.policy.named_parameters() if not n.startswith("value.")]

        def objectives():
            log_probs, _, _ = self.policy(trials.inputs)
            taken = log_probs.gather(-1, trials.actions[..., None]).squeeze(-1)
            surrogate = -((taken - trials.log_probs).exp() * adv).mean()
            kl = (old.exp() * (old - log_probs)).sum(-1).mean()
            return surrogate, kl

        # equal shards: the mean over ranks of each rank's means is the whole batch's
        info = trpo_step(params, objectives, self.max_kl, average=distributed.mean)
        value_params = list(self.policy.value.parameters())
        for _ in range(self.epochs):  # the value head, on the GRU's (fixed) features
            _, value_loss, _ = self._losses(trials, adv, returns, rows)
            self.adam.zero_grad()
            # gradients of the value head only: the GRU's .grad would otherwise grow every iteration
            for param, gradient in zip(value_params, torch.autograd.grad(value_loss, value_params)):
                param.grad = gradient
            distributed.average_gradients(value_params)
            self.adam.step()
        return {**info, "value_loss": distributed.average(value_loss.detach())}

    @torch.no_grad()
    def evaluate(self, env: TaskEnv, tasks: torch.Tensor, episodes: int, generator=None, chunk: int = 1000,
                 progress: bool = False) -> torch.Tensor:
        """Total reward of one trial on each task: [T]."""
        parts = tqdm(tasks.split(chunk), desc="evaluating", disable=not progress, leave=False)
        totals = [sample_trials(env, self.policy, p, episodes, generator).totals() for p in parts]
        return torch.cat(totals).cpu()

"""RL^2 (Duan et al. 2016): a recurrent policy that learns to explore within a trial.

A trial is `episodes` episodes of one task. At every step the GRU reads the observation, the
previous action (one-hot), the previous reward and whether the previous step ended an
episode; its hidden state runs through the whole trial (across episode boundaries) and starts
from zero at the next trial. The "slow" RL algorithm maximises the total reward of a trial:

    for each iteration:
        sample a trial for each of B new tasks (batched, one GRU step per time step)
        advantages: GAE(gamma, lambda) over the trial, with the policy's value head
        update: PPO's clipped loss (default) or a TRPO step, on whole-trial sequences
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MetakitError
from .envs.base import TaskEnv
from .optim import ppo_loss, trpo_step
from .returns import discounted_returns, gae, normalize


class RecurrentPolicy(nn.Module):
    """GRU over (observation, previous action one-hot, previous reward, previous done), with a
    categorical head and a value head."""

    def __init__(self, observation_size: int, actions: int, hidden: int = 256):
        super().__init__()
        if hidden < 1 or actions < 2:
            raise MetakitError(f"RecurrentPolicy needs hidden >= 1 and actions >= 2, got {hidden!r}, {actions!r}")
        self.actions = actions
        self.gru = nn.GRU(observation_size + actions + 2, hidden, batch_first=True)
        self.logits = nn.Linear(hidden, actions)
        self.value = nn.Linear(hidden, 1)
        # The value head predicts returns in units of `return_scale` (set by RL2 from the returns
        # it sees): trials of 100 steps have returns near 60, which Adam's small steps on a head
        # over tanh-bounded features would take thousands of updates to reach
        self.register_buffer("return_scale", torch.tensor(1.0))

    def inputs(self, obs, prev_action, prev_reward, prev_done) -> torch.Tensor:
        """[..., observation_size + actions + 2]; prev_action -1 means none yet (a zero one-hot)."""
        one_hot = F.one_hot(prev_action.clamp_min(0), self.actions).float() * (prev_action >= 0)[..., None]
        return torch.cat([obs, one_hot, prev_reward[..., None], prev_done[..., None].float()], -1)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor | None = None):
        """inputs [B, L, in] -> (log-probabilities [B, L, A], values [B, L], hidden [1, B, H])."""
        features, hidden = self.gru(inputs, hidden)
        values = self.value(features).squeeze(-1) * self.return_scale
        return self.logits(features).log_softmax(-1), values, hidden

    @torch.no_grad()
    def rescale_values(self, scale: float) -> None:
        """Change `return_scale`, scaling the value head so that its predictions stay the same."""
        ratio = self.return_scale / scale
        self.value.weight.mul_(ratio)
        self.value.bias.mul_(ratio)
        self.return_scale.fill_(scale)


@dataclass
class Trials:
    inputs: torch.Tensor  # [B, L, in]: what the GRU read at each step
    actions: torch.Tensor  # [B, L]
    rewards: torch.Tensor  # [B, L]
    log_probs: torch.Tensor  # [B, L] of the sampling policy
    values: torch.Tensor  # [B, L]

    def totals(self) -> torch.Tensor:
        """Total reward of each trial: [B]."""
        return self.rewards.sum(-1)


@torch.no_grad()
def sample_trials(env: TaskEnv, policy: RecurrentPolicy, tasks: torch.Tensor, episodes: int,
                  generator: torch.Generator | None = None) -> Trials:
    """One trial of `episodes` episodes for each task, the GRU state carried across them."""
    if not env.discrete:
        raise MetakitError(f"RL^2 here needs a discrete-action environment, got {type(env).__name__}")
    env.set_tasks(tasks)
    batch = tasks.shape[0]
    hidden, prev_action = None, torch.full((batch,), -1)
    prev_reward, prev_done = torch.zeros(batch), torch.zeros(batch, dtype=torch.bool)
    record = {k: [] for k in ("inputs", "actions", "rewards", "log_probs", "values")}
    for _ in range(episodes):
        obs = env.reset(1, generator)[:, 0]
        for _ in range(env.horizon):
            x = policy.inputs(obs, prev_action, prev_reward, prev_done)[:, None]
            log_probs, value, hidden = policy(x, hidden)
            action = torch.multinomial(log_probs[:, 0].exp(), 1, generator=generator)[:, 0]
            obs, reward, done = env.step(action[:, None], generator)
            obs, reward, done = obs[:, 0], reward[:, 0], done[:, 0]
            for key, item in zip(record, (x[:, 0], action, reward, log_probs[:, 0].gather(-1, action[:, None])[:, 0],
                                          value[:, 0])):
                record[key].append(item)
            prev_action, prev_reward, prev_done = action, reward, done
            if done.any():
                if not done.all():
                    raise MetakitError(f"RL^2 here needs episodes of one length; {type(env).__name__} ended "
                                       f"{int(done.sum())} of {batch} episodes early")
                break
    return Trials(*(torch.stack(record[k], dim=1) for k in record))


class RL2(nn.Module):
    def __init__(self, policy: RecurrentPolicy, optimizer: str = "ppo", lr: float = 2e-3, gamma: float = 0.99,
                 gae_lambda: float = 0.3, clip: float = 0.2, epochs: int = 4, minibatches: int = 4,
                 value_coef: float = 0.5, entropy_coef: float = 0.0, max_kl: float = 0.01, max_grad_norm: float = 1.0):
        super().__init__()
        if optimizer not in ("ppo", "trpo"):
            raise MetakitError(f"RL^2 optimizer must be 'ppo' or 'trpo', got {optimizer!r}")
        self.policy, self.optimizer_name = policy, optimizer
        self.gamma, self.gae_lambda, self.clip, self.epochs, self.minibatches = gamma, gae_lambda, clip, epochs, minibatches
        self.value_coef, self.entropy_coef, self.max_kl, self.max_grad_norm = value_coef, entropy_coef, max_kl, max_grad_norm
        # PPO trains everything with Adam; with TRPO, Adam fits only the value head
        trained = policy.parameters() if optimizer == "ppo" else policy.value.parameters()
        self.adam = torch.optim.Adam(trained, lr=lr)

    def advantages(self, trials: Trials) -> torch.Tensor:
        """GAE over each whole trial (the trial is the RL^2 episode), normalised over the batch."""
        mask = torch.ones_like(trials.rewards)
        return normalize(gae(trials.rewards, trials.values, mask, self.gamma, self.gae_lambda), mask, dims=(0, 1))

    def step(self, env: TaskEnv, num_trials: int, episodes: int, generator: torch.Generator | None = None) -> dict:
        trials = sample_trials(env, self.policy, env.sample_tasks(num_trials, generator), episodes, generator)
        adv = self.advantages(trials)
        # The value head regresses on the discounted returns, as rllab's baselines did: targets
        # bootstrapped with lambda 0.3 would carry a reward back only ~1.4 steps an iteration
        returns = discounted_returns(trials.rewards, torch.ones_like(trials.rewards), self.gamma)
        self.policy.rescale_values(returns.std().clamp_min(1e-3).item())
        info = self._ppo(trials, adv, returns, generator) if self.optimizer_name == "ppo" else \
            self._trpo(trials, adv, returns)
        return {"trial_return": trials.totals().mean().item(), **info}

    def _losses(self, trials: Trials, adv, returns, rows):
        log_probs, values, _ = self.policy(trials.inputs[rows])
        taken = log_probs.gather(-1, trials.actions[rows, :, None]).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
        # in units of the return scale, so the value and policy losses are of one size (raw,
        # the value loss's gradient on the shared GRU was 140x the policy loss's at n = 100)
        value_loss = ((values - returns[rows]) / self.policy.return_scale).pow(2).mean()
        return taken, value_loss, entropy

    def _ppo(self, trials, adv, returns, generator) -> dict:
        batch = trials.actions.shape[0]
        mask = torch.ones_like(adv)
        for _ in range(self.epochs):
            for rows in torch.randperm(batch, generator=generator).chunk(self.minibatches):
                taken, value_loss, entropy = self._losses(trials, adv, returns, rows)
                policy_loss = ppo_loss(taken, trials.log_probs[rows], adv[rows], mask[rows], self.clip)
                loss = policy_loss + self.value_coef * value_loss - self.entropy_coef * entropy
                self.adam.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.adam.step()
        return {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy.item()}

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

        info = trpo_step(params, objectives, self.max_kl)
        for _ in range(self.epochs):  # the value head, on the GRU's (fixed) features
            _, value_loss, _ = self._losses(trials, adv, returns, rows)
            self.adam.zero_grad()
            value_loss.backward()
            self.adam.step()
        return {**info, "value_loss": value_loss.item()}

    @torch.no_grad()
    def evaluate(self, env: TaskEnv, tasks: torch.Tensor, episodes: int, generator=None,
                 chunk: int = 1000) -> torch.Tensor:
        """Total reward of one trial on each task: [T]."""
        return torch.cat([sample_trials(env, self.policy, part, episodes, generator).totals()
                          for part in tasks.split(chunk)])

"""Classical algorithms for random tabular MDPs, the baselines of RL^2 (Duan et al. 2016, Table 2).

Each method plans once an episode from what it has seen in the trial (transition counts,
reward sums) and acts greedily on its Q-values [T, H, S, A] for the H steps of the episode.
The Bayesian methods use the task distribution as prior: P(.|s, a) ~ Dirichlet(1) and mean
rewards ~ N(1, 1) with unit reward noise, so the posterior of a mean reward after n visits
with reward sum R is N((1 + R) / (1 + n), 1 / (1 + n)).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...errors import MetakitError
from ..envs.tabular import TabularMDP
from .bandits import argmax_random_ties, sample_gamma


@dataclass
class Experience:
    counts: torch.Tensor  # [T, S, A, S] transitions seen
    reward_sums: torch.Tensor  # [T, S, A]
    steps: int = 0

    @property
    def visits(self) -> torch.Tensor:
        return self.counts.sum(-1)

    def posterior_mean(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(transitions [T, S, A, S], mean rewards [T, S, A]) under the task prior."""
        states = self.counts.shape[-1]
        return (self.counts + 1) / (self.visits[..., None] + states), (1 + self.reward_sums) / (
            1 + self.visits
        )


def plan(
    transitions: torch.Tensor,
    rewards: torch.Tensor,
    horizon: int,
    optimistic_radius: torch.Tensor | None = None,
) -> torch.Tensor:
    """Finite-horizon value iteration: Q [T, H, S, A] with Q_h = r + P V_{h+1}. With an L1
    radius [T, S, A] it is UCRL2's extended value iteration: each P(.|s, a) is the most
    favourable distribution within that L1 distance of `transitions`."""
    value = torch.zeros(rewards.shape[:-1], dtype=rewards.dtype)  # [T, S]
    qs = []
    for _ in range(horizon):
        p = (
            transitions
            if optimistic_radius is None
            else optimistic_transitions(transitions, value, optimistic_radius)
        )
        q = rewards + (p * value[:, None, None, :]).sum(-1)
        qs.append(q)
        value = q.max(-1).values
    return torch.stack(qs[::-1], dim=1)


def optimistic_transitions(p: torch.Tensor, value: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Jaksch et al. 2010, Figure 2: move up to radius / 2 of probability onto the best next
    state, taken from the worst next states first."""
    order = value.argsort(-1)[:, None, None, :].expand_as(p)  # next states, worst first
    ranked = p.gather(-1, order)
    extra = torch.minimum(1 - ranked[..., -1], radius / 2)
    ranked = torch.cat([ranked[..., :-1], ranked[..., -1:] + extra[..., None]], -1)
    taken_before = torch.cumsum(ranked, -1) - ranked  # mass of worse states
    remove = (extra[..., None] - taken_before).clamp_min(0)
    remove[..., -1] = 0
    ranked = (ranked - remove).clamp_min(0)
    return torch.zeros_like(p).scatter(-1, order, ranked)


# BEB's bonus scale: of {0.1, 0.3, 1, 3, 10}, the best total over trials of 10 and 25 episodes
# on 1000 MDPs drawn with seed 99, not the evaluation tasks (`benchmarks/beb_beta.py`)
BEB_BETA = 1.0


# -- the methods: (experience, horizon, generator) -> Q [T, H, S, A] ----------------------------
def random_q(exp: Experience, horizon: int, generator) -> torch.Tensor:
    t, s, a = exp.reward_sums.shape
    return torch.zeros(t, horizon, s, a, dtype=torch.float64)  # all tied: uniform actions


def greedy_q(exp, horizon, generator):
    """Certainty equivalence: plan in the posterior-mean MDP."""
    return plan(*exp.posterior_mean(), horizon)


def psrl_q(exp, horizon, generator):
    """Posterior sampling (Osband et al. 2013): plan in one MDP drawn from the posterior."""
    gammas = sample_gamma(exp.counts + 1, generator)
    transitions = gammas / gammas.sum(-1, keepdim=True)
    _, mean = exp.posterior_mean()
    noise = torch.randn(mean.shape, generator=generator, dtype=torch.float64)
    return plan(transitions, mean + noise / (1 + exp.visits).sqrt(), horizon)


def ucrl2_q(exp, horizon, generator, delta: float = 0.05):
    """UCRL2 (Jaksch et al. 2010) with empirical estimates, a sub-Gaussian reward bonus
    (unit reward noise) and the paper's L1 transition radius, planned over the episode."""
    _, s, a = exp.reward_sums.shape
    n = exp.visits.clamp_min(1)
    log_term = math.log(2 * s * a * max(exp.steps, 1) / delta)
    p_hat = torch.where(
        exp.visits[..., None] > 0, exp.counts / n[..., None], torch.full_like(exp.counts, 1 / s)
    )
    rewards = exp.reward_sums / n + (2 * log_term / n).sqrt()
    radius = (14 * s * math.log(2 * a * max(exp.steps, 1) / delta) / n).sqrt()
    return plan(p_hat, rewards, horizon, optimistic_radius=radius)


def beb_q(exp, horizon, generator, beta: float = BEB_BETA):
    """Bayesian exploration bonus (Kolter and Ng 2009): plan in the posterior-mean MDP with
    each reward raised by beta / (1 + visits), a bonus that fades as (s, a) is tried."""
    transitions, mean = exp.posterior_mean()
    return plan(transitions, mean + beta / (1 + exp.visits), horizon)


MDP_METHODS: dict[str, Callable] = {
    "random": random_q,
    "greedy": greedy_q,
    "psrl": psrl_q,
    "ucrl2": ucrl2_q,
    "beb": beb_q,
}


def play_mdps(
    method: str | Callable,
    tasks: torch.Tensor,
    episodes: int,
    generator: torch.Generator | None = None,
    epsilon: float = 0.0,
    env: TabularMDP | None = None,
) -> torch.Tensor:
    """Total reward of `method` (one of MDP_METHODS, "epsilon-greedy": greedy with random
    actions at rate `epsilon`, 0.1 by default, or a function like those in MDP_METHODS) over
    `episodes` episodes of each MDP: [T]."""
    if method == "epsilon-greedy":
        method, epsilon = "greedy", epsilon or 0.1
    if not callable(method) and method not in MDP_METHODS:
        raise MetakitError(
            f"unknown MDP method {method!r}; expected one of {sorted(MDP_METHODS) + ['epsilon-greedy']}"
        )
    q_function = method if callable(method) else MDP_METHODS[method]
    env = env or TabularMDP()
    env.set_tasks(tasks)
    t, s, a = tasks.shape[0], env.states, env.action_size
    exp = Experience(torch.zeros(t, s, a, s, dtype=torch.float64), torch.zeros(t, s, a, dtype=torch.float64))
    total, rows = torch.zeros(t), torch.arange(t)
    for _ in range(episodes):
        q = q_function(exp, env.horizon, generator)
        env.reset(1, generator)
        for h in range(env.horizon):
            state = env.state[:, 0]
            action = argmax_random_ties(q[rows, h, state], generator)
            if epsilon > 0:
                explore = torch.rand(t, generator=generator) < epsilon
                action = torch.where(explore, torch.randint(a, (t,), generator=generator), action)
            _, reward, _ = env.step(action[:, None], generator)
            exp.counts[rows, state, action, env.state[:, 0]] += 1
            exp.reward_sums[rows, state, action] += reward[:, 0].double()
            exp.steps += 1
            total += reward[:, 0]
    return total

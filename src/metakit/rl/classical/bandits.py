"""Classical Bernoulli-bandit algorithms, the baselines of RL^2 (Duan et al. 2016, Table 1).

Every method plays T bandits at once: it sees the success and failure counts of each arm
[T, k] and the pull index t of n, and returns one arm per bandit [T]. `play_bandits` runs a
method on tasks through BernoulliBandit, so rewards are drawn exactly as RL^2's are.
The prior is the task distribution's: p ~ U[0, 1] = Beta(1, 1) for each arm.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch

from ...errors import MetakitError
from ..envs.bandit import BernoulliBandit


def argmax_random_ties(scores: torch.Tensor, generator=None) -> torch.Tensor:
    """argmax over the last dim, a uniformly random one of the tied maxima."""
    best = scores >= scores.max(-1, keepdim=True).values - 1e-12
    return (best * torch.rand(scores.shape, generator=generator, dtype=torch.float64)).argmax(-1)


def sample_gamma(shape: torch.Tensor, generator=None) -> torch.Tensor:
    """Gamma(shape, 1) for shape >= 1 (Marsaglia and Tsang 2000), seedable by a generator."""
    d = shape.double() - 1.0 / 3.0
    c = 1.0 / (9.0 * d).sqrt()
    out = torch.empty_like(d)
    todo = torch.ones_like(d, dtype=torch.bool)
    while todo.any():
        x = torch.randn(d.shape, generator=generator, dtype=torch.float64)
        v = (1 + c * x) ** 3
        u = torch.rand(d.shape, generator=generator, dtype=torch.float64)
        accept = todo & (v > 0) & (u.log() < 0.5 * x**2 + d - d * v + d * v.clamp_min(1e-300).log())
        out = torch.where(accept, d * v, out)
        todo &= ~accept
    return out


def sample_beta(a: torch.Tensor, b: torch.Tensor, generator=None) -> torch.Tensor:
    x, y = sample_gamma(a, generator), sample_gamma(b, generator)
    return x / (x + y)


def posterior_mean(successes, failures):
    return (successes + 1) / (successes + failures + 2)


# -- the methods: (successes [T, k], failures [T, k], t, n, generator) -> arms [T] ---------------
def random_arm(s, f, t, n, generator):
    return torch.randint(s.shape[-1], s.shape[:-1], generator=generator)


def greedy(s, f, t, n, generator):
    """The arm of highest posterior mean (untried arms count as 1/2)."""
    return argmax_random_ties(posterior_mean(s, f), generator)


def epsilon_greedy(epsilon: float = 0.1):
    if not 0 <= epsilon <= 1:
        raise MetakitError(f"epsilon must be in [0, 1], got {epsilon!r}")

    def choose(s, f, t, n, generator):
        explore = torch.rand(s.shape[:-1], generator=generator) < epsilon
        return torch.where(explore, random_arm(s, f, t, n, generator), greedy(s, f, t, n, generator))
    return choose


def ucb1(s, f, t, n, generator):
    """Auer et al. 2002: every arm once, then the arm maximising mean + sqrt(2 ln t / pulls)."""
    pulls = s + f
    index = s / pulls.clamp_min(1) + (2 * math.log(max(t, 1)) / pulls.clamp_min(1)).sqrt()
    return argmax_random_ties(torch.where(pulls == 0, math.inf, index), generator)


def thompson(s, f, t, n, generator):
    return argmax_random_ties(sample_beta(s + 1, f + 1, generator), generator)


def optimistic_thompson(s, f, t, n, generator):
    """May et al. 2012: a posterior sample, but never below the posterior mean."""
    return argmax_random_ties(
        torch.maximum(sample_beta(s + 1, f + 1, generator), posterior_mean(s, f)), generator
    )


@lru_cache(maxsize=4)
def gittins_tables(pulls: int, grid: int = 200) -> tuple[torch.Tensor, ...]:
    """Finite-horizon Gittins indices of Beta(1 + s, 1 + f) arms for every number of pulls
    left: entry m (1..pulls) is a float32 table [pulls - m + 1, pulls - m + 1] whose [s, f] is
    the index with m pulls left (entry 0 is empty). The index is the per-pull reward lam of a
    known arm at which one is indifferent between retiring to it for the remaining m pulls
    and pulling the unknown arm, with the option to retire later.

    Dynamic programming on the value of that stopping problem, for all lam on a grid at once:
        V_m(s, f) = max(m lam, p (1 + V_{m-1}(s + 1, f)) + (1 - p) V_{m-1}(s, f + 1)),
    p = (s + 1) / (s + f + 2), V_0 = 0; the index is where pulling stops paying, found by
    linear interpolation between grid points. Only states with s + f <= pulls - m can occur
    with m pulls left in a trial of `pulls`, so each table holds those."""
    if not isinstance(pulls, int) or pulls < 1:
        raise MetakitError(f"gittins_tables needs pulls >= 1, got {pulls!r}")
    lam = torch.linspace(0, 1, grid + 1, dtype=torch.float64)[:, None, None]  # [L, 1, 1]
    counts = torch.arange(pulls + 1, dtype=torch.float64)
    p_success = (counts[:, None] + 1) / (counts[:, None] + counts[None, :] + 2)
    value = torch.zeros(grid + 1, pulls + 1, pulls + 1, dtype=torch.float64)  # V_0
    tables = [torch.zeros(0, 0)]
    for m in range(1, pulls + 1):
        size = pulls - m + 1
        p = p_success[:size, :size]
        pull = p * (1 + value[:, 1 : size + 1, :size]) + (1 - p) * value[:, :size, 1 : size + 1]
        advantage = pull - m * lam  # pulling minus retiring, [L, size, size], decreasing in lam
        value = advantage.clamp_min(0) + m * lam
        above = (advantage > 0).sum(0).clamp(1, grid)  # first grid point where pulling no longer pays
        a0 = advantage.gather(0, (above - 1)[None])[0]
        a1 = advantage.gather(0, above[None])[0]
        frac = torch.where(a0 > a1, a0 / (a0 - a1), torch.zeros_like(a0)).clamp(0, 1)
        tables.append(((above - 1 + frac) / grid).float())
    return tuple(tables)


def gittins_index(successes: int, failures: int, pulls_left: int, grid: int = 200) -> float:
    """The finite-horizon Gittins index of a Beta(1 + successes, 1 + failures) arm with
    `pulls_left` pulls left."""
    return gittins_tables(successes + failures + pulls_left, grid)[pulls_left][successes, failures].item()


def gittins(s, f, t, n, generator):
    """The arm of largest finite-horizon Gittins index for the n - t pulls left in the trial
    (each arm's own pull count does not set its horizon: the trial's remaining pulls do)."""
    table = gittins_tables(n)[n - t]
    return argmax_random_ties(table[s.long(), f.long()].double(), generator)


BANDIT_METHODS: dict[str, Callable] = {
    "random": random_arm,
    "greedy": greedy,
    "epsilon-greedy": epsilon_greedy(0.1),
    "ucb1": ucb1,
    "thompson": thompson,
    "optimistic-thompson": optimistic_thompson,
    "gittins": gittins,
}


def play_bandits_rewards(
    method: str | Callable, tasks: torch.Tensor, pulls: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The reward of each pull of `method` on each bandit in tasks [T, k]: [T, pulls]."""
    if isinstance(method, str):
        if method not in BANDIT_METHODS:
            raise MetakitError(f"unknown bandit method {method!r}; expected one of {sorted(BANDIT_METHODS)}")
        method = BANDIT_METHODS[method]
    if isinstance(pulls, bool) or not isinstance(pulls, int) or pulls < 1:
        raise MetakitError(f"pulls must be an integer >= 1, got {pulls!r}")
    env = BernoulliBandit(arms=tasks.shape[-1])
    env.set_tasks(tasks)
    s = torch.zeros(tasks.shape, dtype=torch.float64)
    f = torch.zeros_like(s)
    rewards = []
    for t in range(pulls):
        arms = method(s, f, t, pulls, generator)
        env.reset(1, generator)
        _, reward, _ = env.step(arms[:, None], generator)
        won = reward[:, 0].double()
        s.scatter_add_(1, arms[:, None], won[:, None])
        f.scatter_add_(1, arms[:, None], 1 - won[:, None])
        rewards.append(reward[:, 0])
    return torch.stack(rewards, dim=1)


def play_bandits(
    method: str | Callable, tasks: torch.Tensor, pulls: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Total reward of `method` over `pulls` pulls of each bandit in tasks [T, k]: [T]."""
    return play_bandits_rewards(method, tasks, pulls, generator).sum(-1)

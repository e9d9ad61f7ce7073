"""The classical bandit and tabular-MDP baselines of RL^2, on problems whose answer is known."""
import math

import pytest
import torch

from metakit.errors import MetakitError
from metakit.rl.classical import (
    BANDIT_METHODS,
    MDP_METHODS,
    gittins_index,
    gittins_tables,
    play_bandits,
    play_mdps,
)
from metakit.rl.classical.bandits import sample_beta, ucb1
from metakit.rl.classical.mdps import Experience, beb_q, greedy_q, optimistic_transitions, plan
from metakit.rl.envs import TabularMDP


@pytest.mark.parametrize(
    "method", ["greedy", "epsilon-greedy", "ucb1", "thompson", "optimistic-thompson", "gittins"]
)
def test_every_bandit_method_finds_a_dominant_arm(method):
    tasks = torch.tensor([[0.1, 0.9, 0.2]]).repeat(200, 1)
    pulls = 100
    total = play_bandits(method, tasks, pulls, torch.Generator().manual_seed(0))
    # always pulling arm 1 earns 90; random earns 40: a method that learns ends far above random
    assert total.mean() > 75, (method, total.mean())


def test_random_bandit_earns_the_mean_arm():
    tasks = torch.tensor([[0.1, 0.9, 0.2]]).repeat(500, 1)
    total = play_bandits("random", tasks, 60, torch.Generator().manual_seed(0))
    assert abs(total.mean().item() - 60 * 0.4) < 1.0


def test_ucb1_pulls_untried_arms_then_follows_its_index():
    s = torch.tensor([[3.0, 1.0, 0.0], [3.0, 1.0, 2.0]], dtype=torch.float64)
    f = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 2.0]], dtype=torch.float64)
    t = 10
    arms = ucb1(s, f, t, 100, torch.Generator().manual_seed(0))
    assert arms[0] == 2  # never pulled
    # by hand: 3/4 + sqrt(2 ln 10 / 4) = 1.823, 1 + sqrt(2 ln 10) = 3.146, 1/2 + sqrt(2 ln 10 / 4) = 1.573
    index = [
        3 / 4 + math.sqrt(2 * math.log(10) / 4),
        1 + math.sqrt(2 * math.log(10)),
        0.5 + math.sqrt(2 * math.log(10) / 4),
    ]
    assert arms[1] == max(range(3), key=index.__getitem__) == 1


def test_gittins_dynamic_programme_matches_a_hand_computation():
    tables = gittins_tables(2, grid=1000)
    # one pull left: the index is the posterior mean (s + 1) / (s + f + 2)
    assert tables[1][1, 0].item() == pytest.approx(2 / 3, abs=1e-6)
    assert tables[1][0, 1].item() == pytest.approx(1 / 3, abs=1e-6)
    # two pulls left from Beta(1, 1): pulling earns 1/2 (1 + max(2/3, lam)) + 1/2 max(1/3, lam)
    # against 2 lam for retiring; they are equal at lam = 5/9
    assert tables[2][0, 0].item() == pytest.approx(5 / 9, abs=1e-6)
    # the index exceeds the posterior mean when pulls remain (the value of information)
    assert gittins_index(0, 0, 20) > 0.5 + 0.05 and gittins_index(2, 1, 17) > 3 / 5


def test_gittins_indexes_by_the_pulls_left_in_the_trial_not_by_each_arms_count():
    """Pull 9 of 10 (t = 8, two pulls left): an untried arm against one with 5 successes and
    3 failures. By hand, with two pulls left the untried arm's index is 5/9 (above) and the
    other's, Beta(6, 4), solves 2 lam = 0.6 (1 + 7/11) + 0.4 lam: lam = 0.6 * 18/11 / 1.6 =
    0.6136. Indexing each arm by n - s - f pulls left (the bug) gave the untried arm the
    10-pull index 0.70 and chose it."""
    assert gittins_index(0, 0, 2) == pytest.approx(5 / 9, abs=1e-3)
    assert gittins_index(5, 3, 2) == pytest.approx(0.6 * 18 / 11 / 1.6, abs=1e-3)
    s, f = torch.tensor([[0.0, 5.0]]), torch.tensor([[0.0, 3.0]])
    assert BANDIT_METHODS["gittins"](s, f, 8, 10, torch.Generator().manual_seed(0)).item() == 1


def test_beta_sampler_has_the_beta_mean_and_variance():
    a, b = torch.full((40000,), 3.0), torch.full((40000,), 5.0)
    x = sample_beta(a, b, torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - 3 / 8) < 0.005
    assert abs(x.var().item() - 3 * 5 / (8**2 * 9)) < 0.002


def deterministic_chain(tasks: int) -> torch.Tensor:
    """3 states, 2 actions: action 1 moves right (stays at the end), action 0 goes back to 0;
    mean reward 5 for action 1 in state 2, -1 everywhere else."""
    p = torch.zeros(3, 2, 3)
    p[:, 0, 0] = 1
    p[0, 1, 1] = p[1, 1, 2] = p[2, 1, 2] = 1
    r = torch.full((3, 2, 1), -1.0)
    r[2, 1] = 5.0
    return torch.cat([p, r], -1).expand(tasks, 3, 2, 4).clone()


def test_planning_solves_a_known_mdp_by_hand():
    task = deterministic_chain(1)
    q = plan(task[..., :3].double(), task[..., 3].double(), horizon=4)
    # from state 0 with 4 steps: right, right (-1, -1), then 5, 5: Q = 8 for action 1
    assert q[0, 0, 0, 1].item() == 8 and q[0, 0, 0].argmax() == 1
    assert q[0, 3, 2, 1].item() == 5  # one step left in state 2


def test_psrl_learns_a_deterministic_mdp():
    env = TabularMDP(states=3, actions=2, horizon=6)
    tasks = deterministic_chain(100)
    psrl = play_mdps("psrl", tasks, 30, torch.Generator().manual_seed(0), env=env)
    rand = play_mdps("random", tasks, 30, torch.Generator().manual_seed(0), env=env)
    # the best episode earns -1 - 1 + 4 x 5 = 18 (540 over 30 episodes); random walks earn far less
    assert psrl.mean() > 400 and rand.mean() < 100, (psrl.mean(), rand.mean())


def test_beb_adds_a_bonus_that_fades_with_visits():
    exp = Experience(torch.zeros(1, 1, 2, 1, dtype=torch.float64), torch.zeros(1, 1, 2, dtype=torch.float64))
    exp.counts[0, 0, 0, 0], exp.reward_sums[0, 0, 0] = 9, 9.0  # action 0: posterior mean (1 + 9) / 10 = 1
    last_step = beb_q(exp, horizon=3, generator=None, beta=2.0)[0, -1, 0]  # immediate reward only
    torch.testing.assert_close(last_step, torch.tensor([1 + 2 / 10, 1 + 2 / 1], dtype=torch.float64))
    torch.testing.assert_close(beb_q(exp, 3, None, beta=0.0), greedy_q(exp, 3, None))


def test_optimistic_transitions_move_mass_to_the_best_state_within_the_radius():
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).view(1, 1, 1, 3)
    value = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)  # state 2 best, state 0 worst
    moved = optimistic_transitions(p, value, torch.tensor([[[0.6]]], dtype=torch.float64))
    torch.testing.assert_close(moved.flatten(), torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    moved = optimistic_transitions(p, value, torch.tensor([[[2.0]]], dtype=torch.float64))
    torch.testing.assert_close(moved.flatten(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("method", sorted(MDP_METHODS) + ["epsilon-greedy"])
def test_every_mdp_method_runs_on_random_mdps(method):
    env = TabularMDP()
    tasks = env.sample_tasks(50, torch.Generator().manual_seed(0))
    total = play_mdps(method, tasks, 3, torch.Generator().manual_seed(1), env=env)
    assert total.shape == (50,) and torch.isfinite(total).all()


def test_experience_posterior_mean_uses_the_task_prior():
    exp = Experience(torch.zeros(1, 2, 1, 2, dtype=torch.float64), torch.zeros(1, 2, 1, dtype=torch.float64))
    exp.counts[0, 0, 0, 1] = 2
    exp.reward_sums[0, 0, 0] = 4.0
    p, mean = exp.posterior_mean()
    torch.testing.assert_close(p[0, 0, 0], torch.tensor([1 / 4, 3 / 4], dtype=torch.float64))
    assert mean[0, 0, 0].item() == pytest.approx(5 / 3) and mean[0, 1, 0].item() == 1.0


def test_unknown_methods_are_named():
    with pytest.raises(MetakitError, match=r"unknown bandit method 'ucb'; expected one of \[.*'ucb1'"):
        play_bandits("ucb", torch.rand(2, 3), 5)
    with pytest.raises(MetakitError, match=r"unknown MDP method 'bayes'"):
        play_mdps("bayes", TabularMDP().sample_tasks(2), 1)
    assert set(BANDIT_METHODS) >= {"random", "gittins", "thompson", "ucb1"}

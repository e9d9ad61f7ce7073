"""Meta-RL core: environments by hand and against Gymnasium, returns, TRPO, MAML-TRPO."""

import copy
import math
import os
import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.classic_control.pendulum import PendulumEnv
from gymnasium.utils.env_checker import check_env
from torch.func import functional_call

from metakit import MetakitError
from metakit.rl import envs
from metakit.rl.maml_trpo import MAMLTRPO
from metakit.rl.optim import conjugate_gradient, flat, hessian_vector_product, optimizer_steps, trpo_step
from metakit.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, policy_for
from metakit.rl.returns import discounted_returns, gae, linear_feature_baseline
from metakit.rl.sampling import rollout


def test_navigation_clips_actions_rewards_distance_and_ends_at_the_goal():
    env = envs.Navigation2D()
    env.set_tasks(torch.tensor([[0.1, 0.0], [-0.3, 0.2]]))
    assert torch.equal(env.reset(1), torch.zeros(2, 1, 2))
    obs, reward, done = env.step(torch.tensor([[[5.0, 0.0]], [[-10.0, 0.5]]]))
    # moves of 0.1 x action, clipped to (0.1, 0) and (-0.1, 0.05): task 0 is on its goal, task 1 is
    # sqrt(0.2^2+0.15^2) away
    torch.testing.assert_close(obs, torch.tensor([[[0.1, 0.0]], [[-0.1, 0.05]]]))
    torch.testing.assert_close(reward, torch.tensor([[0.0], [-0.25]]))
    assert done.tolist() == [[True], [False]]
    obs, reward, done = env.step(torch.tensor([[[0.1, 0.1]], [[0.0, 0.0]]]))
    assert reward[0, 0] == 0 and torch.equal(obs[0, 0], torch.tensor([0.1, 0.0]))  # done stays done
    for _ in range(98):
        _, _, done = env.step(torch.zeros(2, 1, 2))
    assert done.all() and env.t == env.horizon == 100


def test_bandit_pays_each_arm_with_its_probability():
    env = envs.BernoulliBandit(arms=3)
    env.set_tasks(torch.tensor([[0.0, 1.0, 0.5]]))
    env.reset(4000)
    _, reward, done = env.step(torch.tensor([[0, 1, 2, 2] * 1000]), torch.Generator().manual_seed(0))
    assert done.all()  # one pull is one episode
    rewards = reward.view(1000, 4)
    assert rewards[:, 0].sum() == 0 and rewards[:, 1].sum() == 1000
    assert abs(rewards[:, 2:].mean().item() - 0.5) < 0.03


def test_tabular_mdp_rows_are_distributions_and_transitions_follow_them():
    env = envs.TabularMDP(states=4, actions=2, horizon=3)
    tasks = env.sample_tasks(50, torch.Generator().manual_seed(0))
    env.set_tasks(tasks)
    torch.testing.assert_close(env.transitions().sum(-1), torch.ones(50, 4, 2))
    assert (env.transitions() >= 0).all() and abs(env.mean_rewards().mean().item() - 1) < 0.15
    # a deterministic task: action a moves s -> (s + a + 1) mod 4 and pays on average s + 10a
    transitions = torch.zeros(1, 4, 2, 4)
    for s in range(4):
        for a in range(2):
            transitions[0, s, a, (s + a + 1) % 4] = 1
    mean = (torch.arange(4).view(1, 4, 1) + 10 * torch.arange(2).view(1, 1, 2)).float()
    env.set_tasks(torch.cat([transitions, mean[..., None]], -1))
    obs = env.reset(2000)
    assert torch.equal(obs[0, 0], torch.tensor([1.0, 0, 0, 0]))  # episodes start in state 0
    obs, reward, _ = env.step(torch.ones(1, 2000, dtype=torch.long))
    assert (obs.argmax(-1) == 2).all() and abs(reward.mean().item() - 10) < 0.1
    obs, reward, _ = env.step(torch.zeros(1, 2000, dtype=torch.long))
    assert (obs.argmax(-1) == 3).all() and abs(reward.mean().item() - 2) < 0.1
    _, _, done = env.step(torch.zeros(1, 2000, dtype=torch.long))
    assert done.all()  # horizon 3


def test_cartpole_and_pendulum_match_gymnasium_with_the_task_parameters():
    cart = envs.CartPole()
    cart.set_tasks(torch.tensor([[2.5]]))
    cart.reset(1)
    reference = CartPoleEnv()
    reference.reset(seed=0)
    reference.length, reference.polemass_length = 2.5, reference.masspole * 2.5
    state = torch.tensor([0.01, -0.2, 0.05, 0.3])
    cart.state = state.view(1, 1, 4).clone()
    reference.state = state.double().numpy()
    for action in (1, 0, 1, 1):
        obs, reward, done = cart.step(torch.tensor([[action]]))
        expected, r, terminated, _, _ = reference.step(action)
        torch.testing.assert_close(
            obs[0, 0], torch.as_tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-6
        )
        assert reward.item() == r and bool(done) == terminated
    pendulum = envs.Pendulum()
    pendulum.set_tasks(torch.tensor([[0.7, 1.3]]))
    pendulum.reset(1)
    reference = PendulumEnv()
    reference.reset(seed=0)
    reference.m, reference.l = 0.7, 1.3
    pendulum.state = torch.tensor([[[2.0, -0.5]]])
    reference.state = torch.tensor([2.0, -0.5]).double().numpy()
    for torque in (1.5, -3.0, 0.2):  # -3 is clipped to -2
        obs, reward, _ = pendulum.step(torch.tensor([[[torque]]]))
        expected, r, _, _, _ = reference.step([torque])
        torch.testing.assert_close(
            obs[0, 0], torch.as_tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-5
        )
        assert math.isclose(reward.item(), r, rel_tol=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(envs.ENVIRONMENTS))
def test_every_registration_passes_gymnasiums_checker(name):
    # "module:id" makes gymnasium import the module that registers the id
    env = gymnasium.make(f"metakit.rl.envs.gym:metakit/{name}-v0")
    check_env(env.unwrapped)
    obs, info = env.reset(seed=3, options={"task": info_task(name)})
    assert env.observation_space.contains(obs)


def info_task(name):
    return {
        "Navigation2D": [0.2, -0.1],
        "BernoulliBandit": [0.1, 0.2, 0.3, 0.4, 0.5],
        "DirichletBandit": [0.1, 0.1, 0.2, 0.2, 0.4],
        "TabularMDP": None,
        "CartPole": [1.0],
        "Pendulum": [1.0, 1.0],
        "HalfCheetah": [0.0],
        "HalfCheetahVel": [1.5],
        "HalfCheetahDir": [-1.0],
        "AntVel": [2.0],
        "AntDir": [1.0],
    }[name]


def test_environment_errors_are_clear():
    with pytest.raises(
        MetakitError, match=r"unknown environment 'Nav2D'; expected one of \[.*'Navigation2D'"
    ):
        envs.make("Nav2D")
    env = envs.Navigation2D()
    with pytest.raises(MetakitError, match=r"call set_tasks\(env.sample_tasks\(n\)\) before reset"):
        env.reset(4)
    env.set_tasks(env.sample_tasks(3))
    with pytest.raises(MetakitError, match=r"call reset\(\) before step\(\)"):
        env.step(torch.zeros(3, 4, 2))
    env.reset(4)
    with pytest.raises(MetakitError, match=r"expects actions of shape \(3, 4, 2\).*got \(3, 4\)"):
        env.step(torch.zeros(3, 4))
    bandit = envs.BernoulliBandit(3)
    bandit.set_tasks(bandit.sample_tasks(1))
    bandit.reset(2)
    with pytest.raises(MetakitError, match=r"integer actions in \[0, 3\)"):
        bandit.step(torch.tensor([[0, 3]]))


def test_discounting_and_gae_equal_a_direct_loop():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 7), torch.randn(3, 7)
    mask = torch.ones(3, 7)
    mask[1, 4:] = 0  # episode 1 ends after 4 steps
    gamma, lam = 0.9, 0.8
    returns, advantages = discounted_returns(rewards, mask, gamma), gae(rewards, values, mask, gamma, lam)
    for e in range(3):
        length = int(mask[e].sum())
        for h in range(length):
            expected = sum(gamma ** (k - h) * rewards[e, k] for k in range(h, length))
            assert math.isclose(returns[e, h].item(), expected, rel_tol=1e-5, abs_tol=1e-6)
            v = lambda k: values[e, k] if k < length else 0.0  # noqa: E731
            deltas = [rewards[e, k] + gamma * v(k + 1) - v(k) for k in range(length)]
            expected = sum((gamma * lam) ** (k - h) * deltas[k] for k in range(h, length))
            assert math.isclose(advantages[e, h].item(), float(expected), rel_tol=1e-4, abs_tol=1e-5)
    assert (returns[1, 4:] == 0).all() and (advantages[1, 4:] == 0).all()


def test_linear_baseline_fits_returns_that_are_linear_in_its_features(float64):
    obs = torch.randn(2, 5, 10, 3)
    # a different linear function of the features for each task: the fit is per task (ridge
    # 1e-5, so not exact to the last digit)
    returns = torch.stack(
        [2 * obs[0, ..., 0] - obs[0, ..., 1] ** 2 + 1.5, -obs[1, ..., 2] + 0.5 * obs[1, ..., 0] ** 2]
    )
    mask = torch.ones(2, 5, 10)
    mask[1, :, 7:] = 0  # steps after an episode's end are ignored
    fitted = linear_feature_baseline(obs, returns, mask)
    torch.testing.assert_close(fitted, returns * mask, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("broken", ["observations", "returns"])
def test_linear_baseline_refuses_non_finite_data_instead_of_passing_nan_advantages(broken):
    obs, returns, mask = torch.rand(2, 3, 5, 2), torch.rand(2, 3, 5), torch.ones(2, 3, 5)
    (obs if broken == "observations" else returns)[1, 0, 2] = float("nan")
    with pytest.raises(MetakitError, match="observations or returns hold NaN or infinite values"):
        linear_feature_baseline(obs, returns, mask)


def test_hessian_vector_product_and_conjugate_gradient_are_exact(float64):
    policy = GaussianMLPPolicy(3, 2, hidden=(4,))
    obs = torch.randn(6, 3)
    old = policy(obs).detach() + 0.1 * torch.randn(6, 4)
    params = list(policy.parameters())
    kl = lambda: policy.kl(old, policy(obs)).mean()  # noqa: E731
    shapes = [p.shape for p in params]

    def kl_of_flat(vector):
        pieces, start = {}, 0
        for (name, _), shape in zip(policy.named_parameters(), shapes):
            pieces[name] = vector[start : start + shape.numel()].view(shape)
            start += shape.numel()
        return policy.kl(old, functional_call(policy, pieces, (obs,))).mean()

    hessian = torch.autograd.functional.hessian(kl_of_flat, flat(params).detach())
    v = torch.randn(hessian.shape[0])
    hvp = hessian_vector_product(kl(), params, damping=0.1)
    torch.testing.assert_close(hvp(v), hessian @ v + 0.1 * v)
    a = hessian + torch.eye(hessian.shape[0])  # symmetric positive definite
    x = conjugate_gradient(lambda u: a @ u, v, iterations=200, tolerance=1e-20)
    torch.testing.assert_close(a @ x, v)
    x, r = conjugate_gradient(lambda u: a @ u, v, iterations=3, with_residual=True)  # not converged
    torch.testing.assert_close(r, v - a @ x)  # TRPO's step size reads x^T A x as x^T (v - r)


def test_trpo_step_lowers_the_loss_within_the_kl_bound():
    torch.manual_seed(0)
    policy = CategoricalMLPPolicy(4, 3, hidden=(16,))
    obs, actions, advantages = torch.randn(200, 4), torch.randint(3, (200,)), torch.randn(200)
    old = policy(obs).detach()

    def loss():
        return -(
            (policy.log_prob(policy(obs), actions) - policy.log_prob(old, actions)).exp() * advantages
        ).mean()

    kl = lambda: policy.kl(old, policy(obs)).mean()  # noqa: E731
    info = trpo_step(list(policy.parameters()), lambda: (loss(), kl()), max_kl=0.01)
    assert info["accepted"] and info["loss_after"] < info["loss_before"]
    assert 0 < kl().item() <= 0.01 and math.isclose(kl().item(), info["kl"], rel_tol=1e-5)


def test_optimizer_steps_take_the_optimizers_steps_on_the_same_data_and_report_the_kl_after():
    """RLlib's meta-update: k optimiser steps on one batch, each gradient through `average`."""
    torch.manual_seed(0)
    policy = CategoricalMLPPolicy(4, 3, hidden=(16,))
    twin = CategoricalMLPPolicy(4, 3, hidden=(16,))
    twin.load_state_dict(policy.state_dict())
    obs, actions, advantages = torch.randn(200, 4), torch.randint(3, (200,)), torch.randn(200)
    old = policy(obs).detach()

    def objectives(net):
        def loss_and_kl():
            out = net(obs)
            ratio = (net.log_prob(out, actions) - net.log_prob(old, actions)).exp()
            return -(ratio * advantages).mean(), net.kl(old, out).mean()

        return loss_and_kl

    averaged = []
    adam = torch.optim.Adam(policy.parameters(), lr=1e-2)
    info = optimizer_steps(list(policy.parameters()), objectives(policy), adam, 3,
                           average=lambda t: averaged.append(t) or t)
    reference = torch.optim.Adam(twin.parameters(), lr=1e-2)
    for _ in range(3):  # the plain torch loop
        reference.zero_grad()
        objectives(twin)()[0].backward()
        reference.step()
    for a, b in zip(policy.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(averaged) == 3 * len(list(policy.parameters())) + 3  # each gradient; the loss before and after
    loss, kl = (v.item() for v in objectives(policy)())
    assert info["loss_after"] == loss < info["loss_before"] and info["kl"] == kl > 0


@pytest.mark.parametrize("env_name", ["Navigation2D", "CartPole"])
def test_maml_trpo_fisher_product_is_the_exact_kl_hessian_through_the_inner_step(env_name, float64):
    """J^T F J (one extra backward) against the Hessian of the mean KL by double backward, at the
    sampling weights, for a Gaussian and a categorical policy."""
    torch.manual_seed(0)
    env = envs.make(env_name, horizon=6)
    algo = MAMLTRPO(policy_for(env, hidden=(8,)), fast_lr=0.3)
    data = algo.sample(env, 3, 4, torch.Generator().manual_seed(1))
    params = list(algo.policy.parameters())
    _, kl, out = algo.objectives(data)()
    exact = hessian_vector_product(kl, params, damping=0.01)
    fisher = algo.fisher(data, damping=0.01)(out)
    for seed in range(3):
        v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(fisher(v), exact(v), rtol=1e-8, atol=1e-10)


@pytest.mark.heavy
def test_compiled_maml_trpo_takes_the_eager_steps(float64):
    """compile=True: the same TRPO steps (exact and adapted Fisher; the compiled pass gives no
    outputs, so the exact Fisher takes its own) and PPO-style Adam steps as eager, in float64.
    CG damping 1: at 0.1, CG on this tiny problem turns a 1e-15 change in the gradient into 4e-4
    in the step, eager or compiled."""
    torch.manual_seed(0)
    env = envs.Navigation2D(horizon=6)
    eager = MAMLTRPO(policy_for(env, hidden=(8,)), fast_lr=0.3)
    compiled = MAMLTRPO(copy.deepcopy(eager.policy), fast_lr=0.3, compile=True)
    data = eager.sample(env, 3, 4, torch.Generator().manual_seed(1))
    assert len(compiled.objectives(data)()) == 2
    optimizers = {algo: torch.optim.Adam(algo.policy.parameters(), lr=0.01) for algo in (eager, compiled)}
    for fisher in ("exact", "adapted", "ppo"):
        infos = []
        for algo in (eager, compiled):
            params = list(algo.policy.parameters())
            if fisher == "ppo":
                infos.append(optimizer_steps(params, algo.objectives(data, clip=0.2), optimizers[algo], 3))
            else:
                algo.fisher_mode = fisher
                fisher_product = algo.fisher(data, damping=1.0)
                infos.append(trpo_step(params, algo.objectives(data), 0.01, 1.0, fisher=fisher_product))
        assert infos[0]["accepted"] and infos[0]["kl"] > 0
        assert infos[1] == pytest.approx(infos[0], rel=1e-9)
        for a, b in zip(eager.policy.parameters(), compiled.policy.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    with pytest.raises(MetakitError, match="compile must be true or false, got 'yes'"):
        MAMLTRPO(policy_for(env, hidden=(8,)), compile="yes")


@pytest.mark.parametrize("fast_lr", [0.0, 0.3])
def test_maml_trpo_adapted_fisher_is_the_adapted_policies_kl_hessian(fast_lr, float64):
    """fisher="adapted": the Hessian of the mean KL in the adapted weights (a per-task loop by
    double backward), which is the exact one through the inner step at fast_lr 0 only."""
    torch.manual_seed(0)
    env = envs.Navigation2D(horizon=6)
    algo = MAMLTRPO(policy_for(env, hidden=(8,)), fast_lr=fast_lr, fisher="adapted")
    data = algo.sample(env, 3, 4, torch.Generator().manual_seed(1))
    params = list(algo.policy.parameters())
    _, kl, out = algo.objectives(data)()
    through_inner_step = hessian_vector_product(kl, params, damping=0.01)
    fisher = algo.fisher(data, damping=0.01)(out)
    shift = {k: torch.zeros_like(v, requires_grad=True) for k, v in algo.policy.named_parameters()}
    valid, kls = data["valid"], []
    for t in range(3):
        weights = {k: data["fast"][k][t] + shift[k] for k in shift}
        out_t = functional_call(algo.policy, weights, (valid.observations[t],))
        mask = valid.mask[t]
        kls.append((algo.policy.kl(data["old_out"][t], out_t) * mask).sum() / mask.sum())
    reference = hessian_vector_product(torch.stack(kls).mean(), list(shift.values()), damping=0.01)
    for seed in range(3):
        v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(fisher(v), reference(v), rtol=1e-8, atol=1e-10)
        gap = (fisher(v) - through_inner_step(v)).norm() / through_inner_step(v).norm()
        assert gap < 1e-10 if fast_lr == 0 else gap > 1e-3
    with pytest.raises(MetakitError, match="fisher must be one of"):
        MAMLTRPO(policy_for(env, hidden=(8,)), fisher="approximate")


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_trpo_meta_gradient_equals_a_per_task_loop(first_order, float64):
    torch.manual_seed(0)
    env, policy = envs.Navigation2D(horizon=8), GaussianMLPPolicy(2, 2, hidden=(8,))
    algo = MAMLTRPO(policy, fast_lr=0.3, first_order=first_order)
    data = algo.sample(env, 3, 4, torch.Generator().manual_seed(1))
    surrogate, *_ = algo.objectives(data)()
    params = list(policy.parameters())
    vectorised = torch.autograd.grad(surrogate, params)
    names = [n for n, _ in policy.named_parameters()]
    train, valid = data["train"], data["valid"]
    total = 0
    for i in range(3):  # the same computation with plain autograd, one task at a time
        out = policy(train.observations[i])
        mask = train.mask[i]
        inner = -(policy.log_prob(out, train.actions[i]) * data["train_adv"][i] * mask).sum() / mask.sum()
        grads = torch.autograd.grad(inner, params, create_graph=not first_order)
        fast = {n: p - 0.3 * (g.detach() if first_order else g) for n, p, g in zip(names, params, grads)}
        new = functional_call(policy, fast, (valid.observations[i],))
        ratio = (
            policy.log_prob(new, valid.actions[i]) - policy.log_prob(data["old_out"][i], valid.actions[i])
        ).exp()
        total = total - (ratio * data["valid_adv"][i] * valid.mask[i]).sum() / valid.mask[i].sum() / 3
    for got, expected in zip(vectorised, torch.autograd.grad(total, params)):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_rollout_masks_steps_after_the_episode_ends():
    env = envs.Navigation2D(horizon=5)
    env.set_tasks(torch.tensor([[0.05, 0.0], [0.5, 0.5]]))  # reached in one step; out of reach
    policy = GaussianMLPPolicy(2, 2, hidden=(4,), init_std=1e-6)
    with torch.no_grad():
        for p in policy.mean.parameters():
            p.zero_()
        policy.mean[-1].bias.copy_(torch.tensor([0.5, 0.0]))  # a move of 0.05: one step onto the goal
    trajectories = rollout(env, policy, 3)
    assert trajectories.mask.tolist() == [[[1.0, 0.0, 0.0, 0.0, 0.0]] * 3, [[1.0] * 5] * 3]
    assert trajectories.episode_returns()[0].abs().max() < 1e-4
    # the second task's point moves 0.05 a step along x: distances to (0.5, 0.5) by hand
    expected = -sum(math.hypot(0.5 - 0.05 * k, 0.5) for k in range(1, 6))
    torch.testing.assert_close(
        trajectories.episode_returns()[1], torch.full((3,), expected), rtol=1e-4, atol=1e-4
    )


def test_short_maml_trpo_run_on_navigation_improves_the_adapted_return():
    torch.manual_seed(0)
    env, generator = envs.Navigation2D(horizon=20), torch.Generator().manual_seed(0)
    algo = MAMLTRPO(GaussianMLPPolicy(2, 2, hidden=(32, 32)), fast_lr=0.1, max_kl=0.05)
    test_tasks = env.sample_tasks(10, torch.Generator().manual_seed(99))
    before = algo.evaluate(env, test_tasks, steps=1, episodes=10, generator=torch.Generator().manual_seed(5))
    for _ in range(20):
        algo.step(env, 10, 10, generator)
    after = algo.evaluate(env, test_tasks, steps=1, episodes=10, generator=torch.Generator().manual_seed(5))
    # untrained: about -12 per 20-step episode; trained, the adapted policy walks to the goal
    assert after["1"] > before["1"] + 3, (before, after)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("stepping", ["batched", "gymnasium"])
@pytest.mark.parametrize("frame_skip", [5, 1])
def test_half_cheetah_tasks_reward_velocity_terms_on_gymnasiums_physics(stepping, frame_skip):
    """Our reward from Gymnasium's own HalfCheetah-v5 stepped from the same state with the same
    actions: its x velocity v and control cost 0.1 |a|^2 give ours, -|v - v*| - 0.05 |a|^2 or
    d v - 0.05 |a|^2; observations equal step for step (batched: bit for bit over a whole
    200-step episode, the solver's warm start carried as Gymnasium carries it). At Gymnasium's
    5 physics steps an env step and at the official MB-MPO code's 1."""
    for env, task in (
        (envs.HalfCheetahVel(stepping=stepping, frame_skip=frame_skip), 0.7),
        (envs.HalfCheetahDir(stepping=stepping, frame_skip=frame_skip), -1.0),
        (envs.HalfCheetah(stepping=stepping, frame_skip=frame_skip), 0.0),  # Gymnasium's task: v - 0.1 |a|^2
    ):
        env.set_tasks(torch.tensor([[task]]))
        generator = torch.Generator().manual_seed(4)
        seed = int(
            torch.randint(2**31 - 1, (1,), generator=torch.Generator().manual_seed(4))
        )  # what reset draws
        obs = env.reset(1, generator)
        reference = gymnasium.make("HalfCheetah-v5", frame_skip=frame_skip)
        expected_obs, _ = reference.reset(seed=seed)
        if stepping == "batched":  # our reset draws its own noise: start from Gymnasium's state
            env._vector.set_state(reference.unwrapped.data.qpos[None], reference.unwrapped.data.qvel[None])
            obs = env._observe_copies().view(1, 1, -1)
        torch.testing.assert_close(obs[0, 0], torch.as_tensor(expected_obs, dtype=torch.float32))
        actions = [torch.full((6,), 0.5), torch.linspace(-2, 2, 6)]  # the second is clipped
        if stepping == "batched":
            actions += list(torch.rand(196, 6, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2)
        for action in actions:
            obs, reward, done = env.step(action.view(1, 1, 6))
            clipped = action.clamp(-1, 1)
            expected_obs, _, _, _, info = reference.step(clipped.numpy())
            v, control = info["x_velocity"], (clipped**2).sum().item()
            progress = {"velocity": -abs(v - task), "direction": task * v, "forward": v}[env.goal]
            weight = 0.1 if env.goal == "forward" else 0.05
            assert math.isclose(reward.item(), progress - weight * control, rel_tol=1e-4, abs_tol=1e-4)
            assert math.isclose(info["reward_ctrl"], -0.1 * (clipped**2).sum().item(), rel_tol=1e-5)
            torch.testing.assert_close(
                obs[0, 0], torch.as_tensor(expected_obs, dtype=torch.float32), rtol=0, atol=0
            )
            assert not done.any()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_batched_half_cheetah_resets_as_gymnasium_does():
    """qpos = qpos0 + U(-0.1, 0.1), qvel = 0.1 N(0, 1), per copy (Gymnasium's reset_model)."""
    env = envs.HalfCheetahVel(workers=1)
    env.set_tasks(torch.zeros(10, 1))
    reset = env.reset(50, torch.Generator().manual_seed(0)).reshape(-1, 17)
    drawn = env.initial_observations(500, torch.Generator().manual_seed(1))  # a learned model's starts
    for obs in (reset.double(), drawn.double()):
        position, velocity = obs[:, :8] - torch.as_tensor(env._vector.init_qpos[1:]), obs[:, 8:]
        assert position.abs().max() <= 0.1 + 1e-6 and position.abs().max() > 0.099
        assert position.var().item() == pytest.approx(0.01 / 3, rel=0.06)  # uniform on [-0.1, 0.1]
        assert velocity.mean().abs() < 0.006 and velocity.std().item() == pytest.approx(0.1, rel=0.04)
    with pytest.raises(MetakitError, match="stepping must be 'batched' or 'gymnasium', got 'threads'"):
        envs.Locomotion("Ant", "velocity", stepping="threads")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_batched_ant_steps_as_gymnasiums_ant_v5():
    """Observations (with the contact forces mj_rnePostConstraint fills), the velocity from the
    torso's position, the control, contact and survive terms and the termination when
    unhealthy, against gymnasium.make("Ant-v5") stepped from the same state."""
    for env, task in ((envs.AntVel(workers=1), 1.5), (envs.AntDir(workers=1), -1.0)):
        env.set_tasks(torch.tensor([[task]]))
        env.reset(1, torch.Generator().manual_seed(0))
        reference = gymnasium.make("Ant-v5")
        reference.reset(seed=3)
        env._vector.set_state(reference.unwrapped.data.qpos[None], reference.unwrapped.data.qvel[None])
        expected = torch.as_tensor(reference.unwrapped._get_obs(), dtype=torch.float32)
        torch.testing.assert_close(env._observe_copies()[0], expected, rtol=0, atol=0)
        steps = 0
        for action in torch.rand(200, 8, generator=torch.Generator().manual_seed(1)) * 2.4 - 1.2:
            obs, reward, _ = env.step(action.view(1, 1, 8))
            expected, _, terminated, _, info = reference.step(action.clamp(-1, 1).numpy())
            v = info["x_velocity"]
            progress = -abs(v - task) if env.goal == "velocity" else task * v
            terms = info["reward_ctrl"] + info["reward_contact"] + info["reward_survive"]
            assert math.isclose(reward.item(), progress + terms, rel_tol=1e-4, abs_tol=1e-4)
            torch.testing.assert_close(
                obs[0, 0], torch.as_tensor(expected, dtype=torch.float32), rtol=0, atol=0
            )
            assert env.terminated.item() == terminated
            steps += 1
            if terminated:
                break
        assert steps >= 20 and info["reward_contact"] != 0.0  # contact forces were really compared


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mujoco_copies_split_over_worker_processes_step_as_one_process():
    from metakit.rl.envs.mujoco_batch import MuJoCoCopies, gymnasium_asset

    path, rng = gymnasium_asset("half_cheetah.xml"), np.random.default_rng(0)
    one, two = MuJoCoCopies(path, 5, 5, workers=1), MuJoCoCopies(path, 5, 5, workers=2)
    qpos, qvel = one.init_qpos + rng.uniform(-0.1, 0.1, (5, 9)), 0.1 * rng.standard_normal((5, 9))
    for copies in (one, two):
        copies.set_state(qpos, qvel)
    for _ in range(100):
        ctrl = rng.uniform(-1, 1, (5, 6))
        one.step(ctrl)
        two.step(ctrl)
    assert np.array_equal(one.qpos, two.qpos) and np.array_equal(one.qvel, two.qvel)
    assert not np.array_equal(one.qpos, qpos)
    two.close()


@pytest.mark.parametrize("stepping", ["batched", "gymnasium"])
def test_mujocos_deprecation_warning_is_a_python_warning_and_writes_no_log_file(stepping, tmp_path):
    # MuJoCo's default handler prints each warning and appends it to MUJOCO_LOG.TXT in the
    # working directory; a fresh process, as the handler is process-wide
    code = (
        "import warnings, torch; from metakit.rl import envs\n"
        "warnings.simplefilter('always')\n"
        f"env = envs.make('HalfCheetah', stepping='{stepping}', workers=2)\n"
        "env.set_tasks(env.sample_tasks(3)); env.reset(2)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert "UserWarning: MuJoCo: compiler attribute 'settotalmass'" in done.stderr
    assert "WARNING: compiler attribute" not in done.stderr  # MuJoCo's own print

"""RL^2: the recurrent policy's memory across episodes and trials, learning on bandits, configs."""
import json

import pytest
import torch

import metakit
from metakit import MetakitError
from metakit.experiment import build, load_config
from metakit.rl import envs
from metakit.rl.classical import play_bandits
from metakit.rl.policies import RecurrentPolicy
from metakit.rl.rl2 import RL2
from metakit.rl.sampling import sample_trials


def _trials(episodes=3, horizon=4, tasks=5, seed=0):
    torch.manual_seed(seed)
    env = envs.TabularMDP(states=3, actions=2, horizon=horizon)
    policy = RecurrentPolicy(3, 2, hidden=16)
    trials = sample_trials(env, policy, env.sample_tasks(tasks, torch.Generator().manual_seed(1)), episodes,
                           torch.Generator().manual_seed(2))
    return env, policy, trials


def test_hidden_state_runs_through_the_trial_across_episode_boundaries():
    env, policy, trials = _trials()
    assert trials.actions.shape == (5, 12)
    # the log-probabilities recorded step by step while sampling are those of one GRU pass over
    # the whole trial: the sampler carried the hidden state over the episode boundaries
    log_probs, _, _ = policy(trials.inputs)
    recorded = log_probs.gather(-1, trials.actions[..., None]).squeeze(-1)
    torch.testing.assert_close(recorded, trials.log_probs)
    # and a fresh state at each episode start would give other outputs from step 4 on
    restarted = torch.cat([policy(trials.inputs[:, 4 * e:4 * e + 4])[0] for e in range(3)], dim=1)
    assert not torch.allclose(restarted[:, 4:], log_probs[:, 4:], atol=1e-4)
    assert torch.allclose(restarted[:, :4], log_probs[:, :4])
    # what happened in episode 1 changes what the policy does in episode 2
    changed = trials.inputs.clone()
    changed[:, 2, -2] += 5.0  # a different reward seen at step 3 of episode 1
    assert not torch.allclose(policy(changed)[0][:, 4], log_probs[:, 4], atol=1e-4)


def test_done_flag_and_previous_action_mark_episode_boundaries():
    _, _, trials = _trials()
    done = trials.inputs[..., -1]
    # done is read one step late: the first step of each later episode sees the previous end
    assert done[:, [4, 8]].eq(1).all() and done[:, [0, 1, 2, 3, 5, 6, 7, 9, 10, 11]].eq(0).all()
    prev_action = trials.inputs[..., 3:5]
    assert prev_action[:, 0].eq(0).all()  # nothing before the first step
    assert torch.equal(prev_action[:, 1:].argmax(-1), trials.actions[:, :-1])


def test_hidden_state_resets_between_trials():
    env, policy, first = _trials(tasks=5)
    # a second trial on other tasks, sampled right after: its first step cannot depend on the first trial
    second = sample_trials(env, policy, env.sample_tasks(5, torch.Generator().manual_seed(7)), 3,
                           torch.Generator().manual_seed(3))
    fresh, _, _ = policy(second.inputs[:, :1])
    torch.testing.assert_close(
        fresh.gather(-1, second.actions[:, :1, None]).squeeze(-1), second.log_probs[:, :1]
    )
    torch.testing.assert_close(first.inputs[:, 0], second.inputs[:, 0])


def test_short_rl2_run_on_two_armed_bandits_beats_random_by_a_wide_margin():
    torch.manual_seed(0)
    env = envs.BernoulliBandit(arms=2)
    algo = RL2(RecurrentPolicy(1, 2, hidden=64), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    test_tasks = env.sample_tasks(2000, torch.Generator().manual_seed(9))
    for _ in range(80):  # the gain over random plateaus at 0.73-0.75 from iteration 60 to 150
        algo.step(env, 128, 10, generator)
    rl2 = algo.evaluate(env, test_tasks, 10, torch.Generator().manual_seed(1)).mean().item()
    random = play_bandits("random", test_tasks, 10, torch.Generator().manual_seed(1)).mean().item()
    gittins = play_bandits("gittins", test_tasks, 10, torch.Generator().manual_seed(1)).mean().item()
    # random earns 5 of 10 pulls; the Bayes-optimal index about 6.5: RL^2 closes most of the gap
    assert rl2 > random + 0.6, (rl2, random, gittins)


def test_rl2_trpo_step_keeps_the_kl_bound():
    torch.manual_seed(0)
    env = envs.BernoulliBandit(arms=3)
    algo = RL2(RecurrentPolicy(1, 3, hidden=16), optimizer="trpo", max_kl=0.01)
    info = algo.step(env, 32, 5, torch.Generator().manual_seed(0))
    assert info["kl"] <= 0.01 and (info["accepted"] is False or info["loss_after"] < info["loss_before"])
    # TRPO moves the GRU and the policy head without .grad; Adam fits the value head alone, so
    # nothing else may hold a gradient (the GRU's used to grow with every iteration)
    algo.step(env, 32, 5, torch.Generator().manual_seed(1))
    for name, param in algo.policy.named_parameters():
        assert (param.grad is not None) == name.startswith("value."), name


def test_rl2_errors_are_clear():
    with pytest.raises(MetakitError, match=r"RL\^2 optimizer must be 'ppo' or 'trpo', got 'adam'"):
        RL2(RecurrentPolicy(1, 2), optimizer="adam")
    with pytest.raises(MetakitError, match=r"needs a discrete-action environment, got Navigation2D"):
        sample_trials(envs.Navigation2D(), RecurrentPolicy(2, 2), torch.zeros(2, 2), 1)
    with pytest.raises(
        MetakitError, match=r"'algorithm.name' rl2 needs a discrete-action env .* got Navigation2D"
    ):
        build(load_config("rl2-bandits", ["env.name=Navigation2D", "env.arms=null"]))
    with pytest.raises(MetakitError, match=r"'env.arms' applies to BernoulliBandit, not to TabularMDP"):
        build(load_config("rl2-mdp", ["env.arms=3"]))
    with pytest.raises(MetakitError, match=r"episodes of one length; CartPole ended"):
        env = envs.CartPole(horizon=200)
        sample_trials(env, RecurrentPolicy(4, 2), env.sample_tasks(64, torch.Generator().manual_seed(0)), 1)


def test_rl2_resumes_after_a_kill_to_the_same_weights_and_optimizer(tmp_path, whole_and_resumed_runs):
    small = [
        "policy.recurrent_size=16",
        "train.meta_batch_size=16",
        "train.checkpoint_every=5",
        "eval.num_tasks=50",
    ]
    whole, killed = whole_and_resumed_runs("rl2-bandits", small, 25, tmp_path)
    for a, b in zip(metakit.load(whole).policy.parameters(), metakit.load(killed).policy.parameters()):
        assert torch.equal(a, b)  # Adam's moments were restored too, or the steps after the resume differ
    # metakit.load gives the trained RL^2 back: its policy plays new bandits as results.json says
    algo = metakit.load(whole)
    assert isinstance(algo.policy, RecurrentPolicy) and algo.config.train.episodes == 10
    assert algo.evaluate()["trial_return"] == json.loads((whole / "results.json").read_text())["trial_return"]


def test_value_head_keeps_its_predictions_when_the_return_scale_changes_and_fits_long_trials():
    env, policy, trials = _trials()
    before = policy(trials.inputs)[1]
    policy.rescale_values(37.0)
    torch.testing.assert_close(policy(trials.inputs)[1], before)
    assert policy.return_scale.item() == 37.0 and "return_scale" in policy.state_dict()  # checkpointed
    # 100-step MDP trials have returns near 60: the value head must get there in a few iterations
    torch.manual_seed(0)
    env = envs.TabularMDP()
    algo = RL2(RecurrentPolicy(env.observation_size, env.action_size, hidden=64), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = [algo.step(env, 64, 10, generator)["value_loss"] for _ in range(14)]
    # value_loss is in units of the returns' variance: 1 is a constant's, ~0.2 the best use of the time step
    assert losses[0] > 0.8 and max(losses[-3:]) < 0.5, losses

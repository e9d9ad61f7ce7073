"""User mistakes give a MetakitError naming the value and what was expected."""
import pytest
import torch
import torch.nn.functional as F

import metakit
from metakit import MAML, MetakitError, TaskBatch


def test_support_query_shape_mismatch():
    with pytest.raises(
        MetakitError, match=r"support_x has shape \(2, 5, 1\) and support_y has shape \(2, 4, 1\)"
    ):
        TaskBatch(torch.zeros(2, 5, 1), torch.zeros(2, 4, 1), torch.zeros(2, 5, 1), torch.zeros(2, 5, 1))
    with pytest.raises(MetakitError, match="support has 2 tasks but query has 3"):
        TaskBatch(torch.zeros(2, 5, 1), torch.zeros(2, 5, 1), torch.zeros(3, 5, 1), torch.zeros(3, 5, 1))
    with pytest.raises(MetakitError, match="query_x examples have shape"):
        TaskBatch(torch.zeros(2, 5, 1), torch.zeros(2, 5, 1), torch.zeros(2, 5, 3), torch.zeros(2, 5, 1))


def test_missing_task_dimension():
    with pytest.raises(MetakitError, match=r"shape \(5,\); expected \[tasks, examples"):
        TaskBatch(torch.zeros(5), torch.zeros(5), torch.zeros(5), torch.zeros(5))
    maml = MAML(metakit.nets.MLP(1, [4], 1), F.mse_loss, 0.1)
    with pytest.raises(MetakitError, match="expected the same \\[tasks, examples\\]"):
        maml.adapt(torch.zeros(5), torch.zeros(5))


@pytest.mark.parametrize("lr", [-0.1, float("nan"), "0.1"])
def test_bad_learning_rate(lr):
    with pytest.raises(MetakitError, match="inner_lr must be a finite number >= 0"):
        MAML(metakit.nets.MLP(1, [4], 1), F.mse_loss, lr)


def test_unknown_adapt_param_lists_the_real_ones():
    with pytest.raises(MetakitError, match=r"'head' matches no trainable parameter.*'0.weight'"):
        MAML(metakit.nets.MLP(1, [4], 1), F.mse_loss, 0.1, adapt_params=["head"])


def test_loss_that_is_not_a_scalar():
    maml = MAML(metakit.nets.MLP(1, [4], 1), lambda p, y: (p - y) ** 2, 0.1)
    batch = metakit.tasks.Sinusoid().sample(2)
    with pytest.raises(MetakitError, match="loss_fn returned shape"):
        maml.meta_loss(batch)


def test_not_a_task_batch():
    maml = MAML(metakit.nets.MLP(1, [4], 1), F.mse_loss, 0.1)
    with pytest.raises(MetakitError, match="expected a metakit.TaskBatch, got tuple"):
        maml.meta_loss((1, 2, 3, 4))


def test_bad_sinusoid_arguments():
    with pytest.raises(MetakitError, match="support_shots must be an integer >= 1, got 0"):
        metakit.tasks.Sinusoid(support_shots=0)


def test_float_images_are_used_as_they_are_not_divided_by_255_again():
    images = torch.rand(6, 4, 8, 8)  # floats in [0, 1]
    batch = metakit.tasks.FewShotClassification(images, ways=2, shots=1, queries=1).sample(3)
    assert batch.support_x.max() > 0.5  # divided by 255, every pixel would be below 0.004
    pixels = {round(v, 6) for v in images.flatten().tolist()}
    assert all(round(v, 6) in pixels for v in batch.query_x.flatten()[:50].tolist())
    with pytest.raises(
        MetakitError, match=r"float images must lie in \[0, 1\].*got values in \[0.0[0-9]*, 254"
    ):
        metakit.tasks.FewShotClassification(images * 255, ways=2)
    with pytest.raises(MetakitError, match="images must be uint8 .* got torch.int64"):
        metakit.tasks.FewShotClassification(images.long(), ways=2)


def test_metric_learners_check_their_scale_and_query_labels():
    for scale in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(MetakitError, match="scale .* must be a finite number > 0"):
            metakit.MatchingNetwork(torch.nn.Identity(), scale=scale)
    net = metakit.PrototypicalNetwork(torch.nn.Identity())
    x = torch.rand(1, 2, 3)
    with pytest.raises(
        MetakitError, match=r"query labels must be among the support labels 0..1, got values in \[0, 2\]"
    ):
        net.loss(TaskBatch(x, torch.tensor([[0, 1]]), x, torch.tensor([[0, 2]])))
    with pytest.raises(MetakitError, match="integer query labels"):
        net.loss(TaskBatch(x, torch.tensor([[0, 1]]), x, torch.tensor([[0.0, 1.0]])))


def test_meta_rl_entry_points_check_their_arguments():
    from metakit.rl import MAMLTRPO, envs
    from metakit.rl.classical import play_bandits
    from metakit.rl.policies import RecurrentPolicy
    from metakit.rl.rl2 import RL2

    policy = metakit.rl.policies.GaussianMLPPolicy(2, 2)
    for key, value, expected in (
        ("gamma", 1.5, r"in \(0, 1\]"),
        ("gamma", 0.0, r"in \(0, 1\]"),
        ("gae_lambda", -0.1, r"in \[0, 1\]"),
        ("max_kl", 0.0, "finite and > 0"),
        ("max_kl", float("nan"), "finite and > 0"),
    ):
        with pytest.raises(MetakitError, match=f"{key} must be {expected}"):
            MAMLTRPO(policy, **{key: value})
    with pytest.raises(MetakitError, match="fast_lr must be a finite number >= 0, got nan"):
        MAMLTRPO(policy, fast_lr=float("nan"))
    for key in ("epochs", "minibatches"):
        with pytest.raises(MetakitError, match=rf"RL\^2 {key} must be an integer >= 1, got 0"):
            RL2(RecurrentPolicy(1, 2, hidden=4), **{key: 0})
    for env in (envs.Navigation2D, envs.TabularMDP, envs.CartPole, envs.Pendulum):
        with pytest.raises(MetakitError, match="horizon must be an integer >= 1, got 0"):
            env(horizon=0)
    with pytest.raises(MetakitError, match="pulls must be an integer >= 1, got 0"):
        play_bandits("ucb1", torch.rand(3, 2), 0)

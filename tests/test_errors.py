"""User mistakes give a MetakitError naming the value and what was expected."""
import pytest
import torch
import torch.nn.functional as F

import metakit
from metakit import MAML, MetakitError, TaskBatch


def test_support_query_shape_mismatch():
    with pytest.raises(MetakitError, match=r"support_x has shape \(2, 5, 1\) and support_y has shape \(2, 4, 1\)"):
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

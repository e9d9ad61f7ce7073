import pytest
import torch
from torch import nn

from metakit import MetakitError, Reptile, TaskBatch


class Point(nn.Module):
    """A model that ignores x and predicts its parameter theta."""

    def __init__(self, dim):
        super().__init__()
        self.theta = nn.Parameter(torch.randn(dim))

    def forward(self, x):
        return self.theta.expand(x.shape[0], -1)


def half_squared(prediction, target):
    return 0.5 * ((prediction - target) ** 2).sum(-1).mean()


def quadratic_batch(centres):
    tasks, dim = centres.shape
    y = centres[:, None, :].expand(tasks, 3, dim)
    return TaskBatch(torch.zeros(tasks, 3, 1), y, torch.zeros(tasks, 3, 1), y)


def test_update_on_quadratics_equals_closed_form():
    # SGD on 0.5 |theta - c|^2 for k steps: phi = c + (1 - a)^k (theta - c), so the update is
    # theta + eps * (1 - (1 - a)^k) * (mean(c) - theta)
    model = Point(4)
    centres = torch.randn(6, 4)
    a, k, eps = 0.3, 5, 0.7
    theta0 = model.theta.detach().clone()
    reptile = Reptile(model, half_squared, inner_lr=a, inner_steps=k, meta_step_size=eps)
    reptile.step(quadratic_batch(centres))
    expected = theta0 + eps * (1 - (1 - a) ** k) * (centres.mean(0) - theta0)
    torch.testing.assert_close(model.theta.detach(), expected)


def test_linear_annealing_of_the_outer_step():
    model = Point(2)
    reptile = Reptile(model, half_squared, 0.1, 1, meta_step_size=1.0, meta_step_size_final=0.0,
                      total_iterations=4)
    sizes = []
    for _ in range(5):
        sizes.append(reptile.current_step_size())
        reptile.step(quadratic_batch(torch.randn(2, 2)))
    assert sizes == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert int(reptile.state_dict()["iteration"]) == 5  # checkpointed with the model


def test_annealing_without_total_iterations_is_an_error():
    with pytest.raises(MetakitError, match="total_iterations"):
        Reptile(Point(2), half_squared, 0.1, 1, meta_step_size=1.0, meta_step_size_final=0.1)

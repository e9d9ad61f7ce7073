"""Batches of optimisation problems for learned optimisers: P independent problems whose
parameters are one tensor [P, size], so stepping all of them is one tensor computation.

Every family has the same interface:
    theta = problems.init(generator)          # [P, size], the starting point of each problem
    problems.loss(theta, generator) -> [P]    # what an optimiser sees (a minibatch loss)
    problems.objective(theta) -> [P]          # what is reported (the full-data loss)

Random numbers are drawn problem-first (`distributed.for_tasks`): built inside
`distributed.task_share(total)`, P problems are this rank's rows of the `total` one process
would build, with the same starts and minibatches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import distributed
from ..errors import MetakitError

ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu}


def _check_theta(theta: torch.Tensor, num_problems: int, size: int) -> None:
    if not isinstance(theta, torch.Tensor) or theta.shape != (num_problems, size):
        raise MetakitError(f"theta must be [problems, size] = {(num_problems, size)}, got "
                           f"{tuple(getattr(theta, 'shape', ()))}")


class QuadraticProblems:
    """f_i(theta) = ||W_i theta - y_i||^2 with W_i [dims, dims] and y_i [dims] i.i.d. N(0, 1)
    (Andrychowicz et al. 2016, section 3.1); theta starts at N(0, 0.01^2) as in their code."""

    def __init__(self, num_problems: int, dims: int = 10, generator: torch.Generator | None = None,
                 device: str = "cpu"):
        self.num_problems, self.size = num_problems, dims
        self.W = distributed.randn(num_problems, dims, dims, generator=generator).to(device)
        self.y = distributed.randn(num_problems, dims, generator=generator).to(device)

    def init(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return 0.01 * distributed.randn(self.num_problems, self.size, generator=generator).to(self.W.device)

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        _check_theta(theta, self.num_problems, self.size)
        residual = torch.einsum("pij,pj->pi", self.W, theta) - self.y
        return residual.square().sum(-1)

    def loss(self, theta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.objective(theta)  # deterministic: the optimiser sees the objective itself


class MLPProblems:
    """P classifiers (an MLP each, weights and biases N(0, 0.01^2) as in Andrychowicz et al.'s
    code) on one dataset; each step's loss is the cross-entropy of a fresh minibatch drawn with
    replacement, independently per problem."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_problems: int,
                 hidden_sizes: list[int] = (20,), activation: str = "sigmoid", batch_size: int = 128,
                 classes: int | None = None, generator: torch.Generator | None = None):
        if activation not in ACTIVATIONS:
            raise MetakitError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if images.dim() != 2 or labels.shape != images.shape[:1]:
            raise MetakitError(f"images must be [examples, features] with labels [examples], got "
                               f"{tuple(images.shape)} and {tuple(labels.shape)}")
        self.images, self.labels = images.to(torch.get_default_dtype()), labels.long()
        self.classes = classes or int(labels.max()) + 1
        self.num_problems, self.batch_size = num_problems, batch_size
        self.activation = ACTIVATIONS[activation]
        widths = [images.shape[1], *hidden_sizes, self.classes]
        self.shapes = list(zip(widths[:-1], widths[1:]))
        self.size = sum(n_in * n_out + n_out for n_in, n_out in self.shapes)

    def init(self, generator: torch.Generator | None = None) -> torch.Tensor:
        theta = 0.01 * distributed.randn(self.num_problems, self.size, generator=generator)
        return theta.to(self.images.device)

    def logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x [P, B, features] (or [B, features], shared by all problems) -> [P, B, classes]."""
        start = 0
        for i, (n_in, n_out) in enumerate(self.shapes):
            weight = theta[:, start:start + n_in * n_out].view(-1, n_in, n_out)
            bias = theta[:, start + n_in * n_out:start + (n_in + 1) * n_out].unsqueeze(1)
            start += (n_in + 1) * n_out
            x = torch.matmul(x, weight) + bias
            if i < len(self.shapes) - 1:
                x = self.activation(x)
        return x

    def loss(self, theta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_theta(theta, self.num_problems, self.size)
        draw = lambda n: torch.randint(len(self.labels), (n, self.batch_size), generator=generator)  # noqa: E731
        index = distributed.for_tasks(draw, self.num_problems).to(self.images.device)
        logits = self.logits(theta, self.images[index])
        return F.cross_entropy(logits.flatten(0, 1), self.labels[index].flatten(),
                               reduction="none").view(self.num_problems, -1).mean(1)

    def objective(self, theta: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        _check_theta(theta, self.num_problems, self.size)
        total = 0.0
        for start in range(0, len(self.labels), chunk):
            x, y = self.images[start:start + chunk], self.labels[start:start + chunk]
            logits = self.logits(theta, x)
            total = total + F.cross_entropy(logits.transpose(1, 2), y.expand(self.num_problems, -1),
                                            reduction="none").sum(1)
        return total / len(self.labels)

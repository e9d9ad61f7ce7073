"""Independent MLPs as one module, stepped as one tensor computation: the actors of a batch of
tasks (Meta-Critic), the models of a dynamics ensemble (MB-MPO)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import distributed
from ..errors import MetakitError


class BatchedMLP(nn.Module):
    """`num_tasks` independent MLPs as one module: weights [T, in, out]; x [T, N, in] ->
    [T, N, out]. Each task's layers start as nn.Linear's would (U(+-1/sqrt(fan_in))), and
    a loss summed over tasks gives each task's slice its own gradient. Drawn task-first: built
    inside `distributed.task_share`, the networks are this rank's of the whole batch's. `weight_norm`: each
    layer's weight is g * v / ||v|| per output unit (Salimans & Kingma 2016; g and v learned,
    g starting at ||v|| so the network starts as without it), as MB-MPO's official models are."""

    def __init__(self, num_tasks: int, sizes: list[int], generator: torch.Generator | None = None,
                 weight_norm: bool = False):
        super().__init__()
        if num_tasks < 1 or len(sizes) < 2 or min(sizes) < 1:
            raise MetakitError(
                f"BatchedMLP needs num_tasks >= 1 and sizes [in, ..., out] >= 1, got {num_tasks!r}, {sizes!r}"
            )
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(n_in)
            self.weights.append(
                nn.Parameter((distributed.rand(num_tasks, n_in, n_out, generator=generator) * 2 - 1) * bound)
            )
            self.biases.append(
                nn.Parameter((distributed.rand(num_tasks, 1, n_out, generator=generator) * 2 - 1) * bound)
            )
        self.gains = nn.ParameterList(
            [nn.Parameter(w.detach().norm(dim=1, keepdim=True)) for w in self.weights] if weight_norm else []
        )

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """x [T, N, in] -> [T, N, out], network t on x[t]; with `index` (long [B]), network
        index[b] on x[b] (x [B, N, in]): several rows may share a network."""
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if len(self.gains):  # [T, 1, out] gains times unit-norm columns
                weight = self.gains[i] * weight / weight.norm(dim=1, keepdim=True)
            if index is not None:
                weight, bias = weight[index], bias[index]
            x = torch.baddbmm(bias, x, weight)
            if i < len(self.weights) - 1:
                x = torch.relu(x)
        return x

"""Meta-Critic Networks (Sung et al. 2017): a critic shared by all tasks, told which task it is
judging by an embedding z that a task encoder computes from a short history of the task. A
fresh actor for a new task learns from the frozen critic alone.

    z     = TaskEncoder(history)        TAEN: LSTM (30 units) over the history, linear to z (3-d)
    value = MetaValueNetwork(inputs, z)  MVN: MLP (inputs + z, 80, 80, 1), ReLU
    critic step: MVN and TAEN regress value onto what was observed (sine: -(y - y_hat)^2)
    actor step:  each task's actor ascends the critic's value of its own output (sine: the
                 actor never sees a label, so unlabelled inputs suffice at test time)

The actors of a batch of tasks are one module, `BatchedMLP`, stepped by one optimiser.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MetakitError


class BatchedMLP(nn.Module):
    """`num_tasks` independent MLPs as one module: weights [T, in, out]; x [T, N, in] ->
    [T, N, out]. Each task's layers start as nn.Linear's would (U(+-1/sqrt(fan_in))), and
    a loss summed over tasks gives each task's slice its own gradient."""

    def __init__(self, num_tasks: int, sizes: list[int], generator: torch.Generator | None = None):
        super().__init__()
        if num_tasks < 1 or len(sizes) < 2 or min(sizes) < 1:
            raise MetakitError(f"BatchedMLP needs num_tasks >= 1 and sizes [in, ..., out] >= 1, got "
                               f"{num_tasks!r}, {sizes!r}")
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(n_in)
            self.weights.append(nn.Parameter((torch.rand(num_tasks, n_in, n_out, generator=generator) * 2 - 1)
                                             * bound))
            self.biases.append(nn.Parameter((torch.rand(num_tasks, 1, n_out, generator=generator) * 2 - 1)
                                            * bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias, x, weight)
            if i < len(self.weights) - 1:
                x = torch.relu(x)
        return x


class TaskEncoder(nn.Module):
    """TAEN: history [T, L, features] -> z [T, z_size], from the LSTM's last step."""

    def __init__(self, input_size: int, hidden_size: int = 30, z_size: int = 3):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, z_size)
        self.input_size, self.z_size = input_size, z_size

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        if history.dim() != 3 or history.shape[-1] != self.input_size or history.shape[1] < 1:
            raise MetakitError(f"the task history must be [tasks, steps >= 1, {self.input_size}], got "
                               f"{tuple(history.shape)}")
        features, _ = self.lstm(history)
        return self.out(features[:, -1])


class MetaCritic(nn.Module):
    """MVN and TAEN together: value(inputs [T, N, d], z [T, z_size]) -> [T, N]."""

    def __init__(self, input_size: int, history_size: int, hidden_size: int = 80, encoder_size: int = 30,
                 z_size: int = 3):
        super().__init__()
        self.encoder = TaskEncoder(history_size, encoder_size, z_size)
        self.value_net = nn.Sequential(nn.Linear(input_size + z_size, hidden_size), nn.ReLU(),
                                       nn.Linear(hidden_size, hidden_size), nn.ReLU(),
                                       nn.Linear(hidden_size, 1))
        self.input_size = input_size

    def value(self, inputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_size or z.shape != (inputs.shape[0],
                                                                                    self.encoder.z_size):
            raise MetakitError(f"value needs inputs [tasks, N, {self.input_size}] and z [tasks, "
                               f"{self.encoder.z_size}], got {tuple(inputs.shape)} and {tuple(z.shape)}")
        z = z[:, None].expand(-1, inputs.shape[1], -1)
        return self.value_net(torch.cat([inputs, z], -1)).squeeze(-1)


def critic_regression_step(critic: MetaCritic, optimizer, inputs, z, targets) -> float:
    """One step of MVN and TAEN on the squared error between value(inputs, z) and the observed
    targets [T, N]; z = critic.encoder(history), computed with its graph so the TAEN learns."""
    loss = F.mse_loss(critic.value(inputs, z), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def regression_actor_step(critic: MetaCritic, actors: BatchedMLP, optimizer, x: torch.Tensor,
                          z: torch.Tensor) -> torch.Tensor:
    """One step of each task's actor up the critic's value of its predictions at x [T, N, 1]
    (no label involved; the critic is only read). Returns the predictions, detached."""
    prediction = actors(x)
    value = critic.value(torch.cat([x, prediction], -1), z.detach())
    optimizer.zero_grad(set_to_none=True)
    (-value.mean(1).sum()).backward(inputs=list(actors.parameters()))  # each task its own gradient
    optimizer.step()
    return prediction.detach()


def train_regression_actors(critic: MetaCritic, z: torch.Tensor, sample_x, steps: int, lr: float = 0.01,
                            generator: torch.Generator | None = None) -> BatchedMLP:
    """Meta-test (the paper's Algorithm 2): fresh actors for tasks with embeddings z [T, z],
    trained for `steps` steps against the frozen critic on unlabelled inputs sample_x(generator)
    [T, N, 1]. MVN and TAEN are not changed."""
    if steps < 0:
        raise MetakitError(f"steps must be >= 0, got {steps!r}")
    actors = BatchedMLP(z.shape[0], [1, 40, 40, 1], generator).to(z.device)
    optimizer = torch.optim.Adam(actors.parameters(), lr=lr)
    for _ in range(steps):
        regression_actor_step(critic, actors, optimizer, sample_x(generator), z)
    return actors

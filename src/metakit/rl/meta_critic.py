"""Meta-Critic Networks (Sung et al. 2017): a critic shared by all tasks, told which task it is
judging by an embedding z that a task encoder computes from a short history of the task. A
fresh actor for a new task learns from the frozen critic alone.

    z     = TaskEncoder(history)        TAEN: LSTM (30 units) over the history, linear to z (3-d)
    value = MetaValueNetwork(inputs, z)  MVN: MLP (inputs + z, 80, 80, 1), ReLU
    critic step: MVN and TAEN regress value onto what was observed (sine: -(y - y_hat)^2)
    actor step:  each task's actor ascends the critic's value of its own output (sine: the
                 actor never sees a label, so unlabelled inputs suffice at test time); in RL,
                 advantage actor-critic with the critic's V(s, z) (cart-pole) or policy
                 gradient on the critic's Q(a, z) (bandits)

The actors of a batch of tasks are one module, `BatchedMLP`, stepped by one optimiser.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..errors import MetakitError
from ..nets.batched import BatchedMLP
from .envs.base import TaskEnv


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
    distributed.average_gradients(critic.parameters())  # under torchrun: each rank held its share of tasks
    optimizer.step()
    return distributed.average(loss.detach())


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


# -- reinforcement learning: actors are BatchedMLPs that output action logits -----------------
def sample_actions(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One action per row of logits [T, ..., A]: long [T, ...], by the inverse CDF of a uniform
    draw made task-first (the same actions for a task on any number of torchrun ranks)."""
    return distributed.categorical(torch.softmax(logits, -1), generator)


def clip_grad_norm_per_task(module: BatchedMLP, max_norm: float) -> None:
    """clip_grad_norm_ for each task's slice of a BatchedMLP, as if each were its own network."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    norms = torch.stack([g.flatten(1).square().sum(1) for g in grads]).sum(0).sqrt()  # [T]
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))


@dataclass
class Chunk:
    states: torch.Tensor  # [T, n, obs]
    actions: torch.Tensor  # [T, n] long
    rewards: torch.Tensor  # [T, n]: +1 a step, failure_reward on the step the episode failed
    mask: torch.Tensor  # [T, n] float: 1 where the step was taken
    failed: torch.Tensor  # [T] bool: the episode ended inside the chunk (no bootstrap)
    last: torch.Tensor  # [T, obs]: the state after the chunk, to bootstrap from

    def to(self, device) -> Chunk:
        return Chunk(*(getattr(self, f.name).to(device) for f in fields(self)))


class ContinuingEpisodes:
    """One episode per task that runs on across chunks of n steps and restarts when it fails
    (the authors' cart-pole sampling: a chunk stops at a failure). `games` [T] counts the
    episodes each task has started; `history` [T, L, obs + A + 1] holds the last L (s, one-hot
    a, r) transitions, across chunk and episode boundaries, for the task encoder."""

    def __init__(self, env: TaskEnv, tasks: torch.Tensor, history: int, failure_reward: float = -10.0,
                 generator: torch.Generator | None = None):
        if not env.discrete:
            raise MetakitError(f"ContinuingEpisodes needs a discrete-action env, got {type(env).__name__}")
        env.set_tasks(tasks)
        self.env, self.failure_reward = env, failure_reward
        self.obs = env.reset(1, generator)[:, 0]  # [T, obs]
        self.games = torch.ones(tasks.shape[0])
        self.history = torch.zeros(tasks.shape[0], history, env.observation_size + env.action_size + 1)

    @torch.no_grad()
    def chunk(self, actors: BatchedMLP, steps: int, generator: torch.Generator | None = None) -> Chunk:
        env, states, actions, rewards, masks = self.env, [], [], [], []
        alive = torch.ones(self.obs.shape[0], dtype=torch.bool)
        for _ in range(steps):
            # the actors may be on a GPU; the episodes stay on the CPU, actions drawn there
            logits = actors(self.obs[:, None].to(actors.weights[0].device))[:, 0]
            action = sample_actions(logits.cpu(), generator)
            obs, _, done = env.step(action[:, None], generator)
            failed = env.terminated[:, 0] & alive
            reward = torch.where(failed, self.failure_reward, 1.0)
            states.append(self.obs)
            actions.append(action)
            rewards.append(reward)
            masks.append(alive.float())
            step = torch.cat([self.obs, F.one_hot(action, env.action_size).float(), reward[:, None]], -1)
            shifted = torch.cat([self.history[:, 1:], step[:, None]], 1)
            self.history = torch.where(alive[:, None, None], shifted, self.history)
            self.obs = torch.where(alive[:, None], obs[:, 0], self.obs)
            alive = alive & ~done[:, 0]
            if not alive.any():
                break
        ended = ~alive
        chunk = Chunk(torch.stack(states, 1), torch.stack(actions, 1), torch.stack(rewards, 1),
                      torch.stack(masks, 1), env.terminated[:, 0].clone(), self.obs.clone())
        self.games += ended.float()
        self.obs = env.restart(ended[:, None], generator)[:, 0]
        return chunk


def n_step_returns(chunk: Chunk, bootstrap: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted returns within each chunk [T, n], bootstrapped with `bootstrap` [T] where the
    episode did not fail (the authors' 30-step returns)."""
    running = torch.where(chunk.failed, 0.0, bootstrap)
    returns = torch.zeros_like(chunk.rewards)
    for h in reversed(range(chunk.rewards.shape[1])):
        running = torch.where(chunk.mask[:, h] > 0, chunk.rewards[:, h] + gamma * running, running)
        returns[:, h] = running
    return returns


def policy_gradient_loss(actors: BatchedMLP, chunk: Chunk, advantages: torch.Tensor) -> torch.Tensor:
    """-mean over each task's valid steps of log pi(a|s) * advantage, summed over tasks (so each
    task's actor gets its own gradient)."""
    log_probs = torch.log_softmax(actors(chunk.states), -1).gather(-1, chunk.actions[..., None])[..., 0]
    per_task = (log_probs * advantages.detach() * chunk.mask).sum(1) / chunk.mask.sum(1).clamp_min(1)
    return -per_task.sum()


@torch.no_grad()
def greedy_returns(actors: BatchedMLP, env: TaskEnv, tasks: torch.Tensor, episodes: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean undiscounted return [T] of `episodes` greedy (argmax) episodes per task, to env.horizon."""
    env.set_tasks(tasks)
    obs, total = env.reset(episodes, generator), torch.zeros(tasks.shape[0], episodes)
    for _ in range(env.horizon):
        obs, reward, done = env.step(actors(obs.to(actors.weights[0].device)).argmax(-1).cpu(), generator)
        total += reward
        if done.all():
            break
    return total.mean(1)

"""Policies as plain nn.Modules whose forward gives distribution parameters, with the
distribution's maths as pure functions of those outputs, so that a policy can be called
through functional_call with per-task fast weights under vmap.

    out = policy(obs)                  # or functional_call(policy, fast_weights, obs)
    actions = policy.sample(out, generator);  policy.log_prob(out, actions);  policy.kl(old, out)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..errors import MetakitError


class ReLU(nn.Module):
    """max(x, 0) as x times its 0/1 mask: the same numbers as nn.ReLU (up to the sign of zero),
    but its backward (and the double backward of MAML-TRPO's Fisher products) is a multiply,
    where nn.ReLU's threshold_backward ran 2.7x slower on a CPU (8M floats: 11.5 ms against
    4.3); this made a half-cheetah Fisher product 1.3x faster."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (x > 0).to(x.dtype)


ACTIVATIONS = {"relu": ReLU, "tanh": nn.Tanh}


def mlp(inputs: int, hidden: tuple[int, ...], outputs: int, activation: str = "relu") -> nn.Sequential:
    if activation not in ACTIVATIONS:
        raise MetakitError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers, size = [], inputs
    for width in hidden:
        layers += [nn.Linear(size, width), ACTIVATIONS[activation]()]
        size = width
    return nn.Sequential(*layers, nn.Linear(size, outputs))


class GaussianMLPPolicy(nn.Module):
    """Diagonal Gaussian: an MLP gives the mean (100-100 ReLU as in the MAML paper; MB-MPO's
    32-32 tanh), the log standard deviation is a learned vector independent of the state."""

    discrete = False

    def __init__(self, observation_size: int, action_size: int, hidden: tuple[int, ...] = (100, 100),
                 init_std: float = 1.0, activation: str = "relu"):
        super().__init__()
        if init_std <= 0:
            raise MetakitError(f"init_std must be > 0, got {init_std!r}")
        self.mean = mlp(observation_size, tuple(hidden), action_size, activation)
        self.log_std = nn.Parameter(torch.full((action_size,), math.log(init_std)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """[..., 2 * action_size]: mean, then log std (broadcast to the batch)."""
        mean = self.mean(obs)
        return torch.cat([mean, self.log_std.expand_as(mean)], -1)

    @staticmethod
    def _split(out):
        return out.chunk(2, dim=-1)

    @torch.no_grad()
    def act(self, observations: torch.Tensor, deterministic: bool = True, generator=None) -> torch.Tensor:
        """Actions for a batch of observations [..., obs] (numpy arrays too): the mean, or a sample."""
        out = self(torch.as_tensor(observations, dtype=torch.float32))
        return self._split(out)[0] if deterministic else self.sample(out, generator)

    def sample(self, out, generator=None):
        mean, log_std = self._split(out)
        # task-first draws (a task's episodes are the same on any number of ranks, torchrun),
        # from the generator's device (the CPU): the same episodes on any device too
        noise = distributed.randn(*mean.shape, generator=generator, dtype=mean.dtype)
        return mean + log_std.exp() * noise.to(mean.device)

    def log_prob(self, out, actions):
        mean, log_std = self._split(out)
        z = (actions - mean) / log_std.exp()
        return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def kl(self, old, new):
        """KL(old || new) per state."""
        (m0, s0), (m1, s1) = self._split(old), self._split(new)
        return (s1 - s0 + ((2 * s0).exp() + (m0 - m1) ** 2) / (2 * (2 * s1).exp()) - 0.5).sum(-1)

    def fisher_diagonal(self, out):
        """The Fisher information in the outputs (mean, log std): 1 / std^2 and 2."""
        _, log_std = self._split(out)
        return torch.cat([(-2 * log_std).exp(), torch.full_like(log_std, 2.0)], -1)

    def entropy(self, out):
        _, log_std = self._split(out)
        return (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)


class CategoricalMLPPolicy(nn.Module):
    """Categorical over `actions` choices; the MLP gives the logits."""

    discrete = True

    def __init__(self, observation_size: int, actions: int, hidden: tuple[int, ...] = (100, 100)):
        super().__init__()
        self.logits = mlp(observation_size, tuple(hidden), actions)

    def forward(self, obs):
        return self.logits(obs).log_softmax(-1)

    def sample(self, out, generator=None):
        """By the inverse CDF of one uniform draw per choice (task-first, as for Gaussians)."""
        return distributed.categorical(out.exp(), generator)

    def log_prob(self, out, actions):
        return out.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def kl(self, old, new):
        return (old.exp() * (old - new)).sum(-1)

    def fisher_diagonal(self, out):
        """The Fisher information in the log-probabilities: sum_a p_a (d log p_a)(d log p_a)^T."""
        return out.exp()

    def entropy(self, out):
        return -(out.exp() * out).sum(-1)


def policy_for(env, hidden=(100, 100), **kwargs) -> nn.Module:
    """The policy family that fits the environment's action space."""
    if env.discrete:
        return CategoricalMLPPolicy(env.observation_size, env.action_size, hidden)
    return GaussianMLPPolicy(env.observation_size, env.action_size, hidden, **kwargs)


class RecurrentCore(nn.Module):
    """The memory of a trial: a GRU over (observation, previous action, previous reward,
    whether the previous step ended an episode). Its state runs across the episodes of a
    trial. RL^2's policy reads its features; so can a task encoder (Meta-Critic).

    discrete=True: the previous action is an index (one-hot encoded; -1 means none yet);
    False: a vector of `actions` numbers (zeros for none)."""

    def __init__(self, observation_size: int, actions: int, hidden: int = 256, discrete: bool = True):
        super().__init__()
        if hidden < 1 or actions < 1 or observation_size < 1:
            raise MetakitError(f"RecurrentCore needs observation_size, actions and hidden >= 1, got "
                               f"{observation_size!r}, {actions!r}, {hidden!r}")
        self.actions, self.discrete, self.hidden_size = actions, discrete, hidden
        self.input_size = observation_size + actions + 2
        self.gru = nn.GRU(self.input_size, hidden, batch_first=True)

    def inputs(self, obs, prev_action, prev_reward, prev_done) -> torch.Tensor:
        """[..., observation_size + actions + 2], what the GRU reads at one step."""
        if self.discrete:
            taken = (prev_action >= 0)[..., None]
            prev_action = F.one_hot(prev_action.clamp_min(0), self.actions).float() * taken
        return torch.cat([obs, prev_action.float(), prev_reward[..., None], prev_done[..., None].float()], -1)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor | None = None):
        """inputs [B, L, input_size] -> (features [B, L, hidden], state [1, B, hidden])."""
        return self.gru(inputs, hidden)


class RecurrentPolicy(nn.Module):
    """RL^2's policy: a RecurrentCore with a categorical head and a value head."""

    def __init__(self, observation_size: int, actions: int, hidden: int = 256):
        super().__init__()
        if hidden < 1 or actions < 2:
            raise MetakitError(
                f"RecurrentPolicy needs hidden >= 1 and actions >= 2, got {hidden!r}, {actions!r}"
            )
        self.actions = actions
        self.core = RecurrentCore(observation_size, actions, hidden)
        self.logits = nn.Linear(hidden, actions)
        self.value = nn.Linear(hidden, 1)
        # The value head predicts returns in units of `return_scale` (set by RL2 from the returns
        # it sees): trials of 100 steps have returns near 60, which Adam's small steps on a head
        # over tanh-bounded features would take thousands of updates to reach
        self.register_buffer("return_scale", torch.tensor(1.0))

    def inputs(self, obs, prev_action, prev_reward, prev_done) -> torch.Tensor:
        """[..., observation_size + actions + 2]; prev_action -1 means none yet (a zero one-hot)."""
        return self.core.inputs(obs, prev_action, prev_reward, prev_done)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor | None = None):
        """inputs [B, L, in] -> (log-probabilities [B, L, A], values [B, L], hidden [1, B, H])."""
        features, hidden = self.core(inputs, hidden)
        values = self.value(features).squeeze(-1) * self.return_scale
        return self.logits(features).log_softmax(-1), values, hidden

    @torch.no_grad()
    def rescale_values(self, scale: float) -> None:
        """Change `return_scale`, scaling the value head so that its predictions stay the same."""
        ratio = self.return_scale / scale
        self.value.weight.mul_(ratio)
        self.value.bias.mul_(ratio)
        self.return_scale.fill_(scale)

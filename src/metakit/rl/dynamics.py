"""A learned dynamics ensemble (MB-MPO, Clavera et al. 2018): K MLPs that predict the change of
state from (s, a), trained and queried as one batched computation (weights stacked [K, ...]).

    inputs (s, a) and targets s' - s are normalised by the data's mean and std (recomputed at
    each fit, as the official code does); each model has its own random train/validation
    split of the data; Adam on all models at once, each drawing its own minibatches; each
    model keeps the weights of its best validation epoch and stops when that has not improved
    for `patience` epochs (early stopping per model: a stopped model's weights, Adam moments
    and step count stay as they were while the others train on); a later fit starts from the
    current weights and optimiser (warm start).

The official code's stopping rule is also here (`fit(rolling=0.99)`): a model stops when the
running average of its validation loss, avg <- rolling avg + (1 - rolling) loss, rises, and
keeps its last weights; with `weight_norm=True` the models are weight-normalised, as there.
With `precision="bfloat16"` the models' matmuls run under bfloat16 autocast (fitting and
queries; weights and Adam state stay float32).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import distributed
from ..errors import MetakitError
from ..nets.batched import BatchedAdam, BatchedMLP

PRECISIONS = ("float32", "bfloat16")  # of the models' matmuls


class DynamicsEnsemble(nn.Module):
    def __init__(
        self,
        observation_size: int,
        action_size: int,
        models: int = 5,
        hidden_sizes: tuple[int, ...] = (512, 512),
        lr: float = 1e-3,
        generator: torch.Generator | None = None,
        weight_norm: bool = False,
        precision: str = "float32",
    ):
        super().__init__()
        if precision not in PRECISIONS:
            raise MetakitError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        if models < 1 or observation_size < 1 or action_size < 1:
            raise MetakitError(
                f"DynamicsEnsemble needs models, observation_size and action_size >= 1, got "
                f"{models!r}, {observation_size!r}, {action_size!r}"
            )
        self.observation_size, self.action_size, self.models = observation_size, action_size, models
        self.net = BatchedMLP(
            models, [observation_size + action_size, *hidden_sizes, observation_size], generator, weight_norm
        )
        inputs = observation_size + action_size
        for name, size in (
            ("input_mean", inputs),
            ("input_std", inputs),
            ("target_mean", observation_size),
            ("target_std", observation_size),
        ):
            self.register_buffer(name, torch.zeros(size) if name.endswith("mean") else torch.ones(size))
        self.optimizer = BatchedAdam(self.net.parameters(), lr=lr)  # each model its own steps

    def _net(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """The models' forward; with precision "bfloat16" their matmuls run in bfloat16
        (autocast: float32 weights, Adam state and result)."""
        if self.precision == "float32":
            return self.net(x, index)
        with torch.autocast(x.device.type, torch.bfloat16):
            return self.net(x, index).float()

    def _check(self, observations: torch.Tensor, actions: torch.Tensor) -> None:
        if (
            observations.shape[-1] != self.observation_size
            or actions.shape[-1] != self.action_size
            or observations.shape[:-1] != actions.shape[:-1]
        ):
            raise MetakitError(
                f"the ensemble expects observations [..., {self.observation_size}] and actions "
                f"[..., {self.action_size}] with the same leading shape, got "
                f"{tuple(observations.shape)} and {tuple(actions.shape)}"
            )

    def _delta(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Normalised predicted change, each model on its own rows: [K, N, obs] from [K, N, ...]."""
        x = (torch.cat([observations, actions], -1) - self.input_mean) / self.input_std
        return self._net(x)

    def dynamics(
        self, models: torch.Tensor, observations: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """ModelEnv's dynamics: task t's rows observations[t] [E, obs] stepped by model models[t]
        (each task bound to one model, as MB-MPO spreads its tasks over the ensemble)."""
        self._check(observations, actions)
        x = (torch.cat([observations, actions], -1) - self.input_mean) / self.input_std
        share = models.shape[0] // self.models
        if share * self.models == models.shape[0] and torch.equal(
            models, torch.arange(models.shape[0]) % self.models
        ):
            # tasks spread evenly (sample_tasks' order): each model's rows as one batch, no
            # per-task copy of the weights (3.2x faster for 20 tasks x 20 rows on 512-wide models,
            # benchmarks/mbmpo_iteration.py)
            grouped = (
                x.view(share, self.models, *x.shape[1:]).transpose(0, 1).reshape(self.models, -1, x.shape[-1])
            )
            delta = self._net(grouped).view(self.models, share, *x.shape[1:-1], -1).transpose(0, 1)
            delta = delta.reshape(*x.shape[:-1], -1)
        else:
            delta = self._net(x, models)
        return observations + delta * self.target_std + self.target_mean

    def predict(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Next observations [K, N, obs]: model k predicts from observations[k], actions[k]
        ([K, N, ...]); [N, ...] inputs go to every model."""
        self._check(observations, actions)
        if observations.dim() == 2:
            observations = observations.expand(self.models, *observations.shape)
            actions = actions.expand(self.models, *actions.shape)
        if observations.dim() != 3 or observations.shape[0] != self.models:
            raise MetakitError(
                f"predict expects [N, obs] or [{self.models}, N, obs] observations, got "
                f"{tuple(observations.shape)}"
            )
        return observations + self._delta(observations, actions) * self.target_std + self.target_mean

    def fit(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        next_observations: torch.Tensor,
        epochs: int = 50,
        batch_size: int = 500,
        valid_fraction: float = 0.2,
        patience: int = 5,
        generator: torch.Generator | None = None,
        max_updates: int | None = None,
        rolling: float | None = None,
    ) -> dict:
        """Train on transitions [N, ...] (each model its own split) for at most `epochs` epochs
        and `max_updates` Adam steps (a bound on time as the data grows); returns per-model
        validation losses (of the weights kept) and the epochs each trained. `rolling` (in
        (0, 1)) switches from the best-epoch rule to the official running-average rule."""
        if rolling is not None and not 0 < rolling < 1:
            raise MetakitError(f"rolling must be None or in (0, 1), got {rolling!r}")
        self._check(observations, actions)
        if next_observations.shape != observations.shape or observations.dim() != 2:
            raise MetakitError(
                f"fit expects observations and next_observations [N, {self.observation_size}], "
                f"got {tuple(observations.shape)} and {tuple(next_observations.shape)}"
            )
        device = self.input_mean.device  # the data moves to the models; indices are drawn on the CPU
        observations, actions, next_observations = (
            t.to(device) for t in (observations, actions, next_observations)
        )
        n, k = observations.shape[0], self.models
        valid = max(1, int(round(n * valid_fraction)))
        if n - valid < 1:
            raise MetakitError(
                f"fit needs at least 2 transitions to split into train and validation, got {n}"
            )
        inputs = torch.cat([observations, actions], -1)
        targets = next_observations - observations
        with torch.no_grad():  # the data's statistics, a floor on std for constant features
            self.input_mean.copy_(inputs.mean(0))
            self.input_std.copy_(inputs.std(0).clamp_min(1e-6) if n > 1 else torch.ones_like(self.input_std))
            self.target_mean.copy_(targets.mean(0))
            self.target_std.copy_(
                targets.std(0).clamp_min(1e-6) if n > 1 else torch.ones_like(self.target_std)
            )
        x = (inputs - self.input_mean) / self.input_std
        y = (targets - self.target_mean) / self.target_std
        # under torchrun each rank trains its own models (`first:last`) on the draws one process
        # makes for all K, and the ranks agree each epoch whether any model is still improving:
        # weights, Adam state and draws end as one process leaves them
        first, last = distributed.own_range(k) if k >= distributed.world_size() else (0, k)
        mine = None if (first, last) == (0, k) else torch.arange(first, last, device=device)
        order = torch.stack([torch.randperm(n, generator=generator) for _ in range(k)])[first:last].to(device)
        train_index, valid_index = order[:, valid:], order[:, :valid]
        if max_updates is not None:
            epochs = min(epochs, math.ceil(max_updates / math.ceil((n - valid) / batch_size)))
        best = torch.full((k,), math.inf, device=device)  # the validation loss of the weights kept
        best_state = [p.detach().clone() for p in self.net.parameters()]
        since = torch.zeros(k, dtype=torch.long, device=device)
        trained = torch.zeros(k, dtype=torch.long, device=device)
        active = torch.ones(k, dtype=torch.bool, device=device)
        for epoch in range(epochs):
            if not distributed.any_rank(bool(active[first:last].any())):
                break
            trained += active.long()
            shuffled = torch.stack([torch.randperm(n - valid, generator=generator) for _ in range(k)])
            shuffled = train_index.gather(1, shuffled[first:last].to(device))
            for start in range(0, n - valid, batch_size):
                batch = shuffled[:, start : start + batch_size]  # [K, B]: each model its own rows
                loss = (self._net(x[batch], mine) - y[batch]).square().mean((1, 2)).sum()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step(active)  # a stopped model stays as it stopped
            with torch.no_grad():
                losses = torch.full((k,), math.inf, device=device)
                losses[first:last] = (self._net(x[valid_index], mine) - y[valid_index]).square().mean((1, 2))
                if rolling is None:  # keep the best epoch; stop after `patience` epochs without one
                    keep = (losses < best) & active
                    since = torch.where(keep, 0, since + 1)
                    following = since < patience
                else:  # keep the last epoch; stop when the running average rises (official start)
                    if epoch == 0:
                        average, previous = 1.5 * losses, 2.0 * losses
                    average = rolling * average + (1 - rolling) * losses
                    keep, following = active, active & ~(previous < average)
                    previous = average
                best = torch.where(keep, losses, best)
                for saved, p in zip(best_state, self.net.parameters()):
                    saved[keep] = p[keep]
                active = following
        with torch.no_grad():  # each model keeps the weights its rule chose
            for saved, p in zip(best_state, self.net.parameters()):
                p.copy_(saved)
        if mine is not None:  # every rank gets every model, its Adam state and its record
            moments = [v for p in self.net.parameters() for v in self.optimizer.state[p].values()]
            distributed.assemble_rows([*self.net.parameters(), *moments, best, trained], first, last)
        return {"valid_loss": best.tolist(), "epochs": trained.tolist()}

"""A batched environment whose dynamics are a function of tensors, such as a learned model.

MB-MPO's imagined rollouts run here: each task is one member of a dynamics ensemble, and the
reward and termination are known functions of (s, a, s'). Any learner that predicts next
states can be rolled out by `rollout` like a real environment:

    env = ModelEnv(dynamics, reward, initial_state, observation_size=17, action_size=6,
                   horizon=200, num_models=5, bounds=(-100.0, 100.0))
    env.set_tasks(env.sample_tasks(20))      # model indices [T], spread evenly over the models
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ... import distributed
from ...errors import MetakitError, TrainingDiverged
from .base import TaskEnv, check_horizon

Dynamics = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (tasks [T], s, a) -> s'
Transition = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (s, a, s') -> [T, E]


class ModelEnv(TaskEnv):
    discrete = False

    def __init__(
        self,
        dynamics: Dynamics,
        reward: Transition,
        initial_state: Callable[[int, int, torch.Generator | None], torch.Tensor],
        observation_size: int,
        action_size: int,
        horizon: int,
        termination: Transition | None = None,
        num_models: int = 1,
        bounds: tuple[float, float] | None = None,
        device: str | torch.device = "cpu",
    ):
        super().__init__()
        for name, value in (
            ("observation_size", observation_size),
            ("action_size", action_size),
            ("num_models", num_models),
        ):
            if not isinstance(value, int) or value < 1:
                raise MetakitError(f"ModelEnv: {name} must be an integer >= 1, got {value!r}")
        if not all(callable(f) for f in (dynamics, reward, initial_state)) or not (
            termination is None or callable(termination)
        ):
            raise MetakitError(
                "ModelEnv needs callables: dynamics(tasks, s, a), reward(s, a, s'), "
                "initial_state(tasks, episodes, generator) and optionally termination(s, a, s')"
            )
        self.dynamics, self.reward, self.termination, self.initial_state = (
            dynamics,
            reward,
            termination,
            initial_state,
        )
        self.observation_size, self.action_size, self.num_models = observation_size, action_size, num_models
        self.horizon, self.bounds, self.device = check_horizon(horizon), bounds, torch.device(device)

    def sample_tasks(self, num_tasks: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Model indices [T], spread evenly: task i uses model i mod num_models."""
        return torch.arange(num_tasks) % self.num_models

    def _reset(self, episodes: int, generator) -> torch.Tensor:
        # task-first: under torchrun each rank draws the whole batch's start states and keeps its own
        self.state = distributed.for_tasks(
            lambda n: self.initial_state(n, episodes, generator), self.num_tasks
        ).to(self.device)  # drawn on the CPU (its generator), stepped where the dynamics live
        self.done = self.done.to(self.device)
        expected = (self.num_tasks, episodes, self.observation_size)
        if tuple(self.state.shape) != expected:
            raise MetakitError(
                f"ModelEnv: initial_state gave shape {tuple(self.state.shape)}, expected {expected}"
            )
        return self.state.clone()

    def _step(self, actions: torch.Tensor, generator):
        state = self.state
        with torch.no_grad():
            predicted = self.dynamics(self.tasks, state, actions)
        if predicted.shape != state.shape:
            raise MetakitError(
                f"ModelEnv: dynamics gave shape {tuple(predicted.shape)}, expected {tuple(state.shape)}"
            )
        if not torch.isfinite(predicted).all():
            raise TrainingDiverged(
                f"ModelEnv: the dynamics predicted non-finite states at step {self.t + 1} of its episodes"
            )
        if self.bounds is not None:  # a model's prediction far outside the data is noise: keep it sane
            predicted = predicted.clamp(*self.bounds)
        predicted = torch.where(self.done[..., None], state, predicted)  # done episodes stay frozen
        reward = self.reward(state, actions, predicted)
        done = (
            self.termination(state, actions, predicted)
            if self.termination is not None
            else torch.zeros_like(self.done)
        )
        self.state = predicted
        return predicted.clone(), reward, done.bool()

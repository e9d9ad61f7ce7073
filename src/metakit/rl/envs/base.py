"""The batched task environment: T tasks x E episodes stepped at once as tensors.

    env.set_tasks(env.sample_tasks(T, generator))     # per-task parameters [T, ...]
    obs = env.reset(E, generator)                     # [T, E, obs_size]
    obs, reward, done = env.step(actions)             # actions [T, E, A] or [T, E] (discrete)

An episode that is done stays done: its later rewards are 0 and its state is frozen, so a
rollout of `horizon` steps needs no Python per episode (rollout masks the steps after done).
"""
from __future__ import annotations

import torch

from ...errors import MetakitError


def check_horizon(horizon) -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise MetakitError(f"horizon must be an integer >= 1, got {horizon!r}")
    return horizon


class TaskEnv:
    observation_size: int
    action_size: int  # continuous: dimensions; discrete: number of actions
    discrete: bool
    horizon: int
    action_bound: float = 1.0  # continuous: uniformly random actions lie in [-bound, bound]
    # whether every random number of reset and step is drawn task-first (distributed.rand), so
    # that a share of the tasks rolled out on one of N ranks equals one process's (torchrun)
    shardable: bool = True

    def __init__(self):
        self.tasks: torch.Tensor | None = None
        self.done: torch.Tensor | None = None

    # -- what each environment defines -------------------------------------------------------
    def sample_tasks(self, num_tasks: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def _reset(self, episodes: int, generator) -> torch.Tensor:
        raise NotImplementedError

    def _step(self, actions: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _observe(self) -> torch.Tensor:  # envs that observe more or less than their state override it
        return self.state.clone()

    # -- what a learned model of the environment needs (MB-MPO): known functions of one task --
    def known_reward(self, task: torch.Tensor, observations, actions, next_observations) -> torch.Tensor:
        """The reward of task `task` (one row of sample_tasks) as a function of (s, a, s'): [...]."""
        raise MetakitError(f"{type(self).__name__} has no known reward function of (s, a, s'), which a "
                           f"learned model's imagined rollouts need; environments with one: "
                           f"{', '.join(known_reward_environments())}")

    def known_termination(self, task: torch.Tensor, observations, actions, next_observations):
        """Where an episode ends early, as a function of (s, a, s'); None: it never does."""
        return None

    def initial_observations(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`count` draws [count, obs] from the distribution reset() starts episodes in."""
        raise MetakitError(f"{type(self).__name__} does not expose its initial-state distribution")

    # -- the checked public interface --------------------------------------------------------
    def set_tasks(self, tasks: torch.Tensor) -> None:
        if not isinstance(tasks, torch.Tensor) or tasks.dim() < 1 or tasks.shape[0] < 1:
            raise MetakitError(f"{type(self).__name__}.set_tasks expects a tensor [tasks, ...] from "
                               f"sample_tasks, got {getattr(tasks, 'shape', type(tasks).__name__)}")
        self.tasks, self.done = tasks, None

    @property
    def num_tasks(self) -> int:
        if self.tasks is None:
            raise MetakitError(f"{type(self).__name__}: call set_tasks(env.sample_tasks(n)) before reset")
        return self.tasks.shape[0]

    def reset(self, episodes: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """Start `episodes` episodes of every task; observations [T, E, observation_size]."""
        self.num_tasks  # noqa: B018 (raises a clear error when tasks are not set)
        if not isinstance(episodes, int) or episodes < 1:
            raise MetakitError(f"episodes must be an integer >= 1, got {episodes!r}")
        self.episodes, self.t = episodes, 0
        self.done = torch.zeros(self.num_tasks, episodes, dtype=torch.bool)
        return self._reset(episodes, generator)

    def step(self, actions: torch.Tensor, generator: torch.Generator | None = None):
        """(observation [T, E, obs], reward [T, E], done [T, E]); done episodes give reward 0."""
        if self.done is None:
            raise MetakitError(f"{type(self).__name__}: call reset() before step()")
        expected = (self.num_tasks, self.episodes) + (() if self.discrete else (self.action_size,))
        if not isinstance(actions, torch.Tensor) or tuple(actions.shape) != expected:
            raise MetakitError(f"{type(self).__name__}.step expects actions of shape {expected} "
                               f"(tasks, episodes{'' if self.discrete else ', action_size'}), got "
                               f"{tuple(getattr(actions, 'shape', ()))}")
        if self.discrete and (
            actions.dtype != torch.long or actions.min() < 0 or actions.max() >= self.action_size
        ):
            raise MetakitError(
                f"{type(self).__name__}.step expects integer actions in [0, {self.action_size}), "
                f"got {actions.dtype} in [{actions.min().item()}, {actions.max().item()}]"
            )
        was_done = self.done
        obs, reward, done = self._step(actions.detach(), generator)
        self.t += 1
        self.terminated = was_done | done  # the environment's own end, not the time limit
        self.done = self.terminated | (self.t >= self.horizon)
        return obs, reward.masked_fill(was_done, 0.0), self.done.clone()

    def restart(self, ended: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Begin fresh episodes where `ended` [T, E] is True and let the others run on (episodes
        that continue across rollouts, as in actor-critic with n-step chunks). The time limit
        still counts from reset(). For envs whose whole state is `self.state`. Observations
        [T, E, obs]."""
        if self.done is None or not hasattr(self, "state"):
            raise MetakitError(f"{type(self).__name__}.restart needs reset() first and an env whose state "
                               f"is one tensor `state`")
        if not isinstance(ended, torch.Tensor) or ended.shape != self.done.shape or ended.dtype != torch.bool:
            raise MetakitError(f"restart expects a bool mask of shape {tuple(self.done.shape)}, got "
                               f"{getattr(ended, 'dtype', type(ended).__name__)} "
                               f"{tuple(getattr(ended, 'shape', ()))}")
        running = self.state
        self._reset(self.episodes, generator)  # fresh states for all; keep those of running episodes
        self.state = torch.where(ended.view(*ended.shape, *[1] * (running.dim() - 2)), self.state, running)
        self.done = self.done & ~ended
        self.terminated = getattr(self, "terminated", self.done) & ~ended
        return self._observe()


def known_reward_environments() -> list[str]:
    from . import ENVIRONMENTS  # noqa: PLC0415 (the registry imports this module)

    return sorted(n for n, cls in ENVIRONMENTS.items() if cls.known_reward is not TaskEnv.known_reward)

"""Every batched environment as an ordinary `gymnasium.Env` (one task, one episode), so that
other tools can use it: `gymnasium.make("metakit/Navigation2D-v0")`. The task is drawn from
the environment's task distribution at each reset, or given as `reset(options={"task": ...})`."""
from __future__ import annotations

import gymnasium
import numpy as np
import torch

from ...errors import MetakitError
from . import ENVIRONMENTS
from .base import TaskEnv


class GymTaskEnv(gymnasium.Env):
    metadata = {"render_modes": []}

    def __init__(self, env: TaskEnv):
        if not isinstance(env, TaskEnv):
            raise MetakitError(f"GymTaskEnv wraps a metakit TaskEnv, got {type(env).__name__}")
        self.env = env
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (env.observation_size,), np.float32)
        if env.discrete:
            self.action_space = gymnasium.spaces.Discrete(env.action_size)
        else:
            bound = env.action_bound  # continuous actions are clipped to this
            self.action_space = gymnasium.spaces.Box(-bound, bound, (env.action_size,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        generator = torch.Generator().manual_seed(int(self.np_random.integers(2**62)))
        task = (options or {}).get("task")
        tasks = (
            self.env.sample_tasks(1, generator)
            if task is None
            else torch.as_tensor(task, dtype=torch.float32)[None]
        )
        self.env.set_tasks(tasks)
        self._generator = generator
        obs = self.env.reset(1, generator)
        return obs[0, 0].numpy().astype(np.float32), {"task": tasks[0].numpy()}

    def step(self, action):
        if self.env.discrete:
            actions = torch.tensor([[int(action)]])
        else:
            actions = torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(1, 1, -1)
        obs, reward, done = self.env.step(actions, self._generator)
        # the horizon is a time limit (truncation); everything else ends the episode (termination)
        terminated = bool(self.env.terminated[0, 0])
        truncated = bool(done[0, 0]) and not terminated
        return obs[0, 0].numpy().astype(np.float32), float(reward[0, 0]), terminated, truncated, {}


def register_all() -> None:
    """Register every environment as metakit/<Name>-v0. Gymnasium calls this itself through
    the `gymnasium.envs` entry point in pyproject.toml, at its first import."""
    for name, cls in ENVIRONMENTS.items():
        env_id = f"metakit/{name}-v0"
        if env_id not in gymnasium.registry:
            gymnasium.register(env_id, entry_point=lambda cls=cls, **kwargs: GymTaskEnv(cls(**kwargs)))


# importing this module registers; so does gymnasium.make("metakit.rl.envs.gym:metakit/Navigation2D-v0")
register_all()

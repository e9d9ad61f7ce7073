"""MuJoCo locomotion tasks of the MAML paper on Gymnasium's v5 models (the `mujoco` bindings
from PyPI, no licence), stepped by `MuJoCoCopies` (stepping="batched", the default:
Gymnasium's physics, observation, reward terms, termination and reset noise, without its
per-environment Python layers; for Ant with the contact forces Gymnasium computes after each
step), or with stepping="gymnasium" through Gymnasium's vector API.

    HalfCheetahVel: goal velocity v* ~ U[0, 2];   reward -|v - v*| - 0.05 |a|^2
    HalfCheetahDir: direction d = +-1;            reward d v - 0.05 |a|^2
    AntVel:         goal velocity v* ~ U[0, 3];   reward -|v - v*| + Gymnasium's Ant-v5 survive,
    AntDir:         direction d = +-1;            reward d v + ...   control and contact terms
    HalfCheetah:    Gymnasium's HalfCheetah-v5 task itself: reward v - 0.1 |a|^2 (one task;
                    MB-MPO's benchmark)
Horizon 200. Actions are clipped to [-1, 1] before stepping and costing. v is the torso's
forward (x) velocity as Gymnasium reports it. `frame_skip`: physics steps an env step
(Gymnasium's 5, 0.05 s; the official MB-MPO code's HalfCheetah took 1, 0.01 s).
Differences from the rllab originals are listed in docs/meta-rl.md.
"""

from __future__ import annotations

import numpy as np
import torch

from ... import distributed
from ...errors import MetakitError
from .base import TaskEnv, check_horizon
from .mujoco_batch import MuJoCoCopies, gymnasium_asset, warn_in_python

MODELS = {"HalfCheetah": ("HalfCheetah-v5", 17, 6), "Ant": ("Ant-v5", 105, 8)}
ASSETS = {"HalfCheetah": "half_cheetah.xml", "Ant": "ant.xml"}
RESET_NOISE, FRAME_SKIP = 0.1, 5  # Gymnasium's v5 defaults for both
# Ant-v5's reward terms: control cost, contact cost (forces clipped to +-1), survive reward
# while healthy (finite state, torso height in [0.2, 1.0]); unhealthy ends the episode
ANT_CONTROL, ANT_CONTACT, ANT_HEALTHY, ANT_Z = 0.5, 5e-4, 1.0, (0.2, 1.0)


class Locomotion(TaskEnv):
    discrete = False

    def __init__(
        self,
        robot: str = "HalfCheetah",
        goal: str = "velocity",
        horizon: int = 200,
        stepping: str | None = None,
        workers: int | None = None,
        frame_skip: int = FRAME_SKIP,
    ):
        super().__init__()
        if isinstance(frame_skip, bool) or not isinstance(frame_skip, int) or frame_skip < 1:
            raise MetakitError(
                f"frame_skip must be an integer >= 1 (physics steps an env step), got {frame_skip!r}"
            )
        self.frame_skip = frame_skip
        if robot not in MODELS or goal not in ("velocity", "direction", "forward"):
            raise MetakitError(
                f"robot must be one of {sorted(MODELS)} and goal 'velocity', 'direction' or 'forward', "
                f"got {robot!r}, {goal!r}"
            )
        stepping = stepping or "batched"
        if stepping not in ("batched", "gymnasium"):
            raise MetakitError(f"stepping must be 'batched' or 'gymnasium', got {stepping!r}")
        self.robot, self.goal, self.horizon, self.stepping = robot, goal, check_horizon(horizon), stepping
        self.shardable = stepping == "batched"  # Gymnasium's vector env seeds all copies at once
        self.workers = workers  # processes stepping the batched copies; None: torch.get_num_threads()
        self.env_id, self.observation_size, self.action_size = MODELS[robot]
        self.max_velocity = 2.0 if robot == "HalfCheetah" else 3.0
        self._vector, self._size = None, 0

    def sample_tasks(self, num_tasks, generator=None):
        u = torch.rand(num_tasks, 1, generator=generator)
        if self.goal == "forward":  # one task: the tensor only counts them
            return torch.zeros(num_tasks, 1)
        if self.goal == "velocity":
            return u * self.max_velocity
        return torch.where(u < 0.5, -1.0, 1.0)

    def _environments(self, count: int):
        if self._size != count:  # building models is slow: keep the vector env while the size holds
            import gymnasium  # noqa: PLC0415 (mujoco is an optional dependency)
            import mujoco  # noqa: PLC0415

            warn_in_python(mujoco)  # else one line per model: hundreds
            if self._vector is not None:
                self._vector.close()
            # Ant-v5 would also end an episode at 1000 steps; our horizon is shorter
            self._vector = gymnasium.make_vec(
                self.env_id, num_envs=count, vectorization_mode="sync", frame_skip=self.frame_skip
            )
            self._size = count
        return self._vector

    def _copies(self, count: int) -> MuJoCoCopies:
        if self._size != count:
            if self._vector is not None:
                self._vector.close()
            self._vector = MuJoCoCopies(
                gymnasium_asset(ASSETS[self.robot]),
                count,
                self.frame_skip,
                self.workers or torch.get_num_threads(),
                forces=self.robot == "Ant",
            )
            self._size = count
        return self._vector

    def _reset(self, episodes, generator):
        count = self.num_tasks * episodes
        if self.stepping == "batched":  # Gymnasium's reset_model: U(+-0.1) on qpos, 0.1 N(0, 1) on qvel
            copies = self._copies(count)
            shape = (self.num_tasks, episodes)  # task-first draws: see distributed.task_share
            uniform = distributed.rand(*shape, copies.nq, generator=generator, dtype=torch.float64)
            normal = distributed.randn(*shape, copies.nv, generator=generator, dtype=torch.float64)
            qpos = copies.init_qpos + (uniform.reshape(count, -1) * 2 - 1).numpy() * RESET_NOISE
            qvel = copies.init_qvel + RESET_NOISE * normal.reshape(count, -1).numpy()
            copies.set_state(qpos, qvel)
            return self._observe_copies().view(self.num_tasks, episodes, -1)
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        obs, _ = self._environments(count).reset(seed=seed)
        return torch.as_tensor(obs, dtype=torch.float32).view(self.num_tasks, episodes, -1)

    def _observe_copies(self) -> torch.Tensor:
        """Gymnasium's v5 observation: qpos without the x (Ant: x, y) position, then qvel; Ant
        then the external contact forces of every body but the world, clipped to +-1."""
        c = self._vector
        if self.robot == "HalfCheetah":
            parts = [c.qpos[:, 1:], c.qvel]
        else:
            parts = [c.qpos[:, 2:], c.qvel, np.clip(c.cfrc_ext[:, 1:], -1.0, 1.0).reshape(c.count, -1)]
        return torch.as_tensor(np.concatenate(parts, 1), dtype=torch.float32)

    def _step_copies(self, clipped: torch.Tensor) -> tuple[np.ndarray, np.ndarray, dict]:
        """Observations, terminations and Gymnasium's info terms after one batched step."""
        c, ant = self._vector, self.robot == "Ant"
        position = c.xpos if ant else c.qpos  # Ant: the torso's x; HalfCheetah: the root's
        x_before = position[:, 0].copy()
        action = clipped.reshape(-1, self.action_size).numpy()
        c.step(action)
        info = {"x_velocity": (position[:, 0] - x_before) / c.dt}  # as Gymnasium computes it
        terminated = np.zeros(c.count, dtype=bool)
        if ant:
            z = c.qpos[:, 2]
            healthy = (
                np.isfinite(c.qpos).all(1) & np.isfinite(c.qvel).all(1) & (z >= ANT_Z[0]) & (z <= ANT_Z[1])
            )
            info.update(
                {
                    "reward_ctrl": -ANT_CONTROL * np.square(action).sum(1),
                    "reward_contact": -ANT_CONTACT * np.square(np.clip(c.cfrc_ext, -1.0, 1.0)).sum((1, 2)),
                    "reward_survive": ANT_HEALTHY * healthy,
                }
            )
            terminated = ~healthy
        return self._observe_copies().numpy(), terminated, info

    def _step(self, actions, generator):
        shape = actions.shape[:2]
        clipped = actions.clamp(-1.0, 1.0)
        if self.stepping == "batched":
            obs, terminated, info = self._step_copies(clipped)
        else:
            obs, _, terminated, _, info = self._vector.step(clipped.reshape(-1, self.action_size).numpy())
        velocity = torch.as_tensor(np.asarray(info["x_velocity"]), dtype=torch.float32).view(shape)
        task = self.tasks[:, :1]  # [T, 1] broadcasts over episodes
        progress = self._progress(velocity, task)
        if self.robot == "HalfCheetah":
            reward = progress - self._control_weight * (clipped**2).sum(-1)
        else:
            extra = sum(np.asarray(info[k]) for k in ("reward_ctrl", "reward_contact", "reward_survive"))
            reward = progress + torch.as_tensor(extra, dtype=torch.float32).view(shape)
        obs = torch.as_tensor(obs, dtype=torch.float32).view(*shape, -1)
        return obs, reward, torch.as_tensor(terminated).view(shape)

    def _progress(self, velocity: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        if self.goal == "velocity":
            return -(velocity - task).abs()
        return task * velocity if self.goal == "direction" else velocity

    @property
    def _control_weight(self) -> float:  # the MAML tasks' 0.05; Gymnasium's own task's 0.1
        return 0.1 if self.goal == "forward" else 0.05

    # -- known functions for learned models (HalfCheetah) -------------------------------------
    def known_reward(self, task, observations, actions, next_observations):
        """Gymnasium's reward from observations alone. It uses the x displacement over the n
        physics substeps, which the observation does not hold; its velocity (obs[8]) is known
        before and after. Semi-implicit Euler moves x by dt times each substep's new velocity;
        with the velocity linear over the substeps their mean is v_before + (n + 1) / (2 n)
        (v_after - v_before): 0.4 v_before + 0.6 v_after at Gymnasium's n = 5 (the official
        MB-MPO code uses v_after alone: correlation with the true reward 0.93 against 0.99 here,
        tests/test_mbmpo.py), and v_after exactly at n = 1."""
        if self.robot != "HalfCheetah":
            super().known_reward(task, observations, actions, next_observations)
        after = (self.frame_skip + 1) / (2 * self.frame_skip)
        velocity = (1 - after) * observations[..., 8] + after * next_observations[..., 8]
        return self._progress(velocity, task[0]) - self._control_weight * (actions.clamp(-1.0, 1.0) ** 2).sum(
            -1
        )

    def initial_observations(self, count, generator=None):
        """Gymnasium's reset_model: U(+-0.1) on qpos, 0.1 N(0, 1) on qvel, observed."""
        if self.robot != "HalfCheetah":
            return super().initial_observations(count, generator)
        if not hasattr(self, "_initial"):
            import mujoco  # noqa: PLC0415

            model = mujoco.MjModel.from_xml_path(str(gymnasium_asset("half_cheetah.xml")))
            self._initial = torch.as_tensor(model.qpos0, dtype=torch.float32), model.nv
        qpos0, nv = self._initial
        qpos = qpos0 + (torch.rand(count, qpos0.shape[0], generator=generator) * 2 - 1) * RESET_NOISE
        qvel = RESET_NOISE * torch.randn(count, nv, generator=generator)
        return torch.cat([qpos[:, 1:], qvel], -1)


class HalfCheetah(Locomotion):
    """Gymnasium's HalfCheetah-v5 task (run forward), batched: one task, many episodes."""

    def __init__(self, horizon: int = 200, stepping: str = "batched", workers: int | None = None,
                 frame_skip: int = FRAME_SKIP):
        super().__init__("HalfCheetah", "forward", horizon, stepping, workers, frame_skip)


class HalfCheetahVel(Locomotion):
    def __init__(self, horizon: int = 200, stepping: str = "batched", workers: int | None = None,
                 frame_skip: int = FRAME_SKIP):
        super().__init__("HalfCheetah", "velocity", horizon, stepping, workers, frame_skip)


class HalfCheetahDir(Locomotion):
    def __init__(self, horizon: int = 200, stepping: str = "batched", workers: int | None = None,
                 frame_skip: int = FRAME_SKIP):
        super().__init__("HalfCheetah", "direction", horizon, stepping, workers, frame_skip)


class AntVel(Locomotion):
    def __init__(self, horizon: int = 200, stepping: str = "batched", workers: int | None = None,
                 frame_skip: int = FRAME_SKIP):
        super().__init__("Ant", "velocity", horizon, stepping, workers, frame_skip)


class AntDir(Locomotion):
    def __init__(self, horizon: int = 200, stepping: str = "batched", workers: int | None = None,
                 frame_skip: int = FRAME_SKIP):
        super().__init__("Ant", "direction", horizon, stepping, workers, frame_skip)

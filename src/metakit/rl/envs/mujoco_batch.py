"""Many copies of one MuJoCo model stepped together, without Gymnasium's per-environment
Python layers (wrappers, checkers, info dicts, the vector env's loop).

Each copy keeps its own MjData, so the constraint solver's warm start carries from step to step
exactly as in Gymnasium's own environment: the same calls (mj_resetData, set qpos and qvel,
mj_forward, then mj_step with nstep = frame_skip) give the same numbers, bit for bit (tested
against gymnasium.make("HalfCheetah-v5")). `mujoco.rollout` would step all copies in one call,
but it hands back no warm start, so its trajectories drift from Gymnasium's after ~50 steps.
The copies are split over a pool of threads (MuJoCo's step releases the GIL).
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def gymnasium_asset(name: str) -> str:
    """The path of a model file shipped with Gymnasium (e.g. "half_cheetah.xml")."""
    import gymnasium  # noqa: PLC0415 (mujoco and gymnasium are optional dependencies)

    return os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", name)


class MuJoCoCopies:
    def __init__(self, xml_path: str, count: int, frame_skip: int, threads: int = 1):
        import mujoco  # noqa: PLC0415

        # Gymnasium's model files use an attribute MuJoCo 3.3+ deprecates; say it once, not per copy
        mujoco.set_mju_user_warning(lambda message: warnings.warn(f"MuJoCo: {message}", stacklevel=1))
        self.mujoco, self.model = mujoco, mujoco.MjModel.from_xml_path(xml_path)
        self.data = [mujoco.MjData(self.model) for _ in range(count)]
        self.count, self.frame_skip = count, frame_skip
        self.dt = self.model.opt.timestep * frame_skip
        self.init_qpos, self.init_qvel = self.model.qpos0.copy(), np.zeros(self.model.nv)
        self.qpos, self.qvel = np.zeros((count, self.model.nq)), np.zeros((count, self.model.nv))
        bounds = np.linspace(0, count, max(1, min(threads, count)) + 1).astype(int)
        self._slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        self._pool = ThreadPoolExecutor(len(self._slices)) if len(self._slices) > 1 else None

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Every copy restarted at qpos [count, nq], qvel [count, nv] (Gymnasium's reset + set_state)."""
        for i, data in enumerate(self.data):
            self.mujoco.mj_resetData(self.model, data)
            data.qpos[:], data.qvel[:] = qpos[i], qvel[i]
            self.mujoco.mj_forward(self.model, data)
        self.qpos[:], self.qvel[:] = qpos, qvel

    def step(self, ctrl: np.ndarray) -> None:
        """Apply ctrl [count, nu] for frame_skip physics steps; self.qpos, self.qvel follow."""
        if self._pool is None:
            self._step(self._slices[0], ctrl)
        else:
            list(self._pool.map(lambda part: self._step(part, ctrl), self._slices))

    def _step(self, part: slice, ctrl: np.ndarray) -> None:
        mj_step, model, frame_skip = self.mujoco.mj_step, self.model, self.frame_skip
        for i in range(part.start, part.stop):
            data = self.data[i]
            data.ctrl[:] = ctrl[i]
            mj_step(model, data, nstep=frame_skip)
            self.qpos[i], self.qvel[i] = data.qpos, data.qvel

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

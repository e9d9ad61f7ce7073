"""Many copies of one MuJoCo model stepped together, without Gymnasium's per-environment
Python layers (wrappers, checkers, info dicts, the vector env's loop).

Each copy keeps its own MjData, so the constraint solver's warm start carries from step to step
exactly as in Gymnasium's own environment: the same calls (mj_resetData, set qpos and qvel,
mj_forward, then mj_step with nstep = frame_skip) give the same numbers, bit for bit (tested
against gymnasium.make("HalfCheetah-v5")). `mujoco.rollout` would step all copies in one call,
but it hands back no warm start, so its trajectories drift from Gymnasium's after ~50 steps.

The copies are split over `workers` processes, each stepping its share in a loop while the
others do theirs; arrays of controls and states live in shared memory, so a step sends one
short message per worker. One worker steps in the calling process. (Threads were tried first:
MuJoCo's step releases the GIL, but the per-copy Python between steps does not, and 2 threads
reached 1.6x one thread where 2 processes reach nearly 2x.)
"""

from __future__ import annotations

import multiprocessing
import os
import warnings

import numpy as np


def warn_in_python(mujoco) -> None:
    """MuJoCo's warnings as Python warnings (shown once, not per copy), not its default of
    printing each one and appending it to MUJOCO_LOG.TXT in the working directory: Gymnasium's
    model files use an attribute MuJoCo 3.3+ deprecates. Call before loading a model."""
    mujoco.set_mju_user_warning(lambda message: warnings.warn(f"MuJoCo: {message}", stacklevel=1))


def gymnasium_asset(name: str) -> str:
    """The path of a model file shipped with Gymnasium (e.g. "half_cheetah.xml")."""
    import gymnasium  # noqa: PLC0415 (mujoco and gymnasium are optional dependencies)

    return os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", name)


class _Copies:
    """Copies [start, stop) of the model, stepping into shared arrays (in a worker or here)."""

    def __init__(self, xml_path: str, frame_skip: int, start: int, stop: int, arrays: dict):
        import mujoco  # noqa: PLC0415

        warn_in_python(mujoco)
        self.mujoco, self.model, self.frame_skip = mujoco, mujoco.MjModel.from_xml_path(xml_path), frame_skip
        self.data = [mujoco.MjData(self.model) for _ in range(start, stop)]
        self.rows = slice(start, stop)
        self.ctrl, self.qpos, self.qvel = (arrays[k][self.rows] for k in ("ctrl", "qpos", "qvel"))
        # Ant-like models: external contact forces and the main body's position, which need
        # mj_rnePostConstraint after each step (Gymnasium calls it; mj_step alone leaves them)
        self.forces = "cfrc_ext" in arrays
        if self.forces:
            self.cfrc_ext, self.xpos = arrays["cfrc_ext"][self.rows], arrays["xpos"][self.rows]

    def _read(self, i: int, data) -> None:
        self.qpos[i], self.qvel[i] = data.qpos, data.qvel
        if self.forces:
            self.cfrc_ext[i], self.xpos[i] = data.cfrc_ext, data.xpos[1]

    def set_state(self) -> None:  # Gymnasium's reset: mj_resetData, set qpos and qvel, mj_forward
        for i, data in enumerate(self.data):
            self.mujoco.mj_resetData(self.model, data)
            data.qpos[:], data.qvel[:] = self.qpos[i], self.qvel[i]
            self.mujoco.mj_forward(self.model, data)
            self._read(i, data)

    def step(self) -> None:
        mujoco, model, frame_skip = self.mujoco, self.model, self.frame_skip
        for i, data in enumerate(self.data):
            data.ctrl[:] = self.ctrl[i]
            mujoco.mj_step(model, data, nstep=frame_skip)
            if self.forces:
                mujoco.mj_rnePostConstraint(model, data)
            self._read(i, data)


def _shared(raw, shape) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.float64).reshape(shape)


def _serve(xml_path, frame_skip, start, stop, raws, shapes, connection) -> None:
    """A worker process: step or reset its copies on each message until told to stop."""
    arrays = {k: _shared(raws[k], shapes[k]) for k in raws}
    copies = _Copies(xml_path, frame_skip, start, stop, arrays)
    while True:
        command = connection.recv()
        if command == "stop":
            return
        try:
            copies.step() if command == "step" else copies.set_state()
            connection.send(None)
        except Exception as error:  # noqa: BLE001 (handed to the caller, who raises it)
            connection.send(f"{type(error).__name__}: {error}")


class MuJoCoCopies:
    """`count` copies of the model at `xml_path`; forces=True also keeps each copy's external
    contact forces `cfrc_ext` [count, nbody, 6] and body 1's position `xpos` [count, 3]."""

    def __init__(self, xml_path: str, count: int, frame_skip: int, workers: int = 1, forces: bool = False):
        import mujoco  # noqa: PLC0415

        warn_in_python(mujoco)
        model = mujoco.MjModel.from_xml_path(xml_path)
        self.count, self.frame_skip = count, frame_skip
        self.dt = model.opt.timestep * frame_skip
        self.nq, self.nv = model.nq, model.nv
        self.init_qpos, self.init_qvel = model.qpos0.copy(), np.zeros(model.nv)
        shapes = {"ctrl": (count, model.nu), "qpos": (count, model.nq), "qvel": (count, model.nv)}
        if forces:
            shapes.update({"cfrc_ext": (count, model.nbody, 6), "xpos": (count, 3)})
        workers = max(1, min(workers, count))
        context = multiprocessing.get_context("spawn")  # no fork of a process holding torch's threads
        raws = {k: context.RawArray("d", int(np.prod(shape))) for k, shape in shapes.items()}
        arrays = {k: _shared(raws[k], shape) for k, shape in shapes.items()}
        self.ctrl, self.qpos, self.qvel = arrays["ctrl"], arrays["qpos"], arrays["qvel"]
        self.cfrc_ext, self.xpos = arrays.get("cfrc_ext"), arrays.get("xpos")
        bounds = np.linspace(0, count, workers + 1).astype(int)
        self._connections, self._processes = [], []
        for start, stop in zip(bounds[1:-1], bounds[2:]):  # the first share stays in this process
            mine, theirs = context.Pipe()
            process = context.Process(
                target=_serve, args=(xml_path, frame_skip, start, stop, raws, shapes, theirs), daemon=True
            )
            process.start()
            self._connections.append(mine)
            self._processes.append(process)
        self._own = _Copies(xml_path, frame_skip, bounds[0], bounds[1], arrays)

    def _everywhere(self, command: str) -> None:
        for connection in self._connections:
            connection.send(command)
        self._own.step() if command == "step" else self._own.set_state()
        errors = [connection.recv() for connection in self._connections]
        if any(errors):
            raise RuntimeError(f"a MuJoCo worker failed: {next(e for e in errors if e)}")

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Every copy restarted at qpos [count, nq], qvel [count, nv] (Gymnasium's reset + set_state)."""
        self.qpos[:], self.qvel[:] = qpos, qvel
        self._everywhere("reset")

    def step(self, ctrl: np.ndarray) -> None:
        """Apply ctrl [count, nu] for frame_skip physics steps; self.qpos, self.qvel follow."""
        self.ctrl[:] = ctrl
        self._everywhere("step")

    def close(self) -> None:
        for connection, process in zip(self._connections, self._processes):
            connection.send("stop")
            process.join(timeout=5)
        self._connections, self._processes = [], []

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 (interpreter shutdown: the daemons end with it)
            pass

"""Batched task environments (tensor code). Each is also a Gymnasium environment,
`gymnasium.make("metakit/Navigation2D-v0")`, registered through the entry point that
pyproject.toml declares (see gym.py); importing this package does not import gymnasium."""

from ...errors import MetakitError
from .bandit import BernoulliBandit, DirichletBandit
from .base import TaskEnv
from .classic import CartPole, Pendulum
from .locomotion import AntDir, AntVel, HalfCheetah, HalfCheetahDir, HalfCheetahVel, Locomotion
from .model import ModelEnv
from .navigation import Navigation2D
from .tabular import TabularMDP

ENVIRONMENTS: dict[str, type[TaskEnv]] = {
    "Navigation2D": Navigation2D,
    "BernoulliBandit": BernoulliBandit,
    "DirichletBandit": DirichletBandit,
    "TabularMDP": TabularMDP,
    "CartPole": CartPole,
    "Pendulum": Pendulum,
    "HalfCheetah": HalfCheetah,
    "HalfCheetahVel": HalfCheetahVel,
    "HalfCheetahDir": HalfCheetahDir,
    "AntVel": AntVel,
    "AntDir": AntDir,
}

__all__ = [
    "AntDir",
    "AntVel",
    "BernoulliBandit",
    "DirichletBandit",
    "CartPole",
    "ENVIRONMENTS",
    "HalfCheetah",
    "HalfCheetahDir",
    "HalfCheetahVel",
    "Locomotion",
    "ModelEnv",
    "Navigation2D",
    "Pendulum",
    "TabularMDP",
    "TaskEnv",
    "make",
]


def make(name: str, **kwargs) -> TaskEnv:
    """A batched environment by name (the Gymnasium id's name part), e.g. make("Navigation2D")."""
    if name not in ENVIRONMENTS:
        raise MetakitError(f"unknown environment {name!r}; expected one of {sorted(ENVIRONMENTS)}")
    return ENVIRONMENTS[name](**kwargs)

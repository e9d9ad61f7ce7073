"""Batched task environments (tensor code) and their Gymnasium registrations."""
from .bandit import BernoulliBandit
from .base import TaskEnv
from .classic import CartPole, Pendulum
from .locomotion import AntDir, AntVel, HalfCheetahDir, HalfCheetahVel, Locomotion
from .navigation import Navigation2D
from .tabular import TabularMDP

__all__ = ["AntDir", "AntVel", "BernoulliBandit", "CartPole", "HalfCheetahDir", "HalfCheetahVel", "Locomotion",
           "Navigation2D", "Pendulum", "TabularMDP", "TaskEnv", "make"]


def make(name: str, **kwargs) -> TaskEnv:
    """A batched environment by name (the Gymnasium id's name part), e.g. make("Navigation2D")."""
    from ...errors import MetakitError
    from .gym import ENVIRONMENTS
    if name not in ENVIRONMENTS:
        raise MetakitError(f"unknown environment {name!r}; expected one of {sorted(ENVIRONMENTS)}")
    return ENVIRONMENTS[name](**kwargs)


try:  # registering needs gymnasium (the `rl` extra); the tensor environments do not
    from .gym import register_all
    register_all()
except ImportError:
    pass

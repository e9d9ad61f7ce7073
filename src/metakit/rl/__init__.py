"""Meta-reinforcement learning: batched task environments, rollouts, returns, policy
optimisers, and the meta-RL algorithms built on them."""
from . import envs
from .maml_trpo import MAMLTRPO
from .policies import CategoricalMLPPolicy, GaussianMLPPolicy, policy_for
from .sampling import Trajectories, rollout

__all__ = [
    "MAMLTRPO",
    "CategoricalMLPPolicy",
    "GaussianMLPPolicy",
    "Trajectories",
    "envs",
    "policy_for",
    "rollout",
]

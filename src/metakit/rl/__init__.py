"""Meta-reinforcement learning: batched task environments, rollouts, returns, policy
optimisers, and the meta-RL algorithms built on them."""
from . import envs
from .dynamics import DynamicsEnsemble
from .maml_trpo import MAMLTRPO
from .mbmpo import MBMPO
from .policies import CategoricalMLPPolicy, GaussianMLPPolicy, policy_for
from .ppo import PPO
from .sampling import Trajectories, rollout
from .trpo import TRPO

__all__ = [
    "DynamicsEnsemble",
    "MAMLTRPO",
    "MBMPO",
    "PPO",
    "TRPO",
    "CategoricalMLPPolicy",
    "GaussianMLPPolicy",
    "Trajectories",
    "envs",
    "policy_for",
    "rollout",
]

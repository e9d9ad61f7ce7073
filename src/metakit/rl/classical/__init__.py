"""Classical bandit and tabular-MDP algorithms: the baselines RL^2 is compared with."""
from .bandits import BANDIT_METHODS, gittins_index, gittins_tables, play_bandits
from .mdps import MDP_METHODS, play_mdps

__all__ = ["BANDIT_METHODS", "MDP_METHODS", "gittins_index", "gittins_tables", "play_bandits", "play_mdps"]

"""metakit: meta-learning in PyTorch, a batch of tasks as one tensor computation."""
from . import data, metric, nets, tasks
from .batch import TaskBatch
from .errors import MetakitError
from .gradient import MAML, Reptile
from .metric import MatchingNetwork, PrototypicalNetwork

__version__ = "0.1.0"
__all__ = ["TaskBatch", "MAML", "Reptile", "PrototypicalNetwork", "MatchingNetwork", "MetakitError",
           "data", "metric", "nets", "tasks"]

"""Learned optimisers: a meta-trained update rule usable as a torch.optim.Optimizer."""
from .learned import CoordinatewiseLSTM, LearnedOptimizer, log_sign

__all__ = ["CoordinatewiseLSTM", "LearnedOptimizer", "log_sign"]

from .batched import BatchedAdam, BatchedMLP
from .conv4 import Conv4
from .mlp import MLP

__all__ = ["MLP", "BatchedAdam", "BatchedMLP", "Conv4"]

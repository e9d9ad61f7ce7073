from .mann import MANN, LRUAMemory, LSTMBaseline

__all__ = ["LRUAMemory", "LSTMBaseline", "MANN"]

from .matching import MatchingNetwork
from .protonet import PrototypicalNetwork

__all__ = ["MatchingNetwork", "PrototypicalNetwork"]

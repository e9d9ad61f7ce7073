from .protonet import PrototypicalNetwork

__all__ = ["PrototypicalNetwork"]

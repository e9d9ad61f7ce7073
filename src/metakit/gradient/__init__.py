from ..engine import exact_norms
from .maml import MAML
from .reptile import Reptile

__all__ = ["MAML", "Reptile", "exact_norms"]

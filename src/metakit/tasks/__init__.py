from .fewshot import FewShotClassification
from .sinusoid import Sinusoid

__all__ = ["FewShotClassification", "Sinusoid"]

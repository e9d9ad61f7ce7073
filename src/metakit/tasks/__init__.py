from .fewshot import FewShotClassification
from .sequence import SequenceEpisodes
from .sinusoid import Sinusoid

__all__ = ["FewShotClassification", "SequenceEpisodes", "Sinusoid"]

from .config import ExperimentConfig, load_config
from .trainer import TrainingDiverged, train

__all__ = ["ExperimentConfig", "load_config", "train", "TrainingDiverged"]

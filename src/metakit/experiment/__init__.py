"""Experiments: configs, the algorithm registry, and the one runner every family uses."""
from .config import load_config
from .runner import TrainingDiverged, build, evaluate_run, load, train

__all__ = ["TrainingDiverged", "build", "evaluate_run", "load", "load_config", "train"]

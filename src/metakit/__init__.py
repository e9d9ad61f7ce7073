"""metakit: meta-learning in PyTorch, a batch of tasks as one tensor computation."""
from importlib.metadata import PackageNotFoundError, version

from . import _gymnasium_hook, data, metric, nets, optim, tasks
from .batch import TaskBatch
from .errors import MetakitError
from .gradient import MAML, Reptile
from .metric import MatchingNetwork, PrototypicalNetwork

try:  # the version is defined once, in pyproject.toml
    __version__ = version("metakit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_gymnasium_hook.install()  # metakit/<Name>-v0 in gymnasium.make, without importing gymnasium here

__all__ = ["TaskBatch", "MAML", "Reptile", "PrototypicalNetwork", "MatchingNetwork", "MetakitError",
           "data", "load", "metric", "nets", "optim", "tasks"]


def load(run_dir, device: str = "cpu"):
    """The trained object of any run directory, on `device`, with its config as `.config`:
    `.learner` for supervised runs (MAML, ProtoNet, ...), `.policy` and `.env` for meta-RL,
    `.model` for MANN and its LSTM; for a learned optimiser (l2o) the trained network itself,
    ready for metakit.optim.LearnedOptimizer.
    Checkpoints are read with torch.load(weights_only=True): loading runs no code."""
    from .experiment.runner import load as load_run  # noqa: PLC0415 (keeps `import metakit` light)

    return load_run(run_dir, device).trained()

"""The one protocol every trainable thing in metakit implements, and the runner relies on.

    algo = Cls(config, device)           # builds everything from its own config dataclass
    metrics = algo.step(generator)       # one meta-iteration; a dict of floats
    algo.state_dict() / load_state_dict  # everything a resumed run needs, optimiser included
    results = algo.evaluate()            # a JSON-able dict for results.json
    algo.plots(run_dir)                  # PNG figures beyond the learning curve

The runner owns the rest: run directory, metrics.jsonl, checkpoints, progress, NaN guard.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar


class Algorithm:
    Config: ClassVar[type]  # the experiment config dataclass (sections: task or env, algorithm, train, eval)
    # the learning curve: metrics key -> label, plotted by the runner and shown in the progress bar
    curve: ClassVar[dict[str, str]] = {}
    curve_ylabel: ClassVar[str] = "metric"
    curve_log_scale: ClassVar[bool] = False
    # sections a config must name explicitly, e.g. {"task": [...choices]}: no silent default task
    named_sections: ClassVar[dict[str, list[str]]] = {}
    progress: bool = False  # the runner sets it: show progress bars while evaluating
    # the config key ("section.name") of the batch of tasks a step splits over torchrun's ranks;
    # None: the family runs as one process only
    shard_key: ClassVar[str | None] = None

    def __init__(self, config, device: str = "cpu"):
        self.config, self.device = config, device

    @classmethod
    def config_class(cls, name: str) -> type:
        """The config dataclass of algorithm `name` (several names may share one class)."""
        return cls.Config

    @classmethod
    def check_config(cls, config) -> None:
        """Raise MetakitError for values that are each valid but do not go together."""

    def step(self, generator) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def extra_metrics(self, iteration: int) -> dict[str, float]:
        """Metrics computed only when a metrics row is written (e.g. validation accuracy)."""
        return {}

    def evaluate(self) -> dict[str, Any]:
        raise NotImplementedError

    def plots(self, run_dir: Path) -> None:
        """Figures of the trained object (the runner draws the learning curve)."""

    def trained(self):
        """What metakit.load hands the user: the algorithm itself, unless its trained object
        stands alone (a learned optimiser's network)."""
        return self

"""Algorithm names -> the classes that train them (each declares its own config schema).

Adding a family: write its module (an `Algorithm` subclass with a `Config` dataclass) and add
one line here. The runner, the CLI and the other families never change. Modules are imported
only when their algorithm is used, so `metakit --help` stays fast.
"""
from __future__ import annotations

import importlib

from ..errors import MetakitError

# A name may map to {task.name: class} when one algorithm trains differently per setting.
ALGORITHMS: dict[str, str | type | dict[str, str]] = {
    "maml": "metakit.experiment.gradient:MAMLExperiment",
    "fomaml": "metakit.experiment.gradient:MAMLExperiment",
    "metasgd": "metakit.experiment.gradient:MAMLExperiment",
    "anil": "metakit.experiment.gradient:MAMLExperiment",
    "pretrain": "metakit.experiment.gradient:MAMLExperiment",
    "reptile": "metakit.experiment.gradient:ReptileExperiment",
    "protonet": "metakit.experiment.metric:MetricExperiment",
    "matching": "metakit.experiment.metric:MetricExperiment",
    "maml-trpo": "metakit.experiment.maml_trpo:MAMLTRPOExperiment",
    "mbmpo": "metakit.experiment.mbmpo:MBMPOExperiment",
    "ppo": "metakit.experiment.model_free:PPOExperiment",
    "trpo": "metakit.experiment.model_free:TRPOExperiment",
    "rl2": "metakit.experiment.rl2:RL2Experiment",
    "mann": "metakit.experiment.mann:SequenceExperiment",
    "lstm": "metakit.experiment.mann:SequenceExperiment",
    "l2o": "metakit.experiment.l2o:L2OExperiment",
    "meta-critic": {"sine": "metakit.experiment.meta_critic:MetaCriticExperiment",
                    "cartpole": "metakit.experiment.meta_critic_cartpole:CartPoleMetaCritic",
                    "bandit": "metakit.experiment.meta_critic_bandit:BanditMetaCritic"},
}


def register(name: str, target: str | type) -> None:
    """Make `algorithm: {name: NAME}` configs train `target`: an Algorithm subclass, or its
    "module:Class" path (imported when first used). Your own families plug in here."""
    from .protocol import Algorithm  # noqa: PLC0415

    if not isinstance(name, str) or not name:
        raise MetakitError(f"an algorithm name must be a non-empty string, got {name!r}")
    is_path = isinstance(target, str) and ":" in target
    if not is_path and not (isinstance(target, type) and issubclass(target, Algorithm)):
        raise MetakitError(f"register({name!r}, ...) needs an Algorithm subclass or a 'module:Class' path, "
                           f"got {target!r}")
    ALGORITHMS[name] = target


def algorithm_names() -> list[str]:
    return sorted(ALGORITHMS)


def algorithm_class(name: str, setting: str | None = None):
    """The Algorithm subclass registered as `name` (for `setting`, the config's task.name, where
    the algorithm has one class per setting)."""
    if name not in ALGORITHMS:
        raise MetakitError(f"config key 'algorithm.name' must be one of {algorithm_names()}, got {name!r}")
    target = ALGORITHMS[name]
    if isinstance(target, dict):
        if setting not in target:
            raise MetakitError(f"config key 'task.name' must be one of {sorted(target)} for algorithm "
                               f"{name!r}, got {setting!r}")
        target = target[setting]
    if isinstance(target, type):
        return target
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)

"""Typed experiment configs: YAML -> dataclasses, with errors that name the offending key."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import MetakitError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def check(predicate, expected: str, **kwargs):
    """A dataclass field whose values must satisfy `predicate`, described as `expected`."""
    return field(metadata={"check": (predicate, expected)}, **kwargs)


TASKS = ["omniglot", "sinusoid"]
MODELS = ["conv4", "mlp"]
GRADIENT_ALGORITHMS = ["anil", "fomaml", "maml", "metasgd", "pretrain", "reptile"]
METRIC_ALGORITHMS = ["matching", "protonet"]
ALGORITHMS = GRADIENT_ALGORITHMS + METRIC_ALGORITHMS
NORMALISATION = ["inductive", "transductive"]

positive = (lambda v: v > 0, "> 0")
non_negative = (lambda v: v >= 0, ">= 0")


@dataclass
class TaskConfig:
    name: str = check(lambda v: v in TASKS, f"one of {TASKS}", default="sinusoid")
    support_shots: int = check(*positive, default=10)
    query_shots: int = check(*positive, default=10)  # omniglot: per class
    # omniglot only
    ways: int = check(lambda v: v >= 2, ">= 2", default=5)
    image_size: int = check(lambda v: v >= 16, ">= 16", default=28)
    archives: list[str] = field(default_factory=lambda: ["images_background_small1", "images_background_small2"])
    rotations: bool = True  # 90/180/270-degree rotations of the training classes as new classes
    validation_alphabets: list[str] = field(default_factory=list)
    test_alphabets: list[str] = field(default_factory=list)


@dataclass
class ModelConfig:
    name: str = check(lambda v: v in MODELS, f"one of {MODELS}", default="mlp")
    hidden_sizes: list[int] = check(lambda v: all(s > 0 for s in v), "sizes > 0",
                                    default_factory=lambda: [40, 40])
    # conv4 only
    channels: int = check(*positive, default=64)
    strided: bool = True  # Finn et al.'s stride-2 variant; False: max pooling


@dataclass
class AlgorithmConfig:
    name: str = check(lambda v: v in ALGORITHMS, f"one of {ALGORITHMS}", default="maml")
    inner_lr: float = check(*non_negative, default=0.01)
    inner_steps: int = check(*non_negative, default=1)
    adapt_params: list[str] | None = None  # ANIL: defaults to the model's last layer
    meta_step_size: float = check(*non_negative, default=1.0)  # Reptile's epsilon
    meta_step_size_final: float | None = None  # Reptile: anneal linearly to this
    chunk_size: int | None = check(lambda v: v is None or v >= 1, "null or >= 1", default=None)


@dataclass
class TrainConfig:
    iterations: int = check(*positive, default=70000)
    meta_batch_size: int = check(*positive, default=25)
    outer_lr: float = check(*positive, default=1e-3)
    log_every: int = check(*positive, default=100)
    checkpoint_every: int = check(*positive, default=1000)
    compile: bool = False
    validate_every: int = check(*non_negative, default=0)  # omniglot: validation accuracy; 0 = never


@dataclass
class EvalConfig:
    num_tasks: int = check(*positive, default=600)
    support_shots: int = check(*positive, default=5)
    query_shots: int = check(*positive, default=100)
    steps: list[int] = check(lambda v: all(s >= 0 for s in v), "steps >= 0",
                             default_factory=lambda: [0, 1, 5, 10])
    inner_lr: float | None = None  # null: the algorithm's inner_lr
    seed: int = 1234
    # omniglot: N of the N-way test episodes (null: task.ways for gradient learners, whose head
    # has task.ways outputs; 5 and 20 for metric learners), and how queries are normalised
    ways: list[int] | None = check(lambda v: v is None or all(w >= 2 for w in v), "null or ways >= 2",
                                   default=None)
    normalisation: str = check(lambda v: v in NORMALISATION, f"one of {NORMALISATION}",
                               default="transductive")


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def from_dict(cls, data: Any, path: str = ""):
    """Build dataclass `cls` from nested dicts, checking every key, type and range."""
    where = path or "config"
    if not isinstance(data, dict):
        raise MetakitError(f"{where} must be a mapping of keys to values, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise MetakitError(f"unknown config key {_join(path, unknown[0])!r}; "
                           f"expected one of {sorted(fields)}")
    values = {}
    for name, value in data.items():
        key = _join(path, name)
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = from_dict(kind, value, key)
            continue
        values[name] = _coerce(value, kind, key)
        rule = fields[name].metadata.get("check")
        if rule and values[name] is not None and not rule[0](values[name]):
            raise MetakitError(f"config key {key!r} must be {rule[1]}, got {value!r}")
    return cls(**values)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _coerce(value: Any, kind, key: str):
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return _coerce(value, kind, key)
    if origin is list:
        if not isinstance(value, list):
            raise MetakitError(f"config key {key!r} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise MetakitError(f"config key {key!r} must be a finite number, got {value!r}")
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in (str, bool) and isinstance(value, kind):
        return value
    raise MetakitError(f"config key {key!r} must be {kind.__name__}, got {value!r}")


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (value parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise MetakitError(f"--set expects key=value (e.g. train.iterations=100), got {item!r}")
        key, raw = item.split("=", 1)
        node = data
        *parents, last = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise MetakitError(f"--set {key}: {part!r} is not a section")
        node[last] = yaml.safe_load(raw)
    return data


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a config bundled with metakit (see `metakit list`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    raise MetakitError(f"config {str(name_or_path)!r} is neither a file nor a bundled config; "
                       f"bundled configs: {bundled_configs()}")


def bundled_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str | Path, overrides: list[str] = ()):
    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise MetakitError(f"config file {path} is not valid YAML: {error}") from None
    data = apply_overrides(data, list(overrides))
    if isinstance(data, dict) and "env" in data:  # a meta-RL experiment
        from .metarl import MetaRLConfig  # noqa: PLC0415 (metarl imports this module)
        return from_dict(MetaRLConfig, data)
    return check_combination(from_dict(ExperimentConfig, data))


def check_combination(config: ExperimentConfig) -> ExperimentConfig:
    """Errors for values that are each valid but do not go together."""
    task, model, algo = config.task, config.model.name, config.algorithm.name
    expected_model = {"sinusoid": "mlp", "omniglot": "conv4"}[task.name]
    if model != expected_model:
        raise MetakitError(f"config key 'model.name' is {model!r}, but task {task.name!r} needs "
                           f"model {expected_model!r}")
    if algo in METRIC_ALGORITHMS and task.name != "omniglot":
        raise MetakitError(f"algorithm {algo!r} classifies; task {task.name!r} is regression "
                           "(use task.name: omniglot)")
    if task.name == "omniglot":
        if not task.test_alphabets:
            raise MetakitError("config key 'task.test_alphabets' must name at least one held-out alphabet")
        overlap = set(task.test_alphabets) & set(task.validation_alphabets)
        if overlap:
            raise MetakitError(f"alphabets {sorted(overlap)} are in both task.test_alphabets "
                               "and task.validation_alphabets")
        every, log = config.train.validate_every, config.train.log_every
        if every % log:
            raise MetakitError(f"config key 'train.validate_every' ({every}) must be a multiple of "
                               f"train.log_every ({log}): validation is logged with the metrics")
        ways = config.eval.ways
        if algo in GRADIENT_ALGORITHMS and ways is not None and ways != [task.ways]:
            raise MetakitError(f"config key 'eval.ways' is {ways}, but a {algo} model has a "
                               f"{task.ways}-way head (task.ways); use [{task.ways}] or null")
    return config


def to_dict(config: ExperimentConfig) -> dict:
    return dataclasses.asdict(config)


def dump_config(config: ExperimentConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

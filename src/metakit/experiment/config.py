"""Typed experiment configs: YAML -> dataclasses, with errors that name the offending key."""
from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from ..errors import MetakitError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def check(predicate, expected: str, only: tuple[str, ...] | None = None, **kwargs):
    """A dataclass field whose values must satisfy `predicate`, described as `expected`.
    only: the values of the section's `name` for which the field applies (e.g. task.ways for
    omniglot); elsewhere setting it is an error, and the saved config leaves it out."""
    return field(metadata={"check": (predicate, expected), "only": only}, **kwargs)


def applies_to(only: tuple[str, ...], **kwargs):
    """A field without a range check that applies only where the section's name is in `only`."""
    return field(metadata={"only": only}, **kwargs)


positive = (lambda v: v > 0, "> 0")
non_negative = (lambda v: v >= 0, ">= 0")
sizes = (lambda v: all(s > 0 for s in v), "sizes > 0")


def from_dict(cls, data: Any, path: str = "", owner: str | None = None):
    """Build dataclass `cls` from nested dicts, checking every key, type and range. `owner`
    (an algorithm's name) is named in the error for a key that it does not read."""
    where = path or "config"
    if not isinstance(data, dict):
        raise MetakitError(f"{where} must be a mapping of keys to values, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        whose = f" (the keys algorithm {owner!r} reads)" if owner else ""
        raise MetakitError(f"unknown config key {_join(path, unknown[0])!r}; "
                           f"expected one of {sorted(fields)}{whose}")
    values = {}
    for name, value in data.items():
        key = _join(path, name)
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = from_dict(kind, value, key, owner)
            continue
        values[name] = _coerce(value, kind, key)
        rule = fields[name].metadata.get("check")
        if rule and values[name] is not None and not rule[0](values[name]):
            raise MetakitError(f"config key {key!r} must be {rule[1]}, got {value!r}")
    section = cls(**values)
    for name in data:
        only = fields[name].metadata.get("only")
        if only and section.name not in only:
            raise MetakitError(f"config key {_join(path, name)!r} applies to {_join(path, 'name')} "
                               f"{' or '.join(only)}, not {section.name!r}")
    return section


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
    if kind is float and isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise MetakitError(f"config key {key!r} must be float, got {value!r}") from None
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise MetakitError(f"config key {key!r} must be a finite number, got {value!r}")
        return float(value)
    if kind is int and isinstance(value, str):  # 1e3 (read as a string by PyYAML)
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number) and number == int(number):
            return int(number)
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
    """The typed config of a YAML file or bundled config, with `section.key=value` overrides.
    Its schema is the one of the algorithm it names (see metakit.experiment.registry)."""
    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise MetakitError(f"config file {path} is not valid YAML: {error}") from None
    return config_from_dict(apply_overrides(data, list(overrides)), where=str(path))


def config_from_dict(data: Any, where: str = "the config"):
    from .registry import algorithm_class, algorithm_names  # noqa: PLC0415 (the registry imports this module)

    if not isinstance(data, dict):
        raise MetakitError(f"{where} must be a mapping of sections, got {data!r}")
    section = data.get("algorithm")
    name = section.get("name") if isinstance(section, dict) else None
    if name is None:
        raise MetakitError(f"{where} names no algorithm; add `algorithm: {{name: ...}}` with one of "
                           f"{algorithm_names()}")
    task = data.get("task")
    cls = algorithm_class(name, task.get("name") if isinstance(task, dict) else None)
    for section, choices in cls.named_sections.items():
        given = data.get(section)
        if not isinstance(given, dict) or given.get("name") is None:
            raise MetakitError(f"{where} names no {section}; add `{section}: {{name: ...}}` "
                               f"with one of {choices}")
    config = from_dict(cls.config_class(name), data, owner=name)
    cls.check_config(config)
    return config


def to_dict(config) -> dict:
    """The config as nested dicts, without the fields that do not apply (see `check(only=...)`)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        only = f.metadata.get("only")
        if only and config.name not in only:
            continue
        out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
    return out


def dump_config(config, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

"""Run directories and their checkpoints, written atomically (see metakit.files) and read with
`weights_only=True`: a checkpoint someone hands you is data, never code."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import MetakitError
from ..files import save_torch
from .config import config_from_dict, dump_config, to_dict

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    save_torch(state, path)


def load_checkpoint(path: Path, device: str = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MetakitError(f"no checkpoint at {path}; is this a metakit run directory?")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # truncated, foreign, or holding objects other than tensors and containers
        raise MetakitError(f"checkpoint {path} cannot be read as a metakit checkpoint "
                           f"({type(error).__name__}); it may be truncated or come from elsewhere") from error
    if not isinstance(state, dict) or "algorithm" not in state or "iteration" not in state:
        raise MetakitError(f"checkpoint {path} is not a metakit checkpoint (expected the keys 'algorithm' "
                           "and 'iteration')")
    return state


def read_run_config(run_dir: Path, overrides: list[str] = ()) -> Any:
    """The typed config saved in run_dir/config.yaml, with `section.key=value` overrides."""
    from .config import apply_overrides  # noqa: PLC0415

    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise MetakitError(f"{run_dir} holds no {CONFIG}; is it a metakit run directory?")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise MetakitError(f"{path} is not valid YAML ({type(error).__name__}); restore it from your "
                           "own copy of the config") from error
    return config_from_dict(apply_overrides(data, list(overrides)), where=str(path))


def open_run_dir(config, run_dir: Path, resume: bool, write: bool = True) -> dict[str, Any] | None:
    """Prepare run_dir for training `config` and return the checkpoint to continue from, or
    None for a fresh start. A run is never overwritten without --resume, nor resumed with a
    different config, except a larger train.iterations: that trains a run further. `write`
    False checks and reads only (the ranks of a distributed run other than 0)."""
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / CHECKPOINT
    if checkpoint_path.exists() and not resume:
        raise MetakitError(f"{run_dir} already holds a run; pass --resume to continue it "
                           "or --out to choose another directory")
    state = None
    if resume and checkpoint_path.exists():
        saved, wanted = to_dict(read_run_config(run_dir)), to_dict(config)
        longer = {**wanted, "train": {**wanted["train"], "iterations": saved["train"]["iterations"]}}
        if saved != wanted and saved != longer:
            raise MetakitError(f"--resume: the config differs from the one saved in {run_dir}/{CONFIG}; "
                               "resume with the same config and --set values (only train.iterations may "
                               "grow, to train a run further)")
        state = load_checkpoint(checkpoint_path)
        if config.train.iterations < state["iteration"]:
            raise MetakitError(f"--resume: train.iterations={config.train.iterations} but {run_dir} is "
                               f"already at iteration {state['iteration']}")
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, run_dir / CONFIG)
        _truncate_metrics(run_dir / METRICS, state["iteration"] if state else 0)
    return state


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Keep only the rows a resumed run will not write again."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["iteration"] <= iteration]
    path.write_text("".join(row + "\n" for row in rows))

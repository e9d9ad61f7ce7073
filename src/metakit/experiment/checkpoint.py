"""Run directories and their checkpoints, written atomically (see metakit.files)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import MetakitError
from ..files import save_torch
from .config import dump_config, from_dict, to_dict

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    save_torch(state, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MetakitError(f"no checkpoint at {path}; is this a metakit run directory?")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated or foreign file
        raise MetakitError(f"checkpoint {path} cannot be read ({error}); "
                           "it may be truncated or not a metakit checkpoint") from None


def open_run_dir(config, run_dir: Path, resume: bool) -> dict[str, Any] | None:
    """Prepare run_dir for training `config` (its dataclass type checks the saved one) and
    return the checkpoint to continue from, or None for a fresh start. A run is never
    overwritten without --resume, nor resumed with a different config."""
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / CHECKPOINT
    if checkpoint_path.exists() and not resume:
        raise MetakitError(f"{run_dir} already holds a run; pass --resume to continue it "
                           "or --out to choose another directory")
    state = None
    if resume and checkpoint_path.exists():
        saved = from_dict(type(config), yaml.safe_load((run_dir / "config.yaml").read_text()))
        if to_dict(saved) != to_dict(config):
            raise MetakitError(f"--resume: the config differs from the one saved in {run_dir}/config.yaml; "
                               "resume with the same config and --set values")
        state = load_checkpoint(checkpoint_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / "config.yaml")
    _truncate_metrics(run_dir / METRICS, state["iteration"] if state else 0)
    return state


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Keep only the rows a resumed run will not write again."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["iteration"] <= iteration]
    path.write_text("".join(row + "\n" for row in rows))

"""Run checkpoints, written atomically (see metakit.files)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import MetakitError
from ..files import save_torch


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

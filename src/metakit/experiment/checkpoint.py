"""Atomic files: a run never holds a half-written checkpoint or results file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import MetakitError


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    _atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MetakitError(f"no checkpoint at {path}; is this a metakit run directory?")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated or foreign file
        raise MetakitError(f"checkpoint {path} cannot be read ({error}); "
                           "it may be truncated or not a metakit checkpoint") from None


def save_json(data: Any, path: Path) -> None:
    _atomic_write(path, lambda handle: handle.write((json.dumps(data, indent=2) + "\n").encode()))

"""Atomic writes: a reader never sees a half-written checkpoint, cache or results file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_write(path: Path, write) -> None:
    """Call write(handle) on a temp file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def save_torch(obj: Any, path: Path) -> None:
    atomic_write(path, lambda handle: torch.save(obj, handle))


def save_json(data: Any, path: Path) -> None:
    """Write `data` as JSON (under torchrun, rank 0 alone writes: the others' results are the same)."""
    from . import distributed  # noqa: PLC0415 (files is imported before the package is set up)

    if not distributed.is_main():
        return
    atomic_write(path, lambda handle: handle.write((json.dumps(data, indent=2) + "\n").encode()))

"""Dataset archives: find, download (HTTPS, progress bar), verify by SHA-256, never half-write."""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import MetakitError


def data_root(root: str | os.PathLike | None = None) -> Path:
    """DATA: the `root` argument, else $METAKIT_DATA (what `--data` sets), else
    ~/.cache/metakit; each dataset lives in its own folder under it."""
    if root is not None:
        return Path(root)
    if os.environ.get("METAKIT_DATA"):
        return Path(os.environ["METAKIT_DATA"])
    return Path.home() / ".cache" / "metakit"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected: str | None) -> str:
    """The file's SHA-256; a MetakitError naming file, expected and actual when they differ."""
    actual = sha256_of(path)
    if expected is not None and actual != expected:
        raise MetakitError(
            f"{path} is corrupt or not the official file: SHA-256 {actual}, expected {expected}. "
            "Delete it and download it again (or put the official archive there).")
    return actual


def download(url: str, destination: Path, expected_sha256: str | None, progress: bool = True) -> Path:
    """Fetch url to destination atomically (temp file, verify, rename)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=destination.name, disable=not progress
            ) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        verify(Path(tmp), expected_sha256)
        os.replace(tmp, destination)
    except OSError as error:
        raise MetakitError(
            f"could not download {url} to {destination}: {error}. Without internet, "
            f"download it elsewhere and put it at {destination}"
        ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return destination

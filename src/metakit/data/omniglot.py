"""Omniglot (Lake et al. 2015): the official archives decoded once into a uint8 tensor.

Knows the four official archives and their location in Brenden Lake's repository; works
offline from a directory holding the zips or their extracted folders. Images are stored as
ink intensity (255 = ink, 0 = paper), resized with area averaging (antialiased).
"""
from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import MetakitError
from ..files import save_torch
from .archives import data_root, download, verify

URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{name}.zip"
# SHA-256 of the official zips; None where we could not pin it (no internet here): such an
# archive is still checked to be a readable zip in the official layout.
ARCHIVES: dict[str, str | None] = {
    "images_background": None,
    "images_evaluation": None,
    "images_background_small1": "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    "images_background_small2": "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
}
MINIMAL = ("images_background_small1", "images_background_small2")


@dataclass
class Omniglot:
    """images: uint8 [classes, drawings, H, W]; alphabet and character name of each class."""

    images: torch.Tensor
    alphabets: list[str]
    characters: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    def select(self, classes: Iterable[int]) -> Omniglot:
        index = list(classes)
        return Omniglot(self.images[index], [self.alphabets[i] for i in index],
                        [self.characters[i] for i in index])

    def with_rotations(self) -> Omniglot:
        """Each class plus its 90, 180 and 270 degree rotations as new classes."""
        images = torch.cat([torch.rot90(self.images, k, dims=(-2, -1)) for k in range(4)])
        suffix = [""] + [f"/rot{90 * k}" for k in (1, 2, 3)]
        return Omniglot(images, self.alphabets * 4, [c + s for s in suffix for c in self.characters])

    def with_reflections(self) -> Omniglot:
        """Each class plus its mirror image (left to right) as a new class; after with_rotations,
        the 8 symmetries of the square."""
        images = torch.cat([self.images, self.images.flip(-1)])
        mirrored = [c + "/mirror" for c in self.characters]
        return Omniglot(images, self.alphabets * 2, self.characters + mirrored)

    def split_by_alphabet(self, held_out: Sequence[str]) -> tuple[Omniglot, Omniglot]:
        """(classes of the other alphabets, classes of `held_out`): no alphabet in both."""
        unknown = sorted(set(held_out) - set(self.alphabets))
        if unknown:
            raise MetakitError(
                f"unknown alphabet(s) {unknown}; this data holds {sorted(set(self.alphabets))}"
            )
        inside = [i for i, a in enumerate(self.alphabets) if a in held_out]
        return self.select(i for i in range(len(self)) if i not in set(inside)), self.select(inside)

    def split_by_character(self, num_first: int, generator: torch.Generator | None = None):
        """A random split of the characters (the 1200 / 423 convention of the full set)."""
        if not 0 < num_first < len(self):
            raise MetakitError(f"num_first must be between 1 and {len(self) - 1}, got {num_first}")
        order = torch.randperm(len(self), generator=generator).tolist()
        return self.select(order[:num_first]), self.select(order[num_first:])


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """Where the Omniglot archives are: DATA/omniglot, with DATA the `root` argument, else
    $METAKIT_DATA (what `--data` sets), else ~/.cache/metakit: one meaning everywhere. A root
    that itself holds the archives (or their extracted folders) is taken as it is."""
    base = data_root(root)
    holds_archives = any((base / f"{n}.zip").exists() or (base / n).is_dir() for n in ARCHIVES)
    return base if holds_archives and not (base / "omniglot").is_dir() else base / "omniglot"


def download_by_default() -> bool:
    """METAKIT_DOWNLOAD=1 (what `--download` sets) lets missing archives be downloaded."""
    return os.environ.get("METAKIT_DOWNLOAD", "") not in ("", "0")


def load_omniglot(
    names: Sequence[str] = MINIMAL,
    root=None,
    image_size: int = 28,
    download_missing: bool | None = None,
    cache: bool = True,
) -> Omniglot:
    """Decode the named archives (classes concatenated in the order given) from data_dir(root).
    download_missing: fetch missing archives (None: only when METAKIT_DOWNLOAD=1, --download)."""
    if isinstance(names, str):
        names = [names]
    if download_missing is None:
        download_missing = download_by_default()
    parts = [_load_one(name, data_dir(root), image_size, download_missing, cache) for name in names]
    data = Omniglot(
        torch.cat([p.images for p in parts]),
        sum((p.alphabets for p in parts), []),
        sum((p.characters for p in parts), []),
    )
    # the two minimal splits share Latin and Greek (identical files): keep each class once, or
    # an episode could hold one character as two classes
    first: dict[str, int] = {}
    keep = []
    for i, character in enumerate(data.characters):
        if character in first and torch.equal(data.images[first[character]], data.images[i]):
            continue
        first.setdefault(character, i)
        keep.append(i)
    return data if len(keep) == len(data) else data.select(keep)


def _load_one(name: str, root: Path, image_size: int, download_missing: bool, cache: bool) -> Omniglot:
    if name not in ARCHIVES:
        raise MetakitError(f"unknown Omniglot archive {name!r}; expected one of {sorted(ARCHIVES)}")
    if not isinstance(image_size, int) or image_size < 1:
        raise MetakitError(f"image_size must be a positive integer, got {image_size!r}")
    archive, folder = root / f"{name}.zip", root / name
    if not archive.exists() and not folder.is_dir():
        if not download_missing:
            raise MetakitError(
                f"Omniglot archive {name}.zip not found in {root} (nor its extracted folder). Put the "
                f"official file there (from {URL.format(name=name)}) and point METAKIT_DATA (or --data) "
                f"at {root.parent if root.name == 'omniglot' else root}; or download it: `metakit ... "
                "--download`, METAKIT_DOWNLOAD=1, or load_omniglot(..., download_missing=True)"
            )
        download(URL.format(name=name), archive, ARCHIVES[name])
    if not archive.exists():
        return _decode(_folder_pngs(folder, name), name, image_size)
    checksum = verify(archive, ARCHIVES[name])
    cache_file = _cache_dir() / f"omniglot-{name}-{checksum[:16]}-{image_size}px.pt"
    if cache and cache_file.is_file():
        try:
            return Omniglot(**torch.load(cache_file, weights_only=True))
        except (
            RuntimeError,
            EOFError,
            OSError,
            ValueError,
            TypeError,
            KeyError,
            pickle.UnpicklingError,
        ) as error:
            # a damaged or foreign cache is rebuilt, never trusted; say so, once
            warnings.warn(
                f"Omniglot cache {cache_file} is unreadable ({type(error).__name__}); "
                "decoding the archive again",
                stacklevel=3,
            )
    try:
        with zipfile.ZipFile(archive) as zipped:
            pngs = {n: zipped.read(n) for n in zipped.namelist() if n.lower().endswith(".png")}
    except (zipfile.BadZipFile, OSError) as error:
        raise MetakitError(
            f"{archive} is truncated or not a zip file ({error}); delete it and download it again"
        ) from None
    data = _decode(pngs, name, image_size)
    if cache:
        try:
            save_torch(
                {"images": data.images, "alphabets": data.alphabets, "characters": data.characters},
                cache_file,
            )
        except OSError:
            pass  # a read-only cache directory only costs the next load its decoding time
    return data


def _cache_dir() -> Path:
    return Path(os.environ.get("METAKIT_CACHE", Path.home() / ".cache" / "metakit"))


def _folder_pngs(folder: Path, name: str) -> dict[str, bytes]:
    return {
        f"{name}/{p.relative_to(folder).as_posix()}": p.read_bytes() for p in sorted(folder.rglob("*.png"))
    }


def _decode(pngs: dict[str, bytes], name: str, image_size: int) -> Omniglot:
    """`name/alphabet/character/drawing.png` -> uint8 [classes, drawings, size, size]."""
    groups: dict[tuple[str, str], list[str]] = {}
    for path in sorted(pngs):
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != name:
            raise MetakitError(
                f"unexpected file {path!r} in the {name} archive; expected "
                f"{name}/<alphabet>/<character>/<drawing>.png"
            )
        groups.setdefault((parts[1], parts[2]), []).append(path)
    if not groups:
        raise MetakitError(f"the {name} archive holds no PNG images")
    counts = {len(v) for v in groups.values()}
    if len(counts) != 1:
        worst = min(groups, key=lambda k: len(groups[k]))
        raise MetakitError(
            f"{name}: characters have different numbers of drawings {sorted(counts)}; "
            f"{'/'.join(worst)} has {len(groups[worst])} (the archive may be incomplete)"
        )
    classes = []
    for paths in groups.values():
        ink = np.stack([np.asarray(Image.open(io.BytesIO(pngs[p])).convert("L")) < 128 for p in paths])
        classes.append(resize_ink(torch.from_numpy(ink), image_size))
    keys = list(groups)
    return Omniglot(torch.stack(classes), [a for a, _ in keys], [f"{a}/{c}" for a, c in keys])


def resize_ink(ink: torch.Tensor, image_size: int) -> torch.Tensor:
    """Bool [N, H, W] (True = ink) -> uint8 [N, size, size], area-averaged, 255 = ink: how every
    Omniglot image metakit reads (archives, Lake's runs) becomes a network input."""
    small = F.interpolate(ink.float().unsqueeze(1), size=(image_size, image_size), mode="area")
    return (small[:, 0] * 255).round().to(torch.uint8)

"""Image classification data for learned-optimiser problems: MNIST (the official IDX files)
and scikit-learn's bundled 8 x 8 digits (no download; `pip install "metakit[digits]"`).

Both return (images float [N, features] in [0, 1], labels long [N]) for a split.
MNIST lives in DATA/mnist (DATA as for Omniglot: the `root` argument, else $METAKIT_DATA,
else ~/.cache/metakit); missing files are downloaded only when asked (METAKIT_DOWNLOAD=1,
`--download`, or download_missing=True), from the mirror torchvision uses.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import MetakitError
from .archives import data_root, download, verify
from .omniglot import download_by_default

MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
           "https://storage.googleapis.com/cvdf-datasets/mnist/")
FILES = {  # official file names and their SHA-256
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
SPLITS = {"train": "train", "test": "t10k"}
DIGITS_TEST = 600  # the last 600 of a fixed shuffle of the 1,797 digits are the test split


def mnist_dir(root=None) -> Path:
    """DATA/mnist (DATA as for every dataset, see data_root), or DATA itself if it holds the files."""
    base = data_root(root)
    return base if (base / next(iter(FILES))).exists() else base / "mnist"


def load_mnist(split: str = "train", root=None, download_missing: bool | None = None,
               checksums: dict[str, str] | None = None, progress: bool = True):
    """(images [N, 784] in [0, 1], labels [N]) of the official `split` ("train": 60,000;
    "test": 10,000). `checksums` replaces the official SHA-256 table (tests use their own)."""
    if split not in SPLITS:
        raise MetakitError(f"MNIST split must be one of {sorted(SPLITS)}, got {split!r}")
    checksums = FILES if checksums is None else checksums
    if download_missing is None:
        download_missing = download_by_default()
    folder = mnist_dir(root)
    arrays = []
    for kind, magic in (("images-idx3", 2051), ("labels-idx1", 2049)):
        name = f"{SPLITS[split]}-{kind}-ubyte.gz"
        path = folder / name
        if not path.exists():
            if not download_missing:
                raise MetakitError(f"MNIST file {name} not found in {folder}. Put the official file there "
                                   f"(from {MIRRORS[0]}{name}) and point METAKIT_DATA (or --data) at "
                                   f"{folder.parent if folder.name == 'mnist' else folder}; or download it: "
                                   "`--download`, METAKIT_DOWNLOAD=1, or download_missing=True")
            _download(name, path, checksums.get(name), progress)
        verify(path, checksums.get(name))
        arrays.append(read_idx(path, magic))
    images, labels = arrays
    if len(images) != len(labels):
        raise MetakitError(f"MNIST {split}: {len(images)} images but {len(labels)} labels")
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255), \
        torch.from_numpy(labels.astype(np.int64))


def _download(name: str, path: Path, sha256: str | None, progress: bool) -> None:
    errors = []
    for mirror in MIRRORS:
        try:
            download(mirror + name, path, sha256, progress)
            return
        except MetakitError as error:
            errors.append(str(error))
    raise MetakitError(" / ".join(errors))


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (gzipped): uint8 array with the dimensions its header gives."""
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise MetakitError(f"{path} is not a readable gzip file ({error}); delete it and download it "
                           "again") from None
    header = np.frombuffer(data[:4], ">u4")
    if len(header) != 1 or int(header[0]) != magic:
        raise MetakitError(f"{path} is not an IDX file of the expected kind (magic "
                           f"{int(header[0]) if len(header) else None}, expected {magic})")
    dims = magic - 2048
    shape = tuple(int(d) for d in np.frombuffer(data[4:4 + 4 * dims], ">u4"))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if len(shape) != dims or body.size != int(np.prod(shape)):
        raise MetakitError(f"{path} is truncated: header says {shape}, body holds {body.size} bytes")
    return body.reshape(shape)


def load_digits(split: str = "train"):
    """scikit-learn's 8 x 8 digits (1,797 images, bundled with the package: no download):
    (images [N, 64] in [0, 1], labels [N]); "train" is 1,197 images, "test" the other 600."""
    if split not in SPLITS:
        raise MetakitError(f"digits split must be one of {sorted(SPLITS)}, got {split!r}")
    try:
        from sklearn.datasets import load_digits as sklearn_digits  # noqa: PLC0415 (an optional extra)
    except ImportError:
        raise MetakitError("the 8 x 8 digits come with scikit-learn, which is not installed: "
                           "pip install 'metakit[digits]' (or scikit-learn)") from None
    digits = sklearn_digits()
    images = torch.as_tensor(digits.data, dtype=torch.float32) / 16
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    part = order[:-DIGITS_TEST] if split == "train" else order[-DIGITS_TEST:]
    return images[part], labels[part]


DATASETS = {"digits": load_digits, "mnist": load_mnist}


def load_classification(name: str, split: str):
    if name not in DATASETS:
        raise MetakitError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name](split)

"""Datasets for the built-in classifiers: Fashion-MNIST (IDX files) and sklearn digits.

Every dataset comes back as a `ClassificationData` of float32 inputs (N, features) in
[0, 1] and int64 labels (N,), split into train / validation / test with a fixed
permutation, so the same split is seen by training, pruning and benchmarks.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from qcbo.errors import InputError

__all__ = [
    "ClassificationData",
    "FASHION_MNIST_DIR",
    "read_idx",
    "load_fashion_mnist",
    "load_digits",
    "load_dataset",
    "make_loader",
]

#: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: IDX type codes -> numpy dtypes (big-endian where it matters).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class ClassificationData:
    """Inputs x_* float32 (N, features) in [0, 1]; labels y_* int64 (N,)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        return int(torch.cat([self.y_train, self.y_val, self.y_test]).max()) + 1

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of "train", "val" or "test"."""
        if which not in ("train", "val", "test"):
            raise ValueError(f"unknown split {which!r}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise InputError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - header != count * dtype.itemsize:
        raise InputError(
            f"{path}: IDX payload has {len(raw) - header} bytes, expected "
            f"{count * dtype.itemsize} for shape {shape}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _split_train_val(
    x: np.ndarray, y: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:val_size], order[val_size:]
    return x[train], y[train], x[val], y[val]


def _as_data(name: str, *arrays: np.ndarray) -> ClassificationData:
    xs = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays[0::2]]
    ys = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)) for a in arrays[1::2]]
    return ClassificationData(name, xs[0], ys[0], xs[1], ys[1], xs[2], ys[2])


def load_fashion_mnist(
    directory: str | os.PathLike[str] | None = None, *, val_size: int = 5000, seed: int = 0
) -> ClassificationData:
    """Fashion-MNIST from its four IDX files (``.gz`` or plain) in ``directory``.

    60k training images give ``60000 - val_size`` train and ``val_size`` validation
    images (a fixed permutation drawn from ``seed``); the 10k test images are the test
    split. Pixels are scaled to [0, 1] and flattened to 784 features.
    """
    directory = Path(directory or os.environ.get("QCBO_FASHION_MNIST", FASHION_MNIST_DIR))
    paths = {key: _find_idx(directory, stem) for key, stem in _FASHION_FILES.items()}
    missing = [_FASHION_FILES[key] for key, p in paths.items() if p is None]
    if missing:
        raise InputError(
            f"{directory}: Fashion-MNIST IDX files missing ({', '.join(missing)}); install them "
            "with `apt-get install dataset-fashion-mnist` or point QCBO_FASHION_MNIST at a "
            "directory holding them"
        )
    arrays = {key: read_idx(p) for key, p in paths.items()}  # type: ignore[arg-type]
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise InputError(
                f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match"
            )
    x = arrays["train_images"].reshape(len(arrays["train_images"]), -1) / 255.0
    x_test = arrays["test_images"].reshape(len(arrays["test_images"]), -1) / 255.0
    x_tr, y_tr, x_va, y_va = _split_train_val(x, arrays["train_labels"], val_size, seed)
    return _as_data("fashion-mnist", x_tr, y_tr, x_va, y_va, x_test, arrays["test_labels"])


def load_digits(*, val_size: int = 300, test_size: int = 300, seed: int = 0) -> ClassificationData:
    """scikit-learn's bundled 8x8 digits (1797 images, 64 features scaled to [0, 1])."""
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target)
    order = np.random.default_rng(seed).permutation(len(x))
    test, val, train = (
        order[:test_size], order[test_size: test_size + val_size], order[test_size + val_size:]
    )
    return _as_data("digits", x[train], y[train], x[val], y[val], x[test], y[test])


def load_dataset(name: str, seed: int = 0) -> ClassificationData:
    """A dataset by name: "fashion-mnist" or "digits". ``seed`` draws the split (digits:
    test, validation and training images; Fashion-MNIST: validation and training images,
    the 10k test images being fixed); 0 is the split every built-in model uses."""
    if name == "fashion-mnist":
        return load_fashion_mnist(seed=seed)
    if name == "digits":
        return load_digits(seed=seed)
    raise InputError(f"unknown dataset {name!r}; choose fashion-mnist or digits")


class _TensorBatches(TensorDataset):
    """A TensorDataset whose batches are gathered by one indexing per tensor instead of
    one item at a time and a stack (same samples, same order)."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[index] for t in self.tensors)


def _as_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return batch


def make_loader(
    x: torch.Tensor, y: torch.Tensor, *, batch_size: int, shuffle: bool, seed: int = 0
) -> DataLoader:
    """A DataLoader over (x, y) yielding (x_batch, y_batch); with ``shuffle`` each pass
    draws a fresh seeded order."""
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(
        _TensorBatches(x, y), batch_size=batch_size, shuffle=shuffle, generator=generator,
        collate_fn=_as_batch,
    )

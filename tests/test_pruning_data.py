"""IDX reading, the Fashion-MNIST loader's split and its missing-file message."""

import gzip

import numpy as np
import pytest
import torch

from pruning.data import load_digits, load_fashion_mnist, make_loader, read_idx
from qcbo.errors import InputError


def _write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def test_read_idx_round_trip_and_errors(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", a)
    _write_idx(tmp_path / "b", a, compress=False)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a)
    assert np.array_equal(read_idx(tmp_path / "b"), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(InputError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes((tmp_path / "b").read_bytes()[:-3])
    with pytest.raises(InputError, match="payload"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_loader_splits_and_scales(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(50, 28, 28))
    test = rng.integers(0, 256, size=(20, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(50) % 10)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(20) % 10, compress=False)
    data = load_fashion_mnist(tmp_path, val_size=10)
    assert data.x_train.shape == (40, 784) and data.x_val.shape == (10, 784)
    assert data.x_test.shape == (20, 784) and data.num_classes == 10
    assert float(data.x_train.max()) <= 1.0 and float(data.x_train.min()) >= 0.0
    assert np.allclose(data.x_test.numpy(), test.reshape(20, -1) / 255.0)
    # train and val together are exactly the 50 training images
    both = np.concatenate([data.x_train.numpy(), data.x_val.numpy()]) * 255
    assert sorted(map(bytes, np.rint(both).astype(np.uint8))) == sorted(
        map(bytes, train.reshape(50, -1).astype(np.uint8)))


def test_missing_fashion_mnist_says_what_to_install(tmp_path):
    with pytest.raises(InputError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)


def test_digits_split_is_fixed():
    a, b = load_digits(), load_digits()
    assert a.x_train.shape == (1197, 64) and a.x_val.shape == (300, 64)
    assert a.x_test.shape == (300, 64)
    assert np.array_equal(a.y_test.numpy(), b.y_test.numpy())


def test_loader_batches_equal_a_plain_tensor_dataset_loader():
    """Gathering a batch at once gives the samples, order and shuffling of the plain
    DataLoader over a TensorDataset."""
    from torch.utils.data import DataLoader, TensorDataset

    x, y = torch.randn(103, 5), torch.randint(0, 3, (103,))
    for shuffle in (False, True):
        ours = make_loader(x, y, batch_size=16, shuffle=shuffle, seed=7)
        plain = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=shuffle,
                           generator=torch.Generator().manual_seed(7) if shuffle else None)
        for _ in range(2):  # two passes: a fresh order each pass when shuffling
            got, want = list(ours), list(plain)
            assert len(got) == len(want) == 7
            for (xa, ya), (xb, yb) in zip(got, want):
                assert torch.equal(xa, xb) and torch.equal(ya, yb)

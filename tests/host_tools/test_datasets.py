"""host_tools.datasets and `picotrain dataset`: loaders, rotation, splits, writing."""

import gzip
import struct

import numpy as np
import pytest

from host_tools import cli, datasets
from picotrain.data import Dataset


def idx_bytes(array, magic_type=0x08):
    header = bytes([0, 0, magic_type, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def tiny_mnist(tmp_path):
    """A 3-image MNIST folder: gzip images, uncompressed labels (both are accepted)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labels = np.array([7, 2, 1], np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return tmp_path, images, labels


def test_mnist_loader_on_a_synthetic_idx_file(tiny_mnist):
    folder, images, labels = tiny_mnist
    got_images, got_labels = datasets.load_mnist(folder)
    assert got_images.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(got_images[:, 0], images)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("blob, message", [
    (gzip.compress(b"\x00\x00\x09\x03" + bytes(12)), "unsigned bytes"),  # 0x09: signed
    (b"\x1f\x8b\x08\x00garbage", "gzip"),
    (gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 3, 28, 28) + bytes(100)), "need 2352"),
    (gzip.compress(b"\x00\x00\x08\x03\x00\x00"), "truncated IDX header"),
    (gzip.compress(idx_bytes(np.zeros((3, 28, 28))))[:-10], "gzip"),  # cut short
    (gzip.compress(idx_bytes(np.zeros((3, 20, 20)))), "28 x 28"),
])
def test_bad_mnist_image_file_is_rejected(tiny_mnist, blob, message):
    folder = tiny_mnist[0]
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(blob)
    with pytest.raises(ValueError, match=message):
        datasets.load_mnist(folder)


@pytest.mark.parametrize("labels, message", [
    (np.array([1, 2]), "3 images"),
    (np.array([1, 2, 10]), "not a digit"),
])
def test_bad_mnist_labels_are_rejected(tiny_mnist, labels, message):
    folder = tiny_mnist[0]
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(ValueError, match=message):
        datasets.load_mnist(folder)


def test_missing_mnist_explains_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="--mnist-dir"):
        datasets.load_mnist(tmp_path)


def test_real_mnist_test_set():
    if not (datasets.DEFAULT_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST not found at {datasets.DEFAULT_MNIST_DIR} (see docs/DATASETS.md)")
    images, labels = datasets.load_mnist()
    assert images.shape == (10000, 1, 28, 28) and images.dtype == np.uint8
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test digits
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_digits_are_scaled_to_uint8():
    images, labels = datasets.load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.uint8
    assert (images.min(), images.max()) == (0, 255)
    assert set(np.unique(images).tolist()) == {(v * 255 + 8) // 16 for v in range(17)}
    assert set(labels.tolist()) == set(range(10))


def test_rotation():
    images, _ = datasets.load_digits()
    x = images[:20]
    np.testing.assert_array_equal(datasets.rotate(x, 0), x)
    np.testing.assert_array_equal(datasets.rotate(x, 360), x)
    quarter = datasets.rotate(x, 90)
    np.testing.assert_array_equal(quarter, np.rot90(x, axes=(2, 3)))  # counter-clockwise
    back = x
    for _ in range(4):
        back = datasets.rotate(back, 90)
    np.testing.assert_array_equal(back, x)
    # An arbitrary angle interpolates: not identity, and +a then -a comes back roughly
    # (blurred by bilinear resampling twice, corners lost).
    there_and_back = datasets.rotate(datasets.rotate(x, 30), -30).astype(int)
    assert not np.array_equal(datasets.rotate(x, 30), x)
    centre = (slice(None), slice(None), slice(2, 6), slice(2, 6))
    assert np.abs(there_and_back[centre] - x[centre]).mean() < 40


@pytest.mark.parametrize("source", datasets.SOURCES)
def test_splits_partition_the_source(source):
    n, n_train, n_test = datasets.SPLIT_SIZES[source]
    parts = [datasets.split_indices(source, s) for s in datasets.SPLITS]
    assert [len(p) for p in parts] == [n - n_train - n_test, n_train, n_test]
    assert sorted(i for p in parts for i in p) == list(range(n))
    assert parts == [datasets.split_indices(source, s) for s in datasets.SPLITS]  # fixed
    assert parts[2] != sorted(parts[2])  # a permutation, not file order


def test_mnist_split_sizes_follow_the_priot_protocol():
    assert [len(datasets.split_indices("mnist", s)) for s in datasets.SPLITS] == [7952, 1024, 1024]


def test_load_split_limit_and_angle():
    x, y = datasets.load_split("digits", "transfer-test", limit=10, angle=90)
    full, full_y = datasets.load_digits()
    idx = datasets.split_indices("digits", "transfer-test")[:10]
    np.testing.assert_array_equal(x, np.rot90(full[idx], axes=(2, 3)))
    np.testing.assert_array_equal(y, full_y[idx])


def test_load_split_rejects_a_source_of_the_wrong_size(tiny_mnist):
    with pytest.raises(ValueError, match="10000 images"):
        datasets.load_split("mnist", "pretrain", tiny_mnist[0])


@pytest.mark.parametrize("samples, labels, kwargs, error", [
    (np.zeros((2, 4), np.float32), [0, 1], {}, TypeError),
    (np.zeros((2, 4), np.int8), [0, 1], {}, ValueError),  # features need exp
    (np.zeros((2, 4), np.uint8), [0, 1], dict(exp=-8), ValueError),  # images are -7
    (np.zeros((2, 4), np.uint8), [0, 10], {}, ValueError),
    (np.zeros((2, 4), np.uint8), [0], {}, ValueError),
    (np.zeros((2, 1, 1, 1, 4), np.uint8), [0, 1], {}, ValueError),  # 4 dimensions
])
def test_write_pt8d_validates(tmp_path, samples, labels, kwargs, error):
    with pytest.raises(error):
        datasets.write_pt8d(tmp_path / "x.pt8d", samples, np.array(labels), **kwargs)


def test_cli_dataset_writes_a_readable_file(tmp_path, capsys):
    out = tmp_path / "digits.pt8d"
    args = ["dataset", "--source", "digits", "--split", "transfer-train", "--angle", "90",
            "--limit", "50", "--out", str(out)]
    assert cli.main(args) is None
    assert "50 digits transfer-train" in capsys.readouterr().out
    x, y = datasets.load_split("digits", "transfer-train", angle=90, limit=50)
    with Dataset(out) as ds:
        got = [(bytes(a), b) for a, b in ds.samples()]
        assert (len(ds), ds.shape, ds.skipped) == (50, (1, 8, 8), 0)
    assert got == [((xi >> 1).tobytes(), int(yi)) for xi, yi in zip(x, y)]


def test_cli_reports_a_missing_mnist_folder(tmp_path, capsys):
    args = ["dataset", "--split", "pretrain", "--mnist-dir", str(tmp_path),
            "--out", str(tmp_path / "x.pt8d")]
    assert cli.main(args) == 2
    assert "MNIST not found" in capsys.readouterr().err

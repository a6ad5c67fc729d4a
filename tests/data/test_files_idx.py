"""IDX reader on the real MNIST / Fashion-MNIST files and on bad files."""

import gzip
import re
import struct

import numpy as np
import pytest

from tfvqvae.data import load_idx_folder, read_idx

# From shared/data/README.md.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist_train(shared_data):
    return load_idx_folder(shared_data / "mnist", "train")


@pytest.fixture(scope="module")
def mnist_test(shared_data):
    return load_idx_folder(shared_data / "mnist", "test")


def test_mnist_train_shape_dtype_and_label_counts(mnist_train):
    assert mnist_train.images.shape == (60000, 28, 28, 1)
    assert mnist_train.images.dtype == np.uint8
    assert mnist_train.num_classes == 10
    assert mnist_train.name == "mnist"
    assert np.bincount(mnist_train.labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert mnist_train.images.min() == 0 and mnist_train.images.max() == 255


def test_mnist_test_shape_and_label_counts(mnist_test):
    assert mnist_test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(mnist_test.labels, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_mnist_pixels_equal_independent_parse(shared_data, mnist_train):
    path = shared_data / "mnist" / "train-images-idx3-ubyte.gz"
    raw = np.frombuffer(gzip.open(path).read(), np.uint8, offset=16).reshape(-1, 28, 28)
    np.testing.assert_array_equal(mnist_train.images[12345, :, :, 0], raw[12345])
    np.testing.assert_array_equal(mnist_train.images[..., 0], raw)
    labels = np.frombuffer(
        gzip.open(shared_data / "mnist" / "train-labels-idx1-ubyte.gz").read(), np.uint8, offset=8
    )
    np.testing.assert_array_equal(mnist_train.labels, labels)


def test_fashion_mnist_balanced_classes(shared_data):
    train = load_idx_folder(shared_data / "fashion_mnist", "train")
    assert train.images.shape == (60000, 28, 28, 1)
    assert np.bincount(train.labels, minlength=10).tolist() == [6000] * 10
    test = load_idx_folder(shared_data / "fashion_mnist", "test", name="fmnist")
    assert test.name == "fmnist"
    assert np.bincount(test.labels, minlength=10).tolist() == [1000] * 10


# --- read_idx on hand-written files -----------------------------------------


def _idx_bytes(array, magic=None):
    array = np.asarray(array)
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i2"): 0x0B, np.dtype(">f4"): 0x0D}
    if magic is None:
        magic = (codes[array.dtype] << 8) | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def test_read_idx_plain_and_gz(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "plain").write_bytes(_idx_bytes(array))
    (tmp_path / "packed.gz").write_bytes(gzip.compress(_idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "plain"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "packed.gz"), array)


def test_read_idx_other_type_codes(tmp_path):
    shorts = np.array([[-2, 300], [7, -30000]], ">i2")
    floats = np.array([0.5, -1.25, 3.0], ">f4")
    (tmp_path / "s").write_bytes(_idx_bytes(shorts))
    (tmp_path / "f").write_bytes(_idx_bytes(floats))
    out = read_idx(tmp_path / "s")
    assert out.dtype == np.int16 and out.dtype.isnative
    assert out.tolist() == [[-2, 300], [7, -30000]]
    assert read_idx(tmp_path / "f").tolist() == [0.5, -1.25, 3.0]


def test_read_idx_wrong_magic_names_it(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(_idx_bytes(np.zeros((1, 2, 2), np.uint8), magic=0x12340803))
    with pytest.raises(ValueError, match=r"magic number 305399811 .*bad-idx3-ubyte"):
        read_idx(path)


def test_read_idx_unknown_type_code(tmp_path):
    path = tmp_path / "code7"
    path.write_bytes(_idx_bytes(np.zeros((1, 2, 2), np.uint8), magic=0x0703))
    with pytest.raises(ValueError, match="magic number 1795"):
        read_idx(path)


def test_read_idx_truncated_names_byte_counts(tmp_path):
    data = _idx_bytes(np.zeros((3, 28, 28), np.uint8))[: 16 + 100]
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match="expected 2368 bytes, received 116 bytes"):
        read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path):
    packed = gzip.compress(_idx_bytes(np.arange(5000, dtype=np.uint8).reshape(5, 10, 100)))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope-idx3-ubyte"):
        read_idx(tmp_path / "nope-idx3-ubyte")


def test_idx_folder_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        load_idx_folder(tmp_path / "no_such_dir")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_idx_folder(tmp_path, "test")


def test_idx_folder_bad_split(tmp_path):
    with pytest.raises(ValueError, match="'validation'"):
        load_idx_folder(tmp_path, "validation")


def test_idx_folder_plain_files_and_count_mismatch(tmp_path):
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(images))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([2, 0, 9], np.uint8)))
    ds = load_idx_folder(tmp_path)
    assert ds.images.shape == (3, 4, 4, 1)
    np.testing.assert_array_equal(ds.images[..., 0], images)
    assert ds.labels.tolist() == [2, 0, 9]
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([2, 0], np.uint8)))
    with pytest.raises(ValueError, match=re.escape("received shape (2,)")):
        load_idx_folder(tmp_path)

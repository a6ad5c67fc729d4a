"""CIFAR-10 binary reader on the shared (partial) copy and on bad files."""

import numpy as np
import pytest

from tfvqvae.data import load_cifar10_folder

# From shared/data/README.md.
BATCH1_COUNTS = [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
BATCH2_COUNTS = [984, 1007, 1010, 995, 1010, 988, 1008, 1026, 987, 985]


@pytest.fixture(scope="module")
def cifar_train(shared_data):
    return load_cifar10_folder(shared_data / "cifar10", "train")


def test_train_and_test_sizes(shared_data, cifar_train):
    assert cifar_train.images.shape == (20000, 32, 32, 3)
    assert cifar_train.images.dtype == np.uint8
    assert cifar_train.num_classes == 10 and cifar_train.name == "cifar10"
    test = load_cifar10_folder(shared_data / "cifar10", "test")
    assert test.images.shape == (1000, 32, 32, 3)
    assert test.labels.shape == (1000,)


def test_class_counts_per_batch(cifar_train):
    assert np.bincount(cifar_train.labels[:10000], minlength=10).tolist() == BATCH1_COUNTS
    assert np.bincount(cifar_train.labels[10000:], minlength=10).tolist() == BATCH2_COUNTS


def test_pixels_match_readme_recipe(shared_data, cifar_train):
    path = shared_data / "cifar10" / "data_batch_2.bin"
    r = np.fromfile(path, np.uint8).reshape(-1, 3073)
    x = r[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(cifar_train.images[10000:], x)
    np.testing.assert_array_equal(cifar_train.labels[10000:], r[:, 0])


def test_single_pixel_by_byte_offset(shared_data, cifar_train):
    raw = (shared_data / "cifar10" / "data_batch_1.bin").read_bytes()
    i, row, col = 4321, 17, 5
    for channel in range(3):
        offset = i * 3073 + 1 + channel * 1024 + row * 32 + col
        assert cifar_train.images[i, row, col, channel] == raw[offset]
    assert cifar_train.labels[i] == raw[i * 3073]


def _records(n, seed):
    records = np.random.default_rng(seed).integers(0, 256, (n, 3073), dtype=np.uint8)
    records[:, 0] %= 10
    return records


def test_batches_are_read_in_sorted_order(tmp_path):
    first, second = _records(2, 1), _records(3, 2)
    (tmp_path / "data_batch_2.bin").write_bytes(second.tobytes())
    (tmp_path / "data_batch_1.bin").write_bytes(first.tobytes())
    ds = load_cifar10_folder(tmp_path)
    assert ds.labels.tolist() == first[:, 0].tolist() + second[:, 0].tolist()
    assert ds.images[2, 0, 1, 2] == second[0, 1 + 2 * 1024 + 1]


def test_wrong_file_size_names_it(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(b"\x00" * (3073 * 2 + 5))
    with pytest.raises(ValueError, match="has 6151 bytes, not a multiple"):
        load_cifar10_folder(tmp_path)


def test_missing_folder_and_missing_batches(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar_missing"):
        load_cifar10_folder(tmp_path / "cifar_missing")
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10_folder(tmp_path, "test")


def test_bad_split(tmp_path):
    with pytest.raises(ValueError, match="'val'"):
        load_cifar10_folder(tmp_path, "val")

"""load_dataset dispatch by name."""

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.data import DEFAULT_DATASET, load_dataset

# From shared/data/README.md.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_default_is_offline_digits():
    assert DEFAULT_DATASET == "digits"
    ds = load_dataset(DEFAULT_DATASET)
    assert ds.name == "digits" and len(ds) == 1500
    assert len(load_dataset("Digits", "test")) == 297


@pytest.mark.parametrize("sub", ["", "mnist"])
def test_mnist_from_local_idx(shared_data, sub):
    # data_dir may be the IDX folder itself or its parent.
    data_dir = shared_data / "mnist" if sub else shared_data
    ds = load_dataset("mnist", "test", data_dir=data_dir)
    assert ds.name == "mnist" and ds.images.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.labels, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_fashion_mnist_from_local_idx(shared_data):
    ds = load_dataset("fashion_mnist", "test", data_dir=shared_data)
    assert ds.name == "fashion_mnist"
    assert np.bincount(ds.labels, minlength=10).tolist() == [1000] * 10


def test_cifar10_from_local_bins(shared_data):
    ds = load_dataset("cifar10", "test", data_dir=shared_data)
    assert ds.images.shape == (1000, 32, 32, 3)


def test_local_split_validated(shared_data):
    with pytest.raises(ValueError, match="'validation'"):
        load_dataset("mnist", "validation", data_dir=shared_data)
    with pytest.raises(ValueError, match="'train\\[:10%\\]'"):
        load_dataset("digits", "train[:10%]")


def test_falls_back_to_tfds_without_local_files(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        mnist = load_dataset("mnist", "train")
        fashion = load_dataset("fashion_mnist", "test", data_dir=str(tmp_path))
        cifar = load_dataset("cifar10", "train[:50%]")
    assert mnist.images.shape == (6, 28, 28, 1)
    assert fashion.images.shape == (6, 28, 28, 1)
    assert cifar.images.shape[1:] == (32, 32, 3)


def test_folder_prefix_with_split_subfolders(tmp_path):
    for split, value in (("train", 10), ("test", 20)):
        for cls in ("a", "b"):
            path = tmp_path / "imgs" / split / cls / "0.png"
            path.parent.mkdir(parents=True)
            path.write_bytes(tf.io.encode_png(np.full((3, 3, 1), value, np.uint8)).numpy())
    train = load_dataset(f"folder:{tmp_path / 'imgs'}")
    test = load_dataset(f"folder:{tmp_path / 'imgs'}", "test")
    assert train.labels.tolist() == [0, 1] and np.all(train.images == 10)
    assert np.all(test.images == 20)


def test_folder_prefix_plain_folder_is_train_only(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes(
        tf.io.encode_png(np.zeros((2, 2, 3), np.uint8)).numpy()
    )
    assert len(load_dataset(f"folder:{tmp_path / 'flat'}")) == 1
    with pytest.raises(ValueError, match="no 'test' sub-folder"):
        load_dataset(f"folder:{tmp_path / 'flat'}", "test")


def test_npz_prefix(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.array([0, 1, 2]))
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert ds.images.shape == (3, 4, 4, 1) and ds.labels.tolist() == [0, 1, 2]


@pytest.mark.parametrize("name", [None, "", "   "])
def test_empty_name(name):
    with pytest.raises(ValueError, match="non-empty string"):
        load_dataset(name)


def test_prefix_without_path():
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset("folder:")


def test_unknown_name_goes_to_tfds_error():
    with pytest.raises(ValueError, match="'no_such_dataset_xyz'"):
        load_dataset("no_such_dataset_xyz")

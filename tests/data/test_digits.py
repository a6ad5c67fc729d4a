"""The offline default: scikit-learn digits with a fixed split."""

import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_digits

from tfvqvae.data import load_digits


@pytest.fixture(scope="module")
def splits():
    return load_digits("train"), load_digits("test")


def _rows(images, labels):
    """Each example as one sortable row: 64 pixel values (0..16) and the label."""
    flat = np.rint(np.asarray(images).reshape(len(labels), -1) * 16).astype(np.int64)
    return np.column_stack([flat, labels])


def test_sizes_shapes_and_range(splits):
    train, test = splits
    assert len(train) == 1500 and len(test) == 297
    for ds in splits:
        assert ds.images.dtype == np.float32 and ds.images.shape[1:] == (8, 8, 1)
        assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
        assert ds.labels.dtype == np.int64 and ds.num_classes == 10
        assert set(np.unique(ds.labels)) == set(range(10))


def test_splits_partition_sklearn_digits(splits):
    train, test = splits
    reference = sklearn_digits()
    assert len(train) + len(test) == len(reference.images) == 1797
    ours = _rows(
        np.concatenate([train.images, test.images]), np.concatenate([train.labels, test.labels])
    )
    theirs = _rows(reference.images / 16.0, reference.target)
    # Same multiset of examples: nothing lost, nothing duplicated across splits.
    np.testing.assert_array_equal(
        np.unique(ours, axis=0, return_counts=True)[1],
        np.unique(theirs, axis=0, return_counts=True)[1],
    )
    np.testing.assert_array_equal(np.unique(ours, axis=0), np.unique(theirs, axis=0))


def test_split_follows_documented_permutation(splits):
    train, test = splits
    reference = sklearn_digits()
    order = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(train.labels, reference.target[order[:1500]])
    np.testing.assert_array_equal(test.labels, reference.target[order[1500:]])
    np.testing.assert_allclose(test.images[5, :, :, 0], reference.images[order[1505]] / 16.0)


def test_deterministic_across_calls(splits):
    np.testing.assert_array_equal(load_digits("test").images, splits[1].images)


def test_bad_split():
    with pytest.raises(ValueError, match="'valid'"):
        load_digits("valid")

"""load_npz on archives written into tmp_path."""

import numpy as np
import pytest

from tfvqvae.data import load_npz


def test_images_and_labels_keys(tmp_path):
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.savez(tmp_path / "toy.npz", images=images, labels=np.array([1, 0]))
    ds = load_npz(tmp_path / "toy.npz")
    assert ds.name == "toy" and ds.images.shape == (2, 3, 3, 1)
    np.testing.assert_array_equal(ds.images[..., 0], images)
    assert ds.labels.tolist() == [1, 0]


def test_x_key_float_without_labels(tmp_path):
    x = np.full((3, 2, 2, 3), 0.5)
    np.savez(tmp_path / "f.npz", x=x)
    ds = load_npz(tmp_path / "f.npz")
    assert ds.labels is None and ds.images.dtype == np.float32
    np.testing.assert_array_equal(ds.images, x)


def test_keras_style_split_keys(tmp_path):
    np.savez(
        tmp_path / "k.npz",
        x_train=np.zeros((4, 2, 2), np.uint8),
        y_train=np.arange(4),
        x_test=np.full((2, 2, 2), 9, np.uint8),
        y_test=np.array([7, 8]),
    )
    test = load_npz(tmp_path / "k.npz", split="test")
    assert len(test) == 2 and test.labels.tolist() == [7, 8] and test.images.max() == 9
    assert len(load_npz(tmp_path / "k.npz", split="train")) == 4


def test_no_fitting_key_lists_keys_found(tmp_path):
    np.savez(tmp_path / "w.npz", pixels=np.zeros((2, 2, 2), np.uint8), targets=np.zeros(2))
    with pytest.raises(ValueError, match=r"keys found: \['pixels', 'targets'\]"):
        load_npz(tmp_path / "w.npz")


def test_int32_images_rejected(tmp_path):
    np.savez(tmp_path / "i.npz", images=np.zeros((2, 2, 2), np.int32))
    with pytest.raises(TypeError, match="int32"):
        load_npz(tmp_path / "i.npz")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        load_npz(tmp_path / "absent.npz")


# --- issue 10: messages that name the file ----------------------------------


def test_object_arrays_refused_without_unpickling(tmp_path):
    images = np.empty(2, dtype=object)
    images[0], images[1] = np.zeros((2, 2)), np.zeros((3, 3))
    np.savez(tmp_path / "obj.npz", images=images)
    with pytest.raises(ValueError) as info:
        load_npz(tmp_path / "obj.npz")
    message = str(info.value)
    assert str(tmp_path / "obj.npz") in message and "'images'" in message
    assert "object arrays are not accepted" in message and "\n" not in message


def test_float_images_in_0_255_name_file_and_range(tmp_path):
    np.savez(tmp_path / "f255.npz", x=np.array([0.0, 12.5, 255.0]).reshape(1, 3, 1))
    with pytest.raises(ValueError) as info:
        load_npz(tmp_path / "f255.npz")
    message = str(info.value)
    assert str(tmp_path / "f255.npz") in message
    assert "must lie in [0, 1]" in message and "uint8" in message
    assert "received min 0.0 and max 255.0" in message


def test_not_an_npz_is_named(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    with pytest.raises(ValueError, match="Cannot read npz file .*junk.npz"):
        load_npz(tmp_path / "junk.npz")

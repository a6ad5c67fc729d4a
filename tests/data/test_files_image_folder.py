"""Image-folder reader on PNGs written into tmp_path."""

import re

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.data import load_image_folder


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(array).numpy())


@pytest.fixture
def class_folder(tmp_path):
    """root/b_cat/{0,1}.png and root/a_dog/{0,1,2}.png with random RGB pixels."""
    rng = np.random.default_rng(0)
    arrays = {}
    for cls, count in (("b_cat", 2), ("a_dog", 3)):
        for i in range(count):
            array = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
            _write_png(tmp_path / "root" / cls / f"{i}.png", array)
            arrays[(cls, i)] = array
    return tmp_path / "root", arrays


def test_labels_follow_sorted_folder_names_and_pixels_round_trip(class_folder):
    root, arrays = class_folder
    ds = load_image_folder(root)
    assert ds.images.shape == (5, 5, 4, 3) and ds.images.dtype == np.uint8
    assert ds.num_classes == 2
    # a_dog (index 0) comes first, files in sorted order.
    assert ds.labels.tolist() == [0, 0, 0, 1, 1]
    expected = [arrays[("a_dog", i)] for i in range(3)] + [arrays[("b_cat", i)] for i in range(2)]
    np.testing.assert_array_equal(ds.images, np.stack(expected))


def test_flat_folder_has_no_labels(tmp_path):
    a = np.full((3, 3, 1), 7, np.uint8)
    b = np.full((3, 3, 1), 250, np.uint8)
    _write_png(tmp_path / "x1.png", a)
    _write_png(tmp_path / "x2.PNG", b)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_image_folder(tmp_path)
    assert ds.labels is None and ds.num_classes is None
    np.testing.assert_array_equal(ds.images, np.stack([a, b]))


def test_channels_3_repeats_grayscale(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4, 1) * 20
    _write_png(tmp_path / "g.png", gray)
    ds = load_image_folder(tmp_path, channels=3)
    assert ds.images.shape == (1, 3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(ds.images[0, ..., c], gray[..., 0])


def test_image_size_resizes_mixed_shapes(tmp_path):
    _write_png(tmp_path / "a.png", np.full((4, 4, 3), 100, np.uint8))
    _write_png(tmp_path / "b.png", np.full((10, 6, 3), 30, np.uint8))
    ds = load_image_folder(tmp_path, image_size=(8, 8))
    assert ds.images.shape == (2, 8, 8, 3) and ds.images.dtype == np.uint8
    assert np.all(ds.images[0] == 100) and np.all(ds.images[1] == 30)


def test_mismatched_shapes_without_image_size(tmp_path):
    _write_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    _write_png(tmp_path / "b.png", np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(
        ValueError, match=re.escape("(4, 4, 3)") + ".*" + re.escape("(5, 5, 3)") + ".*b.png"
    ):
        load_image_folder(tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "empty_images").mkdir()
    with pytest.raises(ValueError, match="no image files .*empty_images"):
        load_image_folder(tmp_path / "empty_images")


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_images"):
        load_image_folder(tmp_path / "missing_images")


def test_bad_channels(tmp_path):
    _write_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="received 2"):
        load_image_folder(tmp_path, channels=2)

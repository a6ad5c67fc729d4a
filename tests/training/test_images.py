"""PNG grids: layout and values against hand-built arrays."""

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.training.images import save_reconstruction_grid
from tfvqvae.training.images import tile


def test_tile_places_images_with_padding_and_scaling():
    images = np.zeros((3, 2, 2, 1), np.float32)
    images[1] = 1.0
    images[2] = 0.5
    grid = tile(images, columns=2, padding=1, min_tile=4)  # scale 2: tiles of 4x4
    assert grid.shape == (1 + 2 * 5, 1 + 2 * 5, 1)
    assert grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[1:5, 1:5], 0)      # image 0
    np.testing.assert_array_equal(grid[1:5, 6:10], 255)   # image 1
    np.testing.assert_array_equal(grid[6:10, 1:5], 128)   # image 2 (0.5 rounds to 128)
    np.testing.assert_array_equal(grid[6:10, 6:10], 255)  # empty cell: background
    np.testing.assert_array_equal(grid[0], 255)           # padding row


def test_tile_clips_out_of_range_values():
    grid = tile(np.array([[[[-0.5]], [[1.5]]]], np.float32).reshape(1, 2, 1, 1),
                columns=1, padding=0, min_tile=1)
    np.testing.assert_array_equal(grid[:, :, 0], [[0], [255]])


def test_tile_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"shape=\(2, 3\)"):
        tile(np.zeros((2, 3)), columns=1)


def test_reconstruction_grid_interleaves_pairs(tmp_path):
    originals = np.zeros((2, 32, 32, 3), np.float32)
    reconstructions = np.ones((2, 32, 32, 3), np.float32)
    path = tmp_path / "grid.png"
    save_reconstruction_grid(path, originals, reconstructions)
    png = tf.io.decode_png(path.read_bytes()).numpy()
    assert png.shape == (34, 1 + 4 * 33, 3)
    starts = [1 + 33 * i for i in range(4)]
    assert [int(png[10, s + 10, 0]) for s in starts] == [0, 255, 0, 255]


def test_reconstruction_grid_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 1\) and \(3, 8, 8, 1\)"):
        save_reconstruction_grid(tmp_path / "g.png", np.zeros((2, 8, 8, 1)),
                                 np.zeros((3, 8, 8, 1)))
    assert not (tmp_path / "g.png").exists()

"""Resizing as the input pipeline does, and its least-squares inverse."""

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.codec.resampling import inverse_resize
from tfvqvae.codec.resampling import resize_batch
from tfvqvae.codec.resampling import resize_matrix
from tfvqvae.data.image_ops import resize


@pytest.mark.parametrize("source,target", [((28, 28), (32, 32)), ((40, 24), (32, 32)),
                                           ((16, 20), (16, 8))])
def test_batch_resize_equals_the_pipeline_resize_per_image(source, target):
    pixels = np.random.default_rng(0).integers(0, 256, (5, *source, 3), dtype=np.uint8)
    found = resize_batch(pixels, target).numpy()
    for image, resized in zip(pixels, found):
        np.testing.assert_array_equal(resized, resize(image, target).numpy())


@pytest.mark.parametrize("source,target,antialias", [(28, 32, False), (40, 32, True),
                                                     (7, 3, True)])
def test_resize_matrix_is_the_resize(source, target, antialias):
    x = np.random.default_rng(1).random((source, 6)).astype(np.float32)
    expected = tf.image.resize(x[None, :, :, None], (target, 6), "bilinear",
                               antialias=antialias).numpy()[0, :, :, 0]
    np.testing.assert_allclose(resize_matrix(source, target, antialias) @ x, expected,
                               atol=1e-5)


def test_inverse_undoes_an_enlargement():
    x = np.random.default_rng(2).random((4, 28, 28, 1))
    enlarged = tf.image.resize(x, (32, 32), "bilinear").numpy()
    np.testing.assert_allclose(inverse_resize(enlarged, (28, 28)), x, atol=1e-5)


def test_inverse_is_the_least_squares_solution_of_a_reduction():
    # After a reduction the inverse is the minimum-norm image whose resize is y.
    y = np.random.default_rng(3).random((1, 8, 8, 1))
    x = inverse_resize(y, (20, 20))
    again = tf.image.resize(x.astype(np.float32), (8, 8), "bilinear", antialias=True).numpy()
    np.testing.assert_allclose(again, y, atol=1e-5)

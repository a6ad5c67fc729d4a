"""ImageDataset validation, helpers and its tf.data pipeline."""

import re

import numpy as np
import pytest

from tfvqvae.data import ImageDataset, from_numpy


def _uint8_images(n=10, h=6, w=5, c=1):
    return (np.arange(n * h * w * c) % 256).astype(np.uint8).reshape(n, h, w, c)


# --- container validation ---------------------------------------------------


def test_valid_uint8_dataset_keeps_dtype_and_shape():
    images = _uint8_images()
    ds = ImageDataset(images, np.arange(10) % 3, "toy", num_classes=3)
    assert len(ds) == 10
    assert ds.image_shape == (6, 5, 1)
    assert ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.images, images)


def test_float64_is_cast_to_float32():
    ds = ImageDataset(np.full((2, 3, 3, 1), 0.25), None, "f")
    assert ds.images.dtype == np.float32
    assert ds.labels is None


def test_arrays_are_read_only_and_caller_array_untouched():
    images = _uint8_images()
    ds = ImageDataset(images, None, "ro")
    with pytest.raises(ValueError):
        ds.images[0, 0, 0, 0] = 1
    assert images.flags.writeable


def test_rank3_rejected_by_container():
    with pytest.raises(ValueError, match=re.escape("received shape (10, 28, 28)")):
        ImageDataset(np.zeros((10, 28, 28), np.uint8), None, "r3")


def test_rank2_rejected_names_shape():
    with pytest.raises(ValueError, match=re.escape("received shape (10, 28)")):
        ImageDataset(np.zeros((10, 28), np.uint8), None, "r2")


def test_empty_dataset_rejected():
    with pytest.raises(ValueError, match="dataset 'nothing' is empty"):
        ImageDataset(np.zeros((0, 4, 4, 1), np.uint8), None, "nothing")


def test_float_out_of_range_names_min_and_max():
    images = np.full((2, 2, 2, 1), 0.5, np.float32)
    images[0, 0, 0, 0] = 1.5
    images[1, 0, 0, 0] = -0.25
    with pytest.raises(ValueError, match=r"min -0\.25 and max 1\.5"):
        ImageDataset(images, None, "oor")


def test_float_nan_rejected():
    images = np.full((2, 2, 2, 1), 0.5, np.float32)
    images[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="nan"):
        ImageDataset(images, None, "nan")


def test_int32_images_rejected_by_container():
    with pytest.raises(TypeError, match="int32"):
        ImageDataset(np.zeros((2, 2, 2, 1), np.int32), None, "i32")


def test_label_length_mismatch():
    with pytest.raises(ValueError, match="received 3 labels"):
        ImageDataset(_uint8_images(n=4), np.zeros(3, np.int64), "len")


def test_float_labels_rejected():
    with pytest.raises(TypeError, match="float64"):
        ImageDataset(_uint8_images(n=4), np.zeros(4), "lbl")


def test_labels_outside_num_classes_rejected():
    with pytest.raises(ValueError, match="max 10"):
        ImageDataset(_uint8_images(n=4), np.array([0, 1, 2, 10]), "nc", num_classes=10)


def test_equality_is_identity_and_repr_is_short():
    ds = ImageDataset(_uint8_images(), None, "eq")
    assert ds == ds
    assert ds != ImageDataset(_uint8_images(), None, "eq")
    assert "num_examples=10" in repr(ds) and len(repr(ds)) < 200


# --- helpers ----------------------------------------------------------------


def test_as_float_scales_uint8_by_255():
    images = np.array([0, 51, 255, 128], np.uint8).reshape(4, 1, 1, 1)
    out = ImageDataset(images, None, "af").as_float()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), [0.0, 0.2, 1.0, 128 / 255], rtol=1e-6)


def test_as_float_leaves_float_unchanged():
    images = np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 2, 2, 1)
    np.testing.assert_array_equal(ImageDataset(images, None, "f").as_float(), images)


def test_take_first_n():
    ds = ImageDataset(_uint8_images(), np.arange(10), "t", num_classes=10)
    head = ds.take(3)
    assert len(head) == 3 and head.name == "t" and head.num_classes == 10
    np.testing.assert_array_equal(head.images, _uint8_images()[:3])
    np.testing.assert_array_equal(head.labels, [0, 1, 2])
    assert len(ds.take(100)) == 10
    assert len(ds.take(np.int64(4))) == 4


@pytest.mark.parametrize("n", [0, -1, 2.0, "3", True])
def test_take_names_argument_and_value(n):
    # The package style (tfvqvae.validation.positive_int); --max-train-examples ends here.
    ds = ImageDataset(_uint8_images(), None, "t")
    with pytest.raises(ValueError) as info:
        ds.take(n)
    assert str(info.value) == f"`n` must be a positive integer. Received: n={n!r}"


def test_from_numpy_adds_channel_axis():
    ds = from_numpy(np.zeros((3, 7, 9), np.uint8), [1, 2, 3])
    assert ds.images.shape == (3, 7, 9, 1)
    assert ds.name == "numpy"
    np.testing.assert_array_equal(ds.labels, [1, 2, 3])


def test_from_numpy_rejects_other_integer_types():
    with pytest.raises(TypeError, match="int32"):
        from_numpy(np.zeros((3, 7, 9), np.int32))
    with pytest.raises(TypeError, match="uint16"):
        from_numpy(np.zeros((3, 7, 9, 1), np.uint16))


def test_from_numpy_rejects_rank2_and_out_of_range():
    with pytest.raises(ValueError, match=re.escape("(10, 28)")):
        from_numpy(np.zeros((10, 28), np.float32))
    with pytest.raises(ValueError, match=r"max 2\.0"):
        from_numpy(np.full((2, 3, 3), 2.0, np.float32))


# --- to_tf_dataset ----------------------------------------------------------


def _collect(ds):
    return [b.numpy() if not isinstance(b, tuple) else tuple(t.numpy() for t in b) for b in ds]


def test_pipeline_values_are_float_in_unit_range_in_order():
    images = _uint8_images(n=10)
    batches = _collect(ImageDataset(images, None, "p").to_tf_dataset(4))
    assert [b.shape for b in batches] == [(4, 6, 5, 1), (4, 6, 5, 1), (2, 6, 5, 1)]
    out = np.concatenate(batches)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out, images.astype(np.float64) / 255.0, rtol=1e-6)


def test_pipeline_float_storage_unchanged():
    images = np.random.default_rng(1).random((5, 3, 3, 2)).astype(np.float32)
    out = np.concatenate(_collect(ImageDataset(images, None, "f").to_tf_dataset(2)))
    np.testing.assert_array_equal(out, images)


def test_pipeline_drop_remainder_and_static_shape():
    ds = ImageDataset(_uint8_images(n=10), None, "d").to_tf_dataset(4, drop_remainder=True)
    assert ds.element_spec.shape.as_list() == [4, 6, 5, 1]
    assert [b.shape[0] for b in _collect(ds)] == [4, 4]


def test_pipeline_resize_to_16():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    images[0] = 200  # a constant image stays constant through any interpolation
    ds = ImageDataset(images, None, "r").to_tf_dataset(3, image_size=(16, 16))
    assert ds.element_spec.shape.as_list() == [None, 16, 16, 1]
    out = np.concatenate(_collect(ds))
    assert out.shape == (6, 16, 16, 1)
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out[0], 200 / 255, atol=1e-5)
    # Downscaling averages: the mean brightness is preserved approximately.
    np.testing.assert_allclose(
        out.mean(axis=(1, 2, 3)), images.mean(axis=(1, 2, 3)) / 255, atol=0.02
    )


def test_pipeline_resize_int_upscale():
    images = np.full((2, 8, 8, 3), 0.75, np.float32)
    out = np.concatenate(_collect(ImageDataset(images, None, "u").to_tf_dataset(2, image_size=16)))
    assert out.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(out, 0.75, atol=1e-6)


def test_pipeline_with_labels_stay_paired_when_shuffled():
    n = 40
    labels = np.arange(n) % 7
    images = np.broadcast_to(labels.astype(np.uint8)[:, None, None, None] * 30, (n, 4, 4, 1))
    ds = ImageDataset(np.ascontiguousarray(images), labels, "l", num_classes=7)
    for x, y in ds.to_tf_dataset(8, shuffle=True, seed=5, with_labels=True):
        assert y.dtype == np.int64 and x.shape[0] == y.shape[0]
        np.testing.assert_allclose(x.numpy()[:, 0, 0, 0], y.numpy() * 30 / 255, rtol=1e-6)


def test_pipeline_shuffle_is_seeded_and_a_permutation():
    n = 50
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)
    ds = ImageDataset(images, None, "s")

    def order(tf_ds):
        return np.rint(np.concatenate(_collect(tf_ds)).ravel() * 255).astype(int)

    first = order(ds.to_tf_dataset(7, shuffle=True, seed=123))
    again = order(ds.to_tf_dataset(7, shuffle=True, seed=123))
    other = order(ds.to_tf_dataset(7, shuffle=True, seed=124))
    np.testing.assert_array_equal(first, again)
    assert sorted(first) == list(range(n))
    assert not np.array_equal(first, np.arange(n))
    assert not np.array_equal(first, other)


def test_pipeline_repeat_reshuffles_each_epoch():
    n = 30
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)
    ds = ImageDataset(images, None, "rep").to_tf_dataset(n, shuffle=True, seed=9, repeat=True)
    epochs = [np.rint(b.numpy().ravel() * 255).astype(int) for b in ds.take(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(n))
    assert not np.array_equal(epochs[0], epochs[1])


def test_pipeline_argument_errors():
    ds = ImageDataset(_uint8_images(), None, "e")
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        ds.to_tf_dataset(0)
    with pytest.raises(ValueError, match=re.escape("Received: batch_size='4'")):
        ds.to_tf_dataset("4")
    with pytest.raises(ValueError, match="has no labels"):
        ds.to_tf_dataset(2, with_labels=True)
    with pytest.raises(ValueError, match=re.escape("(16, 16, 16)")):
        ds.to_tf_dataset(2, image_size=(16, 16, 16))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_pixel_variance_equals_numpy(dtype):
    rng = np.random.default_rng(3)
    if dtype == np.uint8:
        images = rng.integers(0, 256, (37, 5, 4, 3), dtype=np.uint8)
        reference = np.var(images.astype(np.float64) / 255.0)
    else:
        images = rng.random((37, 5, 4, 3)).astype(np.float32)
        reference = np.var(images.astype(np.float64))
    dataset = ImageDataset(images=images, labels=None, name="v")
    assert dataset.pixel_variance(chunk=8) == pytest.approx(reference, rel=1e-12)


# --- epochs_dataset: the resumable training order ---------------------------


def _epoch_ids(ds):
    return [np.rint(b.numpy().ravel() * 255).astype(int) for b in ds]


def test_epochs_dataset_is_a_fixed_permutation_per_epoch():
    n, batch = 23, 5  # 4 full batches per epoch, 3 images dropped each epoch
    ds = ImageDataset(np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1), None, "ep")
    batches = _epoch_ids(ds.epochs_dataset(batch, seed=7, first_epoch=0, epochs=3))
    assert len(batches) == 3 * 4 and all(len(b) == batch for b in batches)
    epochs = [np.concatenate(batches[4 * e:4 * e + 4]) for e in range(3)]
    for ids in epochs:
        assert len(set(ids)) == 20 and set(ids) <= set(range(n))  # no repeats
    assert not np.array_equal(epochs[0], epochs[1])
    # Epoch 2 alone, built fresh, is the same as epoch 2 of the full stream;
    # skipping batches drops exactly those.
    alone = _epoch_ids(ds.epochs_dataset(batch, seed=7, first_epoch=2, epochs=3))
    np.testing.assert_array_equal(np.concatenate(alone), epochs[2])
    skipped = _epoch_ids(ds.epochs_dataset(batch, seed=7, first_epoch=1, epochs=3,
                                           skip_batches=3))
    np.testing.assert_array_equal(np.concatenate(skipped), np.concatenate(batches[7:]))
    other = _epoch_ids(ds.epochs_dataset(batch, seed=8, first_epoch=0, epochs=1))
    assert not np.array_equal(np.concatenate(other), epochs[0])


def test_epochs_dataset_with_labels_and_static_shape():
    n = 12
    labels = np.arange(n) % 3
    ds = ImageDataset((labels[:, None, None, None] * 40).astype(np.uint8), labels, "l",
                      num_classes=3)
    tf_ds = ds.epochs_dataset(4, seed=0, first_epoch=0, epochs=1, with_labels=True)
    assert tuple(tf_ds.element_spec[0].shape) == (4, 1, 1, 1)
    for x, y in tf_ds:
        np.testing.assert_allclose(x.numpy().ravel(), y.numpy() * 40 / 255, rtol=1e-6)


def test_epochs_dataset_argument_errors():
    ds = ImageDataset(_uint8_images(n=10), None, "e")
    with pytest.raises(ValueError, match="fewer than one batch of 11"):
        ds.epochs_dataset(11, seed=0, first_epoch=0, epochs=1)
    with pytest.raises(ValueError, match="skip_batches < 2"):
        ds.epochs_dataset(5, seed=0, first_epoch=0, epochs=1, skip_batches=2)
    with pytest.raises(ValueError, match="first_epoch=-1"):
        ds.epochs_dataset(5, seed=0, first_epoch=-1, epochs=1)

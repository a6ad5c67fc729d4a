"""Load-time conversion (tfvqvae.data.transform) against hand computation and PIL."""

import re

import numpy as np
import pytest

from tfvqvae.data.transform import (
    check_options,
    convert_channels,
    convert_images,
    crop_window,
    normalize_size,
)

PIL_Image = pytest.importorskip("PIL.Image")


# --- channels ---------------------------------------------------------------


def test_uint8_luminance_by_hand():
    # ITU-R 601-2 with PIL's rounding: 0.299*255 = 76.2, 0.587*255 = 149.7,
    # 0.114*255 = 29.1, and white stays 255.
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    grey = convert_channels(rgb, 1)
    assert grey.shape == (1, 4, 1) and grey.dtype == np.uint8
    assert grey[0, :, 0].tolist() == [76, 150, 29, 255]


def test_uint8_luminance_equals_pil_convert_L():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    reference = np.asarray(PIL_Image.fromarray(rgb, "RGB").convert("L"))
    np.testing.assert_array_equal(convert_channels(rgb, 1)[..., 0], reference)


def test_float_luminance_by_hand():
    rgb = np.array([[[0.2, 0.4, 1.0]]], np.float32)
    grey = convert_channels(rgb, 1)
    assert grey.dtype == np.float32
    np.testing.assert_allclose(grey[0, 0, 0], 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 1.0, rtol=1e-6)


def test_alpha_is_dropped_not_composited():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: compositing on black would give zeros
    np.testing.assert_array_equal(convert_channels(rgba, 3), rgba[..., :3])
    pil = PIL_Image.fromarray(rgba, "RGBA")
    np.testing.assert_array_equal(convert_channels(rgba, 3), np.asarray(pil.convert("RGB")))
    np.testing.assert_array_equal(convert_channels(rgba, 1)[..., 0], np.asarray(pil.convert("L")))
    la = rgba[..., [0, 3]]
    np.testing.assert_array_equal(convert_channels(la, 1), la[..., :1])
    np.testing.assert_array_equal(convert_channels(la, 3), np.repeat(la[..., :1], 3, axis=-1))


def test_grey_replicated_and_none_keeps():
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    rgb = convert_channels(grey, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], grey[..., 0])
    assert convert_channels(grey, None) is grey


def test_five_channels_refused():
    with pytest.raises(ValueError, match=r"5-channel.*channels=1"):
        convert_channels(np.zeros((2, 2, 5), np.uint8), 1)


# --- resizing and cropping --------------------------------------------------


def test_downsample_4_to_2_by_hand():
    # Antialiased bilinear at scale 1/2: a triangle of half-width 2 input
    # pixels around output centre 1.0 (resp. 3.0) gives weights 3/4, 3/4, 1/4
    # to input pixels 0, 1, 2 (resp. 3, 2, 1), normalised by 7/4 at the border.
    row = np.array([0, 0, 255, 255], np.float64)
    w0 = np.array([3, 3, 1, 0]) / 7
    w1 = np.array([0, 1, 3, 3]) / 7
    expected_row = np.rint([row @ w0, row @ w1])  # 36.4 -> 36, 218.6 -> 219
    assert expected_row.tolist() == [36, 219]
    image = np.tile(row.astype(np.uint8), (4, 1))[np.newaxis, ..., np.newaxis]  # (1, 4, 4, 1)
    out = convert_images(image, (2, 2))
    assert out.shape == (1, 2, 2, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :, :, 0], np.tile(expected_row, (2, 1)))
    # PIL's bilinear filter, scaled the same way, agrees.
    pil = PIL_Image.fromarray(image[0, :, :, 0], "L").resize((2, 2), PIL_Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(out[0, :, :, 0], np.asarray(pil))


@pytest.mark.parametrize("dtype, value", [(np.uint8, 77), (np.float32, 0.3)])
@pytest.mark.parametrize("size", [(16, 16), (50, 7)])
def test_constant_image_stays_constant(dtype, value, size):
    image = np.full((3, 20, 12, 3), value, dtype)
    out = convert_images(image, size)
    assert out.shape == (3, *size, 3) and out.dtype == dtype
    np.testing.assert_allclose(out, value, rtol=1e-6)


@pytest.mark.parametrize(
    "shape, target, window",
    [
        ((48, 36), (16, 16), (6, 0, 36, 36)),  # taller: cut 6 rows top and bottom
        ((30, 50), (16, 16), (0, 10, 30, 30)),  # wider: cut 10 columns each side
        ((40, 40), (10, 20), (10, 0, 20, 40)),  # square to 1:2
        ((40, 40), (16, 16), (0, 0, 40, 40)),  # same ratio: whole image
    ],
)
def test_crop_window_by_hand(shape, target, window):
    assert crop_window(*shape, target) == window


def test_center_crop_keeps_only_the_centre():
    # A 30 x 50 (H x W) image: 200 in the centred 30 x 30 square, 0 in the
    # 10-column bands either side; the centred square crop sees only 200.
    image = np.zeros((1, 30, 50, 1), np.uint8)
    image[:, :, 10:40] = 200
    out = convert_images(image, (16, 16), crop="center")
    assert out.shape == (1, 16, 16, 1)
    assert np.all(out == 200)
    # Without the crop the dark bands are squeezed in.
    assert convert_images(image, (16, 16), crop="none")[0, :, 0].max() < 200


def test_same_size_is_a_no_op():
    image = np.zeros((2, 5, 5, 1), np.uint8)
    assert convert_images(image, (5, 5)) is image


# --- option checks ----------------------------------------------------------


@pytest.mark.parametrize("value", [0, -3, (0, 16), (16,), (16, 16, 16), "16", 2.5, True])
def test_bad_image_size_named(value):
    with pytest.raises(ValueError, match=re.escape(f"Received: image_size={value!r}")):
        normalize_size(value)


def test_image_size_forms():
    assert normalize_size(16) == (16, 16)
    assert normalize_size((12, 20)) == (12, 20)
    assert normalize_size(np.array([12, 20])) == (12, 20)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": 2}, "Received: channels=2"),
        ({"channels": 4}, "Received: channels=4"),
        ({"crop": "middle", "image_size": 8}, "Received: crop='middle'"),
        ({"crop": "center"}, "needs an image_size.*--image-size"),
    ],
)
def test_bad_options_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_options(**kwargs)


def test_options_normalised():
    assert check_options(16, 3, "center") == ((16, 16), 3, "center")
    assert check_options() == (None, None, "none")

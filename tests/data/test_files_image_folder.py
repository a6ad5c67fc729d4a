"""Image-folder reader on PNGs written into tmp_path."""

import re

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.data import load_dataset, load_image_folder


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
    with pytest.raises(ValueError, match=re.escape("4x4 (a.png), 5x5 (b.png)")):
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
    with pytest.raises(ValueError, match="Received: channels=2"):
        load_image_folder(tmp_path, channels=2)


# --- issue 10: mixed sizes and colour modes, unreadable files ---------------



class _LazyPIL:
    """``PIL.Image``, imported on first use so that only the PIL tests skip without it."""

    def __getattr__(self, name):
        return getattr(pytest.importorskip("PIL.Image"), name)


PIL_Image = _LazyPIL()

# (height, width) of the 40x40, 48x36 and 30x50 PNGs (width x height).
_MIXED_SIZES = {"a.png": (40, 40), "b.png": (36, 48), "c.png": (50, 30), "d.png": (50, 30)}


def _mixed_size_folder(root):
    for i, (name, (h, w)) in enumerate(_MIXED_SIZES.items()):
        _write_png(root / name, np.full((h, w, 3), 40 * (i + 1), np.uint8))
    return root


def test_mixed_sizes_error_names_sizes_examples_and_option(tmp_path):
    root = _mixed_size_folder(tmp_path / "mixed")
    with pytest.raises(ValueError) as info:
        load_image_folder(root)
    message = str(info.value)
    assert "\n" not in message and str(root) in message
    assert "40x40 (a.png), 36x48 (b.png), 50x30 (c.png, d.png)" in message
    assert "pass image_size=(height, width) (CLI: --image-size)" in message


@pytest.mark.parametrize("crop", ["none", "center"])
def test_image_size_unifies_mixed_sizes(tmp_path, crop):
    root = _mixed_size_folder(tmp_path / "mixed")
    ds = load_image_folder(root, image_size=16, crop=crop)
    assert ds.images.shape == (4, 16, 16, 3) and ds.images.dtype == np.uint8
    # Constant images stay constant whatever the resize.
    for i, image in enumerate(ds.images):
        assert np.all(image == 40 * (i + 1))


def test_center_crop_of_a_framed_image(tmp_path):
    # 30 rows x 50 columns: 10-column black bands around a 30 x 30 square of 180.
    image = np.zeros((30, 50, 1), np.uint8)
    image[:, 10:40] = 180
    _write_png(tmp_path / "framed.png", image)
    ds = load_image_folder(tmp_path, image_size=(8, 8), crop="center")
    assert ds.images.shape == (1, 8, 8, 1) and np.all(ds.images == 180)


def test_resize_matches_pil_bilinear_for_one_file(tmp_path):
    # A 2x downsample (antialiased bilinear, like PIL's BILINEAR filter).
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    PIL_Image.fromarray(image, "L").save(tmp_path / "x.png")
    reference = np.asarray(
        PIL_Image.open(tmp_path / "x.png").resize((16, 12), PIL_Image.Resampling.BILINEAR)
    )
    ds = load_image_folder(tmp_path, image_size=(12, 16))
    difference = np.abs(ds.images[0, ..., 0].astype(int) - reference.astype(int))
    assert difference.max() <= 1  # float rounding of the two implementations


def _mixed_mode_folder(root):
    """Four 6 x 5 PNGs in modes L, LA, RGB and RGBA (alpha random, not 255)."""
    rng = np.random.default_rng(3)
    root.mkdir()
    for name, mode, channels in (("0_l", "L", 1), ("1_la", "LA", 2), ("2_rgb", "RGB", 3),
                                 ("3_rgba", "RGBA", 4)):
        array = rng.integers(0, 256, (6, 5, channels), dtype=np.uint8)
        PIL_Image.fromarray(array[..., 0] if channels == 1 else array, mode).save(
            root / f"{name}.png"
        )
    return sorted(root.iterdir())


def test_mixed_modes_become_rgb_without_channels(tmp_path):
    files = _mixed_mode_folder(tmp_path / "modes")
    ds = load_image_folder(tmp_path / "modes")
    assert ds.images.shape == (4, 6, 5, 3)
    for image, path in zip(ds.images, files):
        # PIL's convert("RGB") drops alpha and replicates grey.
        np.testing.assert_array_equal(image, np.asarray(PIL_Image.open(path).convert("RGB")))


def _as_uint8(source):
    """A streamed folder's images as the uint8 values its files hold (x / 255 is exact)."""
    return np.rint(source.as_float() * 255.0).astype(np.uint8)


def test_channels_1_matches_pil_L_for_every_mode(tmp_path):
    files = _mixed_mode_folder(tmp_path / "modes")
    ds = load_dataset(f"folder:{tmp_path / 'modes'}", channels=1)
    images = _as_uint8(ds)
    assert images.shape == (4, 6, 5, 1)
    for image, path in zip(images, files):
        np.testing.assert_array_equal(image[..., 0], np.asarray(PIL_Image.open(path).convert("L")))


def test_grey_and_grey_alpha_stay_grey(tmp_path):
    _write_png(tmp_path / "g.png", np.full((3, 3, 1), 9, np.uint8))
    _write_png(tmp_path / "ga.png", np.dstack([np.full((3, 3), 70, np.uint8),
                                               np.zeros((3, 3), np.uint8)]))
    ds = load_image_folder(tmp_path)
    assert ds.images.shape == (2, 3, 3, 1)
    assert ds.images[:, 0, 0, 0].tolist() == [9, 70]


def test_rgba_only_folder_drops_alpha(tmp_path):
    rgba = np.dstack([np.full((2, 2, 3), 50, np.uint8), np.full((2, 2), 10, np.uint8)])
    _write_png(tmp_path / "a.png", rgba)
    ds = load_image_folder(tmp_path)
    assert ds.images.shape == (1, 2, 2, 3) and np.all(ds.images == 50)


def test_cli_sized_folder_through_load_dataset(tmp_path):
    root = _mixed_size_folder(tmp_path / "mixed")
    _write_png(root / "e.png", np.full((40, 40, 1), 90, np.uint8))  # grey among RGB
    ds = load_dataset(f"folder:{root}", image_size=16, channels=1)
    images = _as_uint8(ds)
    assert images.shape == (5, 16, 16, 1)
    # A grey RGB pixel (v, v, v) has luminance v.
    assert images[:, 0, 0, 0].tolist() == [40, 80, 120, 160, 90]


def test_corrupt_file_is_named(tmp_path):
    _write_png(tmp_path / "good.png", np.zeros((2, 2, 1), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError) as info:
        load_image_folder(tmp_path)
    message = str(info.value)
    assert message.startswith(f"Cannot read image file {tmp_path / 'broken.png'}: ")
    assert "\n" not in message

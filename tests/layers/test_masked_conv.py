"""MaskedConv2D and causal_mask against hand-written masks and a NumPy convolution."""

import keras
import numpy as np
import pytest

from tfvqvae.layers.masked_conv import MaskedConv2D
from tfvqvae.layers.masked_conv import causal_mask

# Hand-written masks (centre c = k // 2; row c is the current row).
MASKS = {
    3: {
        "A": [[1, 1, 1],
              [1, 0, 0],
              [0, 0, 0]],
        "B": [[1, 1, 1],
              [1, 1, 0],
              [0, 0, 0]],
        "vertical": [[1, 1, 1],
                     [1, 1, 1],
                     [0, 0, 0]],
        "horizontal_A": [[0, 0, 0],
                         [1, 0, 0],
                         [0, 0, 0]],
        "horizontal_B": [[0, 0, 0],
                         [1, 1, 0],
                         [0, 0, 0]],
    },
    5: {
        "A": [[1, 1, 1, 1, 1],
              [1, 1, 1, 1, 1],
              [1, 1, 0, 0, 0],
              [0, 0, 0, 0, 0],
              [0, 0, 0, 0, 0]],
        "B": [[1, 1, 1, 1, 1],
              [1, 1, 1, 1, 1],
              [1, 1, 1, 0, 0],
              [0, 0, 0, 0, 0],
              [0, 0, 0, 0, 0]],
        "vertical": [[1, 1, 1, 1, 1],
                     [1, 1, 1, 1, 1],
                     [1, 1, 1, 1, 1],
                     [0, 0, 0, 0, 0],
                     [0, 0, 0, 0, 0]],
        "horizontal_A": [[0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0],
                         [0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0]],
        "horizontal_B": [[0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0],
                         [1, 1, 1, 0, 0],
                         [0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0]],
    },
}
TYPES = ["A", "B", "vertical", "horizontal_A", "horizontal_B"]
# Rows ending at the current one that each mask can see (hand-counted above).
WINDOW_ROWS = {
    3: {"A": 2, "B": 2, "vertical": 2, "horizontal_A": 1, "horizontal_B": 1},
    5: {"A": 3, "B": 3, "vertical": 3, "horizontal_A": 1, "horizontal_B": 1},
}


def numpy_conv_same(x, kernel, bias):
    """Stride-1 'same' cross-correlation, NHWC / HWIO, float64, zero padding."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    k = kernel.shape[0]
    c = k // 2
    b, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (c, c), (c, c), (0, 0)))
    out = np.zeros((b, h, w, kernel.shape[-1]))
    for i in range(h):
        for j in range(w):
            patch = padded[:, i : i + k, j : j + k, :]
            out[:, i, j] = np.einsum("bhwc,hwco->bo", patch, kernel)
    return out + np.asarray(bias, np.float64)


def random_layer(k, mask_type, cin=3, filters=4, seed=0):
    """A built layer whose kernel is random everywhere (masked-out taps too) and bias non-zero."""
    rng = np.random.default_rng(seed)
    layer = MaskedConv2D(filters, k, mask_type)
    layer.build((None, None, None, cin))
    layer.kernel.assign(rng.normal(size=(k, k, cin, filters)).astype(np.float32))
    layer.bias.assign(rng.normal(size=(filters,)).astype(np.float32))
    return layer


def test_numpy_conv_hand_computed():
    # All-ones 3x3 kernel over a 3x3 ones image: in-bounds neighbour counts.
    out = numpy_conv_same(np.ones((1, 3, 3, 1)), np.ones((3, 3, 1, 1)), [0.0])
    np.testing.assert_array_equal(out[0, :, :, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]])
    # A kernel with only its top-left tap reads the upper-left neighbour.
    kernel = np.zeros((3, 3, 1, 1))
    kernel[0, 0] = 1.0
    x = np.arange(9.0).reshape(1, 3, 3, 1)
    out = numpy_conv_same(x, kernel, [0.0])
    np.testing.assert_array_equal(out[0, :, :, 0], [[0, 0, 0], [0, 0, 1], [0, 3, 4]])


def test_causal_mask_hand_written():
    for k in (3, 5):
        for mask_type in TYPES:
            mask = causal_mask(k, mask_type)
            assert mask.shape == (k, k)
            assert mask.dtype == np.float32
            np.testing.assert_array_equal(
                mask, np.array(MASKS[k][mask_type], np.float32), err_msg=f"{k} {mask_type}"
            )


def test_causal_mask_kernel_1():
    # k = 1: the single tap is the current position.
    np.testing.assert_array_equal(causal_mask(1, "A"), [[0]])
    np.testing.assert_array_equal(causal_mask(1, "B"), [[1]])
    np.testing.assert_array_equal(causal_mask(1, "vertical"), [[1]])
    np.testing.assert_array_equal(causal_mask(1, "horizontal_A"), [[0]])
    np.testing.assert_array_equal(causal_mask(1, "horizontal_B"), [[1]])


def test_causal_mask_invalid_type():
    for bad in ["C", "a", "horizontal", None]:
        with pytest.raises(ValueError, match=f"mask_type={bad!r}"):
            causal_mask(3, bad)


def test_causal_mask_even_kernel_raises():
    with pytest.raises(ValueError, match="4"):
        causal_mask(4, "A")


def test_masked_conv_invalid_arguments():
    for bad in [4, 2, 0, -3, 3.0, True]:
        with pytest.raises(ValueError, match=rf"kernel_size={bad!r}"):
            MaskedConv2D(4, bad)
    with pytest.raises(ValueError, match="mask_type='C'"):
        MaskedConv2D(4, 3, mask_type="C")
    with pytest.raises(ValueError, match="filters=0"):
        MaskedConv2D(0, 3)
    with pytest.raises(ValueError, match="filters=2.5"):
        MaskedConv2D(2.5, 3)


def test_window_rows():
    for k in (3, 5):
        for mask_type in TYPES:
            assert MaskedConv2D(2, k, mask_type).window_rows == WINDOW_ROWS[k][mask_type]


@pytest.mark.parametrize("k", [3, 5])
def test_call_matches_numpy_masked_conv(k):
    for mask_type in TYPES:
        _check_call_matches_numpy(k, mask_type)


def _check_call_matches_numpy(k, mask_type):
    layer = random_layer(k, mask_type, seed=k)
    x = np.random.default_rng(1).normal(size=(2, 6, 7, 3)).astype(np.float32)
    out = layer(x).numpy()
    assert out.shape == (2, 6, 7, 4)
    assert layer.compute_output_shape((2, 6, 7, 3)) == (2, 6, 7, 4)
    masked = layer.kernel.numpy() * np.array(MASKS[k][mask_type])[:, :, None, None]
    expected = numpy_conv_same(x, masked, layer.bias.numpy())
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # The masked-out taps really were non-zero (so the mask is what removed them).
    unmasked = numpy_conv_same(x, layer.kernel.numpy(), layer.bias.numpy())
    assert np.abs(unmasked - expected).max() > 0.1


def test_call_without_bias_and_causality_of_mask_a():
    layer = MaskedConv2D(2, 3, "A", use_bias=False)
    layer.build((None, None, None, 1))
    assert layer.bias is None
    layer.kernel.assign(np.ones((3, 3, 1, 2), np.float32))
    # A one-hot input at (2, 2): mask A reads the previous row (all three
    # columns) and the previous column of the current row, so only outputs at
    # (2, 3), (3, 1), (3, 2), (3, 3) see it.
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 2, 2, 0] = 1.0
    out = layer(x).numpy()[0, :, :, 0]
    expected = np.zeros((5, 5))
    expected[2, 3] = expected[3, 1] = expected[3, 2] = expected[3, 3] = 1.0
    np.testing.assert_array_equal(out, expected)


def _window(x_padded, i, j, n, k, rows):
    """Rows i − rows + 1 .. i and columns j − c .. j + n − 1 + c of the zero-padded input.

    ``x_padded`` carries k // 2 zero rows on top (enough for every mask) and
    k // 2 zero columns on each side.
    """
    c = k // 2
    return x_padded[:, c + i - rows + 1 : c + i + 1, j : j + n + k - 1]


@pytest.mark.parametrize("k", [3, 5])
def test_call_window_one_position_matches_call(k):
    for mask_type in TYPES:
        _check_window_one_position(k, mask_type)


def _check_window_one_position(k, mask_type):
    layer = random_layer(k, mask_type, seed=10 + k)
    rng = np.random.default_rng(2)
    h, w = 5, 6
    x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
    full = layer(x).numpy()
    c = k // 2
    rows = layer.window_rows
    padded = np.pad(x, ((0, 0), (c, 0), (c, c), (0, 0)))
    # Entries of the window the mask ignores (rows of the mask the window
    # covers: c + 1 − rows .. c) may hold anything: fill them with junk.
    visible = np.array(MASKS[k][mask_type], bool)[c + 1 - rows : c + 1]
    for i, j in [(0, 0), (0, w - 1), (2, 3), (h - 1, 0), (h - 1, w - 1)]:
        window = _window(padded, i, j, 1, k, rows).copy()
        assert window.shape == (2, rows, k, 3)
        junk = rng.normal(scale=100.0, size=window.shape).astype(np.float32)
        window = np.where(visible[None, :, :, None], window, junk)
        out = layer.call_window(window).numpy()
        assert out.shape == (2, 1, 4)
        np.testing.assert_allclose(out[:, 0], full[:, i, j], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [3, 5])
def test_call_window_whole_row_matches_call(k):
    for mask_type in TYPES:
        _check_window_whole_row(k, mask_type)


def _check_window_whole_row(k, mask_type):
    layer = random_layer(k, mask_type, seed=20 + k)
    h, w = 4, 5
    x = np.random.default_rng(3).normal(size=(3, h, w, 3)).astype(np.float32)
    full = layer(x).numpy()
    c = k // 2
    rows = layer.window_rows
    padded = np.pad(x, ((0, 0), (c, 0), (c, c), (0, 0)))
    for i in range(h):
        window = _window(padded, i, 0, w, k, rows)
        assert window.shape == (3, rows, w + 2 * c, 3)
        out = layer.call_window(window).numpy()
        assert out.shape == (3, w, 4)
        np.testing.assert_allclose(out, full[:, i], rtol=1e-5, atol=1e-5)


def test_config_round_trip():
    layer = MaskedConv2D(
        5, 3, "horizontal_A", use_bias=False, kernel_initializer="he_normal", name="mc"
    )
    config = layer.get_config()
    assert config["filters"] == 5
    assert config["kernel_size"] == 3
    assert config["mask_type"] == "horizontal_A"
    assert config["use_bias"] is False
    clone = MaskedConv2D.from_config(config)
    assert clone.get_config() == config
    assert clone.name == "mc"
    np.testing.assert_array_equal(clone.mask, MASKS[3]["horizontal_A"])
    # Serialisation through Keras (registered class) keeps behaviour.
    source = random_layer(3, "B", seed=5)
    revived = keras.layers.deserialize(keras.layers.serialize(source))
    assert isinstance(revived, MaskedConv2D)
    x = np.random.default_rng(4).normal(size=(1, 4, 4, 3)).astype(np.float32)
    if not revived.built:
        revived.build(x.shape)
    revived.set_weights(source.get_weights())
    np.testing.assert_array_equal(revived(x).numpy(), source(x).numpy())

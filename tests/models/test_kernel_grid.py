"""Kernels on TFLite's per-channel int8 grid (tfvqvae.models.kernel_grid), against NumPy loops."""

import keras
import numpy as np
import pytest

import tfvqvae
from tfvqvae.models.kernel_grid import grid_scales
from tfvqvae.models.kernel_grid import on_grid
from tfvqvae.models.kernel_grid import snap_kernel
from tfvqvae.models.kernel_grid import snap_kernels


def _loop_snap(kernel, axis, bits):
    """The grid channel by channel: s = max|W_c| / (2^(b-1) - 1), W_c <- s * round(W_c / s)."""
    out = np.array(kernel, np.float64)
    for c in range(kernel.shape[axis]):
        channel = np.take(out, c, axis=axis)
        s = np.abs(channel).max() / (2 ** (bits - 1) - 1) or 1.0
        index = [slice(None)] * kernel.ndim
        index[axis] = c
        out[tuple(index)] = np.round(channel / s) * s
    return out


def test_grid_scales_by_hand():
    kernel = np.array([[1.0, -2.0, 0.0], [0.5, 4.0, 0.0]])
    np.testing.assert_allclose(grid_scales(kernel), [1 / 127, 4 / 127, 1.0])
    np.testing.assert_allclose(grid_scales(kernel, axis=0), [2 / 127, 4 / 127])
    np.testing.assert_allclose(grid_scales(kernel, bits=4), [1 / 7, 4 / 7, 1.0])
    # 0.3 / (1/127) = 38.1 -> 38 steps of 1/127.
    np.testing.assert_allclose(snap_kernel(np.array([[1.0], [0.3]])), [[1.0], [38 / 127]])


@pytest.mark.parametrize("axis", [-1, -2])
@pytest.mark.parametrize("bits", [4, 8])
def test_snap_kernel_matches_a_loop_and_is_a_grid(axis, bits):
    rng = np.random.default_rng(bits)
    kernel = (rng.normal(size=(3, 3, 4, 5)) * rng.uniform(0.01, 2.0, size=5)).astype(np.float32)
    kernel[..., 2] = 0.0 if axis == -1 else kernel[..., 2]
    snapped = snap_kernel(kernel, axis, bits)
    assert snapped.dtype == np.float32
    np.testing.assert_allclose(snapped, _loop_snap(kernel, axis, bits), rtol=1e-6, atol=1e-7)
    steps = np.moveaxis(snapped, axis, -1) / grid_scales(kernel, axis, bits)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)  # integers ...
    assert np.abs(np.round(steps)).max() == 2 ** (bits - 1) - 1  # ... in the narrow range
    # Rounding moves each weight by at most half a step, and snapping twice changes nothing.
    half = (grid_scales(kernel, axis, bits) / 2)
    assert np.all(np.abs(np.moveaxis(snapped - kernel, axis, -1)) <= half * (1 + 1e-5))
    np.testing.assert_allclose(snap_kernel(snapped, axis, bits), snapped, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bits", [1, 17, 8.0, True])
def test_bad_bits_are_refused(bits):
    with pytest.raises(ValueError, match="`bits` must be an integer in \\[2, 16\\]"):
        grid_scales(np.ones((2, 2)), bits=bits)


def test_a_nonfinite_kernel_has_no_grid():
    with pytest.raises(ValueError, match="NaN or Inf"):
        snap_kernel(np.array([[1.0, np.nan]]))


def _tiny_vqvae2():
    keras.utils.set_random_seed(0)
    model = tfvqvae.VQVAE2(image_channels=1, hidden_channels=8, residual_channels=4,
                           num_residual_layers=1)
    model(np.zeros((1, 16, 16, 1), np.float32))
    return model


def test_snap_kernels_rounds_every_kernel_along_its_output_axis():
    model = _tiny_vqvae2()
    before = {id(v): v.numpy() for v in model.weights}  # paths repeat across sub-models
    assert not on_grid(model)
    paths = snap_kernels(model)
    assert on_grid(model)
    kernels = [v.path for v in model.weights if v.path.endswith("/kernel")]
    assert sorted(paths) == sorted(kernels) and len(paths) > 10
    transposed = 0
    for layer in model._flatten_layers(include_self=False):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        axis = -2 if isinstance(layer, keras.layers.Conv2DTranspose) else -1
        transposed += axis == -2
        np.testing.assert_allclose(kernel.numpy(), _loop_snap(before[id(kernel)], axis, 8),
                                   rtol=1e-6, atol=1e-7)
    assert transposed >= 2  # the decoders' upsampling layers
    for variable in model.weights:  # codebooks, biases and EMA statistics stay as they were
        if not variable.path.endswith("/kernel"):
            np.testing.assert_array_equal(variable.numpy(), before[id(variable)])


def test_snap_kernels_changes_nothing_when_a_kernel_is_not_finite():
    model = _tiny_vqvae2()
    layers = [layer for layer in model._flatten_layers(include_self=False)
              if getattr(layer, "kernel", None) is not None]
    bad = layers[-1].kernel
    bad.assign(np.full(bad.shape, np.nan, np.float32))
    first = layers[0].kernel.numpy()
    with pytest.raises(ValueError, match="NaN or Inf"):
        snap_kernels(model)
    np.testing.assert_array_equal(layers[0].kernel.numpy(), first)


def test_snap_kernels_refuses_a_model_without_kernels():
    model = keras.Sequential([keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no convolution or dense kernel"):
        snap_kernels(model)

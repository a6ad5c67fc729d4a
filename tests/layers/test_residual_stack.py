"""ResidualStack against a NumPy re-implementation with the layer's own kernels."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvqvae import ResidualStack
from tests.layers import numpy_reference as ref


def randomise_biases(layer, rng):
    """Non-zero biases so that the reference has to add them in the right place."""
    for conv3x3, conv1x1 in layer.blocks:
        for conv in (conv3x3, conv1x1):
            conv.bias.assign(rng.normal(size=conv.bias.shape).astype(np.float32))


def numpy_stack(layer, x):
    """x ← x + conv1x1(relu(conv3x3(relu(x)))) per block, then relu."""
    x = np.asarray(x, np.float64)
    for conv3x3, conv1x1 in layer.blocks:
        h = ref.conv2d_same(ref.relu(x), conv3x3.kernel.numpy(), conv3x3.bias.numpy())
        h = ref.conv2d_same(ref.relu(h), conv1x1.kernel.numpy(), conv1x1.bias.numpy())
        x = x + h
    return ref.relu(x)


def test_conv_reference_hand_computed():
    # 3x3 all-ones kernel on a 3x3 all-ones image, 'same' padding: the number
    # of in-bounds neighbours (4 at corners, 6 at edges, 9 in the centre).
    x = np.ones((1, 3, 3, 1))
    out = ref.conv2d_same(x, np.ones((3, 3, 1, 1)), [0.5])
    np.testing.assert_array_equal(
        out[0, :, :, 0], [[4.5, 6.5, 4.5], [6.5, 9.5, 6.5], [4.5, 6.5, 4.5]]
    )
    # Cross-correlation orientation: a kernel with only the top-left tap picks
    # the upper-left neighbour.
    k = np.zeros((3, 3, 1, 1))
    k[0, 0] = 1.0
    img = np.arange(9.0).reshape(1, 3, 3, 1)
    np.testing.assert_array_equal(
        ref.conv2d_same(img, k, [0.0])[0, :, :, 0], [[0, 0, 0], [0, 0, 1], [0, 3, 4]]
    )


@pytest.mark.parametrize("num_layers", [1, 2])
def test_matches_numpy_reimplementation(num_layers):
    rng = np.random.default_rng(num_layers)
    channels, residual_channels = 4, 3
    layer = ResidualStack(channels, residual_channels, num_layers=num_layers)
    x = rng.normal(size=(2, 5, 6, channels)).astype(np.float32)
    layer.build(x.shape)
    randomise_biases(layer, rng)
    out = layer(x)
    assert tuple(out.shape) == x.shape
    assert out.dtype == "float32"
    np.testing.assert_allclose(out.numpy(), numpy_stack(layer, x), rtol=1e-5, atol=1e-5)
    assert np.all(out.numpy() >= 0.0)


def test_kernel_shapes_and_weight_count():
    layer = ResidualStack(8, 5, num_layers=2)
    layer.build((None, 6, 6, 8))
    assert len(layer.trainable_weights) == 8  # 2 blocks x 2 convs x (kernel, bias)
    for conv3x3, conv1x1 in layer.blocks:
        assert tuple(conv3x3.kernel.shape) == (3, 3, 8, 5)
        assert tuple(conv1x1.kernel.shape) == (1, 1, 5, 8)


def test_output_shape_with_unknown_spatial_dims():
    inputs = keras.Input((None, None, 6))
    outputs = ResidualStack(6, 2)(inputs)
    assert tuple(outputs.shape) == (None, None, None, 6)
    assert ResidualStack(6, 2).compute_output_shape((3, 7, 9, 6)) == (3, 7, 9, 6)
    model = keras.Model(inputs, outputs)
    assert tuple(model(np.zeros((1, 7, 3, 6), np.float32)).shape) == (1, 7, 3, 6)


def test_channel_mismatch_raises():
    match = r"expects 4 input channels.*Received: input_shape=\(1, 5, 5, 3\)"
    with pytest.raises(ValueError, match=match):
        ResidualStack(4, 2)(np.zeros((1, 5, 5, 3), np.float32))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channels": 0}, "channels=0"),
        ({"residual_channels": -2}, "residual_channels=-2"),
        ({"num_layers": 0}, "num_layers=0"),
        ({"num_layers": 1.5}, r"num_layers=1\.5"),
        ({"channels": True}, "channels=True"),
    ],
)
def test_invalid_constructor_arguments(kwargs, match):
    args = {"channels": 4, "residual_channels": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        ResidualStack(**args)


def test_config_round_trip():
    layer = ResidualStack(6, 3, num_layers=3, name="res")
    config = layer.get_config()
    assert config["channels"] == 6
    assert config["residual_channels"] == 3
    assert config["num_layers"] == 3
    clone = ResidualStack.from_config(config)
    assert clone.get_config() == config
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is ResidualStack and restored.get_config() == config


def test_save_load_keeps_outputs(tmp_path):
    inputs = keras.Input((5, 5, 4))
    model = keras.Model(inputs, ResidualStack(4, 2, name="res")(inputs))
    randomise_biases(model.get_layer("res"), np.random.default_rng(0))
    path = tmp_path / "res.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(1).normal(size=(2, 5, 5, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    np.testing.assert_allclose(
        loaded(x).numpy(), numpy_stack(loaded.get_layer("res"), x), rtol=1e-5, atol=1e-5
    )


@pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning")
def test_keras_run_layer_test():
    from keras.src.testing import test_case

    class _Harness(test_case.TestCase):
        def runTest(self):  # pragma: no cover
            pass

    case = _Harness()
    case.setUp()
    try:
        case.run_layer_test(
            ResidualStack,
            init_kwargs={"channels": 4, "residual_channels": 2, "num_layers": 2},
            input_shape=(2, 5, 5, 4),
            expected_output_shape=(2, 5, 5, 4),
            expected_num_trainable_weights=8,
            expected_num_non_trainable_weights=0,
            expected_num_losses=0,
            supports_masking=False,
        )
    finally:
        case.tearDown()


@pytest.mark.parametrize("dtype", ["mixed_float16", "float64"])
def test_per_layer_dtype_policy_reaches_sublayers(dtype):
    layer = ResidualStack(4, 2, num_layers=1, dtype=dtype)
    x = np.random.default_rng(0).normal(size=(1, 5, 5, 4)).astype(np.float32)
    out = layer(x)
    compute = keras.DTypePolicy(dtype).compute_dtype
    assert out.dtype == compute
    for conv in layer.blocks[0]:
        assert conv.compute_dtype == compute
    np.testing.assert_allclose(
        np.asarray(out, np.float64), numpy_stack(layer, x), rtol=1e-2, atol=1e-2
    )


def test_global_mixed_precision_policy():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    layer = ResidualStack(4, 2, num_layers=1)
    x = np.random.default_rng(0).normal(size=(1, 5, 5, 4)).astype(np.float32)
    out = layer(x)
    assert out.dtype == "float16"
    for w in layer.weights:
        assert w.dtype == "float32"
    np.testing.assert_allclose(
        np.asarray(out, np.float64), numpy_stack(layer, x), rtol=1e-2, atol=1e-2
    )

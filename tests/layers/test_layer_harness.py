"""The quantizers held to the standard of a public Keras layer: Keras' own
``run_layer_test`` harness, config round-trip, ``.keras`` save/load, mixed
precision and ``fit`` inside a user's functional model (the vector quantizers
first, then the scalar ones, FSQ and LFQ).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvqvae import FiniteScalarQuantizer
from tfvqvae import LookupFreeQuantizer
from tfvqvae import VectorQuantizer
from tfvqvae import VectorQuantizerEMA
from tests.layers import numpy_reference as ref

BOTH = [VectorQuantizer, VectorQuantizerEMA]
D = 4

pytestmark = [
    # Keras' harness feeds a generator and trains layers without trainable weights.
    pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning"),
    pytest.mark.filterwarnings("ignore:The model does not have any trainable weights:UserWarning"),
]


# ------------------------------------------------------------ Keras harness
@pytest.mark.parametrize(
    "cls, kwargs, trainable, non_trainable",
    [
        # Without codebook care: codebook | training_steps
        (VectorQuantizer, {"restart_unused_after": None, "kmeans_init": False}, 1, 1),
        (VectorQuantizer, {"restart_unused_after": 2, "kmeans_init": True}, 1, 2),
        # codebook, N, m, training_steps (+ steps_unused with restarts)
        (VectorQuantizerEMA, {"decay": 0.9, "restart_unused_after": None,
                              "kmeans_init": False}, 0, 4),
        (VectorQuantizerEMA, {"restart_unused_after": 2, "kmeans_init": True}, 0, 5),
    ],
)
@pytest.mark.parametrize("add_losses", [True, False])
def test_keras_run_layer_test(harness, cls, kwargs, trainable, non_trainable, add_losses):
    harness.run_quantizer_test(
        cls, {"num_embeddings": 8, "embedding_dim": D, "add_losses": add_losses, **kwargs},
        D, trainable, non_trainable, num_losses=1 if add_losses else 0)


@pytest.mark.parametrize("cls", BOTH)
def test_symbolic_call_with_unknown_dims(cls):
    inputs = keras.Input((None, None, D))
    layer = cls(8, D, kmeans_init=False, restart_unused_after=None)
    outputs = layer(inputs)
    assert tuple(outputs.shape) == (None, None, None, D)
    model = keras.Model(inputs, outputs)
    z = np.random.default_rng(0).normal(size=(2, 5, 3, D)).astype(np.float32)
    codebook = layer.codebook.numpy()
    np.testing.assert_allclose(
        model(z).numpy(), codebook[ref.nearest(z, codebook)], rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("cls", BOTH)
def test_tf_function_with_dynamic_batch(cls):
    layer = cls(8, D, restart_unused_after=3, kmeans_init=False)
    layer.build((None, D))
    codebook = layer.codebook.numpy()

    @tf.function(input_signature=[tf.TensorSpec((None, None, D), tf.float32)])
    def step(z):
        out = layer.quantize_with_losses(z, training=True)
        return out.indices, out.quantized

    for n in (3, 7):
        z = np.random.default_rng(n).normal(size=(n, 2, D)).astype(np.float32)
        before = layer.codebook.numpy()
        idx, q = step(z)
        np.testing.assert_array_equal(idx.numpy(), ref.nearest(z, before))
        assert tuple(q.shape) == (n, 2, D)
    assert float(layer.training_steps.numpy()) == 2.0
    assert codebook.shape == (8, D)


# ------------------------------------------------------- 10. config & saving
CONFIGS = [
    (
        VectorQuantizer,
        dict(
            num_embeddings=7,
            embedding_dim=3,
            commitment_cost=0.5,
            codebook_cost=0.75,
            embeddings_initializer="he_normal",
            kmeans_init=True,
            kmeans_iterations=3,
            restart_unused_after=4,
            add_losses=False,
            seed=9,
            name="my_vq",
        ),
    ),
    (
        VectorQuantizerEMA,
        dict(
            num_embeddings=5,
            embedding_dim=2,
            commitment_cost=0.1,
            decay=0.5,
            epsilon=1e-3,
            kmeans_init=True,
            kmeans_iterations=2,
            restart_unused_after=1,
            seed=3,
            name="my_vq_ema",
        ),
    ),
]


@pytest.mark.parametrize("cls, kwargs", CONFIGS, ids=["VectorQuantizer", "VectorQuantizerEMA"])
def test_config_round_trip(cls, kwargs):
    layer = cls(**kwargs)
    config = layer.get_config()
    for key, value in kwargs.items():
        if key != "embeddings_initializer":
            assert config[key] == value, key
    clone = cls.from_config(config)
    assert type(clone) is cls
    assert clone.get_config() == config
    # Through the registered name as well.
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is cls
    assert restored.get_config() == config


@pytest.mark.parametrize("cls", BOTH)
def test_config_round_trip_defaults(cls):
    layer = cls(4, 2)
    config = layer.get_config()
    assert config["commitment_cost"] == 1.0  # DEFAULT_COMMITMENT_COST (issue 13)
    assert config.get("codebook_cost") == (1.0 if cls is VectorQuantizer else None)
    # Codebook care on by default (issue 13, bench/codebook_defaults.py).
    assert config["kmeans_init"] is True and config["restart_unused_after"] == 20
    assert cls.from_config(config).get_config() == config
    # A config of an earlier release (care off, written out) keeps it off.
    old = {**config, "kmeans_init": False, "restart_unused_after": None}
    assert cls.from_config(old).get_config() == old


def _ema_model(k=6, **kwargs):
    inputs = keras.Input((4, 4, D))
    h = keras.layers.Dense(D, name="encoder")(inputs)
    kwargs = {"kmeans_init": False, "restart_unused_after": None, **kwargs}
    q = VectorQuantizerEMA(k, D, name="vq", **kwargs)(h)
    outputs = keras.layers.Dense(1, name="decoder")(q)
    return keras.Model(inputs, outputs)


def test_keras_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4, 4, D)).astype(np.float32)
    y = rng.normal(size=(8, 4, 4, 1)).astype(np.float32)
    model = _ema_model(decay=0.7, epsilon=1e-3, kmeans_init=True, restart_unused_after=2, seed=4)
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # two steps: non-trivial state
    vq = model.get_layer("vq")
    assert float(vq.training_steps.numpy()) == 2.0
    assert not np.array_equal(vq.ema_cluster_size.numpy(), np.ones(6))

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    lvq = loaded.get_layer("vq")
    assert type(lvq) is VectorQuantizerEMA
    assert lvq.get_config() == vq.get_config()
    state = ("codebook", "ema_cluster_size", "ema_embedding_sum", "training_steps")
    for name in state + ("steps_unused",):
        np.testing.assert_array_equal(
            getattr(lvq, name).numpy(), getattr(vq, name).numpy(), err_msg=name
        )
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())

    # Training continues identically (training_steps restored: no second k-means).
    model(x[:4], training=True)
    loaded(x[:4], training=True)
    for name in state:
        np.testing.assert_array_equal(
            getattr(lvq, name).numpy(), getattr(vq, name).numpy(), err_msg=name
        )


def test_keras_save_load_gradient_quantizer(tmp_path):
    inputs = keras.Input((3, D))
    outputs = keras.layers.Dense(1)(VectorQuantizer(5, D, name="vq", commitment_cost=0.7, kmeans_init=False, restart_unused_after=None)(inputs))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "vq.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        loaded.get_layer("vq").codebook.numpy(), model.get_layer("vq").codebook.numpy()
    )
    x = np.random.default_rng(1).normal(size=(2, 3, D)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert loaded.get_layer("vq").commitment_cost == 0.7


# ------------------------------------------------------- 11. mixed precision
@pytest.mark.parametrize("cls", BOTH)
def test_mixed_precision_dtypes(cls):
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    layer = cls(8, D, kmeans_init=False, restart_unused_after=None)
    z = np.random.default_rng(2).normal(size=(2, 3, 3, D)).astype(np.float32)
    out = layer(z, training=True)
    assert layer.compute_dtype == "float16"
    assert out.dtype == tf.float16
    for w in layer.weights:
        assert w.dtype == "float32", w.path
    # Read inside the layer, the codebook is not auto-cast to float16 either.
    assert tf.convert_to_tensor(layer.codebook).dtype == tf.float32
    result = layer.quantize_with_losses(tf.cast(z, tf.float16), training=True)
    assert result.quantized.dtype == tf.float16
    assert result.indices.dtype == tf.int32
    for name in ("codebook_loss", "commitment_loss", "counts", "perplexity"):
        assert getattr(result, name).dtype == tf.float32, name
    assert len(layer.losses) == 1 and layer.losses[0].dtype == tf.float32
    # Forward value: the float16 rounding of the (float32) codebook rows.
    z16 = tf.cast(z, tf.float16).numpy().astype(np.float32)
    before = layer.codebook.numpy()
    np.testing.assert_allclose(
        layer(z, training=False).numpy().astype(np.float32),
        before[ref.nearest(z16, before)],
        rtol=2e-3,
        atol=2e-3,
    )


def _functional_model(cls, decoder_kernel="glorot_uniform", **kwargs):
    inputs = keras.Input((4, 4, D))
    h = keras.layers.Dense(D, name="encoder")(inputs)
    kwargs = {"kmeans_init": False, "restart_unused_after": None, **kwargs}
    q = cls(6, D, name="vq", **kwargs)(h)
    outputs = keras.layers.Dense(1, name="decoder", kernel_initializer=decoder_kernel)(q)
    return keras.Model(inputs, outputs)


def _data(n=8):
    rng = np.random.default_rng(3)
    return (
        rng.normal(size=(n, 4, 4, D)).astype(np.float32),
        rng.normal(size=(n, 4, 4, 1)).astype(np.float32),
    )


@pytest.mark.parametrize("cls", BOTH)
def test_mixed_precision_fit_step(cls):
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    kwargs = {"decay": 0.9} if cls is VectorQuantizerEMA else {}
    model = _functional_model(cls, **kwargs)
    vq = model.get_layer("vq")
    assert vq.codebook.dtype == "float32"
    model.compile(optimizer="adam", loss="mse")
    before = {w.path: w.numpy().copy() for w in vq.weights}
    x, y = _data()
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    loss = history.history["loss"][0]
    assert np.isfinite(loss)
    assert float(vq.training_steps.numpy()) == 1.0
    assert not np.array_equal(vq.codebook.numpy(), before[vq.codebook.path])
    if cls is VectorQuantizerEMA:
        assert not np.array_equal(
            vq.ema_cluster_size.numpy(), before[vq.ema_cluster_size.path]
        )
        assert not np.array_equal(
            vq.ema_embedding_sum.numpy(), before[vq.ema_embedding_sum.path]
        )
    for w in vq.weights:
        assert w.dtype == "float32"
        assert np.all(np.isfinite(w.numpy())), w.path


@pytest.mark.parametrize("cls", BOTH)
def test_fit_with_plain_compile_trains_codebook_and_commits_encoder(cls):
    # A zero decoder kernel makes the reconstruction gradient w.r.t. the
    # quantised tensor exactly 0: anything that moves the encoder or the
    # codebook must then come from the quantizer's own loss terms (add_loss)
    # or, for the EMA layer, its statistics update.
    model = _functional_model(cls, decoder_kernel="zeros")
    model.compile(loss="mse")
    encoder = model.get_layer("encoder")
    vq = model.get_layer("vq")
    kernel_before = encoder.kernel.numpy().copy()
    codebook_before = vq.codebook.numpy().copy()
    x, y = _data()
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(vq.codebook.numpy(), codebook_before)
    assert not np.array_equal(encoder.kernel.numpy(), kernel_before)
    if cls is VectorQuantizer:
        assert vq.codebook.trainable
        assert any(w is vq.codebook for w in model.trainable_weights)
    else:
        assert not any(w is vq.codebook for w in model.trainable_weights)


@pytest.mark.filterwarnings("ignore:Gradients do not exist for variables:UserWarning")
@pytest.mark.parametrize("cls", BOTH)
def test_fit_without_add_losses_leaves_encoder_alone(cls):
    # Control for the test above: without the loss terms nothing reaches the
    # encoder through a zero decoder kernel.
    model = _functional_model(cls, decoder_kernel="zeros", add_losses=False)
    model.compile(loss="mse")
    encoder = model.get_layer("encoder")
    kernel_before = encoder.kernel.numpy().copy()
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    np.testing.assert_array_equal(encoder.kernel.numpy(), kernel_before)


@pytest.mark.parametrize("cls", [VectorQuantizer, VectorQuantizerEMA])
def test_float64_dtype_policy(cls):
    layer = cls(8, D, dtype="float64", kmeans_init=False, restart_unused_after=None)
    z = np.random.default_rng(4).normal(size=(5, D))
    out = layer(z, training=True)
    assert out.dtype == tf.float64
    codebook = layer.codebook.numpy()
    np.testing.assert_array_equal(layer.indices(z).numpy(), ref.nearest(z, codebook))


# ------------------------------------- the scalar quantizers (FSQ and LFQ)
# No weights at all: the codebook is implied (FSQ's grid, LFQ's {−s, s}^D).
SCALAR = [
    (FiniteScalarQuantizer, {"levels": [8, 5, 3, 3]}, 0),
    (LookupFreeQuantizer, {"embedding_dim": D, "add_losses": True}, 1),
    (LookupFreeQuantizer, {"embedding_dim": D, "add_losses": False}, 0),
]
SCALAR_IDS = ["FSQ", "LFQ", "LFQ-no-add-losses"]


@pytest.mark.parametrize("cls, kwargs, num_losses", SCALAR, ids=SCALAR_IDS)
def test_keras_run_layer_test_scalar_quantizers(harness, cls, kwargs, num_losses):
    harness.run_quantizer_test(cls, kwargs, D, 0, 0, num_losses=num_losses)


@pytest.mark.parametrize("cls, kwargs, num_losses", SCALAR, ids=SCALAR_IDS)
def test_scalar_quantizers_symbolic_call_with_unknown_dims(cls, kwargs, num_losses):
    inputs = keras.Input((None, None, D))
    layer = cls(**kwargs)
    outputs = layer(inputs)
    assert tuple(outputs.shape) == (None, None, None, D)
    model = keras.Model(inputs, outputs)
    z = np.random.default_rng(0).normal(size=(2, 5, 3, D)).astype(np.float32)
    # The forward value is the code of each vector: its lookup (a property of
    # the layer's own bijection; the values themselves are checked against
    # NumPy in test_finite_scalar_quantizer.py / test_lookup_free_quantizer.py).
    np.testing.assert_array_equal(model(z).numpy(), layer.lookup(layer.indices(z)).numpy())


@pytest.mark.parametrize("cls, kwargs", [
    (FiniteScalarQuantizer, dict(levels=[7, 5, 5, 5, 5], name="my_fsq")),
    (LookupFreeQuantizer, dict(embedding_dim=6, entropy_cost=0.2, commitment_cost=0.3,
                               diversity_gamma=0.5, codebook_scale=0.25,
                               entropy_temperature=0.05, add_losses=False, name="my_lfq")),
], ids=["FSQ", "LFQ"])
def test_scalar_quantizers_config_round_trip(cls, kwargs):
    layer = cls(**kwargs)
    config = layer.get_config()
    for key, value in kwargs.items():
        assert config[key] == value, key
    assert cls.from_config(config).get_config() == config
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is cls
    assert restored.get_config() == config


def test_lfq_fit_with_plain_compile_commits_the_encoder():
    # Through a zero decoder kernel only the layer's own losses (add_loss) move the encoder.
    inputs = keras.Input((4, 4, D))
    h = keras.layers.Dense(D, name="encoder")(inputs)
    q = LookupFreeQuantizer(D, name="lfq")(h)
    outputs = keras.layers.Dense(1, name="decoder", kernel_initializer="zeros")(q)
    model = keras.Model(inputs, outputs)
    model.compile(loss="mse")
    kernel_before = model.get_layer("encoder").kernel.numpy().copy()
    x, y = _data()
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(model.get_layer("encoder").kernel.numpy(), kernel_before)

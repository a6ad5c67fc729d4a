"""VQVAE: shapes, bad input, save/load, training, distribution, mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae


def tiny_model(channels=1, quantizer=None, **kwargs):
    options = dict(hidden_channels=16, residual_channels=8, num_residual_layers=1)
    options.update(kwargs)
    return tfvqvae.VQVAE(
        image_channels=channels,
        quantizer=quantizer or tfvqvae.VectorQuantizerEMA(16, 4, decay=0.9, kmeans_init=False, restart_unused_after=None),
        **options,
    )


def images(n, h, w, c, seed=0):
    return np.random.default_rng(seed).random((n, h, w, c), dtype=np.float32)


@pytest.mark.parametrize(
    "channels,height,width,downsamples",
    [(1, 16, 16, 2), (3, 24, 32, 2), (3, 16, 8, 3), (1, 8, 8, 1)],
)
def test_encode_decode_shapes(channels, height, width, downsamples):
    model = tiny_model(channels, num_downsamples=downsamples)
    x = images(2, height, width, channels)
    factor = 2**downsamples
    codes = model.encode(x)
    assert codes.dtype == tf.int32
    assert codes.shape == (2, height // factor, width // factor)
    assert model.downsample_factor == factor
    decoded = model.decode(codes)
    assert decoded.shape == x.shape and decoded.dtype == tf.float32
    assert model(x).shape == x.shape
    # The reconstruction is the decoding of the code map (no hidden state).
    np.testing.assert_allclose(model(x).numpy(), decoded.numpy(), atol=1e-5)


def test_codes_are_nearest_codebook_rows_of_encoder_output():
    model = tiny_model()
    x = images(3, 16, 16, 1)
    z_e = model.encoder(x).numpy().reshape(-1, 4).astype(np.float64)
    codebook = model.quantizer.codebook.numpy().astype(np.float64)
    distances = ((z_e[:, None, :] - codebook[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(
        model.encode(x).numpy().reshape(-1), distances.argmin(1)
    )


@pytest.mark.parametrize(
    "bad,error,match",
    [
        (np.zeros((2, 16, 16), np.float32), ValueError, r"shape=\(2, 16, 16\)"),
        (np.zeros((2, 16, 16, 3), np.float32), ValueError, r"shape=\(2, 16, 16, 3\)"),
        (np.zeros((2, 16, 16, 1), np.int32), TypeError, "dtype=int32"),
        (np.zeros((2, 18, 16, 1), np.float32), ValueError, r"divisible by 4.*\(2, 18, 16, 1\)"),
    ],
)
def test_bad_images_are_named(bad, error, match):
    model = tiny_model()
    for method in (model.encode, model):
        with pytest.raises(error, match=match):
            method(bad)


def test_decode_rejects_codes_outside_codebook():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"\[0, 16\).*\[16, 16\]"):
        model.decode(np.full((1, 4, 4), 16, np.int32))
    with pytest.raises(ValueError, match=r"\[-1, 0\]"):
        model.decode(np.array([[[-1, 0], [0, 0]]], np.int32))
    with pytest.raises(TypeError, match="dtype=float32"):
        model.decode(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"shape=\(4, 4\)"):
        model.decode(np.zeros((4, 4), np.int32))


def test_quantizer_rejects_encoder_of_other_width():
    """An encoder whose channels differ from embedding_dim is named in the error."""
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(5, 3, padding="same")(inputs)
    with pytest.raises(ValueError, match=r"embedding_dim=4.*\(None, 8, 8, 5\)"):
        tfvqvae.VectorQuantizer(16, 4, kmeans_init=False, restart_unused_after=None)(features)


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="hidden_channels=0"):
        tfvqvae.VQVAE(hidden_channels=0)
    with pytest.raises(ValueError, match="data_variance=-1"):
        tfvqvae.VQVAE(data_variance=-1)
    with pytest.raises(TypeError, match="quantizer"):
        tfvqvae.VQVAE(quantizer=keras.layers.Dense(3))


def test_config_round_trip_and_keras_file(tmp_path):
    model = tiny_model(3, quantizer=tfvqvae.VectorQuantizer(16, 4, commitment_cost=0.5, kmeans_init=False, restart_unused_after=None))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = images(16, 8, 8, 3)
    model.fit(x, batch_size=8, epochs=1, verbose=0)

    config = model.get_config()
    rebuilt = tfvqvae.VQVAE.from_config(config)
    assert rebuilt.get_config() == config

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, tfvqvae.VQVAE)
    assert isinstance(loaded.quantizer, tfvqvae.VectorQuantizer)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    np.testing.assert_array_equal(loaded.encode(x).numpy(), model.encode(x).numpy())
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Optimizer state travels too (what --resume relies on).
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2


def test_train_step_matches_hand_written_step():
    """One fit step equals: loss = mse / var + commitment, Adam on its gradient."""
    x = images(8, 8, 8, 1, seed=3)
    model = tiny_model(quantizer=tfvqvae.VectorQuantizerEMA(16, 4, decay=0.9, kmeans_init=False, restart_unused_after=None), data_variance=0.5)
    reference = tiny_model(quantizer=tfvqvae.VectorQuantizerEMA(16, 4, decay=0.9, kmeans_init=False, restart_unused_after=None), data_variance=0.5)
    reference.set_weights(model.get_weights())

    model.compile(optimizer=keras.optimizers.SGD(0.1))
    logs = model.fit(x, batch_size=8, epochs=1, verbose=0, shuffle=False).history

    with tf.GradientTape() as tape:
        z_e = reference.encoder(x)
        out = reference.quantizer.quantize_with_losses(z_e, training=True)
        recon = reference.decoder(out.quantized)
        mse = tf.reduce_mean(tf.square(x - recon))
        loss = mse / 0.5 + out.commitment_loss
    grads = tape.gradient(loss, reference.trainable_weights)
    for variable, grad in zip(reference.trainable_weights, grads):
        variable.assign(variable - 0.1 * grad)

    np.testing.assert_allclose(logs["loss"][0], float(loss), rtol=1e-5)
    np.testing.assert_allclose(logs["mse"][0], float(mse), rtol=1e-5)
    for a, b in zip(model.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


@pytest.mark.slow  # default-suite time: the slow run keeps it
def test_fit_lowers_reconstruction_error():
    from tfvqvae.data import load_digits

    keras.utils.set_random_seed(0)
    x = tf.image.resize(load_digits("train").as_float()[:512], (16, 16)).numpy()
    model = tiny_model(quantizer=tfvqvae.VectorQuantizerEMA(  # the release-1 layer this was written for
        32, 8, kmeans_init=True, restart_unused_after=None, commitment_cost=0.25))
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    before = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)["mse"]
    history = model.fit(x, batch_size=64, epochs=4, verbose=0).history
    after = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    assert after["mse"] < 0.5 * before
    assert history["mse"][-1] < history["mse"][0]
    for key in ("loss", "mse", "commitment_loss", "perplexity", "usage", "dead_codes"):
        assert key in history
    assert "codebook_loss" not in history  # EMA quantiser: no codebook term


def test_usage_and_dead_codes_count_the_whole_evaluation_set():
    model = tiny_model()
    model.compile()
    x = images(40, 16, 16, 1, seed=5)
    result = model.evaluate(x, batch_size=7, verbose=0, return_dict=True)
    used = np.unique(model.encode(x).numpy()).size
    assert result["dead_codes"] == 16 - used
    assert result["usage"] == pytest.approx(100.0 * used / 16)
    # mse is the per-image mean even with a smaller last batch (40 = 5*7 + 5).
    expected = np.mean((model.predict(x, verbose=0) - x) ** 2)
    assert result["mse"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("quantizer_class", [
    tfvqvae.VectorQuantizerEMA,
    pytest.param(tfvqvae.VectorQuantizer, marks=pytest.mark.slow),  # about 18 s
], ids=["VectorQuantizerEMA", "VectorQuantizer"])
def test_mirrored_strategy_matches_single_device(
    quantizer_class, mirrored_strategy, one_device_strategy
):
    """Two replicas on the same global batches end with the same weights as one device.

    k-means initialisation and restarts (restart_unused_after=2) are on, so
    their draws of vectors from the global batch are compared too.
    """
    x = images(48, 8, 8, 1, seed=7)

    def run(strategy):
        keras.utils.set_random_seed(1)
        with strategy.scope():
            extra = {"decay": 0.9} if quantizer_class is tfvqvae.VectorQuantizerEMA else {}
            model = tiny_model(
                quantizer=quantizer_class(
                    16, 4, kmeans_init=True, restart_unused_after=2, **extra
                )
            )
            model.compile(optimizer=keras.optimizers.Adam(1e-2))
        dataset = tf.data.Dataset.from_tensor_slices(x).batch(16)
        model.fit(dataset, epochs=2, verbose=0)
        return model

    single = run(one_device_strategy)
    mirrored = run(mirrored_strategy)
    assert mirrored.distribute_strategy.num_replicas_in_sync == 2
    names = [w.path for w in single.weights]
    assert any("ema" in n or "codebook" in n for n in names)
    for a, b in zip(single.weights, mirrored.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
        # Replicas hold identical copies.
        values = getattr(b.value, "values", None)
        if values:
            np.testing.assert_array_equal(values[0].numpy(), values[1].numpy())


def test_mixed_float16_fit_step():
    keras.config.set_dtype_policy("mixed_float16")
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = model.quantizer.ema_embedding_sum.numpy().copy()
    history = model.fit(images(16, 8, 8, 1), batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert model.quantizer.codebook.dtype == "float32"
    assert model.quantizer.ema_cluster_size.dtype == "float32"
    assert not np.array_equal(before, model.quantizer.ema_embedding_sum.numpy())
    assert np.all(np.isfinite(model.quantizer.codebook.numpy()))
    assert model(images(2, 8, 8, 1)).dtype == tf.float32

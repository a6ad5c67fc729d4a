"""VQVAE2: shapes, NumPy codes, bad input, save/load, training, distribution, mixed precision."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae

# The two levels get different codebook sizes (K, D) so that a mix-up of
# levels shows up as a shape or range error.
TOP_K, TOP_D = 16, 4
BOTTOM_K, BOTTOM_D = 24, 6


def tiny_model(channels=1, top=None, bottom=None, **kwargs):
    options = dict(hidden_channels=16, residual_channels=8, num_residual_layers=1)
    options.update(kwargs)
    return tfvqvae.VQVAE2(
        image_channels=channels,
        top_quantizer=top or tfvqvae.VectorQuantizerEMA(TOP_K, TOP_D, decay=0.9, kmeans_init=False, restart_unused_after=None),
        bottom_quantizer=bottom or tfvqvae.VectorQuantizerEMA(BOTTOM_K, BOTTOM_D, decay=0.9, kmeans_init=False, restart_unused_after=None),
        **options,
    )


def images(n, h, w, c, seed=0):
    return np.random.default_rng(seed).random((n, h, w, c), dtype=np.float32)


def nearest_rows(vectors, codebook):
    """NumPy reference: index of the nearest codebook row, in float64."""
    flat = np.asarray(vectors, np.float64).reshape(-1, codebook.shape[1])
    codebook = np.asarray(codebook, np.float64)
    distances = ((flat[:, None, :] - codebook[None]) ** 2).sum(-1)
    return distances.argmin(1).reshape(np.shape(vectors)[:-1])


@pytest.mark.parametrize("channels,height,width", [(1, 16, 16), (3, 32, 24)])
def test_encode_decode_shapes(channels, height, width):
    model = tiny_model(channels)
    x = images(2, height, width, channels)
    top, bottom = model.encode(x)
    assert top.dtype == tf.int32 and bottom.dtype == tf.int32
    assert top.shape == (2, height // 8, width // 8)
    assert bottom.shape == (2, height // 4, width // 4)
    assert model.downsample_factor == 4
    assert model.levels == ("top", "bottom")
    assert model.level_num_embeddings == {"top": TOP_K, "bottom": BOTTOM_K}
    assert model.code_shapes((height, width)) == {
        "top": (height // 8, width // 8), "bottom": (height // 4, width // 4)
    }
    decoded = model.decode(top, bottom)
    assert decoded.shape == x.shape and decoded.dtype == tf.float32
    reconstruction = model(x)
    assert reconstruction.shape == x.shape and reconstruction.dtype == tf.float32
    # The reconstruction is the decoding of the two code maps (no hidden state).
    np.testing.assert_allclose(reconstruction.numpy(), decoded.numpy(), atol=1e-5)

    levels = model.encode_levels(x)
    assert set(levels) == {"top", "bottom"}
    np.testing.assert_array_equal(levels["top"].numpy(), top.numpy())
    np.testing.assert_array_equal(levels["bottom"].numpy(), bottom.numpy())
    np.testing.assert_array_equal(model.decode_levels(levels).numpy(), decoded.numpy())

    # The decoder reads both levels.
    other_top = (top + 1) % TOP_K
    other_bottom = (bottom + 1) % BOTTOM_K
    assert not np.allclose(model.decode(other_top, bottom).numpy(), decoded.numpy())
    assert not np.allclose(model.decode(top, other_bottom).numpy(), decoded.numpy())


def test_codes_are_nearest_codebook_rows_of_each_level():
    model = tiny_model()
    x = images(3, 16, 24, 1)
    top_codebook = model.top_quantizer.codebook.numpy()
    bottom_codebook = model.bottom_quantizer.codebook.numpy()

    features = model.bottom_encoder(x)
    h_top = model.top_encoder(features).numpy()
    expected_top = nearest_rows(h_top, top_codebook)
    # The bottom encoder is conditioned on the quantised top map: decode the
    # reference top codes' codebook rows, then quantise the 1x1 output.
    decoded_top = model.top_decoder(top_codebook[expected_top])
    h_bottom = model.bottom_pre_quantization([features, decoded_top]).numpy()
    expected_bottom = nearest_rows(h_bottom, bottom_codebook)

    top, bottom = model.encode(x)
    assert expected_top.shape == (3, 2, 3) and expected_bottom.shape == (3, 4, 6)
    np.testing.assert_array_equal(top.numpy(), expected_top)
    np.testing.assert_array_equal(bottom.numpy(), expected_bottom)


@pytest.mark.parametrize(
    "bad,error,match",
    [
        (np.zeros((2, 16, 16), np.float32), ValueError, r"shape=\(2, 16, 16\)"),
        (np.zeros((2, 16, 16, 3), np.float32), ValueError, r"shape=\(2, 16, 16, 3\)"),
        (np.zeros((2, 16, 16, 1), np.int32), TypeError, "dtype=int32"),
        # 20 is divisible by 4 (the bottom level) but not by 8 (the top level).
        (np.zeros((2, 20, 16, 1), np.float32), ValueError, r"divisible by 8.*\(2, 20, 16, 1\)"),
    ],
)
def test_bad_images_are_named(bad, error, match):
    model = tiny_model()
    for method in (model.encode, model, model.encode_levels):
        with pytest.raises(error, match=match):
            method(bad)


def test_decode_rejects_bad_codes():
    model = tiny_model()
    top = np.zeros((1, 2, 2), np.int32)
    bottom = np.zeros((1, 4, 4), np.int32)
    with pytest.raises(ValueError, match=r"\[0, 16\).*\[16, 16\]"):
        model.decode(np.full((1, 2, 2), TOP_K, np.int32), bottom)
    with pytest.raises(ValueError, match=r"\[0, 24\).*\[0, 24\]"):
        model.decode(top, np.array([[[0, 24, 0, 0]] * 4], np.int32))
    with pytest.raises(ValueError, match=r"\[-1, 0\]"):
        model.decode(top, np.array([[[-1, 0, 0, 0]] * 4], np.int32))
    with pytest.raises(TypeError, match="top_codes with dtype=float32"):
        model.decode(top.astype(np.float32), bottom)
    with pytest.raises(TypeError, match="bottom_codes with dtype=float64"):
        model.decode(top, bottom.astype(np.float64))
    with pytest.raises(ValueError, match=r"top_codes with shape=\(2, 2\)"):
        model.decode(top[0], bottom)
    with pytest.raises(ValueError, match=r"bottom_codes with shape=\(1, 4, 4, 1\)"):
        model.decode(top, bottom[..., None])
    # The bottom map must be exactly twice the top map (and the same batch).
    for other in (np.zeros((1, 8, 8), np.int32), np.zeros((1, 4, 2), np.int32),
                  np.zeros((2, 4, 4), np.int32)):
        pattern = r"shape=\(1, 2, 2\).*bottom_codes with shape=" + re.escape(str(other.shape))
        with pytest.raises(ValueError, match=pattern):
            model.decode(top, other)
    with pytest.raises(ValueError, match="twice"):
        model.decode_levels({"top": top, "bottom": np.zeros((1, 2, 2), np.int32)})


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="hidden_channels=0"):
        tfvqvae.VQVAE2(hidden_channels=0)
    with pytest.raises(ValueError, match="num_residual_layers=1.5"):
        tfvqvae.VQVAE2(num_residual_layers=1.5)
    with pytest.raises(ValueError, match="data_variance=-1"):
        tfvqvae.VQVAE2(data_variance=-1)
    with pytest.raises(TypeError, match="top_quantizer=<Dense"):
        tfvqvae.VQVAE2(top_quantizer=keras.layers.Dense(3))
    with pytest.raises(TypeError, match="bottom_quantizer='ema'"):
        tfvqvae.VQVAE2(bottom_quantizer="ema")
    shared = tfvqvae.VectorQuantizerEMA(8, 4, kmeans_init=False, restart_unused_after=None)
    with pytest.raises(ValueError, match="two different instances"):
        tfvqvae.VQVAE2(top_quantizer=shared, bottom_quantizer=shared)


def test_default_quantizers_are_ema():
    model = tfvqvae.VQVAE2(image_channels=1, hidden_channels=8, residual_channels=4)
    for quantizer in (model.top_quantizer, model.bottom_quantizer):
        assert type(quantizer) is tfvqvae.VectorQuantizerEMA
        assert (quantizer.num_embeddings, quantizer.embedding_dim) == (512, 64)
    assert model.top_quantizer is not model.bottom_quantizer


@pytest.mark.slow  # about 9 s; test_vqvae.py's round trip stays in the default suite
def test_config_round_trip_and_keras_file(tmp_path):
    model = tiny_model(
        3,
        top=tfvqvae.VectorQuantizer(TOP_K, TOP_D, commitment_cost=0.5, kmeans_init=False, restart_unused_after=None),
        data_variance=0.25,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = images(16, 16, 8, 3)
    model.fit(x, batch_size=8, epochs=1, verbose=0)

    config = model.get_config()
    assert set(config) == {
        "name", "image_channels", "hidden_channels", "residual_channels",
        "num_residual_layers", "top_quantizer", "bottom_quantizer", "data_variance",
        "dtype",  # the dtype policy: a mixed-precision model reloads mixed
    }
    rebuilt = tfvqvae.VQVAE2.from_config(config)  # quantizers from their dicts
    assert rebuilt.get_config() == config
    assert isinstance(rebuilt.top_quantizer, tfvqvae.VectorQuantizer)
    assert rebuilt.top_quantizer.commitment_cost == 0.5
    assert isinstance(rebuilt.bottom_quantizer, tfvqvae.VectorQuantizerEMA)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, tfvqvae.VQVAE2)
    assert loaded.data_variance == 0.25
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    for a, b in zip(model.encode(x), loaded.encode(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert len(model.weights) == len(loaded.weights)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    # EMA state moved during fit and was restored.
    assert not np.all(loaded.bottom_quantizer.ema_cluster_size.numpy() == 1.0)
    # Optimizer state travels too (what --resume relies on).
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_train_step_matches_hand_written_step():
    """One fit step equals: loss = mse / var + Σ levels (codebook + commitment), SGD."""
    x = images(8, 16, 16, 1, seed=3)

    def make():
        return tiny_model(
            top=tfvqvae.VectorQuantizer(TOP_K, TOP_D, commitment_cost=0.3, kmeans_init=False, restart_unused_after=None),
            bottom=tfvqvae.VectorQuantizerEMA(BOTTOM_K, BOTTOM_D, decay=0.9, kmeans_init=False, restart_unused_after=None),
            data_variance=0.5,
        )

    model, reference = make(), make()
    reference.set_weights(model.get_weights())

    model.compile(optimizer=keras.optimizers.SGD(0.1))
    logs = model.fit(x, batch_size=8, epochs=1, verbose=0, shuffle=False).history

    with tf.GradientTape() as tape:
        features = reference.bottom_encoder(x)
        top = reference.top_quantizer.quantize_with_losses(
            reference.top_encoder(features), training=True
        )
        h_bottom = reference.bottom_pre_quantization(
            [features, reference.top_decoder(top.quantized)]
        )
        bottom = reference.bottom_quantizer.quantize_with_losses(h_bottom, training=True)
        recon = reference.decoder([top.quantized, bottom.quantized])
        mse = tf.reduce_mean(tf.square(x - recon))
        loss = mse / 0.5 + top.codebook_loss + top.commitment_loss + bottom.commitment_loss
    grads = tape.gradient(loss, reference.trainable_weights)
    assert all(g is not None for g in grads)
    for variable, grad in zip(reference.trainable_weights, grads):
        variable.assign(variable - 0.1 * tf.convert_to_tensor(grad))

    assert float(top.codebook_loss) > 0 and float(bottom.codebook_loss) == 0
    np.testing.assert_allclose(logs["loss"][0], float(loss), rtol=1e-5)
    np.testing.assert_allclose(logs["mse"][0], float(mse), rtol=1e-5)
    np.testing.assert_allclose(logs["top_codebook_loss"][0], float(top.codebook_loss), rtol=1e-5)
    np.testing.assert_allclose(
        logs["top_commitment_loss"][0], float(top.commitment_loss), rtol=1e-5
    )
    np.testing.assert_allclose(
        logs["bottom_commitment_loss"][0], float(bottom.commitment_loss), rtol=1e-5
    )
    np.testing.assert_allclose(logs["bottom_perplexity"][0], float(bottom.perplexity), rtol=1e-5)
    assert "bottom_codebook_loss" not in logs  # EMA level: no codebook term
    for a, b in zip(model.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.path)


@pytest.mark.slow  # about 15 s; test_vqvae.py's fit and test_mixed_float16_fit_step below stay
def test_fit_lowers_reconstruction_error():
    from tfvqvae.data import load_digits

    keras.utils.set_random_seed(0)
    x = tf.image.resize(load_digits("train").as_float()[:512], (16, 16)).numpy()
    model = tiny_model(
        top=tfvqvae.VectorQuantizerEMA(16, 8, kmeans_init=True),
        bottom=tfvqvae.VectorQuantizerEMA(32, 8, kmeans_init=True),
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)["mse"]
    history = model.fit(x, batch_size=64, epochs=4, verbose=0).history
    after = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    assert after["mse"] < 0.5 * before
    assert history["mse"][-1] < history["mse"][0]
    for level in ("top", "bottom"):
        for key in ("commitment_loss", "perplexity", "usage", "dead_codes"):
            assert f"{level}_{key}" in history
        assert f"{level}_codebook_loss" not in history  # EMA quantisers
        assert after[f"{level}_perplexity"] > 1.0
    assert {"loss", "mse"} <= set(history)


def test_usage_and_dead_codes_count_the_whole_evaluation_set():
    model = tiny_model()
    model.compile()
    x = images(40, 16, 16, 1, seed=5)
    result = model.evaluate(x, batch_size=7, verbose=0, return_dict=True)
    codes = model.encode_levels(x)
    for level, k in (("top", TOP_K), ("bottom", BOTTOM_K)):
        used = np.unique(codes[level].numpy()).size
        assert result[f"{level}_dead_codes"] == k - used
        assert result[f"{level}_usage"] == pytest.approx(100.0 * used / k)
    # mse is the per-image mean even with a smaller last batch (40 = 5*7 + 5).
    expected = np.mean((model.predict(x, verbose=0) - x) ** 2)
    assert result["mse"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow  # about 20 s; test_vqvae.py's mirrored EMA case stays in the default suite
def test_mirrored_strategy_matches_single_device(mirrored_strategy, one_device_strategy):
    """Two replicas on the same global batches end with the same weights as one device.

    Top level EMA, bottom level gradient codebook, both with k-means
    initialisation and restarts (restart_unused_after=2), so their draws of
    vectors from the global batch are compared too.
    """
    x = images(48, 16, 16, 1, seed=7)
    # Few Lloyd iterations: the loop is unrolled in the graph, and tracing it
    # twice per level is what makes this test slow.
    codebook_health = dict(kmeans_init=True, kmeans_iterations=3, restart_unused_after=2)

    def run(strategy):
        keras.utils.set_random_seed(1)
        with strategy.scope():
            model = tiny_model(
                top=tfvqvae.VectorQuantizerEMA(8, TOP_D, decay=0.9, **codebook_health),
                bottom=tfvqvae.VectorQuantizer(BOTTOM_K, BOTTOM_D, **codebook_health),
            )
            model.compile(optimizer=keras.optimizers.Adam(1e-2))
        dataset = tf.data.Dataset.from_tensor_slices(x).batch(16)
        history = model.fit(dataset, epochs=2, verbose=0).history
        return model, history

    single, single_history = run(one_device_strategy)
    mirrored, mirrored_history = run(mirrored_strategy)
    assert mirrored.distribute_strategy.num_replicas_in_sync == 2
    names = [w.path for w in single.weights]
    assert sum(n.endswith("/codebook") for n in names) == 2
    assert sum(n.endswith("/ema_embedding_sum") for n in names) == 1
    for a, b in zip(single.weights, mirrored.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
        # Replicas hold identical copies.
        values = getattr(b.value, "values", None)
        if values:
            np.testing.assert_array_equal(values[0].numpy(), values[1].numpy())
    for key in ("loss", "mse", "top_usage", "bottom_dead_codes", "bottom_codebook_loss"):
        np.testing.assert_allclose(
            mirrored_history[key], single_history[key], rtol=1e-4, atol=1e-6, err_msg=key
        )


@pytest.mark.slow  # about 9 s; test_vqvae.py fits VQVAE under mixed_float16 in the default suite
def test_mixed_float16_fit_step():
    keras.config.set_dtype_policy("mixed_float16")
    model = tiny_model(bottom=tfvqvae.VectorQuantizer(BOTTOM_K, BOTTOM_D, kmeans_init=False, restart_unused_after=None))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = model.top_quantizer.ema_embedding_sum.numpy().copy()
    history = model.fit(images(16, 16, 8, 1), batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    for quantizer in (model.top_quantizer, model.bottom_quantizer):
        assert quantizer.codebook.dtype == "float32"
        assert quantizer.training_steps.dtype == "float32"
        assert np.all(np.isfinite(quantizer.codebook.numpy()))
    assert model.top_quantizer.ema_cluster_size.dtype == "float32"
    assert model.top_quantizer.ema_embedding_sum.dtype == "float32"
    assert not np.array_equal(before, model.top_quantizer.ema_embedding_sum.numpy())
    assert model.decoder.layers[-1].compute_dtype == "float16"  # really mixed
    assert model(images(2, 16, 8, 1)).dtype == tf.float32
    top, bottom = model.encode(images(2, 16, 8, 1))
    assert model.decode(top, bottom).dtype == tf.float32

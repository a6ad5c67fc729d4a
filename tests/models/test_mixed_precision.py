"""mixed_float16 / mixed_bfloat16 fit steps of VQVAE, VQVAE2 and the prior.

Low-precision compute, float32 quantiser statistics (distances, EMA state,
losses, counts, perplexity), no NaN or Inf. The quantiser's float32 losses
are checked against NumPy on the float32 copy of its (low-precision) input.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae

POLICIES = ["mixed_float16", "mixed_bfloat16"]
LOW = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


def images(n, h, w, c=1, seed=0):
    return np.random.default_rng(seed).random((n, h, w, c), dtype=np.float32)


def assert_finite_weights(model):
    for w in model.weights:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(w))), w.path


@pytest.mark.parametrize("policy", POLICIES)
def test_quantizer_statistics_stay_float32(policy):
    keras.config.set_dtype_policy(policy)
    quantizer = tfvqvae.VectorQuantizerEMA(8, 4, decay=0.9, seed=3, kmeans_init=False,
                                           restart_unused_after=None)
    quantizer.build((None, 4, 4, 4))
    low = tf.cast(np.random.default_rng(1).normal(size=(2, 4, 4, 4)), LOW[policy])
    codebook = quantizer.codebook.numpy().astype(np.float64)  # before the EMA step
    output = quantizer.quantize_with_losses(low, training=True)
    assert output.quantized.dtype == LOW[policy]
    for name in ("codebook_loss", "commitment_loss", "counts", "perplexity"):
        assert getattr(output, name).dtype == tf.float32, name
    for variable in (quantizer.codebook, quantizer.ema_cluster_size,
                     quantizer.ema_embedding_sum):
        assert variable.dtype == "float32"
        assert np.all(np.isfinite(variable.numpy()))
    # NumPy on the float32 copy of the input: the same codes, commitment, counts.
    z = tf.cast(low, tf.float32).numpy().reshape(-1, 4).astype(np.float64)
    nearest = ((z[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(output.indices.numpy().reshape(-1), nearest)
    commitment = quantizer.commitment_cost * np.mean((z - codebook[nearest]) ** 2)
    np.testing.assert_allclose(output.commitment_loss.numpy(), commitment, rtol=1e-5)
    np.testing.assert_array_equal(output.counts.numpy(), np.bincount(nearest, minlength=8))


@pytest.mark.parametrize("policy", [
    # float16: about 5 s, and test_vqvae.py::test_mixed_float16_fit_step fits it too
    pytest.param("mixed_float16", marks=pytest.mark.slow), "mixed_bfloat16",
])
def test_vqvae_fit_step(policy):
    keras.config.set_dtype_policy(policy)
    model = tfvqvae.VQVAE(
        image_channels=1, hidden_channels=16, residual_channels=8, num_residual_layers=1,
        quantizer=tfvqvae.VectorQuantizerEMA(16, 4, decay=0.9, kmeans_init=True),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    before = model.quantizer.ema_embedding_sum.numpy().copy()
    history = model.fit(images(32, 8, 8), batch_size=8, epochs=1, verbose=0).history
    assert all(np.isfinite(values[0]) for values in history.values())
    assert model.encoder.compute_dtype == LOW[policy]
    assert not np.array_equal(before, model.quantizer.ema_embedding_sum.numpy())
    assert_finite_weights(model)
    assert model(images(2, 8, 8)).dtype == tf.float32


@pytest.mark.slow  # two-level fits in both policies (about 20 s each)
@pytest.mark.parametrize("policy", POLICIES)
def test_vqvae2_fit_step(policy):
    keras.config.set_dtype_policy(policy)
    model = tfvqvae.VQVAE2(
        image_channels=1, hidden_channels=16, residual_channels=8, num_residual_layers=1,
        top_quantizer=tfvqvae.VectorQuantizerEMA(8, 4, decay=0.9, kmeans_init=False, restart_unused_after=None),
        bottom_quantizer=tfvqvae.VectorQuantizer(8, 4, kmeans_init=False, restart_unused_after=None),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(images(16, 16, 16), batch_size=8, epochs=1, verbose=0).history
    assert all(np.isfinite(values[0]) for values in history.values())
    for quantizer in (model.top_quantizer, model.bottom_quantizer):
        assert quantizer.codebook.dtype == "float32"
    assert_finite_weights(model)


@pytest.mark.parametrize("policy", POLICIES)
def test_prior_fit_step(policy):
    keras.config.set_dtype_policy(policy)
    prior = tfvqvae.PixelCNNPrior(
        num_embeddings=8, code_shape=(4, 4), hidden_channels=8, num_blocks=2, kernel_size=3,
    )
    prior.compile(optimizer=keras.optimizers.Adam(1e-3))
    codes = np.random.default_rng(0).integers(0, 8, (16, 4, 4)).astype(np.int32)
    history = prior.fit({"codes": codes}, batch_size=8, epochs=2, verbose=0).history
    assert all(np.isfinite(v) for values in history.values() for v in values)
    assert history["nll"][0] < np.log(8) * 1.5  # near uniform at the start, not overflowed
    assert_finite_weights(prior)
    logits = prior({"codes": codes[:2]})
    assert prior.compute_dtype == LOW[policy]
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))


@pytest.mark.parametrize("policy", POLICIES)
def test_saved_models_reload_with_their_policy(tmp_path, policy):
    """Layers take the global policy when built: the config carries the saved one."""
    keras.config.set_dtype_policy(policy)
    vqvae2 = tfvqvae.VQVAE2(
        image_channels=1, hidden_channels=8, residual_channels=4, num_residual_layers=1,
        top_quantizer=tfvqvae.VectorQuantizerEMA(8, 4, kmeans_init=False, restart_unused_after=None),
        bottom_quantizer=tfvqvae.VectorQuantizerEMA(8, 4, kmeans_init=False, restart_unused_after=None),
    )
    prior = tfvqvae.PixelCNNPrior(
        num_embeddings=8, code_shape=(4, 4), hidden_channels=8, num_blocks=1, kernel_size=3,
    )
    x = images(2, 16, 16)
    codes = np.zeros((2, 4, 4), np.int32)
    expected = (keras.ops.convert_to_numpy(vqvae2(x)),
                keras.ops.convert_to_numpy(prior({"codes": codes})))
    vqvae2.save(tmp_path / "vqvae2.keras")
    prior.save(tmp_path / "prior.keras")
    keras.config.set_dtype_policy("float32")  # loading happens under another policy
    loaded = (keras.saving.load_model(tmp_path / "vqvae2.keras"),
              keras.saving.load_model(tmp_path / "prior.keras"))
    assert loaded[0].bottom_encoder.compute_dtype == LOW[policy]
    assert loaded[0].decoder.compute_dtype == LOW[policy]
    assert loaded[1].compute_dtype == LOW[policy]
    assert loaded[0].top_quantizer.codebook.dtype == "float32"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded[0](x)), expected[0])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded[1]({"codes": codes})), expected[1])
    assert keras.config.dtype_policy().name == "float32"  # left as it was

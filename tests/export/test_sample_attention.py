"""The exported ``sample`` signature with attention priors draws what the naive Keras sampler draws.

Tiny untrained models, built here (no run folder): the attention blocks'
output projections start at zero (an attention block is then the identity),
so they are randomised to make attention change the logits. The reference is
`sampling.sample_levels(..., method="naive")`, a full forward pass of each
prior per position: independent of the cached sampler's key / value caches
that the exported graph runs.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae.export import export_saved_model
from tfvqvae.models import sampling

TINY = dict(image_channels=1, hidden_channels=8, residual_channels=4, num_residual_layers=1)
PRIOR = dict(hidden_channels=8, kernel_size=3)


def _randomise_attention(prior, seed):
    """Random output projections (they start at zero, which makes attention a no-op)."""
    assert prior.attention_blocks
    rng = np.random.default_rng(seed)
    for block in prior.attention_blocks:
        kernel = block.output_projection.kernel
        kernel.assign(rng.normal(0.0, 0.5, kernel.shape).astype("float32"))


def _attention_changes_logits(prior, inputs):
    """True when zeroing every attention block's output projection changes the logits."""
    kernels = [block.output_projection.kernel for block in prior.attention_blocks]
    saved = [kernel.numpy() for kernel in kernels]
    with_attention = prior(inputs).numpy()
    for kernel in kernels:
        kernel.assign(np.zeros(kernel.shape, "float32"))
    try:
        without = prior(inputs).numpy()
    finally:
        for kernel, value in zip(kernels, saved):
            kernel.assign(value)
    return not np.allclose(with_attention, without, atol=1e-3)


@pytest.fixture(scope="module")
def vqvae2():
    """A VQVAE2 at 32x32 (4x4 top, K=16; 8x8 bottom, K=12) with class-conditional priors.

    Top prior: 2 gated blocks, attention after the first (2 heads). Bottom
    prior: conditioned on the top codes, 3 gated blocks with attention after
    the first two (two attention blocks, so two pairs of caches; 4 heads).
    """
    keras.utils.set_random_seed(0)
    model = tfvqvae.VQVAE2(**TINY, top_quantizer=tfvqvae.VectorQuantizer(16, 4, seed=0),
                           bottom_quantizer=tfvqvae.VectorQuantizer(12, 4, seed=1))
    model(np.zeros((1, 32, 32, 1), np.float32))
    shapes = model.code_shapes((32, 32))
    top = tfvqvae.PixelCNNPrior(16, shapes["top"], num_blocks=2, num_classes=10,
                                attention_every=1, num_attention_heads=2, **PRIOR)
    bottom = tfvqvae.PixelCNNPrior(12, shapes["bottom"], num_blocks=3, num_classes=10,
                                   condition_num_embeddings=16, condition_shape=shapes["top"],
                                   attention_every=1, num_attention_heads=4, **PRIOR)
    _randomise_attention(top, 1)
    _randomise_attention(bottom, 2)
    return model, {"top": top, "bottom": bottom}


@pytest.fixture(scope="module")
def vqvae():
    """A VQVAE at 16x16 (4x4 codes, K=16) with an unconditional attention prior."""
    keras.utils.set_random_seed(1)
    model = tfvqvae.VQVAE(**TINY, quantizer=tfvqvae.VectorQuantizer(16, 4, seed=0))
    model(np.zeros((1, 16, 16, 1), np.float32))
    top = tfvqvae.PixelCNNPrior(16, model.code_shapes((16, 16))["top"], num_blocks=2,
                                attention_every=1, num_attention_heads=4, **PRIOR)
    _randomise_attention(top, 3)
    return model, {"top": top}


def _sample_signature(export_dir):
    return tf.saved_model.load(str(export_dir)).signatures["sample"]


def test_priors_really_attend(vqvae2, vqvae):
    _, priors = vqvae2
    rng = np.random.default_rng(0)
    labels = np.array([1, 4], np.int32)
    top_codes = rng.integers(0, 16, (2, 4, 4)).astype(np.int32)
    assert _attention_changes_logits(priors["top"], {"codes": top_codes, "labels": labels})
    assert _attention_changes_logits(priors["bottom"], {
        "codes": rng.integers(0, 12, (2, 8, 8)).astype(np.int32), "labels": labels,
        "condition": top_codes,
    })
    (_, top), = vqvae[1].items()
    assert _attention_changes_logits(top, {"codes": top_codes})


@pytest.mark.slow  # about 15 s; the VQVAE case below exports and checks the same sampler
def test_vqvae2_cached_export_matches_naive_keras_sampler(vqvae2, tmp_path):
    model, priors = vqvae2
    export_dir = export_saved_model(model, tmp_path / "cached", (32, 32, 1), priors,
                                    sample_method="cached")
    sample = _sample_signature(export_dir)
    labels = np.array([0, 9, 2, 2, 7], np.int32)
    drawn = []
    for seed, temperature in ((0, 1.0), (123, 0.5)):
        out = sample(seed=tf.constant(seed, tf.int64),
                     temperature=tf.constant(temperature, tf.float32),
                     labels=tf.constant(labels))
        expected = sampling.sample_levels(priors, labels=labels, temperature=temperature,
                                          seed=seed, method="naive")
        assert out["top_codes"].dtype == tf.int32 and out["top_codes"].shape == (5, 4, 4)
        assert out["bottom_codes"].shape == (5, 8, 8)
        np.testing.assert_array_equal(out["top_codes"], expected["top"])
        np.testing.assert_array_equal(out["bottom_codes"], expected["bottom"])
        np.testing.assert_allclose(out["images"], model.decode_levels(expected).numpy(),
                                   rtol=0, atol=1e-5)
        drawn.append(out["bottom_codes"].numpy())
    assert not np.array_equal(*drawn)  # the seeds matter


@pytest.mark.slow  # default-suite time: the slow run keeps it
def test_vqvae_cached_and_naive_exports_match_naive_keras_sampler(vqvae, tmp_path):
    model, priors = vqvae
    signatures = {
        method: _sample_signature(export_saved_model(
            model, tmp_path / method, (16, 16, 1), priors, sample_method=method))
        for method in ("cached", "naive")
    }
    for num_samples, seed, temperature in ((3, 5, 1.0), (1, 77, 0.7)):
        expected = sampling.sample_levels(priors, num_samples, temperature=temperature,
                                          seed=seed, method="naive")
        images = model.decode_levels(expected).numpy()
        for method, sample in signatures.items():
            out = sample(seed=tf.constant(seed, tf.int64),
                         temperature=tf.constant(temperature, tf.float32),
                         num_samples=tf.constant(num_samples, tf.int32))
            assert out["top_codes"].shape == (num_samples, 4, 4), method
            np.testing.assert_array_equal(out["top_codes"], expected["top"], err_msg=method)
            np.testing.assert_allclose(out["images"], images, rtol=0, atol=1e-5,
                                       err_msg=method)

"""The exported ``sample`` signature draws what `training.sample.sample_codes` draws in Keras."""

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.export import export_saved_model
from tfvqvae.training.sample import load_priors
from tfvqvae.training.sample import sample_codes


def _sample_signature(result):
    return tf.saved_model.load(str(result.artifacts["savedmodel"])).signatures["sample"]


@pytest.mark.parametrize("seed,temperature", [
    (0, 1.0), pytest.param(123, 0.5, marks=pytest.mark.slow),  # about 7 s each
])
def test_vqvae2_sample_matches_keras_for_both_levels(runs, vqvae2_run, seed, temperature):
    run, result, _ = runs["vqvae2"]
    labels = np.array([0, 9, 2, 2, 7, 5, 1], np.int32)
    out = _sample_signature(result)(
        seed=tf.constant(seed, tf.int64), temperature=tf.constant(temperature, tf.float32),
        labels=tf.constant(labels),
    )
    priors = load_priors(vqvae2_run, run.model)
    expected = sample_codes(priors, len(labels), labels, temperature, seed, method="cached")
    assert out["top_codes"].dtype == tf.int32 and out["top_codes"].shape == (7, 4, 4)
    assert out["bottom_codes"].shape == (7, 8, 8)
    np.testing.assert_array_equal(out["top_codes"], expected["top"])
    np.testing.assert_array_equal(out["bottom_codes"], expected["bottom"])
    np.testing.assert_allclose(out["images"], run.model.decode_levels(expected).numpy(),
                               rtol=0, atol=1e-5)


def test_different_seeds_give_different_samples(runs):
    _, result, _ = runs["vqvae2"]
    sample = _sample_signature(result)
    labels = tf.constant([1, 2, 3, 4], tf.int32)
    a = sample(seed=tf.constant(1, tf.int64), temperature=tf.constant(1.0), labels=labels)
    b = sample(seed=tf.constant(2, tf.int64), temperature=tf.constant(1.0), labels=labels)
    again = sample(seed=tf.constant(1, tf.int64), temperature=tf.constant(1.0), labels=labels)
    assert not np.array_equal(a["bottom_codes"], b["bottom_codes"])
    np.testing.assert_array_equal(a["bottom_codes"], again["bottom_codes"])


def test_sample_refuses_bad_labels_and_temperature(runs):
    _, result, _ = runs["vqvae2"]
    sample = _sample_signature(result)
    seed = tf.constant(0, tf.int64)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must lie in \[0, 10\)"):
        sample(seed=seed, temperature=tf.constant(1.0), labels=tf.constant([0, 10], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature must be positive"):
        sample(seed=seed, temperature=tf.constant(0.0), labels=tf.constant([0], tf.int32))


@pytest.mark.slow  # about 6 s; test_sample_attention.py checks unconditional cached and
# naive exports against the naive Keras sampler in the default suite
def test_unconditional_sample_takes_num_samples_and_naive_export_agrees(runs, vqvae_run,
                                                                        tmp_path):
    run, result, _ = runs["vqvae"]
    priors = load_priors(vqvae_run, run.model)
    naive_dir = export_saved_model(run.model, tmp_path / "naive", run.image_shape, priors,
                                   sample_method="naive")
    naive = tf.saved_model.load(str(naive_dir)).signatures["sample"]
    cached = _sample_signature(result)
    for num_samples in (1, 4):
        expected = sample_codes(priors, num_samples, temperature=0.7, seed=9, method="naive")
        for signature in (cached, naive):
            out = signature(seed=tf.constant(9, tf.int64), temperature=tf.constant(0.7),
                            num_samples=tf.constant(num_samples))
            np.testing.assert_array_equal(out["top_codes"], expected["top"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples must be positive"):
        cached(seed=tf.constant(9, tf.int64), temperature=tf.constant(0.7),
               num_samples=tf.constant(0))

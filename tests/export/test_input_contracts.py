"""Each signature's input contract: empty batches, NaN / Inf images, bad temperatures.

The SavedModel states each contract with an assertion message; the converted
formats (TFLite, ONNX) drop assertions: an empty batch still fails (inside the
runtime), but NaN pixels are not detected: they give in-range codes and
reconstructions decoded from them (what the export documentation says).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.export import open_runners

# Builds and exports VQ-VAE and VQ-VAE-2 runs (about 70 s of set-up): CI runs it with -m slow.
pytestmark = pytest.mark.slow

INVALID = tf.errors.InvalidArgumentError


def _signatures(result):
    return tf.saved_model.load(str(result.artifacts["savedmodel"])).signatures


@pytest.mark.parametrize("kind", ["vqvae", "vqvae2"])
def test_savedmodel_refuses_an_empty_batch_in_every_signature(runs, kind):
    _, result, images = runs[kind]
    signatures = _signatures(result)
    empty = tf.zeros([0, *images.shape[1:]], tf.float32)
    for key in ("encode", "reconstruct"):
        with pytest.raises(INVALID, match=r"images must hold at least one image \(batch >= 1\)"):
            signatures[key](images=empty)
    codes = {name: tf.zeros([0, *spec.shape[1:]], tf.int32)
             for name, spec in signatures["decode"].structured_input_signature[1].items()}
    with pytest.raises(INVALID, match=r"_codes must hold at least one code map"):
        signatures["decode"](**codes)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_savedmodel_refuses_non_finite_images(runs, value):
    _, result, images = runs["vqvae"]
    signatures = _signatures(result)
    bad = np.array(images[:3], np.float32)
    bad[2, 10, 10, 0] = value
    for key in ("encode", "reconstruct"):
        with pytest.raises(INVALID, match=r"images must be finite \(no NaN or Inf\)"):
            signatures[key](images=tf.constant(bad))
    # Clean images still pass the checks.
    assert signatures["encode"](images=tf.constant(images[:3]))["top_codes"].shape == (3, 7, 7)


def test_converted_formats_fail_on_an_empty_batch_and_do_not_detect_nan(runs):
    """What the documentation says converted graphs do (they have no assertions)."""
    _, result, images = runs["vqvae"]
    runners = {k: v for k, v in open_runners(result).items() if k != "savedmodel"}
    assert runners  # TFLite and ONNX files
    bad = np.array(images[:2], np.float32)
    bad[1, 10, 10, 0] = np.nan
    for artifact, runner in runners.items():
        with pytest.raises(Exception):  # noqa: B017 - each runtime raises its own type
            runner.encode(np.zeros((0, 28, 28, 1), np.float32))
        codes = runner.encode(bad)["top"]
        assert ((0 <= codes) & (codes < 32)).all(), artifact  # in range: nothing flags them
        assert runner.reconstruct(bad).shape == bad.shape, artifact


@pytest.mark.parametrize("temperature", [math.inf, math.nan, -1.0])
def test_sample_refuses_a_non_finite_temperature(runs, temperature):
    _, result, _ = runs["vqvae2"]
    sample = _signatures(result)["sample"]
    with pytest.raises(INVALID, match="temperature must be positive and finite"):
        sample(seed=tf.constant(0, tf.int64), temperature=tf.constant(temperature),
               labels=tf.constant([1, 2], tf.int32))


def test_sample_refuses_empty_labels_and_zero_samples(runs):
    sample = _signatures(runs["vqvae2"][1])["sample"]
    with pytest.raises(INVALID, match=r"labels must hold at least one label"):
        sample(seed=tf.constant(0, tf.int64), temperature=tf.constant(1.0),
               labels=tf.zeros([0], tf.int32))
    unconditional = _signatures(runs["vqvae"][1])["sample"]
    with pytest.raises(INVALID, match="num_samples must be positive"):
        unconditional(seed=tf.constant(0, tf.int64), temperature=tf.constant(1.0),
                      num_samples=tf.constant(0))
    with pytest.raises(INVALID, match="temperature must be positive and finite"):
        unconditional(seed=tf.constant(0, tf.int64), temperature=tf.constant(math.inf),
                      num_samples=tf.constant(2))

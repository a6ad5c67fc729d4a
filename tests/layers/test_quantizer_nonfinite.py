"""A non-finite training batch changes no quantiser state: k-means, restarts, step count.

The expected state is the state before the bad batch (NumPy copies), and the
step after it must behave as if the bad batch never came: k-means then runs on
the first *finite* batch, and restart counters resume where they were.
"""

import numpy as np
import pytest

import tfvqvae


def _state(layer):
    return {w.path: np.array(w.numpy()) for w in layer.weights}


def _bad(batch, value):
    batch = batch.copy()
    batch[3, 1] = value
    return batch


@pytest.mark.parametrize("layer_class", [tfvqvae.VectorQuantizer, tfvqvae.VectorQuantizerEMA])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_bad_first_batch_leaves_kmeans_and_restarts_for_later(layer_class, value):
    rng = np.random.default_rng(0)
    good = rng.normal(size=(64, 2)).astype(np.float32)
    layer = layer_class(8, 2, kmeans_init=True, restart_unused_after=1, seed=3)
    layer.build((None, 2))
    before = _state(layer)

    layer.quantize_with_losses(_bad(good, value), training=True)
    after = _state(layer)
    assert after.keys() == before.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert float(layer.training_steps.numpy()) == 0.0

    # The next, finite batch is the "first step": k-means puts every code on
    # the batch's data (each centroid is the mean of some of its rows).
    layer.quantize_with_losses(good, training=True)
    codebook = layer.codebook.numpy()
    assert np.all(np.isfinite(codebook))
    assert float(layer.training_steps.numpy()) == 1.0
    lo, hi = good.min(axis=0), good.max(axis=0)
    assert np.all((codebook >= lo - 1e-6) & (codebook <= hi + 1e-6))


@pytest.mark.parametrize("layer_class", [tfvqvae.VectorQuantizer, tfvqvae.VectorQuantizerEMA])
def test_bad_batch_later_keeps_restart_counters(layer_class):
    rng = np.random.default_rng(1)
    good = rng.normal(size=(64, 2)).astype(np.float32)
    layer = layer_class(8, 2, restart_unused_after=2, seed=3)
    layer.build((None, 2))
    layer.quantize_with_losses(good, training=True)
    before = _state(layer)
    layer.quantize_with_losses(_bad(good, np.nan), training=True)
    after = _state(layer)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)

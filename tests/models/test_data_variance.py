"""``data_variance=None`` (the default): the MSE divisor estimated from the first training batch.

The right values come from NumPy: the variance of every pixel value of the
first global batch (float64), the loss of a step recomputed from the model's
own reconstruction.
"""

import keras
import numpy as np
import pytest

import tfvqvae

BATCH = 8


def _images(seed=0, count=4 * BATCH):
    rng = np.random.default_rng(seed)
    # Skewed pixel values (variance ~0.08, far from 1): the two divisors differ.
    return (rng.random((count, 8, 8, 1)) ** 3).astype("float32")


def _vqvae(data_variance=None):
    return tfvqvae.VQVAE(
        image_channels=1, hidden_channels=8, residual_channels=4,
        quantizer=tfvqvae.VectorQuantizerEMA(8, 4, kmeans_init=False, restart_unused_after=None), data_variance=data_variance,
    )


def _fit(model, images, epochs=1):
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)


def test_default_estimates_the_first_batch_variance_once():
    keras.utils.set_random_seed(0)
    images = _images()
    model = _vqvae()
    assert model.data_variance is None and model.reconstruction_variance is None
    _fit(model, images, epochs=2)
    first = images[:BATCH].astype(np.float64)
    # Estimated on step 1 and kept (later batches have other variances).
    assert model.reconstruction_variance == pytest.approx(first.var(), rel=1e-5)
    assert abs(images[BATCH:2 * BATCH].var() - first.var()) > 1e-4


def test_the_loss_divides_the_mse_by_the_estimate():
    keras.utils.set_random_seed(0)
    images = _images()
    model = _vqvae()
    _fit(model, images[:BATCH])
    variance = images[:BATCH].astype(np.float64).var()
    logs = model.evaluate(images[BATCH:2 * BATCH], batch_size=BATCH, verbose=0,
                          return_dict=True)
    mse = float(np.mean((model(images[BATCH:2 * BATCH]).numpy()
                         - images[BATCH:2 * BATCH]) ** 2))
    assert logs["mse"] == pytest.approx(mse, rel=1e-4)
    assert logs["loss"] == pytest.approx(mse / variance + logs["commitment_loss"], rel=1e-4)


def test_evaluation_before_training_divides_by_the_batch_variance():
    model = _vqvae()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = _images()[:BATCH]
    logs = model.evaluate(images, batch_size=BATCH, verbose=0, return_dict=True)
    mse = float(np.mean((model(images).numpy() - images) ** 2))
    expected = mse / images.astype(np.float64).var() + logs["commitment_loss"]
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    assert model.reconstruction_variance is None  # evaluation stores nothing


def test_a_given_variance_is_used_unchanged_and_saved():
    keras.utils.set_random_seed(0)
    model = _vqvae(data_variance=0.25)
    _fit(model, _images())
    assert model.reconstruction_variance == 0.25
    assert model.get_config()["data_variance"] == 0.25
    assert not any("estimated_variance" in w.path for w in model.weights)


def test_the_estimate_survives_save_and_load(tmp_path):
    keras.utils.set_random_seed(0)
    model = _vqvae()
    _fit(model, _images())
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.data_variance is None
    assert loaded.reconstruction_variance == model.reconstruction_variance


def test_a_non_finite_first_batch_is_not_the_estimate():
    keras.utils.set_random_seed(0)
    images = _images()
    images[3, 2, 2, 0] = np.nan  # in the first batch only
    model = _vqvae()
    _fit(model, images[: 2 * BATCH])
    # Step 1 was skipped whole; step 2's batch gave the estimate.
    second = images[BATCH: 2 * BATCH].astype(np.float64)
    assert model.reconstruction_variance == pytest.approx(second.var(), rel=1e-5)


@pytest.mark.slow  # MirroredStrategy fit (about 10 s)
def test_replicas_store_the_global_batch_variance(mirrored_strategy):
    keras.utils.set_random_seed(0)
    images = _images()
    # The two replicas' halves differ a lot: a per-replica estimate would show.
    images[: BATCH // 2] *= 0.2
    with mirrored_strategy.scope():
        model = _vqvae()
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images[:BATCH], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    expected = images[:BATCH].astype(np.float64).var()
    assert model.reconstruction_variance == pytest.approx(expected, rel=1e-5)
    halves = [images[:BATCH // 2].var(), images[BATCH // 2: BATCH].var()]
    assert all(abs(h - expected) > 1e-3 for h in halves)


def test_none_or_a_positive_number_only():
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="data_variance"):
            _vqvae(data_variance=bad)
    model = tfvqvae.VQVAE2(image_channels=1, hidden_channels=8, residual_channels=4)
    assert model.data_variance is None

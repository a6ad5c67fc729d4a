"""A short real training run on MNIST from ../shared/data (slow: ~45 s)."""

import keras
import numpy as np
import pytest

from tfvqvae.data import load_dataset
from tfvqvae.training import PRESETS
from tfvqvae.training import TrainConfig
from tfvqvae.training import build_model
from tfvqvae.training import train


@pytest.mark.slow
def test_mnist_training_lowers_error_and_uses_the_codebook(tmp_path, shared_data):
    config = TrainConfig(
        **{**PRESETS["mnist"], "out": str(tmp_path / "mnist"),
           "data_dir": str(shared_data), "max_train_examples": 20000, "epochs": 2}
    )
    test_images = load_dataset("mnist", "test", data_dir=shared_data).as_float()
    untrained = build_model(config)
    untrained.compile()
    before = untrained.evaluate(test_images, batch_size=500, verbose=0, return_dict=True)

    metrics = train(config, verbose=0)["test"]
    k = config.num_embeddings

    # Stated targets for 2 epochs on 20k images (measured: mse ~0.010,
    # perplexity ~80 of 128, 100 % usage).
    assert metrics["mse"] < 0.25 * before["mse"]
    assert metrics["mse"] < 0.02
    assert metrics["perplexity"] > 0.4 * k
    assert metrics["usage_percent"] >= 90.0

    # Independent check of the reported MSE with NumPy on the saved model.
    model = keras.saving.load_model(tmp_path / "mnist" / "model.keras")
    reconstruction = model.predict(test_images, batch_size=500, verbose=0)
    assert float(np.mean((reconstruction - test_images) ** 2)) == pytest.approx(
        metrics["mse"], rel=1e-4
    )

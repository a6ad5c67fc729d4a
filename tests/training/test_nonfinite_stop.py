"""A NaN batch stops `train` with an error naming the step; the last good checkpoint stays.

The NaN is injected into the training stream (the data loaders refuse NaN
files). Expected values: the step number counted by hand, and the weights
saved as NumPy arrays after the last good step.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.data.image_dataset import ImageDataset
from tfvqvae.training import TrainConfig
from tfvqvae.training import train
from tfvqvae.training.checkpoints import StopOnNonFinite

TINY = dict(
    dataset="digits", max_train_examples=256, epochs=2, batch_size=64, learning_rate=2e-3,
    num_embeddings=16, embedding_dim=4, hidden_channels=16, residual_channels=8,
    num_residual_layers=1, num_downsamples=1, grid_pairs=4,
)
STEPS_PER_EPOCH = 256 // 64
BAD_STEP = 6  # 1-based global step: epoch 2, batch 2


def _poison_step(monkeypatch, bad_step):
    """Makes the ``bad_step``-th batch of a fresh run's stream NaN in one pixel."""
    original = ImageDataset.epochs_dataset

    def epochs_dataset(self, *args, **kwargs):
        ds = original(self, *args, **kwargs)

        def poison(index, images):
            mask = tf.logical_and(
                tf.equal(index, bad_step - 1),
                tf.equal(tf.range(tf.size(images)), 0),
            )
            flat = tf.where(mask, tf.constant(np.nan, images.dtype), tf.reshape(images, [-1]))
            return tf.reshape(flat, tf.shape(images))

        return ds.enumerate().map(poison)

    monkeypatch.setattr(ImageDataset, "epochs_dataset", epochs_dataset)


class _SaveAfterStep(keras.callbacks.Callback):
    """Keeps the weights as NumPy arrays after the last good step (global step bad - 1)."""

    def __init__(self, step):
        super().__init__()
        self.step, self.seen, self.weights = step, 0, None

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            self.weights = {v.path: v.numpy() for v in self.model.weights}


def test_a_nan_batch_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    _poison_step(monkeypatch, BAD_STEP)
    out = tmp_path / "run"
    saver = _SaveAfterStep(BAD_STEP - 1)
    with pytest.raises(FloatingPointError) as caught:
        train(TrainConfig(out=str(out), **TINY), verbose=0, backup_every=1,
              callbacks=[saver])
    message = str(caught.value)
    assert f"global step {BAD_STEP} (epoch 2, batch 2)" in message
    assert "NaN or Inf" in message

    # The step backup of step 5 is the newest checkpoint, and the message names it.
    record = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert record == {"epoch": 1, "step": BAD_STEP - 1, "path": "step-00000005.keras"}
    assert str(out / "checkpoints" / "step-00000005.keras") in message
    assert not (out / "model.keras").exists() and not (out / "metrics.json").exists()
    assert not list((out / "checkpoints").glob("step-00000006*"))

    # The checkpoint holds exactly the state after step 5, all finite.
    restored = keras.saving.load_model(out / "checkpoints" / "step-00000005.keras")
    restored_weights = {v.path: v.numpy() for v in restored.weights}
    assert restored_weights.keys() == saver.weights.keys()
    for path, value in saver.weights.items():
        assert np.isfinite(value).all(), path
        np.testing.assert_array_equal(restored_weights[path], value, err_msg=path)
    assert int(restored.optimizer.iterations.numpy()) == BAD_STEP - 1


def test_the_stop_callback_reports_when_no_checkpoint_exists_yet(tmp_path):
    stop = StopOnNonFinite(tmp_path / "checkpoints", steps_per_epoch=4, initial_step=6)
    stop.on_epoch_begin(1)
    stop.on_train_batch_end(0, {"nonfinite": 0.0})  # a good step: nothing happens
    stop.on_train_batch_end(0, {"loss": 1.0})  # no flag (another model): nothing happens
    with pytest.raises(FloatingPointError, match=r"global step 8 \(epoch 2, batch 2\).*"
                                                 r"No checkpoint has been written yet"):
        stop.on_train_batch_end(1, {"nonfinite": 1.0})

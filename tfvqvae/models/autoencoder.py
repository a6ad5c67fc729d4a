"""What VQVAE and VQVAE2 share: input checks, the objective, train/test steps, metrics.

A subclass builds its networks and quantisers in ``__init__``, then calls
``_init_metrics()``, and defines:

* ``_level_quantizers()`` → {level: quantiser}, top level first;
* ``_reconstruct(images, training)`` → (float32 reconstruction,
  {level: `QuantizerOutput`});
* ``size_multiple``: what image height and width must be divisible by.

Objective per batch (images x in [0, 1], reconstruction x̂):

    L = mean((x − x̂)²) / data_variance + Σ_levels (codebook_loss + commitment_loss)

The quantiser terms are added here, in ``train_step``, rather than with
``add_loss``: this keeps multi-replica training exact. Each replica divides
its loss by the number of replicas because Keras sums the replicas'
gradients, so the update equals a single-device step on the global batch.

Metrics: ``loss``, ``mse`` and, per level, ``commitment_loss``,
``codebook_loss`` (gradient quantisers only), ``perplexity`` (per batch),
``usage`` (% of codes used in the epoch) and ``dead_codes``; prefixed with
``top_`` / ``bottom_`` when there is more than one level. Epoch values are
means per image.
"""

import keras
import tensorflow as tf

from tfvqvae.distribute import multi_worker_logs
from tfvqvae.layers.vector_quantizer import VectorQuantizer
from tfvqvae.models.dtype_config import from_config_under_policy
from tfvqvae.layers.vector_quantizer_ema import VectorQuantizerEMA
from tfvqvae.metrics import CodebookUsage
from tfvqvae.validation import positive_int


def unpack_images(data):
    """Images from a batch that is ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, w)``."""
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    return x


def quantizer_argument(name, value, seed=0):
    """A quantiser from an instance, its serialized config, or None (the default EMA one)."""
    if value is None:
        value = VectorQuantizerEMA(num_embeddings=512, embedding_dim=64, seed=seed)
    elif isinstance(value, dict):
        value = keras.layers.deserialize(value)
    if not isinstance(value, VectorQuantizer):
        raise TypeError(
            f"`{name}` must be a tfvqvae VectorQuantizer or VectorQuantizerEMA. "
            f"Received: {name}={value!r}"
        )
    if not value.built:
        value.build((None, None, None, value.embedding_dim))
    return value


class QuantizedAutoencoder(keras.Model):
    """Base class of `VQVAE` and `VQVAE2` (see the module docstring)."""

    size_multiple = 1

    def _init_sizes(self, image_channels, hidden_channels, residual_channels,
                    num_residual_layers, data_variance):
        """Validates and stores the constructor arguments both models share."""
        self.image_channels = positive_int("image_channels", image_channels)
        self.hidden_channels = positive_int("hidden_channels", hidden_channels)
        self.residual_channels = positive_int("residual_channels", residual_channels)
        self.num_residual_layers = positive_int("num_residual_layers", num_residual_layers)
        if not data_variance > 0:
            raise ValueError(
                f"`data_variance` must be positive. Received: data_variance={data_variance!r}"
            )
        self.data_variance = float(data_variance)

    def _init_metrics(self):
        quantizers = self._level_quantizers()
        single = len(quantizers) == 1
        self._prefix = {level: "" if single else f"{level}_" for level in quantizers}
        names = ["loss", "mse"]
        for level, quantizer in quantizers.items():
            prefix = self._prefix[level]
            names.append(f"{prefix}commitment_loss")
            if quantizer.trainable_weights:  # the EMA quantizer has no codebook term
                names.append(f"{prefix}codebook_loss")
            names.append(f"{prefix}perplexity")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self._usage = {
            level: CodebookUsage(
                quantizer.num_embeddings, prefix=self._prefix[level],
                name=f"{self._prefix[level]}codebook_usage",
            )
            for level, quantizer in quantizers.items()
        }

    # ------------------------------------------------------------ checks
    def _check_images(self, images):
        images = tf.convert_to_tensor(images)
        kind = type(self).__name__
        if not images.dtype.is_floating:
            raise TypeError(
                f"{kind} expects float images in [0, 1]. "
                f"Received: images with dtype={images.dtype.name}"
            )
        shape = tuple(images.shape)
        if len(shape) != 4 or shape[-1] != self.image_channels:
            raise ValueError(
                f"{kind} expects images of shape (batch, height, width, "
                f"{self.image_channels}). Received: images with shape={shape}"
            )
        for size in shape[1:3]:
            if size is not None and size % self.size_multiple:
                raise ValueError(
                    f"Image height and width must be divisible by {self.size_multiple} "
                    f"({self._size_reason}). Received: images with shape={shape}"
                )
        return images

    @staticmethod
    def _check_codes(codes, name="codes"):
        codes = tf.convert_to_tensor(codes)
        if not codes.dtype.is_integer:
            raise TypeError(
                f"Codes must be integers. Received: {name} with dtype={codes.dtype.name}"
            )
        if codes.shape.rank != 3:
            raise ValueError(
                "Codes must have shape (batch, height, width). "
                f"Received: {name} with shape={tuple(codes.shape)}"
            )
        return codes

    # ----------------------------------------------------------- forward
    def call(self, inputs, training=False):
        return self._reconstruct(inputs, training)[0]

    @property
    def level_num_embeddings(self):
        """{level: K} of each code level."""
        return {level: q.num_embeddings for level, q in self._level_quantizers().items()}

    # ---------------------------------------------------------- training
    def _objective(self, images, training):
        images = tf.cast(self._check_images(images), tf.float32)
        reconstruction, outputs = self._reconstruct(images, training)
        mse = tf.reduce_mean(tf.square(images - reconstruction))
        loss = mse / self.data_variance
        for output in outputs.values():
            loss = loss + output.codebook_loss + output.commitment_loss
        return loss, mse, outputs

    def _update_metrics(self, images, loss, mse, outputs):
        # Weighted by batch size: epoch values are per-image means even when
        # the last batch is smaller.
        batch_size = tf.cast(tf.shape(images)[0], tf.float32)
        values = {"loss": loss, "mse": mse}
        for level, output in outputs.items():
            prefix = self._prefix[level]
            values[f"{prefix}commitment_loss"] = output.commitment_loss
            values[f"{prefix}codebook_loss"] = output.codebook_loss
            values[f"{prefix}perplexity"] = output.perplexity
            self._usage[level].update_state(output.counts)
        for name, tracker in self._trackers.items():
            tracker.update_state(values[name], sample_weight=batch_size)
        return self.get_metrics_result()

    def train_step(self, data):
        images = unpack_images(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss, mse, outputs = self._objective(images, training=True)
            # Keras sums gradients over replicas: scale so the sum is the
            # gradient of the global-batch mean.
            scaled_loss = self.optimizer.scale_loss(loss / replicas)
        gradients = tape.gradient(scaled_loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return multi_worker_logs(self._update_metrics(images, loss, mse, outputs))

    def test_step(self, data):
        images = unpack_images(data)
        loss, mse, outputs = self._objective(images, training=False)
        return multi_worker_logs(self._update_metrics(images, loss, mse, outputs))

    @property
    def metrics(self):
        return list(self._trackers.values()) + list(self._usage.values())

    @classmethod
    def from_config(cls, config):
        return from_config_under_policy(cls, config)

"""VQ-VAE: convolutional encoder, vector quantiser, convolutional decoder.

Training objective per batch (images x in [0, 1], reconstruction x̂):

    L = mean((x − x̂)²) / data_variance + codebook_loss + commitment_loss

where the two quantiser terms are returned by the quantiser (the EMA
quantiser has no codebook term) and added here, in ``train_step``, rather
than with ``add_loss``: this keeps multi-replica training exact. Each replica
divides its loss by the number of replicas because Keras sums the replicas'
gradients, so the update equals a single-device step on the global batch.

Reference: van den Oord et al., "Neural Discrete Representation Learning",
https://arxiv.org/abs/1711.00937
"""

import keras
import tensorflow as tf

from tfvqvae.layers.vector_quantizer import VectorQuantizer
from tfvqvae.layers.vector_quantizer_ema import VectorQuantizerEMA
from tfvqvae.metrics import CodebookUsage
from tfvqvae.models.networks import build_decoder
from tfvqvae.models.networks import build_encoder


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return value


def unpack_images(data):
    """Images from a batch that is ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, w)``."""
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    return x


@keras.saving.register_keras_serializable(package="tfvqvae")
class VQVAE(keras.Model):
    """Vector-quantised variational autoencoder trained with ``model.fit``.

    ``model(x)`` reconstructs images, ``model.encode(x)`` returns the int32
    code map, ``model.decode(codes)`` turns a code map back into images.
    Images are float tensors (batch, height, width, image_channels) with
    values in [0, 1]; height and width must be divisible by
    ``2 ** num_downsamples``. Reconstructions are float32 and are not clipped.

    Metrics reported by ``fit`` / ``evaluate``: ``loss``, ``mse`` (mean
    squared error in [0, 1] pixel units), ``commitment_loss``,
    ``codebook_loss`` (gradient quantiser only), ``perplexity`` (per batch,
    averaged), ``usage`` (% of codes chosen at least once in the epoch) and
    ``dead_codes``. Epoch values are means per image.

    Args:
        image_channels: channels of the images (1 or 3, any positive int
            works). Defaults to 3.
        hidden_channels: channels C of the encoder/decoder. Defaults to 128.
        residual_channels: channels R inside each residual block. Defaults
            to 32.
        num_residual_layers: residual blocks per stack. Defaults to 2.
        num_downsamples: stride-2 convolutions n; the code map is the image
            divided by 2**n. Defaults to 2.
        quantizer: a `VectorQuantizer` / `VectorQuantizerEMA` instance (or
            its serialized config). Defaults to
            ``VectorQuantizerEMA(num_embeddings=512, embedding_dim=64)``.
        data_variance: the reconstruction term is divided by it (Sonnet's
            normalised MSE when set to the training pixels' variance).
            Defaults to 1.0.
        **kwargs: base `keras.Model` arguments (``name``).

    Example:

    >>> import numpy as np
    >>> model = VQVAE(image_channels=1, hidden_channels=16, residual_channels=8,
    ...               quantizer=VectorQuantizerEMA(32, 8))
    >>> model.compile(optimizer="adam")
    >>> x = np.random.rand(8, 16, 16, 1).astype("float32")
    >>> model.encode(x).shape
    TensorShape([8, 4, 4])
    >>> model.decode(model.encode(x)).shape
    TensorShape([8, 16, 16, 1])
    """

    def __init__(
        self,
        image_channels=3,
        hidden_channels=128,
        residual_channels=32,
        num_residual_layers=2,
        num_downsamples=2,
        quantizer=None,
        data_variance=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_channels = _positive_int("image_channels", image_channels)
        self.hidden_channels = _positive_int("hidden_channels", hidden_channels)
        self.residual_channels = _positive_int("residual_channels", residual_channels)
        self.num_residual_layers = _positive_int("num_residual_layers", num_residual_layers)
        self.num_downsamples = _positive_int("num_downsamples", num_downsamples)
        if not data_variance > 0:
            raise ValueError(
                f"`data_variance` must be positive. Received: data_variance={data_variance!r}"
            )
        self.data_variance = float(data_variance)
        if quantizer is None:
            quantizer = VectorQuantizerEMA(num_embeddings=512, embedding_dim=64)
        elif isinstance(quantizer, dict):
            quantizer = keras.layers.deserialize(quantizer)
        if not isinstance(quantizer, VectorQuantizer):
            raise TypeError(
                "`quantizer` must be a tfvqvae VectorQuantizer or VectorQuantizerEMA. "
                f"Received: quantizer={quantizer!r}"
            )
        self.quantizer = quantizer
        sizes = (
            self.image_channels,
            self.hidden_channels,
            self.residual_channels,
            self.num_residual_layers,
            self.num_downsamples,
            quantizer.embedding_dim,
        )
        self.encoder = build_encoder(*sizes)
        self.decoder = build_decoder(*sizes)
        if not quantizer.built:
            quantizer.build((None, None, None, quantizer.embedding_dim))
        names = ["loss", "mse", "commitment_loss", "perplexity"]
        if quantizer.trainable_weights:  # the EMA quantizer has no codebook term
            names.insert(3, "codebook_loss")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self._usage = CodebookUsage(quantizer.num_embeddings, name="codebook_usage")
        # Every weight exists now (the networks are fully convolutional), so
        # the model counts as built: saving and loading restore the optimizer.
        self.built = True

    # ------------------------------------------------------------ shapes
    @property
    def downsample_factor(self):
        """Image size divided by code-map size: 2 ** num_downsamples."""
        return 2**self.num_downsamples

    def _check_images(self, images):
        images = tf.convert_to_tensor(images)
        if not images.dtype.is_floating:
            raise TypeError(
                "VQVAE expects float images in [0, 1]. "
                f"Received: images with dtype={images.dtype.name}"
            )
        shape = tuple(images.shape)
        if len(shape) != 4 or shape[-1] != self.image_channels:
            raise ValueError(
                "VQVAE expects images of shape (batch, height, width, "
                f"{self.image_channels}). Received: images with shape={shape}"
            )
        for size in shape[1:3]:
            if size is not None and size % self.downsample_factor:
                raise ValueError(
                    "Image height and width must be divisible by "
                    f"{self.downsample_factor} (2 ** num_downsamples). "
                    f"Received: images with shape={shape}"
                )
        return images

    def _check_codes(self, codes):
        codes = tf.convert_to_tensor(codes)
        if not codes.dtype.is_integer:
            raise TypeError(
                f"Codes must be integers. Received: codes with dtype={codes.dtype.name}"
            )
        if codes.shape.rank != 3:
            raise ValueError(
                "Codes must have shape (batch, height, width). "
                f"Received: codes with shape={tuple(codes.shape)}"
            )
        return codes

    # ------------------------------------------------------------ forward
    def quantize_with_losses(self, images, training=False):
        """Encodes and quantises: returns the quantiser's `QuantizerOutput`."""
        z_e = self.encoder(self._check_images(images), training=training)
        return self.quantizer.quantize_with_losses(z_e, training=training)

    def call(self, inputs, training=False):
        quantized = self.quantize_with_losses(inputs, training=training).quantized
        return tf.cast(self.decoder(quantized, training=training), tf.float32)

    def encode(self, images):
        """int32 code map (batch, height / 2**n, width / 2**n) of ``images``."""
        z_e = self.encoder(self._check_images(images), training=False)
        return self.quantizer.indices(z_e)

    def decode(self, codes):
        """float32 images from an integer code map with values in [0, K)."""
        latents = self.quantizer.lookup(self._check_codes(codes))
        return tf.cast(self.decoder(latents, training=False), tf.float32)

    # ------------------------------------------- the levels API (priors)
    # VQVAE and VQVAE2 share it, so code extraction, priors and sampling
    # treat both alike: a VQVAE has one level, "top".
    levels = ("top",)

    @property
    def level_num_embeddings(self):
        """{level: K} of each code level."""
        return {"top": self.quantizer.num_embeddings}

    def code_shapes(self, image_size):
        """{level: (h, w)} of the code maps for images of ``image_size`` (H, W)."""
        height, width = image_size
        return {"top": (height // self.downsample_factor, width // self.downsample_factor)}

    def encode_levels(self, images):
        """{level: int32 code map} of ``images``."""
        return {"top": self.encode(images)}

    def decode_levels(self, codes):
        """Images from ``{level: code map}``."""
        return self.decode(codes["top"])

    # ----------------------------------------------------------- training
    def _objective(self, images, training):
        images = tf.cast(self._check_images(images), tf.float32)
        outputs = self.quantize_with_losses(images, training=training)
        reconstruction = tf.cast(
            self.decoder(outputs.quantized, training=training), tf.float32
        )
        mse = tf.reduce_mean(tf.square(images - reconstruction))
        loss = mse / self.data_variance + outputs.codebook_loss + outputs.commitment_loss
        return loss, mse, outputs

    def _update_metrics(self, images, loss, mse, outputs):
        # Weighted by batch size: epoch values are per-image means even when
        # the last batch is smaller.
        batch_size = tf.cast(tf.shape(images)[0], tf.float32)
        values = {
            "loss": loss,
            "mse": mse,
            "commitment_loss": outputs.commitment_loss,
            "codebook_loss": outputs.codebook_loss,
            "perplexity": outputs.perplexity,
        }
        for name, tracker in self._trackers.items():
            tracker.update_state(values[name], sample_weight=batch_size)
        self._usage.update_state(outputs.counts)
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
        return self._update_metrics(images, loss, mse, outputs)

    def test_step(self, data):
        images = unpack_images(data)
        loss, mse, outputs = self._objective(images, training=False)
        return self._update_metrics(images, loss, mse, outputs)

    @property
    def metrics(self):
        return list(self._trackers.values()) + [self._usage]

    # ------------------------------------------------------------- config
    def get_config(self):
        return {
            "name": self.name,
            "image_channels": self.image_channels,
            "hidden_channels": self.hidden_channels,
            "residual_channels": self.residual_channels,
            "num_residual_layers": self.num_residual_layers,
            "num_downsamples": self.num_downsamples,
            "quantizer": keras.layers.serialize(self.quantizer),
            "data_variance": self.data_variance,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

"""VQ-VAE: convolutional encoder, vector quantiser, convolutional decoder.

    z_e = Encoder(x),  z_q = Quantize(z_e),  x̂ = Decoder(z_q)

trained on L = mean((x − x̂)²) / data_variance + codebook_loss + commitment_loss
(the objective, steps, metrics and the levels API are shared with the
hierarchical models: `autoencoder.py`).

Reference: van den Oord et al., "Neural Discrete Representation Learning",
https://arxiv.org/abs/1711.00937
"""

import keras
import tensorflow as tf

from tfvqvae.models.autoencoder import QuantizedAutoencoder
from tfvqvae.models.autoencoder import images_finite
from tfvqvae.models.autoencoder import quantizer_argument
from tfvqvae.models.networks import build_decoder
from tfvqvae.models.networks import build_encoder
from tfvqvae.validation import positive_int
from tfvqvae.models.dtype_config import with_dtype_policy


@keras.saving.register_keras_serializable(package="tfvqvae")
class VQVAE(QuantizedAutoencoder):
    """Vector-quantised variational autoencoder trained with ``model.fit``.

    ``model(x)`` reconstructs images, ``model.encode(x)`` returns the int32
    code map, ``model.decode(codes)`` turns a code map back into images.
    Images are float tensors (batch, height, width, image_channels) with
    values in [0, 1]; height and width must be divisible by
    ``2 ** num_downsamples``. Reconstructions are float32 and are not clipped.

    Called eagerly, ``model(x)``, ``encode``, ``encode_levels`` and
    ``quantize_with_losses`` refuse (ValueError) images holding NaN or Inf
    and images with a value outside [-0.5, 1.5] (e.g. [0, 255] pixels: divide
    by 255). Inside a ``tf.function`` (``fit``, ``predict``, exports) values
    are not checked; ``fit`` skips a step whose loss or gradients are not
    finite (see `tfvqvae.models.autoencoder`).

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
        quantizer: a `VectorQuantizer`, `VectorQuantizerEMA`,
            `FiniteScalarQuantizer`, `LookupFreeQuantizer`,
            `ResidualVectorQuantizer` or `GroupedVectorQuantizer` instance (or
            its serialized config); the last two give codes with a depth axis
            (module `tfvqvae.models.autoencoder`). Defaults to
            ``VectorQuantizerEMA(num_embeddings=512, embedding_dim=64)``.
        data_variance: the reconstruction term is divided by it (Sonnet's
            normalised MSE when set to the training pixels' variance).
            None (the default): estimated from the first training batch
            (`QuantizedAutoencoder`; stored in the weight ``estimated_variance``).
        **kwargs: base `keras.Model` arguments (``name``, ``dtype``: a dtype
            policy such as ``"mixed_bfloat16"``, given to every layer).

    Raises:
        ValueError: a size that is not a positive int (``image_channels``, ``hidden_channels``,
            ``residual_channels``, ``num_residual_layers``, ``num_downsamples``), or a
            ``data_variance`` that is neither None nor a finite number > 0; e.g.
            "`data_variance` must be a finite number > 0. Received:
            data_variance=0".
        TypeError: a ``quantizer`` that is not one of the quantisers above
            (or the serialized config of one).

    Levels API (shared with `HierarchicalVQVAE`): one level, ``"top"``;
    ``encode_levels(x)`` is ``{"top": encode(x)}``; ``level_code_depths`` is
    ``{"top": Q}`` for a depth quantiser, ``{"top": None}`` otherwise.

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

    Reference:
        https://arxiv.org/abs/1711.00937
    """

    def __init__(
        self,
        image_channels=3,
        hidden_channels=128,
        residual_channels=32,
        num_residual_layers=2,
        num_downsamples=2,
        quantizer=None,
        data_variance=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_sizes(image_channels, hidden_channels, residual_channels,
                         num_residual_layers, data_variance)
        self.num_downsamples = positive_int("num_downsamples", num_downsamples)
        quantizer = quantizer_argument("quantizer", quantizer, dtype=self.dtype_policy)
        self.quantizer = quantizer
        sizes = (
            self.image_channels,
            self.hidden_channels,
            self.residual_channels,
            self.num_residual_layers,
            self.num_downsamples,
            quantizer.embedding_dim,
        )
        self.encoder = build_encoder(*sizes, dtype=self.dtype_policy)
        self.decoder = build_decoder(*sizes, dtype=self.dtype_policy)
        self._init_metrics()
        # Every weight exists now (the networks are fully convolutional), so
        # the model counts as built: saving and loading restore the optimizer.
        self.built = True

    # ------------------------------------------------------------ shapes
    @property
    def downsample_factor(self):
        """Image size divided by code-map size: 2 ** num_downsamples."""
        return 2**self.num_downsamples

    @property
    def size_multiple(self):
        return self.downsample_factor

    _size_reason = "2 ** num_downsamples"

    def _level_quantizers(self):
        return {"top": self.quantizer}

    def _level_factors(self):
        return {"top": self.downsample_factor}

    # ------------------------------------------------------------ forward
    def quantize_with_losses(self, images, training=False):
        """Encodes and quantises: returns the quantiser's `QuantizerOutput`."""
        images = self._check_images(images)
        z_e = self.encoder(images, training=training)
        return self.quantizer.quantize_with_losses(
            z_e, training=training, batch_finite=images_finite(images) if training else None)

    def _reconstruct(self, images, training):
        outputs = self.quantize_with_losses(images, training=training)
        reconstruction = tf.cast(self.decoder(outputs.quantized, training=training), tf.float32)
        return reconstruction, {"top": outputs}

    def encode(self, images):
        """int32 code map (batch, height / 2**n, width / 2**n) of ``images``.

        With a quantiser that has a ``code_depth`` Q (`ResidualVectorQuantizer`,
        `GroupedVectorQuantizer`): (batch, height / 2**n, width / 2**n, Q).

        Args:
            images: float (batch, height, width, image_channels) in [0, 1].

        Raises:
            TypeError: non-float images.
            ValueError: a wrong shape; in eager mode also NaN / Inf values or
                values outside [-0.5, 1.5] (e.g. [0, 255] images).
        """
        z_e = self.encoder(self._check_images(images), training=False)
        return self.quantizer.indices(z_e)

    def decode(self, codes):
        """float32 images (batch, h · 2**n, w · 2**n, image_channels) from an integer
        code map with values in [0, K).

        Args:
            codes: int (batch, h, w); (batch, h, w, Q) when the quantiser has
                a ``code_depth`` Q.

        Raises:
            TypeError: non-integer codes.
            ValueError: a rank other than 3 (4 with a depth axis), a last axis
                other than Q; in eager mode codes out of range.
        """
        latents = self.quantizer.lookup(self._check_level_codes("top", codes, "codes"))
        return tf.cast(self.decoder(latents, training=False), tf.float32)

    def _encode_codes(self, images):
        return (self.encode(images),)

    def _decode_codes(self, codes):
        (top,) = codes
        return self.decode(top)

    # ------------------------------------------------------------- config
    def get_config(self):
        return with_dtype_policy(self, {
            "name": self.name,
            "image_channels": self.image_channels,
            "hidden_channels": self.hidden_channels,
            "residual_channels": self.residual_channels,
            "num_residual_layers": self.num_residual_layers,
            "num_downsamples": self.num_downsamples,
            "quantizer": keras.layers.serialize(self.quantizer),
            "data_variance": self.data_variance,
        })

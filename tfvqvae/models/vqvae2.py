"""VQ-VAE-2: a two-level hierarchy of code maps, top at /8 and bottom at /4.

Algorithm 1 of Razavi et al. (images x in [0, 1], C = ``hidden_channels``,
R = ``residual_channels``, L = ``num_residual_layers``, D_t and D_b the two
quantisers' ``embedding_dim``):

    bottom encoder   x − 0.5 → Conv 4x4/2 (C/2, ReLU) → Conv 4x4/2 (C, ReLU)
                     → Conv 3x3 (C) → ResidualStack(C, R, L)          = f   (/4)
    top encoder      f → Conv 4x4/2 (C, ReLU) → Conv 3x3 (C)
                     → ResidualStack → Conv 1x1 (D_t)                 = h_top (/8)
    e_top            = Quantize_top(h_top)
    top decoder      e_top → Conv 3x3 (C) → ResidualStack
                     → ConvTranspose 4x4/2 (D_t, linear)              = d_top (/4)
    bottom encoder   [d_top, f] → Conv 1x1 (D_b)                      = h_bottom
    e_bottom         = Quantize_bottom(h_bottom)
    decoder          [ConvTranspose 4x4/2 (D_t)(e_top), e_bottom]
                     → Conv 3x3 (C) → ResidualStack
                     → ConvTranspose 4x4/2 (C/2, ReLU)
                     → ConvTranspose 4x4/2 (image_channels, linear) → + 0.5

so the bottom code map is conditioned on the quantised top map
(E_bottom(x, e_top) of the paper) and the decoder sees both levels. Training
objective per batch (x̂ the reconstruction):

    L = mean((x − x̂)²) / data_variance
        + Σ_{level ∈ top, bottom} (codebook_loss + commitment_loss)

The objective, train/test steps and metrics are shared with `VQVAE`
(`autoencoder.py`); metric names carry a ``top_`` / ``bottom_`` prefix.

Reference: Razavi, van den Oord, Vinyals, "Generating Diverse High-Fidelity
Images with VQ-VAE-2", https://arxiv.org/abs/1906.00446
"""

import keras
import tensorflow as tf

from tfvqvae.layers.residual_stack import ResidualStack
from tfvqvae.models.autoencoder import QuantizedAutoencoder
from tfvqvae.models.autoencoder import quantizer_argument
from tfvqvae.models.dtype_config import with_dtype_policy

# Image size divided by each level's code-map size.
_TOP_FACTOR = 8
_BOTTOM_FACTOR = 4


# ------------------------------------------------------------------ networks
def _build_bottom_encoder(image_channels, hidden, residual, layers):
    """(B, H, W, image_channels) → (B, H/4, W/4, C) features f."""
    inputs = keras.Input((None, None, image_channels), name="images")
    x = keras.layers.Rescaling(1.0, offset=-0.5, name="center")(inputs)
    for i, channels in enumerate((hidden // 2, hidden)):
        x = keras.layers.Conv2D(
            channels, 4, strides=2, padding="same", activation="relu",
            name=f"downsample{i}",
        )(x)
    x = keras.layers.Conv2D(hidden, 3, padding="same", name="conv3x3")(x)
    x = ResidualStack(hidden, residual, layers, name="residual_stack")(x)
    return keras.Model(inputs, x, name="bottom_encoder")


def _build_top_encoder(hidden, residual, layers, top_dim):
    """(B, H/4, W/4, C) features → (B, H/8, W/8, D_t) = h_top."""
    inputs = keras.Input((None, None, hidden), name="bottom_features")
    x = keras.layers.Conv2D(
        hidden, 4, strides=2, padding="same", activation="relu", name="downsample"
    )(inputs)
    x = keras.layers.Conv2D(hidden, 3, padding="same", name="conv3x3")(x)
    x = ResidualStack(hidden, residual, layers, name="residual_stack")(x)
    h_top = keras.layers.Conv2D(top_dim, 1, name="pre_quantization")(x)
    return keras.Model(inputs, h_top, name="top_encoder")


def _build_top_decoder(hidden, residual, layers, top_dim):
    """(B, H/8, W/8, D_t) quantised top map → (B, H/4, W/4, D_t) = d_top."""
    inputs = keras.Input((None, None, top_dim), name="top_latents")
    x = keras.layers.Conv2D(hidden, 3, padding="same", name="conv3x3")(inputs)
    x = ResidualStack(hidden, residual, layers, name="residual_stack")(x)
    d_top = keras.layers.Conv2DTranspose(
        top_dim, 4, strides=2, padding="same", name="upsample"
    )(x)
    return keras.Model(inputs, d_top, name="top_decoder")


def _build_bottom_pre_quantization(hidden, top_dim, bottom_dim):
    """[features f (C), d_top (D_t)] at /4 → (B, H/4, W/4, D_b) = h_bottom."""
    features = keras.Input((None, None, hidden), name="bottom_features")
    d_top = keras.Input((None, None, top_dim), name="decoded_top")
    x = keras.layers.Concatenate(name="concat")([d_top, features])
    h_bottom = keras.layers.Conv2D(bottom_dim, 1, name="pre_quantization")(x)
    return keras.Model([features, d_top], h_bottom, name="bottom_pre_quantization")


def _build_decoder(image_channels, hidden, residual, layers, top_dim, bottom_dim):
    """[top latents (/8, D_t), bottom latents (/4, D_b)] → (B, H, W, image_channels)."""
    top = keras.Input((None, None, top_dim), name="top_latents")
    bottom = keras.Input((None, None, bottom_dim), name="bottom_latents")
    up = keras.layers.Conv2DTranspose(
        top_dim, 4, strides=2, padding="same", name="upsample_top"
    )(top)
    x = keras.layers.Concatenate(name="concat")([up, bottom])
    x = keras.layers.Conv2D(hidden, 3, padding="same", name="conv3x3")(x)
    x = ResidualStack(hidden, residual, layers, name="residual_stack")(x)
    x = keras.layers.Conv2DTranspose(
        hidden // 2, 4, strides=2, padding="same", activation="relu", name="upsample0"
    )(x)
    x = keras.layers.Conv2DTranspose(
        image_channels, 4, strides=2, padding="same", name="upsample1"
    )(x)
    outputs = keras.layers.Rescaling(1.0, offset=0.5, name="uncenter")(x)
    return keras.Model([top, bottom], outputs, name="decoder")


@keras.saving.register_keras_serializable(package="tfvqvae")
class VQVAE2(QuantizedAutoencoder):
    """Hierarchical VQ-VAE (VQ-VAE-2) with a top and a bottom code map.

    ``model(x)`` reconstructs images, ``model.encode(x)`` returns the int32
    code maps ``(top, bottom)`` of shapes (batch, H/8, W/8) and
    (batch, H/4, W/4), ``model.decode(top, bottom)`` turns them back into
    images. Images are float tensors (batch, height, width, image_channels)
    with values in [0, 1]; height and width must be divisible by 8.
    Reconstructions are float32 and are not clipped. The networks are listed
    in the module docstring.

    Called eagerly, ``model(x)``, ``encode``, ``encode_levels`` and
    ``quantize_with_losses`` refuse (ValueError) images holding NaN or Inf
    and images with a value outside [-0.5, 1.5] (e.g. [0, 255] pixels: divide
    by 255). Inside a ``tf.function`` (``fit``, ``predict``, exports) values
    are not checked; ``fit`` skips a step whose loss or gradients are not
    finite (see `tfvqvae.models.autoencoder`).

    Metrics reported by ``fit`` / ``evaluate``: ``loss``, ``mse`` (mean
    squared error in [0, 1] pixel units) and, for each level (``top_``,
    ``bottom_`` prefix), ``commitment_loss``, ``codebook_loss`` (gradient
    quantiser only), ``perplexity`` (per batch, averaged), ``usage`` (% of
    codes chosen at least once in the epoch) and ``dead_codes``. Epoch values
    are means per image.

    Args:
        image_channels: channels of the images (1 or 3, any positive int
            works). Defaults to 3.
        hidden_channels: channels C of the encoders/decoders. Defaults to 128.
        residual_channels: channels R inside each residual block. Defaults
            to 32.
        num_residual_layers: residual blocks per stack. Defaults to 2.
        top_quantizer: a `VectorQuantizer` / `VectorQuantizerEMA` instance (or
            its serialized config) for the /8 map. Defaults to
            ``VectorQuantizerEMA(num_embeddings=512, embedding_dim=64)``.
        bottom_quantizer: the same for the /4 map; must be another instance
            than ``top_quantizer``. Same default.
        data_variance: the reconstruction term is divided by it (Sonnet's
            normalised MSE when set to the training pixels' variance).
            Defaults to 1.0.
        **kwargs: base `keras.Model` arguments (``name``).

    Example:

    >>> import numpy as np
    >>> model = VQVAE2(image_channels=1, hidden_channels=16, residual_channels=8,
    ...                top_quantizer=VectorQuantizerEMA(32, 8),
    ...                bottom_quantizer=VectorQuantizerEMA(32, 8))
    >>> model.compile(optimizer="adam")
    >>> x = np.random.rand(8, 16, 16, 1).astype("float32")
    >>> top, bottom = model.encode(x)
    >>> top.shape, bottom.shape
    (TensorShape([8, 2, 2]), TensorShape([8, 4, 4]))
    >>> model.decode(top, bottom).shape
    TensorShape([8, 16, 16, 1])

    Reference:
        https://arxiv.org/abs/1906.00446
    """

    def __init__(
        self,
        image_channels=3,
        hidden_channels=128,
        residual_channels=32,
        num_residual_layers=2,
        top_quantizer=None,
        bottom_quantizer=None,
        data_variance=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_sizes(image_channels, hidden_channels, residual_channels,
                         num_residual_layers, data_variance)
        top_quantizer = quantizer_argument("top_quantizer", top_quantizer, seed=0)
        bottom_quantizer = quantizer_argument("bottom_quantizer", bottom_quantizer, seed=1)
        if top_quantizer is bottom_quantizer:
            raise ValueError(
                "`top_quantizer` and `bottom_quantizer` must be two different "
                "instances: each level has its own codebook. "
                f"Received: the same instance {top_quantizer!r} for both"
            )
        self.top_quantizer = top_quantizer
        self.bottom_quantizer = bottom_quantizer
        top_dim = top_quantizer.embedding_dim
        bottom_dim = bottom_quantizer.embedding_dim
        sizes = (self.hidden_channels, self.residual_channels, self.num_residual_layers)
        self.bottom_encoder = _build_bottom_encoder(self.image_channels, *sizes)
        self.top_encoder = _build_top_encoder(*sizes, top_dim)
        self.top_decoder = _build_top_decoder(*sizes, top_dim)
        self.bottom_pre_quantization = _build_bottom_pre_quantization(
            self.hidden_channels, top_dim, bottom_dim
        )
        self.decoder = _build_decoder(self.image_channels, *sizes, top_dim, bottom_dim)
        self._init_metrics()
        # Every weight exists now (the networks are fully convolutional), so
        # the model counts as built: saving and loading restore the optimizer.
        self.built = True

    def _level_quantizers(self):
        return {"top": self.top_quantizer, "bottom": self.bottom_quantizer}

    # ------------------------------------------------------------ shapes
    @property
    def downsample_factor(self):
        """Image size divided by the bottom code-map size: 4 (the top map is /8)."""
        return _BOTTOM_FACTOR

    size_multiple = _TOP_FACTOR
    _size_reason = "the top code map is the image divided by 8"

    @staticmethod
    def _check_level_shapes(top_codes, bottom_codes):
        top, bottom = tuple(top_codes.shape), tuple(bottom_codes.shape)
        expected = (top[0], *(None if s is None else 2 * s for s in top[1:]))
        for want, got in zip(expected, bottom):
            if want is not None and got is not None and want != got:
                raise ValueError(
                    "The bottom code map must have the top map's batch size and "
                    "twice its height and width. Received: top_codes with "
                    f"shape={top} and bottom_codes with shape={bottom}"
                )

    # ------------------------------------------------------------ forward
    def quantize_with_losses(self, images, training=False):
        """Encodes and quantises both levels.

        Returns:
            ``(top, bottom)``: the two quantisers' `QuantizerOutput`s; the
            bottom one is computed from the straight-through top output.
        """
        features = self.bottom_encoder(self._check_images(images), training=training)
        top = self.top_quantizer.quantize_with_losses(
            self.top_encoder(features, training=training), training=training
        )
        h_bottom = self._bottom_pre_quantization(features, top.quantized, training)
        bottom = self.bottom_quantizer.quantize_with_losses(h_bottom, training=training)
        return top, bottom

    def _bottom_pre_quantization(self, features, top_latents, training):
        d_top = self.top_decoder(top_latents, training=training)
        return self.bottom_pre_quantization([features, d_top], training=training)

    def _decode_latents(self, top_latents, bottom_latents, training):
        images = self.decoder([top_latents, bottom_latents], training=training)
        return tf.cast(images, tf.float32)

    def _reconstruct(self, images, training):
        top, bottom = self.quantize_with_losses(images, training=training)
        reconstruction = self._decode_latents(top.quantized, bottom.quantized, training)
        return reconstruction, {"top": top, "bottom": bottom}

    def encode(self, images):
        """int32 code maps ``(top, bottom)``: (batch, H/8, W/8) and (batch, H/4, W/4).

        Args:
            images: float (batch, H, W, image_channels) in [0, 1], H and W
                divisible by 8.

        Raises:
            TypeError: non-float images.
            ValueError: a wrong shape; in eager mode also NaN / Inf values or
                values outside [-0.5, 1.5] (e.g. [0, 255] images).
        """
        features = self.bottom_encoder(self._check_images(images), training=False)
        top_codes = self.top_quantizer.indices(self.top_encoder(features, training=False))
        top_latents = self.top_quantizer.lookup(top_codes, validate=False)
        h_bottom = self._bottom_pre_quantization(features, top_latents, False)
        return top_codes, self.bottom_quantizer.indices(h_bottom)

    def decode(self, top_codes, bottom_codes):
        """float32 images from integer code maps with values in [0, K_top) / [0, K_bottom).

        The bottom map must be exactly twice the top map's height and width.
        """
        top_codes = self._check_codes(top_codes, "top_codes")
        bottom_codes = self._check_codes(bottom_codes, "bottom_codes")
        self._check_level_shapes(top_codes, bottom_codes)
        return self._decode_latents(
            self.top_quantizer.lookup(top_codes),
            self.bottom_quantizer.lookup(bottom_codes),
            training=False,
        )

    # ------------------------------------------- the levels API (priors)
    # Shared with VQVAE (one level, "top"), so code extraction, priors and
    # sampling treat both alike. The bottom prior is conditioned on "top".
    levels = ("top", "bottom")

    def code_shapes(self, image_size):
        """{level: (h, w)} of the code maps for images of ``image_size`` (H, W)."""
        height, width = image_size
        return {
            "top": (height // _TOP_FACTOR, width // _TOP_FACTOR),
            "bottom": (height // _BOTTOM_FACTOR, width // _BOTTOM_FACTOR),
        }

    def encode_levels(self, images):
        """{level: int32 code map} of ``images``."""
        return dict(zip(self.levels, self.encode(images)))

    def decode_levels(self, codes):
        """Images from ``{level: code map}``."""
        return self.decode(codes["top"], codes["bottom"])

    # ------------------------------------------------------------- config
    def get_config(self):
        return with_dtype_policy(self, {
            "name": self.name,
            "image_channels": self.image_channels,
            "hidden_channels": self.hidden_channels,
            "residual_channels": self.residual_channels,
            "num_residual_layers": self.num_residual_layers,
            "top_quantizer": keras.layers.serialize(self.top_quantizer),
            "bottom_quantizer": keras.layers.serialize(self.bottom_quantizer),
            "data_variance": self.data_variance,
        })

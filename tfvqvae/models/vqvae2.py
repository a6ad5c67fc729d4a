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

It is the two-level case of `HierarchicalVQVAE` (same networks, weights and
outputs), kept as its own class with its own arguments and config keys so
that ``.keras`` files saved by earlier releases load. The objective,
train/test steps, metrics and the levels API are shared (`autoencoder.py`);
metric names carry a ``top_`` / ``bottom_`` prefix.

Reference: Razavi, van den Oord, Vinyals, "Generating Diverse High-Fidelity
Images with VQ-VAE-2", https://arxiv.org/abs/1906.00446
"""

import keras

from tfvqvae.models.dtype_config import with_dtype_policy
from tfvqvae.models.hierarchical import HierarchicalVQVAE


@keras.saving.register_keras_serializable(package="tfvqvae")
class VQVAE2(HierarchicalVQVAE):
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
        top_quantizer: a quantiser instance (any of `HierarchicalVQVAE`'s:
            a `ResidualVectorQuantizer` or `GroupedVectorQuantizer` gives the
            level codes with a depth axis) or its serialized config, for the
            /8 map. Defaults to
            ``VectorQuantizerEMA(num_embeddings=512, embedding_dim=64)``.
        bottom_quantizer: the same for the /4 map; must be another instance
            than ``top_quantizer``. Same default.
        data_variance: the reconstruction term is divided by it (Sonnet's
            normalised MSE when set to the training pixels' variance).
            None (the default): estimated from the first training batch
            (`QuantizedAutoencoder`; stored in the weight ``estimated_variance``).
        **kwargs: base `keras.Model` arguments (``name``, ``dtype``: a dtype
            policy such as ``"mixed_bfloat16"``, given to every layer).

    Raises:
        ValueError: a size that is not a positive int (``image_channels``, ``hidden_channels``,
            ``residual_channels``, ``num_residual_layers``), or a
            ``data_variance`` that is neither None nor a finite number > 0; e.g.
            "`data_variance` must be a finite number > 0. Received:
            data_variance=0".
            Also ``top_quantizer`` and ``bottom_quantizer`` being the same
            instance.
        TypeError: a ``top_quantizer`` or ``bottom_quantizer`` that is not a
            quantiser `HierarchicalVQVAE` takes (or the serialized config of one).

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
        data_variance=None,
        **kwargs,
    ):
        super().__init__(
            num_levels=2,
            image_channels=image_channels,
            hidden_channels=hidden_channels,
            residual_channels=residual_channels,
            num_residual_layers=num_residual_layers,
            quantizers=[top_quantizer, bottom_quantizer],
            data_variance=data_variance,
            **kwargs,
        )

    def _quantizer_names(self, names):
        return ["top_quantizer", "bottom_quantizer"]

    def decode(self, top_codes, bottom_codes):
        """float32 images from integer code maps with values in [0, K_top) / [0, K_bottom).

        The bottom map must be exactly twice the top map's height and width.

        Args:
            top_codes: int (batch, H/8, W/8), or (batch, H/8, W/8, Q_top) when
                the top quantiser has a ``code_depth``.
            bottom_codes: int (batch, H/4, W/4), or (batch, H/4, W/4, Q_bottom).

        Raises:
            TypeError: non-integer codes.
            ValueError: a wrong rank, maps whose batch sizes or sizes do not
                match; in eager mode codes out of range.
        """
        return super().decode(top_codes, bottom_codes)

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

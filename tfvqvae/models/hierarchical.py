"""A hierarchy of any number of code maps: VQ-VAE-2's Algorithm 1 generalised to L levels.

Levels are numbered 1 (the bottom, at image / 4) to L (the top, at
image / 2**(L+1)): each level halves the resolution of the one below. In
the API they are named and listed top first (`level_names`):

    L = 1   top
    L = 2   top, bottom                     (VQVAE2)
    L = 3   top, middle, bottom
    L ≥ 4   top, level_{L-1}, …, level_2, bottom

Encoding (f_n the features of level n, e_n its quantised latents, D_n its
embedding size; networks in `tfvqvae.models.networks`):

    f_1 = Encoder_1(x)                      (/4, C channels)
    f_n = Encoder_n(f_{n-1})                (halves the size; n = 2 … L)
    h_L = Conv1x1(f_L),  e_L = Quantize_L(h_L)
    for n = L−1 … 1:
        d_{n+1} = ConditionDecoder_{n+1}(e_L, …, e_{n+1})   (at level n's size)
        h_n     = Conv1x1([d_{n+1}, f_n]),  e_n = Quantize_n(h_n)
    x̂ = Decoder(e_L, …, e_1)

so each level's code map is conditioned on the quantised maps of every
level above it (E_bottom(x, e_top) of the paper, Figure 3), and the decoder
reads all levels. Worked through one shape: 64x64 images with L = 3 give
code maps top (8, 8), middle (16, 16), bottom (32, 32). With L = 2 the
networks, their weights and the outputs are exactly `VQVAE2`'s; with L = 1 the
encoder and decoder are a `VQVAE`'s with ``num_downsamples=2``.

Training objective per batch (x̂ the reconstruction):

    L = mean((x − x̂)²) / data_variance + Σ_levels (codebook_loss + commitment_loss)

shared with `VQVAE` (`autoencoder.py`), as are the train/test steps and the
metrics (prefixed with the level's name when L > 1: ``top_perplexity``,
``middle_usage``, …).

Priors over the levels form a chain (`tfvqvae.models.sampling.sample_levels`):
the top prior is unconditioned (or class-conditioned) and the prior of each
lower level is conditioned on the code map of the level directly above.

Reference: Razavi, van den Oord, Vinyals, "Generating Diverse High-Fidelity
Images with VQ-VAE-2", https://arxiv.org/abs/1906.00446
"""

import keras
import tensorflow as tf

from tfvqvae.models.autoencoder import QuantizedAutoencoder
from tfvqvae.models.autoencoder import images_finite
from tfvqvae.models.autoencoder import quantizer_argument
from tfvqvae.models.dtype_config import with_dtype_policy
from tfvqvae.models.networks import build_condition_decoder
from tfvqvae.models.networks import build_hierarchical_decoder
from tfvqvae.models.networks import build_level_encoder
from tfvqvae.models.networks import build_pre_quantization
from tfvqvae.validation import positive_int

# The bottom code map is the image divided by 4; each level above halves it.
BOTTOM_FACTOR = 4


def level_names(num_levels):
    """Names of the levels of an L-level hierarchy, top first.

    ``("top",)``, ``("top", "bottom")``, ``("top", "middle", "bottom")``, and
    for L ≥ 4 ``("top", "level_{L-1}", …, "level_2", "bottom")`` (level n
    counts from 1 at the bottom). One and two levels keep the names of
    `VQVAE` and `VQVAE2`, so code files, priors (``--level top|bottom``) and
    exported signatures (``top_codes``, ``bottom_codes``) stay as they were.

    Raises:
        ValueError: ``num_levels`` is not a positive integer.
    """
    num_levels = positive_int("num_levels", num_levels)
    if num_levels == 1:
        return ("top",)
    if num_levels == 3:
        return ("top", "middle", "bottom")
    return ("top", *(f"level_{n}" for n in range(num_levels - 1, 1, -1)), "bottom")


def level_factors(num_levels):
    """{level: image size / code-map size}, top first: 2**(L+1), …, 8, 4.

    Raises:
        ValueError: ``num_levels`` is not a positive integer.
    """
    names = level_names(num_levels)
    return {
        level: BOTTOM_FACTOR * 2 ** (len(names) - 1 - k) for k, level in enumerate(names)
    }


@keras.saving.register_keras_serializable(package="tfvqvae")
class HierarchicalVQVAE(QuantizedAutoencoder):
    """Hierarchical VQ-VAE with ``num_levels`` code maps, trained with ``model.fit``.

    ``model(x)`` reconstructs images; ``model.encode(x)`` returns a tuple of
    int32 code maps, top first, level k (top = 0) of shape
    (batch, H / 2**(L+1−k), W / 2**(L+1−k)); ``model.decode(*codes)``
    inverts it. Images are float tensors (batch, height, width,
    image_channels) with values in [0, 1]; height and width must be divisible
    by 2**(L+1) (the top level's factor). Reconstructions are float32 and are
    not clipped. The networks are listed in the module docstring; they are
    attributes named after the levels (``top_encoder``, ``middle_encoder``,
    …, ``top_decoder`` (the top's condition decoder), ``middle_pre_quantization``,
    …, ``decoder``; the quantisers ``top_quantizer``, …).

    Called eagerly, ``model(x)``, ``encode``, ``encode_levels`` and
    ``quantize_with_losses`` refuse (ValueError) images holding NaN or Inf
    and images with a value outside [-0.5, 1.5]. Inside a ``tf.function``
    (``fit``, ``predict``, exports) values are not checked; ``fit`` skips a
    step whose loss or gradients are not finite (see
    `tfvqvae.models.autoencoder`).

    Metrics reported by ``fit`` / ``evaluate``: ``loss``, ``mse`` and, for
    each level (prefixed with ``<level>_`` when there are several),
    ``commitment_loss``, ``codebook_loss`` (gradient quantiser only),
    ``perplexity``, ``usage`` and ``dead_codes``. Epoch values are means per
    image.

    Args:
        num_levels: L, the number of code maps. Defaults to 2.
        image_channels: channels of the images. Defaults to 3.
        hidden_channels: channels C of the encoders/decoders. Defaults to 128.
        residual_channels: channels R inside each residual block. Defaults
            to 32.
        num_residual_layers: residual blocks per stack. Defaults to 2.
        quantizers: a list of L quantiser instances (`VectorQuantizer`,
            `VectorQuantizerEMA`, `FiniteScalarQuantizer`,
            `LookupFreeQuantizer`, `ResidualVectorQuantizer`,
            `GroupedVectorQuantizer`; or serialized configs, or None for a
            default), top first, all different instances; or None. A
            residual or grouped quantiser gives its level codes with a depth
            axis (`tfvqvae.models.autoencoder`). Defaults to
            ``VectorQuantizerEMA(num_embeddings=512, embedding_dim=64,
            seed=k)`` for level k (top = 0), with the model's dtype policy.
        data_variance: the reconstruction term is divided by it. None
            (the default): estimated from the first training batch
            (`QuantizedAutoencoder`; stored in the weight ``estimated_variance``).
        **kwargs: base `keras.Model` arguments (``name``, ``dtype``: a dtype
            policy such as ``"mixed_bfloat16"``, given to every layer).

    Raises:
        ValueError: a size that is not a positive int (``num_levels``, ``image_channels``,
            ``hidden_channels``, ``residual_channels``, ``num_residual_layers``), or a
            ``data_variance`` that is neither None nor a finite number > 0; e.g.
            "`data_variance` must be a finite number > 0. Received:
            data_variance=0".
            Also ``quantizers`` that is not a list of ``num_levels`` entries,
            or holds one instance twice (each level has its own codebook).
        TypeError: a ``quantizers`` entry that is not one of the quantisers
            above (or the serialized config of one).

    Example:

    >>> import numpy as np
    >>> model = HierarchicalVQVAE(
    ...     num_levels=3, image_channels=1, hidden_channels=16, residual_channels=8,
    ...     quantizers=[VectorQuantizerEMA(32, 8) for _ in range(3)])
    >>> model.compile(optimizer="adam")
    >>> x = np.random.rand(2, 32, 32, 1).astype("float32")
    >>> [tuple(c.shape) for c in model.encode(x)]
    [(2, 2, 2), (2, 4, 4), (2, 8, 8)]
    >>> model.decode(*model.encode(x)).shape
    TensorShape([2, 32, 32, 1])

    Reference:
        https://arxiv.org/abs/1906.00446
    """

    def __init__(
        self,
        num_levels=2,
        image_channels=3,
        hidden_channels=128,
        residual_channels=32,
        num_residual_layers=2,
        quantizers=None,
        data_variance=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_sizes(image_channels, hidden_channels, residual_channels,
                         num_residual_layers, data_variance)
        self.num_levels = positive_int("num_levels", num_levels)
        names = level_names(self.num_levels)
        self._names = names
        quantizers = self._quantizer_arguments(quantizers, names)
        # NB: the networks are attributes named after their level, in this
        # order, so a two-level model saves its weights (and its optimizer
        # its slots) exactly where VQVAE2 always has.
        for level, quantizer in zip(names, quantizers):
            setattr(self, f"{level}_quantizer", quantizer)
        dims = [quantizer.embedding_dim for quantizer in quantizers]
        dtype = self.dtype_policy
        sizes = (self.hidden_channels, self.residual_channels, self.num_residual_layers)
        for n, level in enumerate(reversed(names)):  # bottom (level 1) first
            setattr(self, f"{level}_encoder", build_level_encoder(
                self.image_channels if n == 0 else self.hidden_channels, *sizes,
                bottom=n == 0, embedding_dim=dims[0] if level == names[0] else None,
                name=f"{level}_encoder", dtype=dtype,
            ))
        for k in range(1, len(names)):  # top-down: what conditions level k
            above, level = names[k - 1], names[k]
            setattr(self, f"{above}_decoder", build_condition_decoder(
                names[:k], dims[:k], *sizes, name=f"{above}_decoder", dtype=dtype,
            ))
            setattr(self, f"{level}_pre_quantization", build_pre_quantization(
                self.hidden_channels, dims[k - 1], dims[k],
                name=f"{level}_pre_quantization", dtype=dtype,
            ))
        self.decoder = build_hierarchical_decoder(
            names, dims, self.image_channels, *sizes, name="decoder", dtype=dtype,
        )
        self._init_metrics()
        # Every weight exists now (the networks are fully convolutional), so
        # the model counts as built: saving and loading restore the optimizer.
        self.built = True

    # --------------------------------------------------------- arguments
    def _quantizer_names(self, names):
        """How the constructor's error messages name each level's quantiser."""
        return [f"quantizers[{k}]" for k in range(len(names))]

    def _quantizer_arguments(self, quantizers, names):
        if quantizers is None:
            quantizers = [None] * len(names)
        if not isinstance(quantizers, (list, tuple)) or len(quantizers) != len(names):
            raise ValueError(
                f"`quantizers` must be a list of num_levels={len(names)} quantizers "
                f"(or None), top first. Received: quantizers={quantizers!r}"
            )
        arg_names = self._quantizer_names(names)
        quantizers = [
            quantizer_argument(arg, value, seed=k, dtype=self.dtype_policy)
            for k, (arg, value) in enumerate(zip(arg_names, quantizers))
        ]
        for i in range(len(quantizers)):
            for j in range(i + 1, len(quantizers)):
                if quantizers[i] is quantizers[j]:
                    raise ValueError(
                        f"`{arg_names[i]}` and `{arg_names[j]}` must be two different "
                        "instances: each level has its own codebook. "
                        f"Received: the same instance {quantizers[i]!r} for both"
                    )
        return quantizers

    # ------------------------------------------------------------ levels
    def _level_quantizers(self):
        return {level: getattr(self, f"{level}_quantizer") for level in self._names}

    def _level_factors(self):
        return level_factors(self.num_levels)

    def _network(self, kind, level):
        return getattr(self, f"{level}_{kind}")

    @property
    def downsample_factor(self):
        """Image size divided by the bottom code-map size: 4."""
        return BOTTOM_FACTOR

    @property
    def size_multiple(self):
        return BOTTOM_FACTOR * 2 ** (self.num_levels - 1)

    @property
    def _size_reason(self):
        return f"the top code map is the image divided by {self.size_multiple}"

    def _check_level_shapes(self, codes):
        """Each map must have the batch size of the one above and twice its size.

        Only (batch, height, width) are compared: a depth axis (checked per
        level by `_check_codes`) may differ from level to level.
        """
        for k in range(1, len(codes)):
            upper, lower = tuple(codes[k - 1].shape), tuple(codes[k].shape)
            expected = (upper[0], *(None if s is None else 2 * s for s in upper[1:3]))
            for want, got in zip(expected, lower[:3]):
                if want is not None and got is not None and want != got:
                    above, level = self._names[k - 1], self._names[k]
                    raise ValueError(
                        f"The {level} code map must have the {above} map's batch size "
                        f"and twice its height and width. Received: {above}_codes with "
                        f"shape={upper} and {level}_codes with shape={lower}"
                    )

    # ----------------------------------------------------------- forward
    def _encode_features(self, images, training):
        """{level: features f_n} from the bottom up; the top entry is h_top."""
        features, x = {}, images
        for level in reversed(self._names):
            x = self._network("encoder", level)(x, training=training)
            features[level] = x
        return features

    def _pre_quantization(self, k, features, latents, training):
        """h of level k (top = 0), given the quantised latents of the levels above."""
        level = self._names[k]
        if k == 0:
            return features[level]
        condition = latents[0] if k == 1 else list(latents[:k])
        d = self._network("decoder", self._names[k - 1])(condition, training=training)
        return self._network("pre_quantization", level)([features[level], d], training=training)

    def quantize_with_losses(self, images, training=False):
        """Encodes and quantises every level, top first.

        Returns:
            A tuple of the quantisers' `QuantizerOutput`s, top first; each
            level is computed from the straight-through outputs above it.
        """
        images = self._check_images(images)
        finite = images_finite(images) if training else None
        features = self._encode_features(images, training)
        outputs = []
        for k, level in enumerate(self._names):
            h = self._pre_quantization(k, features, [o.quantized for o in outputs], training)
            quantizer = self._network("quantizer", level)
            outputs.append(quantizer.quantize_with_losses(
                h, training=training, batch_finite=finite))
        return tuple(outputs)

    def _decode_latents(self, latents, training):
        inputs = latents[0] if len(latents) == 1 else list(latents)
        return tf.cast(self.decoder(inputs, training=training), tf.float32)

    def _reconstruct(self, images, training):
        outputs = self.quantize_with_losses(images, training=training)
        reconstruction = self._decode_latents([o.quantized for o in outputs], training)
        return reconstruction, dict(zip(self._names, outputs))

    def encode(self, images):
        """int32 code maps, a tuple top first: level k (top = 0) is (batch, H/2**(L+1−k), W/2**(L+1−k)).

        A level whose quantiser has a ``code_depth`` Q has a trailing axis of
        Q codes per position: (batch, h, w, Q). Its quantised latents (Q codes
        looked up and combined into D-vectors) condition the levels below.

        Args:
            images: float (batch, H, W, image_channels) in [0, 1], H and W
                divisible by 2**(L+1).

        Raises:
            TypeError: non-float images.
            ValueError: a wrong shape; in eager mode also NaN / Inf values or
                values outside [-0.5, 1.5] (e.g. [0, 255] images).
        """
        features = self._encode_features(self._check_images(images), False)
        codes, latents = [], []
        for k, level in enumerate(self._names):
            quantizer = self._network("quantizer", level)
            codes.append(quantizer.indices(self._pre_quantization(k, features, latents, False)))
            if k < len(self._names) - 1:
                latents.append(quantizer.lookup(codes[-1], validate=False))
        return tuple(codes)

    def decode(self, *codes):
        """float32 images from integer code maps, one per level, top first.

        Level k's values lie in [0, K_k); each map must have the batch size of
        the one above it and exactly twice its height and width; a level
        with a depth axis takes (batch, h, w, Q) maps (as `encode` gives).

        Raises:
            TypeError: not one map per level, or non-integer codes.
            ValueError: a wrong rank or shape; in eager mode codes out of range.
        """
        return self._decode_latents(self._checked_latents(codes, "decode"), training=False)

    def _checked_latents(self, codes, caller):
        """The quantised maps of one code map per level, top first, after every check."""
        if len(codes) != len(self._names):
            raise TypeError(
                f"{caller} takes {len(self._names)} code maps ({', '.join(self._names)}), "
                f"top first. Received: {len(codes)}"
            )
        codes = [self._check_level_codes(level, c) for level, c in zip(self._names, codes)]
        self._check_level_shapes(codes)
        return [
            self._network("quantizer", level).lookup(c) for level, c in zip(self._names, codes)
        ]

    def decode_top_levels(self, codes, num_levels):
        """Images decoded from the top ``num_levels`` code maps alone (VQ-VAE-2, Figure 3).

        The decoder reads every level; here the quantised maps of the levels
        below the kept ones are zero vectors, so each kept level's
        contribution shows on its own: top only, top and middle, ..., all.

        Args:
            codes: int code maps, one per level, top first (as `encode`
                returns them).
            num_levels: how many levels to keep, from the top: 1 ..
                ``num_levels`` of the model (all: the same as `decode`).

        Returns:
            float32 (batch, H, W, image_channels).

        Raises:
            TypeError / ValueError: as `decode`, and ``num_levels`` outside
                [1, L] ("`num_levels` must be ... Received: ...").
        """
        keep = positive_int("num_levels", num_levels)
        if keep > len(self._names):
            raise ValueError(
                f"`num_levels` must be at most {len(self._names)} (the model's levels). "
                f"Received: num_levels={num_levels!r}"
            )
        latents = self._checked_latents(codes, "decode_top_levels")
        latents = [z if k < keep else tf.zeros_like(z) for k, z in enumerate(latents)]
        return self._decode_latents(latents, training=False)

    def _encode_codes(self, images):
        return self.encode(images)

    def _decode_codes(self, codes):
        return self.decode(*codes)

    # ------------------------------------------------------------- config
    def get_config(self):
        return with_dtype_policy(self, {
            "name": self.name,
            "num_levels": self.num_levels,
            "image_channels": self.image_channels,
            "hidden_channels": self.hidden_channels,
            "residual_channels": self.residual_channels,
            "num_residual_layers": self.num_residual_layers,
            "quantizers": [
                keras.layers.serialize(q) for q in self._level_quantizers().values()
            ],
            "data_variance": self.data_variance,
        })

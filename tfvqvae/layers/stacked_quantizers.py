"""Base of the quantisers made of several `VectorQuantizer(EMA)` sublayers.

`ResidualVectorQuantizer` (Q stages on successive residuals) and
`GroupedVectorQuantizer` (H heads on slices of the channels) code a vector by
``code_depth`` indices, one per sublayer. This module owns what they share:
the ``ema`` / ``shared_codebook`` switches and the EMA-only / gradient-only
arguments, the construction of the sublayers (sublayer i seeded with
``seed + STAGE_SEED_STRIDE * i``; one sublayer for all with a shared
codebook), ``build``, ``call``, the code-index check, the (depth, K) counts
with their mean perplexity, and the common part of ``get_config``. The input
check comes from `VectorInputs`, shared with `VectorQuantizer`. Each subclass keeps its own algorithm (``quantize_with_losses``,
``indices``, ``lookup``) and its own arguments.

Not exported: `StackedQuantizer` is not registered for serialisation, only its
subclasses are.
"""

import keras
import tensorflow as tf

from tfvqvae.layers.vector_quantizer import QuantizerOutput
from tfvqvae.layers.vector_quantizer import VectorInputs
from tfvqvae.layers.vector_quantizer import VectorQuantizer
from tfvqvae.layers.vector_quantizer_ema import VectorQuantizerEMA
from tfvqvae.metrics import perplexity_from_counts
from tfvqvae.validation import boolean
from tfvqvae.validation import integer
from tfvqvae.validation import integer_indices
from tfvqvae.validation import vectors_shape

# Sublayer i's quantiser gets seed + STAGE_SEED_STRIDE * i: different initial
# codebooks and k-means / restart draws per sublayer. A sublayer uses salts 1
# and 2 on its seed (`VectorQuantizer._step_seed`); the residual quantiser's
# dropout uses 3 and 4 on the layer's own seed, so no two streams share a seed.
STAGE_SEED_STRIDE = 8


class StackedQuantizer(VectorInputs, keras.layers.Layer):
    """A layer of ``code_depth`` `VectorQuantizer(EMA)` sublayers, one code each.

    A subclass's ``__init__`` calls ``super().__init__(**kwargs)``, sets
    ``code_depth`` (and its own name for it), then `_check_switches` and
    `_init_sublayers`; it defines ``quantize_with_losses``, ``indices`` and
    ``lookup``, and adds its own arguments to `get_config`. It names the depth
    argument in ``_depth_name`` (for the code-index check's message).

    Attributes set here: ``ema``, ``shared_codebook``, ``seed``,
    ``add_losses``, ``quantizer_layers`` (the distinct sublayers, tracked by
    Keras), ``num_embeddings``, ``embedding_dim``, ``commitment_cost``.
    """

    _depth_name = "code_depth"

    # ------------------------------------------------------------ construction
    def _check_switches(self, ema, shared_codebook):
        """Sets ``ema`` and ``shared_codebook``, each True or False."""
        self.ema = boolean("ema", ema)
        self.shared_codebook = boolean("shared_codebook", shared_codebook)

    def _init_sublayers(
        self,
        prefix,
        num_embeddings,
        embedding_dim,
        sublayer_dim,
        *,
        commitment_cost,
        codebook_cost,
        decay,
        epsilon,
        embeddings_initializer,
        kmeans_init,
        kmeans_iterations,
        restart_unused_after,
        add_losses,
        seed,
        **options,
    ):
        """Checks the shared arguments and creates the sublayers.

        Sublayer i is named ``f"{prefix}_{i}"`` (``f"shared_{prefix}"`` with a
        shared codebook), quantises vectors of size ``sublayer_dim`` and gets
        ``options`` (other `VectorQuantizer` arguments) besides the shared
        ones; ``embedding_dim`` is the size of the layer's inputs.

        Raises:
            ValueError: ``seed`` not an int, ``codebook_cost`` with
                ``ema=True``, ``decay`` or ``epsilon`` with ``ema=False``,
                and every check of the sublayers' class.
        """
        self.seed = integer("seed", seed)
        self.add_losses = bool(add_losses)
        if self.ema and codebook_cost is not None:
            raise ValueError(
                "`codebook_cost` applies only with ema=False: EMA codebooks have no "
                f"codebook loss. Received: codebook_cost={codebook_cost!r}"
            )
        sublayer_kwargs = {}
        for name, value in (("decay", decay), ("epsilon", epsilon)):
            if value is None:
                continue
            if not self.ema:
                raise ValueError(
                    f"`{name}` applies only with ema=True (EMA codebooks). "
                    f"Received: {name}={value!r}"
                )
            sublayer_kwargs[name] = value
        if codebook_cost is not None:
            sublayer_kwargs["codebook_cost"] = codebook_cost
        self._embeddings_initializer = (
            None
            if embeddings_initializer is None
            else keras.initializers.get(embeddings_initializer)
        )
        sublayer_class = VectorQuantizerEMA if self.ema else VectorQuantizer
        layers = []
        for i in range(1 if self.shared_codebook else self.code_depth):
            layers.append(
                sublayer_class(
                    num_embeddings,
                    sublayer_dim,
                    commitment_cost=commitment_cost,
                    embeddings_initializer=self._embeddings_initializer,
                    kmeans_init=kmeans_init,
                    kmeans_iterations=kmeans_iterations,
                    restart_unused_after=restart_unused_after,
                    add_losses=False,
                    seed=self.seed + STAGE_SEED_STRIDE * i,
                    name=f"shared_{prefix}" if self.shared_codebook else f"{prefix}_{i}",
                    dtype=self.dtype_policy,
                    **options,
                    **sublayer_kwargs,
                )
            )
        # Tracked by Keras (weights, saving): one layer per distinct codebook.
        self.quantizer_layers = layers
        first = layers[0]
        self.num_embeddings = first.num_embeddings
        self.embedding_dim = embedding_dim
        self.commitment_cost = first.commitment_cost
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    @property
    def quantizers(self):
        """The ``code_depth`` sublayers, in order (one layer repeated with a shared codebook)."""
        layers = self.quantizer_layers
        return tuple(layers[0 if self.shared_codebook else i] for i in range(self.code_depth))

    # ------------------------------------------------------------------ state
    def build(self, input_shape):
        input_shape = vectors_shape(
            type(self).__name__, input_shape, self.embedding_dim, received="input_shape"
        )
        for layer in self.quantizer_layers:
            if not layer.built:
                layer.build(input_shape[:-1] + (layer.embedding_dim,))
        super().build(input_shape)

    # --------------------------------------------------------------- public
    def call(self, inputs, training=None):
        outputs = self.quantize_with_losses(inputs, training=training)
        if self.add_losses:
            self.add_loss(outputs.loss)
        return outputs.quantized

    # ------------------------------------------------------------- helpers
    def _output(self, quantized, indices, codebook_loss, commitment_loss, counts):
        """`QuantizerOutput` with ``perplexity`` the mean over the rows of ``counts``.

        ``counts`` is float32 (code_depth, K): each sublayer's code counts.
        """
        perplexity = tf.reduce_mean(
            tf.stack([perplexity_from_counts(counts[i]) for i in range(self.code_depth)])
        )
        return QuantizerOutput(
            quantized=quantized,
            indices=indices,
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            counts=counts,
            perplexity=perplexity,
        )

    def _check_indices(self, indices):
        """``indices`` as an integer tensor whose last axis is ``code_depth``."""
        indices = integer_indices(tf.convert_to_tensor(indices))
        shape = tuple(indices.shape)
        if len(shape) < 1 or shape[-1] != self.code_depth:
            raise ValueError(
                f"{type(self).__name__} expects code indices whose last axis is "
                f"{self._depth_name}={self.code_depth}. Received: indices with shape={shape}"
            )
        self._ensure_built()
        return indices

    # -------------------------------------------------------------- config
    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        first = self.quantizer_layers[0]
        config.update(
            {
                self._depth_name: self.code_depth,
                "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim,
                "ema": self.ema,
                "shared_codebook": self.shared_codebook,
                "commitment_cost": self.commitment_cost,
                "embeddings_initializer": (
                    None
                    if self._embeddings_initializer is None
                    else keras.initializers.serialize(self._embeddings_initializer)
                ),
                "kmeans_init": first.kmeans_init,
                "kmeans_iterations": first.kmeans_iterations,
                "restart_unused_after": first.restart_unused_after,
                "add_losses": self.add_losses,
                "seed": self.seed,
            }
        )
        if self.ema:
            config.update({"decay": first.decay, "epsilon": first.epsilon})
        else:
            config["codebook_cost"] = first.codebook_cost
        return config

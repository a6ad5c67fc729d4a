"""Grouped (multi-head) vector quantisation: H quantisers on H slices of the vector.

The D channels of z are split into H contiguous groups ("heads") of D / H,
and head h is quantised on its own:

    z = [z^{(1)}, ..., z^{(H)}],        z^{(h)} ∈ R^{D/H}
    k_h = argmin_j ‖z^{(h)} − e^{(h)}_j‖²
    ẑ   = [e^{(1)}_{k_1}, ..., e^{(H)}_{k_H}]
    output = z + sg[ẑ − z]              (each head's own straight-through
                                         or rotation trick)

so a vector is coded by H indices (a trailing "depth" axis of size H on the
codes, as `ResidualVectorQuantizer` has) and the H heads together can take
K^H values with H codebooks of K vectors of size D / H (the product
quantisation of Jégou et al. 2011; the multi-head VQ of vector-quantize-pytorch
and of the Memcodes of Mama et al. 2021). Each head is a `VectorQuantizerEMA` (``ema=True``,
the default) or a `VectorQuantizer` (``ema=False``) with
``embedding_dim = D / H``, and everything a head does (search, k-means
initialisation, restarts, EMA update, cross-replica sums, the options
``use_cosine_similarity``, ``codebook_dim`` and ``gradient``) is that layer's
own ``quantize_with_losses``, called head by head: with H = 1 this layer is
that quantiser.

Losses: the mean over the heads of the heads' losses,

    codebook = α · (1/H) Σ_h mean ‖sg[z^{(h)}] − e^{(h)}_{k_h}‖²   (0 with EMA codebooks)
    commit   = β · (1/H) Σ_h mean ‖z^{(h)} − sg[e^{(h)}_{k_h}]‖²

which is β · mean ‖z − sg[ẑ]‖² over all elements (the heads are of equal
size): the loss keeps the scale of a single quantiser whatever H.

Shared codebook (``shared_codebook=True``): one quantiser, one (K, D / H)
codebook, for every head. The step quantises the N·H sub-vectors in one
call, ordered example by example and head by head within an example, so
k-means runs on the sub-vectors of all heads and the step makes one pooled
update (with EMA, n_j and s_j sum over every (row, head) pair assigned to
code j); the step count advances once. The counts of each head are still
reported apart.

Non-finite batches: a NaN or Inf anywhere in z (any head, any replica), or
``batch_finite=False``, changes no state of any head.

Every head's math runs in float32 under a mixed-precision policy; the output
has the layer's compute dtype.

References:
    Jégou, Douze, Schmid, "Product Quantization for Nearest Neighbor Search",
    IEEE TPAMI 33(1), 2011, https://doi.org/10.1109/TPAMI.2010.57
    Mama, Tyndel, Kadhim, Clifford, Thurairatnam, "NWT: Towards natural
    audio-to-video generation with representation learning", 2021
    (multi-head codes, "Memcodes"), https://arxiv.org/abs/2106.04283
"""

import keras
import tensorflow as tf

from tfvqvae.layers.cross_replica import sum_across_replicas
from tfvqvae.layers.kmeans import segment_sum
from tfvqvae.layers.stacked_quantizers import StackedQuantizer
from tfvqvae.layers.vector_quantizer import DEFAULT_COMMITMENT_COST
from tfvqvae.layers.vector_quantizer import DEFAULT_RESTART_UNUSED_AFTER
from tfvqvae.validation import positive_int


@keras.saving.register_keras_serializable(package="tfvqvae")
class GroupedVectorQuantizer(StackedQuantizer):
    """Grouped vector quantiser: H heads, each quantising D / H of the channels.

    See the module docstring for the formulas, the losses and the shared
    codebook.

    Args:
        num_groups: H ≥ 1, the number of heads (the codes' depth); must
            divide ``embedding_dim``.
        num_embeddings: K, the number of codes of each head.
        embedding_dim: D, the size of the inputs' last axis; each head
            quantises D / H of it.
        shared_codebook: one codebook for all heads. Defaults to False.
        ema: heads are `VectorQuantizerEMA` (True, the default) or
            `VectorQuantizer` (False, codebooks learned by gradient).
        commitment_cost: β ≥ 0, weight of every head's commitment term.
            Defaults to 1.0 (`DEFAULT_COMMITMENT_COST`).
        codebook_cost: α ≥ 0, only with ``ema=False``; None uses
            `VectorQuantizer`'s default (1.0).
        decay, epsilon: the EMA's γ and ε, only with ``ema=True``; None uses
            `VectorQuantizerEMA`'s defaults.
        embeddings_initializer: initializer of every head's codebook; None
            gives each head `VectorQuantizer`'s default with its own seed.
        kmeans_init, kmeans_iterations, restart_unused_after: passed to every
            head (see `VectorQuantizer`).
        use_cosine_similarity, codebook_dim, gradient: passed to every head
            (see `VectorQuantizer`; ``codebook_dim`` is the width of each
            head's codebook, its projections map D / H → codebook_dim).
        add_losses: register ``codebook_loss + commitment_loss`` with
            ``add_loss`` in ``call``. Defaults to True.
        seed: int; head h uses ``seed + 8 h``. Defaults to 0.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Attributes:
        num_groups, code_depth: H (``code_depth`` tells a model that the
            codes carry a trailing axis of this size).
        num_embeddings, embedding_dim: K and D.
        group_dim: D / H.
        quantizers: tuple of the H head layers (the same layer H times with a
            shared codebook).

    Call arguments:
        inputs: float tensor (..., D) of encoder outputs z.
        training: Python bool; statistics and restarts only when True.

    Input shape:
        (..., D) with rank ≥ 2, e.g. (batch, height, width, D).

    Output shape:
        Same as the input.

    Raises:
        ValueError: from the constructor, naming the argument and its value:
            ``num_groups`` not a positive int, ``embedding_dim`` not a
            positive int or not divisible by ``num_groups``, ``ema`` or
            ``shared_codebook`` not a bool, ``seed`` not an int,
            ``codebook_cost`` with ``ema=True``, ``decay`` or ``epsilon``
            with ``ema=False``, and every check of `VectorQuantizer` /
            `VectorQuantizerEMA`. From a call: inputs of rank < 2 or whose
            last axis is not D; from ``lookup``: indices whose last axis is
            not H, or values outside [0, K).
        TypeError: for non-floating inputs, or non-integer indices.

    Example:

    >>> import numpy as np
    >>> gvq = GroupedVectorQuantizer(num_groups=2, num_embeddings=8, embedding_dim=4)
    >>> z = np.random.rand(2, 5, 5, 4).astype("float32")
    >>> gvq(z).shape
    TensorShape([2, 5, 5, 4])
    >>> gvq.indices(z).shape
    TensorShape([2, 5, 5, 2])

    Reference:
        Jégou, Douze, Schmid, "Product Quantization for Nearest Neighbor
        Search", IEEE TPAMI 2011, https://doi.org/10.1109/TPAMI.2010.57
    """

    _depth_name = "num_groups"

    def __init__(
        self,
        num_groups,
        num_embeddings,
        embedding_dim,
        shared_codebook=False,
        ema=True,
        commitment_cost=DEFAULT_COMMITMENT_COST,
        codebook_cost=None,
        decay=None,
        epsilon=None,
        embeddings_initializer=None,
        kmeans_init=True,
        kmeans_iterations=10,
        restart_unused_after=DEFAULT_RESTART_UNUSED_AFTER,
        use_cosine_similarity=False,
        codebook_dim=None,
        gradient="straight_through",
        add_losses=True,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_groups = positive_int("num_groups", num_groups)
        self.code_depth = self.num_groups
        embedding_dim = positive_int("embedding_dim", embedding_dim)
        if embedding_dim % self.num_groups:
            raise ValueError(
                f"`embedding_dim` must be divisible by num_groups={self.num_groups}. "
                f"Received: embedding_dim={embedding_dim!r}"
            )
        self._check_switches(ema, shared_codebook)
        self._init_sublayers(
            "head",
            num_embeddings,
            embedding_dim,
            embedding_dim // self.num_groups,
            commitment_cost=commitment_cost,
            codebook_cost=codebook_cost,
            decay=decay,
            epsilon=epsilon,
            embeddings_initializer=embeddings_initializer,
            kmeans_init=kmeans_init,
            kmeans_iterations=kmeans_iterations,
            restart_unused_after=restart_unused_after,
            use_cosine_similarity=use_cosine_similarity,
            codebook_dim=codebook_dim,
            gradient=gradient,
            add_losses=add_losses,
            seed=seed,
        )
        self.group_dim = self.quantizer_layers[0].embedding_dim

    # --------------------------------------------------------------- public
    def quantize_with_losses(self, inputs, training=False, batch_finite=None):
        """Quantises each head of ``inputs`` and returns a `QuantizerOutput`.

        Never calls ``add_loss``. With ``training=True`` it also runs each
        head's codebook updates (k-means on its first step, EMA statistics,
        restarts).

        Args:
            inputs: float (..., D) encoder outputs z, rank ≥ 2.
            training: Python bool.
            batch_finite: None, or a scalar bool: whether this replica's whole
                batch is finite. When it is False on any replica, or
                ``inputs`` hold NaN or Inf on any replica (in any head), no
                state of any head changes.

        Returns:
            `QuantizerOutput` with ``quantized`` (inputs' shape and dtype:
            the heads' outputs concatenated), ``indices`` (int32,
            ``inputs.shape[:-1] + (H,)``), ``codebook_loss`` and
            ``commitment_loss`` (float32 scalars, the mean over the heads),
            ``counts`` (float32 (H, K): how often each head chose each code,
            summed across replicas) and ``perplexity`` (float32 scalar: the
            mean over the H heads of exp(−Σ p log p) of each head's counts).

        Raises:
            TypeError: for non-floating inputs.
            ValueError: for inputs of rank < 2 or whose last axis is not D.
        """
        inputs = self._check_inputs(inputs)
        heads = self.num_groups
        if training:
            # One flag for all heads (each head all-reduces it): a NaN in one
            # head's channels stops every head's update.
            finite = tf.reduce_all(tf.math.is_finite(inputs))
            if batch_finite is not None:
                finite = tf.logical_and(finite, tf.cast(batch_finite, tf.bool))
            batch_finite = finite
        else:
            batch_finite = None
        if self.shared_codebook:
            layer = self.quantizer_layers[0]
            split = tf.concat([tf.shape(inputs)[:-1], [heads, self.group_dim]], axis=0)
            # (..., D) -> (..., H, D/H): rows ordered example by example, head by head.
            out = layer.quantize_with_losses(
                tf.reshape(inputs, split), training=training, batch_finite=batch_finite
            )
            quantized = tf.reshape(out.quantized, tf.shape(inputs))
            indices = out.indices  # (..., H)
            flat = tf.reshape(indices, [-1, heads])  # (N, H)
            # Code j of head h -> segment h K + j: the (H, K) counts of each head.
            segments = tf.reshape(flat + tf.range(heads) * self.num_embeddings, [-1])
            counts = sum_across_replicas(
                segment_sum(
                    tf.ones_like(segments, tf.float32), segments, heads * self.num_embeddings
                )
            )
            counts = tf.reshape(counts, [heads, self.num_embeddings])
            # One call over all heads: its means run over every element, i.e.
            # they are already the mean over the (equal-sized) heads.
            codebook_loss, commitment_loss = out.codebook_loss, out.commitment_loss
        else:
            outs = [
                layer.quantize_with_losses(
                    inputs[..., h * self.group_dim : (h + 1) * self.group_dim],
                    training=training,
                    batch_finite=batch_finite,
                )
                for h, layer in enumerate(self.quantizers)
            ]
            quantized = tf.concat([o.quantized for o in outs], axis=-1)
            indices = tf.stack([o.indices for o in outs], axis=-1)  # (..., H)
            counts = tf.stack([o.counts for o in outs])  # (H, K)
            codebook_loss = tf.add_n([o.codebook_loss for o in outs]) / heads
            commitment_loss = tf.add_n([o.commitment_loss for o in outs]) / heads
        return self._output(quantized, indices, codebook_loss, commitment_loss, counts)

    def indices(self, inputs):
        """int32 codes of ``inputs``: shape ``inputs.shape[:-1] + (H,)``, values in [0, K).

        Entry [..., h] is head h's code of channels [h D/H, (h + 1) D/H)
        (its ``indices``: exact in the sense of `nearest_code`). One graph
        without loops, like `VectorQuantizer.indices`.

        Raises:
            TypeError: for non-floating inputs.
            ValueError: for inputs of rank < 2 or whose last axis is not D.
        """
        inputs = self._check_inputs(inputs)
        if self.shared_codebook:
            split = tf.concat(
                [tf.shape(inputs)[:-1], [self.num_groups, self.group_dim]], axis=0
            )
            return self.quantizer_layers[0].indices(tf.reshape(inputs, split))
        d = self.group_dim
        return tf.stack(
            [
                layer.indices(inputs[..., h * d : (h + 1) * d])
                for h, layer in enumerate(self.quantizers)
            ],
            axis=-1,
        )

    def lookup(self, indices, validate=True):
        """[e^{(1)}[indices[..., 0]], ..., e^{(H)}[indices[..., H−1]]]: float32 (..., D).

        The heads' codes (each head's ``lookup``: normalised / projected out
        with those options) concatenated along the last axis: shape
        ``indices.shape[:-1] + (D,)``.

        Args:
            indices: integer tensor (..., H) with values in [0, K).
            validate: check the range (an eager ``ValueError``, a graph-mode
                ``InvalidArgumentError``). Defaults to True.

        Raises:
            TypeError: for non-integer indices.
            ValueError: when the last axis of ``indices`` is not H (or the
                rank is 0), or, with ``validate``, a value is outside [0, K).
        """
        indices = self._check_indices(indices)
        if self.shared_codebook:
            codes = self.quantizer_layers[0].lookup(indices, validate=validate)  # (..., H, D/H)
            return tf.reshape(
                codes, tf.concat([tf.shape(indices)[:-1], [self.embedding_dim]], axis=0)
            )
        return tf.concat(
            [
                layer.lookup(indices[..., h], validate=validate)
                for h, layer in enumerate(self.quantizers)
            ],
            axis=-1,
        )

    # -------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        first = self.quantizer_layers[0]
        config.update(
            {
                "use_cosine_similarity": first.use_cosine_similarity,
                "codebook_dim": first.get_config()["codebook_dim"],
                "gradient": first.gradient,
            }
        )
        return config

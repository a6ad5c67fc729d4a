"""Residual vector quantisation (RVQ): a stack of vector quantisers on residuals.

Algorithm 1 of SoundStream. Q quantisers q_1..q_Q, each with its own codebook
of K vectors in R^D, quantise successive residuals and the codes are summed:

    r_0 = z
    k_i = argmin_j ‖r_{i−1} − e^{(i)}_j‖²      (stage i's nearest code)
    r_i = r_{i−1} − e^{(i)}_{k_i}              (i = 1..Q)
    ẑ   = Σ_i e^{(i)}_{k_i}
    output = z + sg[ẑ − z]                    (forward: ẑ; backward: identity to z)

A vector is coded by Q indices, one per stage (a trailing "depth" axis of
size Q on the codes), and ‖r_i‖ never exceeds ‖r_{i−1}‖ when a stage's
codebook holds the zero vector (otherwise it is not guaranteed). Each stage
is a `VectorQuantizerEMA` (``ema=True``, the default, as in SoundStream) or a
`VectorQuantizer` (``ema=False``): its nearest-code search, k-means
initialisation, dead-code restarts, EMA update, cross-replica sums and
non-finite-batch guard are that layer's own methods, called stage by stage in
the order of `VectorQuantizer.quantize_with_losses` (with Q = 1 this layer is
bit for bit that quantiser); only the per-row dropout weights are added.

Losses (stage by stage, then summed over the stages, every mean over all
elements of the batch):

    codebook = α Σ_i mean ‖sg[r_{i−1}] − e^{(i)}_{k_i}‖²   (0 with EMA codebooks)
    commit   = β Σ_i mean ‖r_{i−1} − sg[e^{(i)}_{k_i}]‖²

The residuals passed on are r_i = r_{i−1} − sg[e^{(i)}_{k_i}], so r_{i−1} =
z − sg[Σ_{j<i} e^{(j)}_{k_j}]: stage i's commitment term pulls the encoder
towards the partial sum of the first i codes, and only stage i's codebook
receives stage i's codebook gradient.

Quantizer dropout (SoundStream, "quantizer dropout", the variable-bitrate
training): during training each *example* (index on the first axis) draws,
with probability ``quantizer_dropout``, a depth n_q uniform in {1, ..., Q}
(the other examples keep n_q = Q), and only its first n_q stages count: its
output is Σ_{i ≤ n_q} e^{(i)}_{k_i}, and stages beyond n_q contribute nothing
to its losses, to the counts or to any codebook statistic (EMA sums and
cluster sizes, restart counters). ``quantizer_dropout=1`` is SoundStream's
rule; 0.5 is the variant of Kumar et al. 2023 (DAC). The residual chain itself
is computed to the end for every example, so ``indices`` still holds all Q
codes (those past n_q are the codes the full stack would choose), and
k-means and restart candidates may use those rows. A stage that no example
of the global batch uses changes no state that step (not even its step
count). The draw is a stateless function of (``seed``, the step count,
the example's position in the *global* batch), so every replica of a
``MirroredStrategy`` agrees with one device. Dropout is off outside training.

Shared codebook (``shared_codebook=True``, the codebook sharing of the RQ-VAE
of Lee et al. 2022): one quantiser, and so one (K, D) codebook variable,
serves every stage. All Q stages of a step quantise with the same codebook
(the one after any k-means of that step), and the step then makes *one*
update from the pooled assignments of all the stages it used (not one update
per stage in turn): with EMA, n_j and s_j sum over every
(row, stage) pair assigned to code j, so e_j follows the running mean of all
the residuals, at every depth, that chose it; the decay γ keeps its per-step
meaning, the step count advances once per step, and a code is "unused" for
restarts only when no stage chose it. k-means runs on z (the stage-1
residuals, the only ones known before quantising) and restarts draw from the
residuals of all stages.

Every quantiser's math runs in float32 under a mixed-precision policy; the
output has the layer's compute dtype.

References:
    Zeghidour, Luebs, Omran, Skoglund, Tagliasacchi, "SoundStream: An
    End-to-End Neural Audio Codec", IEEE/ACM TASLP 30, 2022, Algorithm 1
    and quantizer dropout, https://arxiv.org/abs/2107.03312
    Lee, Kim, Kim, Cho, Han, "Autoregressive Image Generation using Residual
    Quantization", CVPR 2022 (shared codebook), https://arxiv.org/abs/2203.01941
    Kumar, Seetharaman, Luebs, Kumar, Kumar, "High-Fidelity Audio Compression
    with Improved RVQGAN", NeurIPS 2023 (dropout probability),
    https://arxiv.org/abs/2306.06546
"""

import keras
import tensorflow as tf

from tfvqvae.layers.cross_replica import replica_row_range
from tfvqvae.layers.cross_replica import sum_across_replicas
from tfvqvae.layers.kmeans import nearest_code
from tfvqvae.layers.kmeans import segment_sum
from tfvqvae.layers.stacked_quantizers import STAGE_SEED_STRIDE
from tfvqvae.layers.stacked_quantizers import StackedQuantizer
from tfvqvae.layers.vector_quantizer import DEFAULT_COMMITMENT_COST
from tfvqvae.layers.vector_quantizer import DEFAULT_RESTART_UNUSED_AFTER
from tfvqvae.layers.vector_quantizer import VectorQuantizer
from tfvqvae.validation import finite_float
from tfvqvae.validation import positive_int

__all__ = ["STAGE_SEED_STRIDE", "ResidualVectorQuantizer"]

# Stage i's quantiser gets seed + STAGE_SEED_STRIDE * i (8 i); dropout uses
# the salts 3 and 4 on the layer's own seed, so no two streams share a seed.
_DROPOUT_APPLY_SALT = 3
_DROPOUT_DEPTH_SALT = 4


@keras.saving.register_keras_serializable(package="tfvqvae")
class ResidualVectorQuantizer(StackedQuantizer):
    """Residual vector quantiser: Q stages, each coding the previous residual.

    See the module docstring for the formulas, the losses, quantizer dropout
    and the shared codebook.

    Args:
        num_quantizers: Q ≥ 1, the number of stages (the codes' depth).
        num_embeddings: K, the number of codes of each stage.
        embedding_dim: D, the size of each code; must equal the last axis of
            the inputs.
        ema: stages are `VectorQuantizerEMA` (True, the default) or
            `VectorQuantizer` (False, codebooks learned by gradient).
        shared_codebook: one codebook for all stages. Defaults to False.
        quantizer_dropout: probability in [0, 1] that a training example uses
            only its first n_q ~ U{1..Q} stages. Defaults to 0 (off).
        commitment_cost: β ≥ 0, weight of every stage's commitment term.
            Defaults to 1.0 (`DEFAULT_COMMITMENT_COST`).
        codebook_cost: α ≥ 0, only with ``ema=False``; None uses
            `VectorQuantizer`'s default (1.0).
        decay, epsilon: the EMA's γ and ε, only with ``ema=True``; None uses
            `VectorQuantizerEMA`'s defaults.
        embeddings_initializer: initializer of every stage's codebook; None
            gives each stage `VectorQuantizer`'s default with its own seed.
        kmeans_init, kmeans_iterations, restart_unused_after: passed to every
            stage (see `VectorQuantizer`).
        add_losses: register ``codebook_loss + commitment_loss`` with
            ``add_loss`` in ``call``. Defaults to True.
        seed: int; stage i uses ``seed + 8 i``, dropout uses ``seed``.
            Defaults to 0.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Attributes:
        num_quantizers, code_depth: Q (``code_depth`` tells a model that the
            codes carry a trailing axis of this size).
        num_embeddings, embedding_dim: K and D.
        quantizers: tuple of the Q stage layers (the same layer Q times with a
            shared codebook).

    Call arguments:
        inputs: float tensor (..., D) of encoder outputs z.
        training: Python bool; statistics, restarts and dropout only when True.

    Input shape:
        (..., D) with rank ≥ 2, e.g. (batch, height, width, D).

    Output shape:
        Same as the input.

    Raises:
        ValueError: from the constructor, naming the argument and its value:
            ``num_quantizers`` not a positive int, ``quantizer_dropout``
            outside [0, 1] or not finite, ``ema`` or ``shared_codebook`` not a
            bool, ``seed`` not an int, ``codebook_cost`` with ``ema=True``,
            ``decay`` or ``epsilon`` with ``ema=False``, and every check of
            `VectorQuantizer` / `VectorQuantizerEMA`. From a call: inputs of
            rank < 2 or whose last axis is not D; from ``lookup``: indices
            whose last axis is not Q, or values outside [0, K).
        TypeError: for non-floating inputs, or non-integer indices.

    Example:

    >>> import numpy as np
    >>> rvq = ResidualVectorQuantizer(num_quantizers=3, num_embeddings=8, embedding_dim=4)
    >>> z = np.random.rand(2, 5, 5, 4).astype("float32")
    >>> rvq(z).shape
    TensorShape([2, 5, 5, 4])
    >>> rvq.indices(z).shape
    TensorShape([2, 5, 5, 3])

    Reference:
        Zeghidour et al., "SoundStream: An End-to-End Neural Audio Codec",
        2021, Algorithm 1, https://arxiv.org/abs/2107.03312
    """

    _depth_name = "num_quantizers"

    def __init__(
        self,
        num_quantizers,
        num_embeddings,
        embedding_dim,
        ema=True,
        shared_codebook=False,
        quantizer_dropout=0.0,
        commitment_cost=DEFAULT_COMMITMENT_COST,
        codebook_cost=None,
        decay=None,
        epsilon=None,
        embeddings_initializer=None,
        kmeans_init=True,
        kmeans_iterations=10,
        restart_unused_after=DEFAULT_RESTART_UNUSED_AFTER,
        add_losses=True,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_quantizers = positive_int("num_quantizers", num_quantizers)
        self.code_depth = self.num_quantizers
        self._check_switches(ema, shared_codebook)
        self.quantizer_dropout = finite_float("quantizer_dropout", quantizer_dropout, 0, 1)
        self._init_sublayers(
            "stage",
            num_embeddings,
            embedding_dim,
            embedding_dim,
            commitment_cost=commitment_cost,
            codebook_cost=codebook_cost,
            decay=decay,
            epsilon=epsilon,
            embeddings_initializer=embeddings_initializer,
            kmeans_init=kmeans_init,
            kmeans_iterations=kmeans_iterations,
            restart_unused_after=restart_unused_after,
            add_losses=add_losses,
            seed=seed,
        )

    # --------------------------------------------------------------- public
    def quantize_with_losses(self, inputs, training=False, batch_finite=None):
        """Quantises ``inputs`` through the Q stages and returns a `QuantizerOutput`.

        Never calls ``add_loss``. With ``training=True`` it also runs each
        stage's codebook updates (k-means on its first step, EMA statistics,
        restarts) and quantizer dropout.

        Args:
            inputs: float (..., D) encoder outputs z, rank ≥ 2; the first axis
                indexes examples (for dropout).
            training: Python bool.
            batch_finite: None, or a scalar bool: whether this replica's whole
                batch is finite. When it is False on any replica, or ``inputs``
                hold NaN or Inf on any replica, no state of any stage changes.

        Returns:
            `QuantizerOutput` with ``quantized`` (inputs' shape and dtype:
            z + sg[ẑ − z]), ``indices`` (int32, ``inputs.shape[:-1] + (Q,)``),
            ``codebook_loss`` and ``commitment_loss`` (float32 scalars summed
            over the stages), ``counts`` (float32 (Q, K): how often each
            stage chose each code among the rows it was used for, summed
            across replicas) and ``perplexity`` (float32 scalar: the mean over
            the Q stages of exp(−Σ p log p) of each stage's counts; a stage
            that dropout left without rows counts as 1).

        Raises:
            TypeError: for non-floating inputs.
            ValueError: for inputs of rank < 2 or whose last axis is not D.
        """
        inputs = self._check_inputs(inputs)
        z = tf.cast(inputs, tf.float32)
        flat = tf.reshape(z, [-1, self.embedding_dim])  # (..., D) -> (N, D)
        num_codes = self.num_embeddings
        keep = None  # (N, Q) float 1/0: stage i counts for row n (None: all do)
        if training:
            # All-reduced, so every replica takes the same decisions.
            finite = VectorQuantizer._all_finite_across_replicas(flat, batch_finite)
            if self.quantizer_dropout > 0:
                keep = self._dropout_keep(inputs)
                used = sum_across_replicas(tf.reduce_sum(keep, axis=0)) > 0  # (Q,)
            shared = self.quantizer_layers[0] if self.shared_codebook else None
            if shared is not None and shared.kmeans_init:
                shared._kmeans_on_first_step(flat, finite)

        residual = flat  # r_{i−1}, (N, D)
        total = None  # Σ of the stage codes that count, (N, D)
        codebook_loss = tf.zeros([], tf.float32)
        commitment_loss = tf.zeros([], tf.float32)
        stage_indices, stage_counts, stage_rows, stage_masked = [], [], [], []
        for i, layer in enumerate(self.quantizers):
            weight = None if keep is None else keep[:, i]
            if training and not self.shared_codebook:
                stage_finite = finite if keep is None else tf.logical_and(finite, used[i])
                if layer.kmeans_init:
                    layer._kmeans_on_first_step(residual, stage_finite)
            codebook = tf.convert_to_tensor(layer.codebook)  # after any k-means
            indices = nearest_code(
                residual, codebook, block_rows=max(1, layer._block_elements // num_codes)
            )  # (N,)
            code = tf.gather(codebook, indices)  # (N, D)
            if weight is None:
                ones, masked_residual, masked_code = (
                    tf.ones_like(indices, tf.float32), residual, code)
            else:
                ones = weight
                masked_residual = residual * weight[:, None]
                masked_code = code * weight[:, None]
            counts = sum_across_replicas(segment_sum(ones, indices, num_codes))  # (K,)
            codebook_loss += layer._codebook_loss(masked_residual, masked_code)
            commitment_loss += self.commitment_cost * tf.reduce_mean(
                tf.square(masked_residual - tf.stop_gradient(masked_code))
            )
            if training and not self.shared_codebook:
                self._train_stage(layer, masked_residual, residual, indices, counts,
                                  stage_finite)
            total = masked_code if total is None else total + masked_code
            stage_indices.append(indices)
            stage_counts.append(counts)
            stage_rows.append(residual)
            stage_masked.append(masked_residual)
            residual = residual - tf.stop_gradient(code)

        if training and self.shared_codebook:
            # One update from the pooled (row, stage) assignments, ordered row
            # by row so that the global row order matches one device's.
            d = self.embedding_dim
            self._train_stage(
                self.quantizer_layers[0],
                tf.reshape(tf.stack(stage_masked, axis=1), [-1, d]),  # (N*Q, D)
                tf.reshape(tf.stack(stage_rows, axis=1), [-1, d]),
                tf.reshape(tf.stack(stage_indices, axis=1), [-1]),  # (N*Q,)
                tf.add_n(stage_counts),
                finite,
            )

        z_q = tf.reshape(total, tf.shape(z))
        # Straight-through on the sum: forward ẑ, d output / d z = identity.
        quantized = z + tf.stop_gradient(z_q - z)
        code_shape = tf.concat([tf.shape(z)[:-1], [self.num_quantizers]], axis=0)
        return self._output(
            quantized=tf.cast(quantized, inputs.dtype),
            indices=tf.reshape(tf.stack(stage_indices, axis=1), code_shape),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            counts=tf.stack(stage_counts),  # (Q, K)
        )

    def indices(self, inputs):
        """int32 codes of ``inputs``: shape ``inputs.shape[:-1] + (Q,)``, values in [0, K).

        Entry [..., i] is stage i's nearest code to the residual r_i (exact
        in the sense of `nearest_code`); no dropout. One graph without loops
        (Q unrolled stages), like `VectorQuantizer.indices`.

        Raises:
            TypeError: for non-floating inputs.
            ValueError: for inputs of rank < 2 or whose last axis is not D.
        """
        inputs = self._check_inputs(inputs)
        z = tf.cast(inputs, tf.float32)
        residual = tf.reshape(z, [-1, self.embedding_dim])
        codes = []
        for layer in self.quantizers:
            codebook = tf.convert_to_tensor(layer.codebook)
            indices = nearest_code(residual, codebook)
            codes.append(indices)
            residual = residual - tf.gather(codebook, indices)
        code_shape = tf.concat([tf.shape(z)[:-1], [self.num_quantizers]], axis=0)
        return tf.reshape(tf.stack(codes, axis=1), code_shape)

    def lookup(self, indices, validate=True):
        """Σ_i e^{(i)}[indices[..., i]]: float32, shape ``indices.shape[:-1] + (D,)``.

        The decoded vector ẑ of codes from ``indices()`` (summed in stage
        order, as the forward pass does).

        Args:
            indices: integer tensor (..., Q) with values in [0, K).
            validate: check the range (an eager ``ValueError``, a graph-mode
                ``InvalidArgumentError``). Defaults to True.

        Raises:
            TypeError: for non-integer indices.
            ValueError: when the last axis of ``indices`` is not Q (or the
                rank is 0), or, with ``validate``, a value is outside [0, K).
        """
        indices = self._check_indices(indices)
        total = None
        for i, layer in enumerate(self.quantizers):
            code = layer.lookup(indices[..., i], validate=validate)
            total = code if total is None else total + code
        return total

    # ------------------------------------------------------------- helpers
    def _train_stage(self, layer, masked_rows, rows, indices, counts, finite):
        """One quantiser's state update: the tail of `VectorQuantizer.quantize_with_losses`.

        ``masked_rows`` (rows times their dropout weight) feed the statistics
        with ``counts``; restart candidates come from ``rows``.
        """
        layer._update_codebook(masked_rows, indices, counts, finite)
        if layer.restart_unused_after is not None:
            layer._restart_unused(rows, counts, finite)
        layer.training_steps.assign_add(tf.where(finite, 1.0, 0.0))

    def _dropout_keep(self, inputs):
        """(N, Q) float32: 1 where stage i counts for a row, from a per-example n_q.

        Drawn for the *global* batch from a stateless seed (the layer's seed
        and its first quantiser's step count), then this replica's examples
        are sliced out, so every replica agrees with one device.
        """
        shape = tf.shape(inputs)
        examples = shape[0]
        offset, global_examples = replica_row_range(examples)
        step = tf.cast(self.quantizer_layers[0].training_steps, tf.int32)
        seed = tf.constant(self.seed, tf.int32)
        apply = (
            tf.random.stateless_uniform(
                [global_examples], tf.stack([seed + _DROPOUT_APPLY_SALT, step])
            )
            < self.quantizer_dropout
        )
        depth = tf.random.stateless_uniform(
            [global_examples],
            tf.stack([seed + _DROPOUT_DEPTH_SALT, step]),
            minval=1,
            maxval=self.num_quantizers + 1,
            dtype=tf.int32,
        )
        num_used = tf.where(apply, depth, self.num_quantizers)[offset : offset + examples]
        keep = tf.range(self.num_quantizers) < num_used[:, None]  # (B, Q)
        rows_per_example = tf.reduce_prod(shape[1:-1])
        keep = tf.broadcast_to(keep[:, None, :], [examples, rows_per_example, self.num_quantizers])
        return tf.cast(tf.reshape(keep, [-1, self.num_quantizers]), tf.float32)

    # -------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config["quantizer_dropout"] = self.quantizer_dropout
        return config

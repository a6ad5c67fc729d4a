"""Vector quantisation with a straight-through estimator (VQ-VAE).

The layer maps each D-dimensional encoder output z_e to the nearest of K
codebook vectors e_1..e_K and passes gradients straight through:

    k        = argmin_j ‖z_e − e_j‖²,   with ‖z − e‖² = ‖z‖² − 2 z·e + ‖e‖²
    z_q      = e_k
    output   = z_e + sg[z_q − z_e]        (forward: z_q; backward: identity to z_e)
    codebook = α · mean ‖sg[z_e] − z_q‖²  (moves the codebook; gradient only to e)
    commit   = β · mean ‖z_e − sg[z_q]‖²  (commits the encoder; gradient only to z_e)

where sg is `tf.stop_gradient` and the means run over every element; α is
``codebook_cost`` (1 in the paper's loss, equation (3)) and β is
``commitment_cost``. With α fixed at 1, β plays two roles: it weighs the
encoder's commitment against the reconstruction, and it sets how fast the
encoder moves towards its codes relative to how fast the codes move towards
the encoder; a separate α lets the codebook's pace be tuned apart (the EMA
quantizer has no codebook term, hence no α). Worked
through one shape: inputs (16, 32, 32, 64) with K=512 are flattened to
(16384, 64); z and e are centred on the codebook mean μ (which leaves every
distance unchanged and keeps float32 exact far from the origin);
(16384, 64) x (64, 512) matmuls give 2 (z − μ)·(e − μ) − ‖e − μ‖² (‖z‖² less
the distances, which does not change the order; in two blocks of 8192 rows,
so the (N, K) matrix never exists at once); the 2 best codes of each row are
re-ranked by the exact difference of their distances (`nearest_code`), and
the indices come back as int32 (16, 32, 32).

Codebook health (both on by default since issue 13: without them a few hundred
steps on Fashion-MNIST used 11 % of 128 codes; with them 100 %, at a lower
test NMSE than a plain VQ-VAE: bench/codebook_defaults.py, bench/RESULTS.md;
pass ``kmeans_init=False, restart_unused_after=None`` for the paper's layer):
  * ``kmeans_init``: on the first training batch the codebook is set to the
    k-means centroids of that batch's encoder outputs (Lloyd's algorithm on
    the global batch, gathered from all replicas).
  * ``restart_unused_after=T``: a code not chosen in T consecutive training
    steps is re-seeded with a random encoder output of the current batch.

A training batch whose encoder outputs hold NaN or Inf on any replica changes
no state: no k-means, restart, statistics update or step count (the models
skip that step's gradient update as well).

Options (all off by default; with all three off the layer is bit for bit the
one above). Write P for the in-projection, ν for the l2 normalisation and
x = ν(P z_e) for the vector that is searched (x = z_e by default):

  * ``codebook_dim=C`` (factorized codes, ViT-VQGAN §3.2): the codebook is
    (K, C), x = P z_e = W_in z_e + b_in with a learned `keras.layers.Dense`
    D → C, the search, the losses and the straight-through run on x in C
    dimensions, and the output is the out-projection W_out ẑ + b_out, a
    learned Dense C → D (so ``lookup`` returns D-dimensional vectors). Both
    projections are trainable weights of this layer (of the EMA layer too:
    the EMA moves the codebook, the gradient moves P), run in float32 and
    exist only when C ≠ D (``codebook_dim=D`` is the plain layer).
  * ``use_cosine_similarity=True`` (l2-normalised codes, ViT-VQGAN §3.2):
    x and the codes are l2-normalised, ν(v) = v / ‖v‖, before the search,
    so k = argmin ‖x − ν(e_j)‖² = argmax cos(P z_e, e_j) (for unit vectors
    ‖x − e‖² = 2 − 2 x·e: the exact Euclidean search of `nearest_code` on
    the normalised vectors is the exact cosine search); z_q = ν(e_k), and
    both losses compare x with ν(e_k). A vector whose squared norm is below
    the smallest normal float32 (≈ 1.2e−38; a zero vector) is left as it is.
    With the EMA codebook the statistics average the *normalised* vectors,
    e_i = m_i / Ñ_i is their running mean (not re-normalised in the stored
    weight, so e = m / Ñ still holds; its norm tends to ≤ 1 as the initial
    state decays away), and it is ν(e_i) that the search and ``lookup``
    use: the code is the direction of the running mean, the spherical
    k-means update. k-means initialisation and restarts likewise work on
    the normalised vectors.
  * ``gradient="rotation"`` (Fifty et al. 2024, the rotation trick) instead
    of the straight-through ``x + sg[z_q − x]``: with u = x / ‖x‖,
    q = z_q / ‖z_q‖, r = (u + q) / ‖u + q‖, λ = ‖z_q‖ / ‖x‖ and
    R = I − 2 r rᵀ + 2 q uᵀ (the rotation taking u to q; R u = q),

        output = sg[λ R] x     (forward: z_q; backward: d out / d x = λ R)

    written z_q + (λ R x − sg[λ R x]) so that the forward value is z_q
    bit for bit, and R x = x − 2 r (r·x) + 2 q (u·x) without the C x C
    matrix (O(C) per vector). Guards: a row with ‖x‖² or ‖z_q‖² below the
    smallest normal float32 passes its gradient straight through; when
    u = −q exactly (u + q = 0) r = 0 and R = I − 2 u uᵀ, the reflection
    that maps u to q. Near u = −q the direction r is ill-conditioned (its
    float32 error grows like 2⁻²⁴ / ‖u + q‖) but R stays bounded and the
    forward value is unaffected.

References: van den Oord, Vinyals, Kavukcuoglu, "Neural Discrete
Representation Learning", NeurIPS 2017, https://arxiv.org/abs/1711.00937;
Yu et al., "Vector-quantized Image Modeling with Improved VQGAN", 2021,
§3.2 (factorized and l2-normalised codes), https://arxiv.org/abs/2110.04627;
Fifty et al., "Restructuring Vector Quantization with the Rotation Trick",
2024 (the Householder form of R), https://arxiv.org/abs/2410.06424
"""

import math
from typing import NamedTuple

import keras
import tensorflow as tf

from tfvqvae.layers.cross_replica import gather_across_replicas
from tfvqvae.layers.cross_replica import sum_across_replicas
from tfvqvae.layers.kmeans import BLOCK_ELEMENTS
from tfvqvae.layers.kmeans import kmeans
from tfvqvae.layers.kmeans import nearest_code
from tfvqvae.layers.kmeans import sample_rows
from tfvqvae.layers.kmeans import segment_sum
from tfvqvae.metrics import perplexity_from_counts
from tfvqvae.validation import boolean
from tfvqvae.validation import finite_float
from tfvqvae.validation import float_vectors
from tfvqvae.validation import integer
from tfvqvae.validation import integer_indices
from tfvqvae.validation import one_of
from tfvqvae.validation import positive_int
from tfvqvae.validation import vectors_shape


class QuantizerOutput(NamedTuple):
    """Everything one quantisation step produces.

    Attributes:
        quantized: straight-through output, same shape and dtype as the inputs.
        indices: int32 codes, shape ``inputs.shape[:-1]``.
        codebook_loss: float32 scalar, α · mean ‖sg[z_e] − e‖² with α the
            ``codebook_cost`` (0 for the EMA layer).
        commitment_loss: float32 scalar, β · mean ‖z_e − sg[e]‖².
        counts: float32 (K,), how often each code was chosen in the batch;
            summed over replicas inside a multi-replica strategy.
        perplexity: float32 scalar, exp(−Σ p log p) with p = counts / Σ counts.
    """

    quantized: tf.Tensor
    indices: tf.Tensor
    codebook_loss: tf.Tensor
    commitment_loss: tf.Tensor
    counts: tf.Tensor
    perplexity: tf.Tensor

    @property
    def loss(self):
        """codebook_loss + commitment_loss."""
        return self.codebook_loss + self.commitment_loss


# Steps a code may go unused before it is re-seeded (bench/codebook_defaults.py).
DEFAULT_RESTART_UNUSED_AFTER = 20
# β: with the MSE divided by the data's variance (the models' default), 1.0
# measured a lower test NMSE than the paper's 0.25 on Fashion-MNIST and
# CIFAR-10 at a few hundred steps (bench/codebook_defaults.py).
DEFAULT_COMMITMENT_COST = 1.0
# The ways ``gradient`` may pass the gradient past the quantiser.
GRADIENTS = ("straight_through", "rotation")
# Smallest normal float32: squared norms below it count as zero (ν and the
# rotation trick's guards).
_TINY = 1.1754943508222875e-38
# Seeds of the projections' initializers: seed + salt (the codebook uses the
# seed itself, k-means / restarts seed + 1 / 2, RVQ dropout seed + 3 / 4).
_PROJECT_IN_SALT = 5
_PROJECT_OUT_SALT = 6


def l2_normalize(vectors):
    """ν(v) = v / ‖v‖ along the last axis (float32 in, float32 out, same shape).

    Rows whose squared norm is below the smallest normal float32 (≈ 1.2e−38,
    e.g. zero rows) are returned unchanged instead of divided by ~0.
    """
    squared = tf.reduce_sum(tf.square(vectors), axis=-1, keepdims=True)
    return tf.where(squared >= _TINY, vectors * tf.math.rsqrt(tf.maximum(squared, _TINY)),
                    vectors)


def check_code_range(indices, num_embeddings):
    """``indices`` (an integer tensor) if every value lies in [0, K), else fails.

    Eagerly a ``ValueError`` naming the smallest and largest value received;
    in a graph, assertions (an ``InvalidArgumentError`` when run) on the
    values widened to int64, so int64 values beyond int32 do not wrap.
    """
    k = num_embeddings
    if tf.executing_eagerly():
        if tf.size(indices) > 0:
            low = int(tf.reduce_min(indices))
            high = int(tf.reduce_max(indices))
            if low < 0 or high >= k:
                raise ValueError(
                    f"Code indices must lie in [0, {k}). "
                    f"Received: values in [{low}, {high}]"
                )
        return indices
    message = f"Code indices must lie in [0, {k})"
    wide = tf.cast(indices, tf.int64)
    with tf.control_dependencies(
        [
            tf.debugging.assert_non_negative(wide, message=message),
            tf.debugging.assert_less(wide, tf.constant(k, tf.int64), message=message),
        ]
    ):
        return tf.identity(indices)


def rotation_trick(inputs, codes):
    """The rotation trick: forward ``codes``, gradient λ Rᵀ g to ``inputs``.

    Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation
    Trick" (https://arxiv.org/abs/2410.06424), in its Householder form:
    with e = ``inputs``, q̂ = ``codes``, u = e / ‖e‖, q = q̂ / ‖q̂‖,
    r = (u + q) / ‖u + q‖, λ = ‖q̂‖ / ‖e‖ and R = I − 2 r rᵀ + 2 q uᵀ (R u = q, R orthogonal),
    the output is sg[λ R] e, computed as q̂ + (λ R e − sg[λ R e]) with
    R e = e − 2 r (r·e) + 2 q (u·e) (no C x C matrix). Its forward value is
    ``codes`` bit for bit (for finite rows); ``codes`` get no gradient.

    Guards: rows with ‖e‖² or ‖q̂‖² below the smallest normal float32 pass
    the gradient straight through (identity); u = −q gives r = 0, i.e.
    R = I − 2 u uᵀ.

    Args:
        inputs: float32 (N, C), the vectors searched (encoder side).
        codes: float32 (N, C), their chosen codes.

    Returns:
        float32 (N, C).
    """
    codes = tf.stop_gradient(codes)
    e = tf.stop_gradient(inputs)
    e_squared = tf.reduce_sum(tf.square(e), axis=-1, keepdims=True)  # (N, 1)
    q_squared = tf.reduce_sum(tf.square(codes), axis=-1, keepdims=True)
    regular = tf.logical_and(e_squared >= _TINY, q_squared >= _TINY)
    e_norm = tf.sqrt(tf.maximum(e_squared, _TINY))
    q_norm = tf.sqrt(tf.maximum(q_squared, _TINY))
    u = e / e_norm
    q = codes / q_norm
    s = u + q
    s_squared = tf.reduce_sum(tf.square(s), axis=-1, keepdims=True)
    # r = 0 when u = −q: R = I − 2 u uᵀ, the reflection taking u to −u = q.
    r = tf.where(s_squared >= _TINY, s * tf.math.rsqrt(tf.maximum(s_squared, _TINY)), 0.0)
    scale = tf.where(regular, q_norm / e_norm, 0.0)  # λ (0 on guarded rows: no 0 · inf)
    # λ R e, linear in e with λ, r, q and u constants: d / d e = λ R.
    rotated = scale * (
        inputs
        - 2.0 * r * tf.reduce_sum(r * inputs, axis=-1, keepdims=True)
        + 2.0 * q * tf.reduce_sum(u * inputs, axis=-1, keepdims=True)
    )
    rotated = tf.where(regular, rotated, inputs)  # straight-through on guarded rows
    return codes + (rotated - tf.stop_gradient(rotated))


class VectorInputs:
    """Input checks of a layer that quantises float (..., ``embedding_dim``) inputs.

    Mixed into `VectorQuantizer` and the layers of several quantisers
    (`StackedQuantizer`), before ``keras.layers.Layer``.
    """

    def _ensure_built(self):
        if not self.built:
            self.build((None, self.embedding_dim))

    def _check_inputs(self, inputs):
        inputs = float_vectors(
            type(self).__name__, tf.convert_to_tensor(inputs), self.embedding_dim
        )
        self._ensure_built()
        return inputs


@keras.saving.register_keras_serializable(package="tfvqvae")
class VectorQuantizer(VectorInputs, keras.layers.Layer):
    """Nearest-neighbour vector quantiser with a learned codebook.

    The codebook is a trainable (K, D) weight moved by the codebook loss; the
    encoder is pulled towards its codes by the commitment loss (see the module
    docstring for the formulas). Distances, argmin and losses are computed in
    float32 even under a mixed-precision policy; the output has the layer's
    compute dtype.

    By default ``call`` registers ``codebook_loss + commitment_loss`` with
    ``add_loss`` so the layer trains inside any functional model compiled with
    a plain reconstruction loss. The package's models call ``quantize_with_losses()``
    instead and add the terms in their ``train_step``, which stays exact under
    ``MirroredStrategy``.

    Args:
        num_embeddings: K, the number of codes.
        embedding_dim: D, the size of each code; must equal the last axis of
            the inputs.
        commitment_cost: β ≥ 0, weight of the commitment loss
            ‖z_e − sg[e]‖². Defaults to 1.0 (the paper's 0.25 measured a higher
            test NMSE with the estimated data variance: bench/codebook_defaults.py).
        codebook_cost: α ≥ 0, weight of the codebook loss ‖sg[z_e] − e‖².
            Defaults to 1.0 (the paper's loss).
        embeddings_initializer: initializer of the codebook. Defaults to
            uniform in ±sqrt(3 / C) (C = D without ``codebook_dim``), the
            variance-scaling choice of Sonnet.
        kmeans_init: initialise the codebook with k-means on the first
            training batch. Defaults to True (bench/codebook_defaults.py).
        kmeans_iterations: Lloyd iterations for ``kmeans_init``. Defaults to 10.
        restart_unused_after: re-seed a code with a random encoder output once
            it has gone this many training steps unused; None disables it.
            Defaults to 20 (bench/codebook_defaults.py).
        add_losses: register the loss terms with ``add_loss`` in ``call``.
            Defaults to True.
        seed: int seed for k-means and restart sampling. Defaults to 0.
        use_cosine_similarity: l2-normalise the searched vectors and the
            codes (see the module docstring). Defaults to False.
        codebook_dim: C, the width of the codebook; None (the default) or D
            means D and no projections, another positive int adds the
            learned projections D → C before the search and C → D after
            the lookup (factorized codes, see the module docstring).
        gradient: ``"straight_through"`` (the default, x + sg[z_q − x]) or
            ``"rotation"`` (the rotation trick of Fifty et al. 2024).
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Attributes:
        codebook: float32 (K, C) weight (C = ``codebook_dim``).
        codebook_dim: C, an int (D unless a different width was given).
        project_in, project_out: the `keras.layers.Dense` projections
            D → C and C → D, or None when C = D.

    Call arguments:
        inputs: float tensor (..., D) of encoder outputs z_e.
        training: Python bool; statistics and restarts update only when True.

    Input shape:
        (..., D) with rank ≥ 2, e.g. (batch, height, width, D).

    Output shape:
        Same as the input.

    Raises:
        ValueError: from the constructor, naming the argument and its value
            ("`commitment_cost` must be a finite number >= 0. Received:
            commitment_cost=inf"): ``num_embeddings``, ``embedding_dim`` or
            ``kmeans_iterations`` not a positive int, ``restart_unused_after``
            neither None nor a positive int, ``commitment_cost`` or
            ``codebook_cost`` negative or not finite, ``seed`` not an int,
            ``use_cosine_similarity`` not a bool, ``codebook_dim`` neither
            None nor a positive int, ``gradient`` not one of
            ``("straight_through", "rotation")``.
            From a call: inputs of rank < 2 or whose last axis is not D.
        TypeError: from a call, for non-floating inputs.

    Example:

    >>> import numpy as np
    >>> vq = VectorQuantizer(num_embeddings=8, embedding_dim=4)
    >>> z = np.random.rand(2, 3, 3, 4).astype("float32")
    >>> vq(z).shape
    TensorShape([2, 3, 3, 4])
    >>> vq.indices(z).shape
    TensorShape([2, 3, 3])

    >>> small = VectorQuantizer(8, 4, codebook_dim=2, use_cosine_similarity=True,
    ...                         gradient="rotation")
    >>> small(z).shape, small.codebook.shape, small.lookup([[1, 2]]).shape
    (TensorShape([2, 3, 3, 4]), TensorShape([8, 2]), TensorShape([1, 2, 4]))

    References:
        van den Oord, Vinyals, Kavukcuoglu, "Neural Discrete Representation
        Learning", NeurIPS 2017, https://arxiv.org/abs/1711.00937;
        Yu et al., "Vector-quantized Image Modeling with Improved VQGAN",
        2021, §3.2, https://arxiv.org/abs/2110.04627; Fifty et al.,
        "Restructuring Vector Quantization with the Rotation Trick", 2024,
        https://arxiv.org/abs/2410.06424
    """

    _codebook_trainable = True
    # Scores per block of rows in the training/call path (`nearest_code`'s
    # block_rows = this // K); `indices()` keeps the single-matmul graph.
    _block_elements = BLOCK_ELEMENTS

    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        commitment_cost=DEFAULT_COMMITMENT_COST,
        codebook_cost=1.0,
        embeddings_initializer=None,
        kmeans_init=True,
        kmeans_iterations=10,
        restart_unused_after=DEFAULT_RESTART_UNUSED_AFTER,
        add_losses=True,
        seed=0,
        use_cosine_similarity=False,
        codebook_dim=None,
        gradient="straight_through",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_embeddings = positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = positive_int("embedding_dim", embedding_dim)
        self.commitment_cost = finite_float("commitment_cost", commitment_cost, low=0)
        self.codebook_cost = finite_float("codebook_cost", codebook_cost, low=0)
        self.seed = integer("seed", seed)
        codebook_dim = positive_int("codebook_dim", codebook_dim, allow_none=True)
        self.codebook_dim = self.embedding_dim if codebook_dim is None else codebook_dim
        if embeddings_initializer is None:
            limit = math.sqrt(3.0 / self.codebook_dim)
            embeddings_initializer = keras.initializers.RandomUniform(
                -limit, limit, seed=seed
            )
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.kmeans_init = bool(kmeans_init)
        self.kmeans_iterations = positive_int("kmeans_iterations", kmeans_iterations)
        self.restart_unused_after = positive_int(
            "restart_unused_after", restart_unused_after, allow_none=True
        )
        self.add_losses = bool(add_losses)
        self.use_cosine_similarity = boolean("use_cosine_similarity", use_cosine_similarity)
        self.gradient = one_of("gradient", gradient, GRADIENTS)
        self.project_in = self.project_out = None
        if self.codebook_dim != self.embedding_dim:
            # float32 like the codebook: the quantiser's math never runs in
            # float16 (the output is cast to the compute dtype at the end).
            self.project_in = keras.layers.Dense(
                self.codebook_dim,
                kernel_initializer=keras.initializers.GlorotUniform(
                    seed=self.seed + _PROJECT_IN_SALT
                ),
                dtype="float32",
                name="project_in",
            )
            self.project_out = keras.layers.Dense(
                self.embedding_dim,
                kernel_initializer=keras.initializers.GlorotUniform(
                    seed=self.seed + _PROJECT_OUT_SALT
                ),
                dtype="float32",
                name="project_out",
            )
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    # ------------------------------------------------------------------ state
    def build(self, input_shape):
        input_shape = vectors_shape(
            type(self).__name__, input_shape, self.embedding_dim, received="input_shape"
        )
        shape = (self.num_embeddings, self.codebook_dim)
        if self._codebook_trainable:
            # NB: autocast=False keeps the codebook float32 under mixed
            # precision; aggregation="mean" lets k-means and restarts assign it
            # in replica context (every replica assigns the same value).
            self.codebook = self.add_weight(
                name="codebook",
                shape=shape,
                initializer=self.embeddings_initializer,
                dtype="float32",
                autocast=False,
                aggregation="mean",
            )
        else:
            self.codebook = self.add_statistic(
                "codebook", shape, self.embeddings_initializer
            )
        self._build_state()
        # Training steps seen: drives k-means on step 0 and the restart seeds.
        self.training_steps = self.add_statistic("training_steps", (), "zeros")
        if self.restart_unused_after is not None:
            self.steps_unused = self.add_statistic(
                "steps_unused", (self.num_embeddings,), "zeros"
            )
        if self.project_in is not None:
            self.project_in.build((None, self.embedding_dim))
            self.project_out.build((None, self.codebook_dim))
        super().build(input_shape)

    def _build_state(self):
        """Subclasses add their statistics here."""

    def add_statistic(self, name, shape, initializer):
        """A float32 non-trainable weight updated with ``assign`` in ``call``.

        Like Keras' batch-norm moving statistics: never auto-cast, and
        synchronised on read, so a replica's ``assign`` stays local (no
        cross-replica call inside the step). Every replica computes the same
        value from all-reduced counts and sums, so reading the mean across
        replicas (when saving) gives that value.
        """
        # Returned, then set as an attribute, which is how Keras tracks it.
        return keras.Variable(
            initializer=keras.initializers.get(initializer),
            shape=shape,
            dtype="float32",
            trainable=False,
            autocast=False,
            aggregation="mean",
            synchronization="on_read",
            name=name,
        )

    # --------------------------------------------------------------- public
    def call(self, inputs, training=None):
        outputs = self.quantize_with_losses(inputs, training=training)
        if self.add_losses:
            self.add_loss(outputs.loss)
        return outputs.quantized

    def quantize_with_losses(self, inputs, training=False, batch_finite=None):
        """Quantises ``inputs`` and returns a `QuantizerOutput`.

        Unlike ``call`` this never calls ``add_loss``: the caller adds
        ``codebook_loss`` and ``commitment_loss`` to its own objective.
        With ``training=True`` it also runs the codebook updates (k-means
        on the first step, EMA statistics, restarts).

        Args:
            inputs: float (B, H, W, D) encoder outputs.
            training: run the codebook updates.
            batch_finite: None, or a scalar bool: whether this replica's
                whole batch (the images ``inputs`` come from) is finite.
                When it is False on any replica no state changes, even if
                ``inputs`` are finite: some backends turn NaN into a finite
                value inside the encoder (oneDNN's fused ReLU gives 0).
        """
        inputs = self._check_inputs(inputs)
        z = tf.cast(inputs, tf.float32)
        flat = tf.reshape(z, [-1, self.embedding_dim])  # (B, H, W, D) -> (B*H*W, D)
        # x: the searched vectors, (B*H*W, C); ``flat`` itself by default.
        x = self._search_vectors(flat)
        if training:
            # A batch with NaN / Inf on any replica changes no state at all:
            # no k-means, statistics, restart or step count (the model skips
            # its gradient step too). The flag is all-reduced, so every
            # replica takes the same branch. (A non-finite z_e gives a
            # non-finite x, so checking x covers both.)
            finite = self._all_finite_across_replicas(x, batch_finite)
            if self.kmeans_init:
                self._kmeans_on_first_step(x, finite)
        codebook = self._search_codebook()  # read after any k-means assign
        # In blocks of rows: the (N, K) scores never exist at once.
        flat_indices = nearest_code(
            x, codebook, block_rows=max(1, self._block_elements // self.num_embeddings)
        )  # (B*H*W,)
        flat_quantized = tf.gather(codebook, flat_indices)  # (B*H*W, C)
        counts = sum_across_replicas(
            segment_sum(
                tf.ones_like(flat_indices, tf.float32), flat_indices, self.num_embeddings
            )
        )
        codebook_loss = self._codebook_loss(x, flat_quantized)
        commitment_loss = self.commitment_cost * tf.reduce_mean(
            tf.square(x - tf.stop_gradient(flat_quantized))
        )
        if training:
            self._update_codebook(x, flat_indices, counts, finite)
            if self.restart_unused_after is not None:
                self._restart_unused(x, counts, finite)
            self.training_steps.assign_add(tf.where(finite, 1.0, 0.0))
        if self.gradient == "rotation":
            # Forward value z_q, gradient d out / d x = λ R (module docstring).
            passed = rotation_trick(x, flat_quantized)
        else:
            # Straight-through: forward value z_q, gradient d out / d x = identity.
            passed = x + tf.stop_gradient(flat_quantized - x)
        if self.project_out is not None:
            passed = self.project_out(passed)  # (B*H*W, C) -> (B*H*W, D)
        quantized = tf.reshape(passed, tf.shape(z))  # (B*H*W, D) -> (B, H, W, D)
        return QuantizerOutput(
            quantized=tf.cast(quantized, inputs.dtype),
            indices=tf.reshape(flat_indices, tf.shape(z)[:-1]),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            counts=counts,
            perplexity=perplexity_from_counts(counts),
        )

    def distances(self, inputs):
        """Squared distances ‖x − e‖² to every code: float32, ``inputs.shape[:-1] + (K,)``.

        In the searched space: x = z and e the codebook rows by default; x
        the projected (``codebook_dim``) and / or normalised
        (``use_cosine_similarity``: then ‖x − e‖² = 2 − 2 cos) vector and e
        the normalised codes with those options. Computed as
        ‖x − μ‖² − 2 (x − μ)·(e − μ) + ‖e − μ‖² about the
        codebook mean μ (one matmul; exact algebra, and float32 rounding
        relative to the spread of the codebook instead of to ‖x‖ and ‖e‖:
        an absolute error of about 2⁻²⁴ · C · (‖x − μ‖ + ‖e − μ‖)²), then
        clamped at 0, so never negative. Use ``indices()`` for the codes:
        its choice is exact (see `nearest_code`).

        Raises:
            TypeError: for non-floating inputs.
            ValueError: when the last axis is not ``embedding_dim`` or the
                rank is below 2.
        """
        inputs = self._check_inputs(inputs)
        z = tf.cast(inputs, tf.float32)
        codebook = self._search_codebook()
        centre = tf.reduce_mean(codebook, axis=0)  # μ, (C,)
        flat = self._search_vectors(tf.reshape(z, [-1, self.embedding_dim])) - centre  # (N, C)
        centred = codebook - centre  # (K, C)
        d = (
            tf.reduce_sum(tf.square(flat), axis=1, keepdims=True)
            - 2.0 * tf.matmul(flat, centred, transpose_b=True)
            + tf.reduce_sum(tf.square(centred), axis=1)
        )  # (N, K)
        return tf.reshape(
            tf.maximum(d, 0.0), tf.concat([tf.shape(z)[:-1], [self.num_embeddings]], axis=0)
        )

    def indices(self, inputs):
        """int32 codes of ``inputs``: shape ``inputs.shape[:-1]``, values in [0, K).

        The argmin of ‖x − e‖² (x = z by default; the projected and / or
        normalised vector with ``codebook_dim`` / ``use_cosine_similarity``,
        whose nearest normalised code is the code of largest cosine), exact
        in the sense of
        `nearest_code` (centred one-matmul scores, the best few re-ranked
        by the exact distance difference). One graph without loops, which
        SavedModel, TFLite (built-in ops) and ONNX export.

        Raises:
            TypeError: for non-floating inputs.
            ValueError: when the last axis is not ``embedding_dim`` or the
                rank is below 2.
        """
        inputs = self._check_inputs(inputs)
        z = tf.cast(inputs, tf.float32)
        flat = self._search_vectors(tf.reshape(z, [-1, self.embedding_dim]))
        flat_indices = nearest_code(flat, self._search_codebook())
        return tf.reshape(flat_indices, tf.shape(z)[:-1])

    def lookup(self, indices, validate=True):
        """Codebook vectors for integer ``indices``: float32, shape ``indices.shape + (D,)``.

        The forward value of the codes: e_k by default, ν(e_k) with
        ``use_cosine_similarity``, then projected out to D with
        ``codebook_dim``.

        Args:
            indices: integer tensor with values in [0, K).
            validate: check the range (an eager ``ValueError``, a graph-mode
                ``InvalidArgumentError``). Defaults to True.
        """
        indices = integer_indices(tf.convert_to_tensor(indices))
        if validate:  # before the cast: int64 values beyond int32 must not wrap
            indices = self._check_range(indices)
        self._ensure_built()
        codes = tf.gather(self._search_codebook(), tf.cast(indices, tf.int32))
        if self.project_out is not None:
            codes = self.project_out(codes)  # (..., C) -> (..., D)
        return codes

    # ------------------------------------------------------------- helpers
    def _search_vectors(self, flat):
        """(N, D) float32 encoder outputs -> (N, C) vectors searched: ν(P z).

        ``flat`` itself when there is no projection and no normalisation.
        """
        if self.project_in is not None:
            flat = self.project_in(flat)
        if self.use_cosine_similarity:
            flat = l2_normalize(flat)
        return flat

    def _search_codebook(self):
        """(K, C) float32 codes searched: the codebook, l2-normalised with cosine."""
        codebook = tf.convert_to_tensor(self.codebook)
        if self.use_cosine_similarity:
            codebook = l2_normalize(codebook)
        return codebook

    def _check_range(self, indices):
        return check_code_range(indices, self.num_embeddings)

    def _codebook_loss(self, flat, flat_quantized):
        # α · mean ‖sg[z_e] − e‖²: the gradient reaches only the codebook.
        return self.codebook_cost * tf.reduce_mean(
            tf.square(tf.stop_gradient(flat) - flat_quantized)
        )

    def _step_seed(self, salt):
        step = tf.cast(self.training_steps, tf.int32)
        return tf.stack([tf.constant(self.seed, tf.int32) + salt, step])

    @staticmethod
    def _all_finite_across_replicas(flat, batch_finite=None):
        """Scalar bool: no replica's ``flat`` holds a NaN or Inf (or had a non-finite batch)."""
        finite = tf.reduce_all(tf.math.is_finite(flat))
        if batch_finite is not None:
            finite = tf.logical_and(finite, tf.cast(batch_finite, tf.bool))
        bad = 1.0 - tf.cast(finite, tf.float32)
        return tf.equal(sum_across_replicas(bad), 0.0)

    def _kmeans_on_first_step(self, flat, finite):
        # NB: TensorFlow allows no cross-replica call inside control flow, so
        # the global batch is gathered outside the cond (one row per replica
        # after the first step: gathering empty tensors crashes TF 2.21),
        # k-means runs on it locally and identically on every replica, and the
        # assignment also stays outside the cond.
        first_step = tf.logical_and(tf.equal(self.training_steps, 0.0), finite)
        batch = gather_across_replicas(
            tf.cond(first_step, lambda: flat, lambda: flat[:1])
        )
        centroids = tf.cond(
            first_step,
            lambda: kmeans(
                batch, self.num_embeddings, self.kmeans_iterations, self._step_seed(1)
            )[0],
            lambda: tf.convert_to_tensor(self.codebook),
        )
        self._set_codes(tf.fill([self.num_embeddings], first_step), centroids)

    def _set_codes(self, mask, vectors):
        """Replaces the codebook rows where ``mask`` is True with ``vectors``."""
        self.codebook.assign(tf.where(mask[:, None], vectors, self.codebook))

    def _update_codebook(self, flat, flat_indices, counts, finite):
        """Statistics update on a training step; the gradient layer has none."""

    def _restart_unused(self, flat, counts, finite):
        steps_unused = tf.where(counts > 0, 0.0, self.steps_unused + 1.0)
        dead = tf.logical_and(steps_unused >= float(self.restart_unused_after), finite)
        candidates = sample_rows(flat, self.num_embeddings, self._step_seed(2))
        self._set_codes(dead, candidates)
        steps_unused = tf.where(finite, steps_unused, self.steps_unused)
        self.steps_unused.assign(tf.where(dead, 0.0, steps_unused))

    # -------------------------------------------------------------- config
    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim,
                "commitment_cost": self.commitment_cost,
                "codebook_cost": self.codebook_cost,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
                "kmeans_init": self.kmeans_init,
                "kmeans_iterations": self.kmeans_iterations,
                "restart_unused_after": self.restart_unused_after,
                "add_losses": self.add_losses,
                "seed": self.seed,
                "use_cosine_similarity": self.use_cosine_similarity,
                "codebook_dim": None if self.project_in is None else self.codebook_dim,
                "gradient": self.gradient,
            }
        )
        return config

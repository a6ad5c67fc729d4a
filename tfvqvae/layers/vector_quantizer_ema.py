"""Vector quantisation with an exponential-moving-average codebook.

The codebook is not learned by gradient descent: each training step it moves
to the running mean of the encoder outputs assigned to it (appendix A.1 of the
VQ-VAE paper), with Laplace smoothing of the cluster sizes so that an unused
code never divides by zero:

    n_i   = #{ z_e : argmin_j ‖z_e − e_j‖ = i }          (this batch, all replicas)
    s_i   = Σ_{z_e assigned to i} z_e                    (this batch, all replicas)
    N_i  ← γ N_i + (1 − γ) n_i
    m_i  ← γ m_i + (1 − γ) s_i
    Ñ_i   = (N_i + ε) / (Σ_j N_j + K ε) · Σ_j N_j        (Laplace smoothing)
    e_i   = m_i / Ñ_i

γ is ``decay`` and ε is ``epsilon``. The state starts as N_i = 1, m_i = e_i
(each code carries the weight of one vector equal to itself, so m / N
reproduces the initial codebook), and is reset the same way when k-means or a
restart replaces a code. Only the commitment loss β · mean ‖z_e − sg[e]‖² is
returned; there is no codebook-gradient term, so `VectorQuantizer`'s
``codebook_cost`` does not apply here and is refused.

Like `keras.layers.BatchNormalization`, the statistics are non-trainable
weights updated with ``assign`` only when ``training`` is true, kept in float32
under mixed precision, and n and s are summed across replicas
(``all_reduce(SUM)``) before the update, so every replica of a
``MirroredStrategy`` holds the codebook a single device would compute on the
whole global batch.

Non-finite inputs: when any replica's inputs hold a NaN or Inf (a bad batch,
a diverged encoder), the step leaves N, m and the codebook untouched: a flag
is all-reduced so that every replica skips together. The model's train step
then skips its gradient update too (`tfvqvae.models.autoencoder`).

`VectorQuantizer`'s options apply as they are (its module docstring): with
``codebook_dim=C`` the statistics are kept for the projected vectors x = P z_e
(m is (K, C)) while P and the out-projection learn by gradient (they are
this layer's only trainable weights); with ``use_cosine_similarity`` the
statistics average the l2-normalised vectors x / ‖x‖, so e_i = m_i / Ñ_i is
the (unnormalised) running mean of the unit vectors assigned to code i and
the search and ``lookup`` use its direction e_i / ‖e_i‖: an EMA of
spherical k-means, with the weight left unnormalised so that e = m / Ñ
still holds; ``gradient="rotation"`` changes only the gradient.

Reference: van den Oord, Vinyals, Kavukcuoglu, "Neural Discrete Representation
Learning", NeurIPS 2017, appendix A.1, https://arxiv.org/abs/1711.00937
"""

import keras
import tensorflow as tf

from tfvqvae.layers.cross_replica import sum_across_replicas
from tfvqvae.layers.kmeans import segment_sum
from tfvqvae.layers.vector_quantizer import DEFAULT_COMMITMENT_COST
from tfvqvae.layers.vector_quantizer import VectorQuantizer
from tfvqvae.validation import finite_float


@keras.saving.register_keras_serializable(package="tfvqvae")
class VectorQuantizerEMA(VectorQuantizer):
    """Vector quantiser whose codebook follows an EMA of its assigned vectors.

    Args:
        num_embeddings: K, the number of codes.
        embedding_dim: D, the size of the inputs' last axis (and of each code
            unless ``codebook_dim`` is given).
        commitment_cost: β ≥ 0, weight of the commitment loss. Defaults to 1.0
            (`DEFAULT_COMMITMENT_COST`).
        decay: γ in (0, 1), the EMA decay. Defaults to 0.8 (Sonnet's 0.99
            failed the short-budget NMSE target on one of two Fashion-MNIST
            seeds with the estimated variance; bench/codebook_defaults.py).
        epsilon: ε > 0 of the Laplace smoothing. Defaults to 1e-5.
        **kwargs: the remaining `VectorQuantizer` arguments
            (``embeddings_initializer``, ``kmeans_init``, ``kmeans_iterations``,
            ``restart_unused_after``, ``add_losses``, ``seed``,
            ``use_cosine_similarity``, ``codebook_dim``, ``gradient``) and
            base layer arguments. ``codebook_cost`` is refused: there is no
            codebook loss.

    Call arguments:
        inputs: float tensor (..., D).
        training: Python bool; the EMA update runs only when True.

    Input shape:
        (..., D) with rank ≥ 2.

    Output shape:
        Same as the input.

    Raises:
        ValueError: from the constructor, as `VectorQuantizer`, and for a
            ``decay`` outside (0, 1), an ``epsilon`` not > 0 (either not
            finite), or any ``codebook_cost``. From a call: inputs of rank
            < 2 or whose last axis is not D.
        TypeError: from a call, for non-floating inputs.

    Example:

    >>> import numpy as np
    >>> vq = VectorQuantizerEMA(num_embeddings=8, embedding_dim=4, decay=0.9)
    >>> z = np.random.rand(2, 3, 3, 4).astype("float32")
    >>> vq(z, training=True).shape
    TensorShape([2, 3, 3, 4])

    Reference:
        van den Oord, Vinyals, Kavukcuoglu, "Neural Discrete Representation
        Learning", NeurIPS 2017, appendix A.1, https://arxiv.org/abs/1711.00937
    """

    _codebook_trainable = False

    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        commitment_cost=DEFAULT_COMMITMENT_COST,
        decay=0.8,
        epsilon=1e-5,
        **kwargs,
    ):
        if "codebook_cost" in kwargs:
            raise ValueError(
                "`codebook_cost` does not apply to VectorQuantizerEMA: its codebook "
                "follows an EMA of the encoder outputs and has no codebook loss. "
                f"Received: codebook_cost={kwargs['codebook_cost']!r}"
            )
        super().__init__(
            num_embeddings, embedding_dim, commitment_cost=commitment_cost, **kwargs
        )
        self.decay = finite_float("decay", decay, 0, 1, low_open=True, high_open=True)
        self.epsilon = finite_float("epsilon", epsilon, low=0, low_open=True)

    def _build_state(self):
        self.ema_cluster_size = self.add_statistic(
            "ema_cluster_size", (self.num_embeddings,), "ones"
        )
        # m_i = N_i e_i = e_i: the EMA state reproduces the initial codebook.
        self.ema_embedding_sum = self.add_statistic(
            "ema_embedding_sum",
            (self.num_embeddings, self.codebook_dim),
            lambda shape, dtype=None: tf.identity(self.codebook),
        )

    def _codebook_loss(self, flat, flat_quantized):
        return tf.zeros([], tf.float32)

    def _update_codebook(self, flat, flat_indices, counts, finite):
        sums = sum_across_replicas(
            segment_sum(flat, flat_indices, self.num_embeddings)
        )  # (K, D): no (N, K) one-hot is materialised
        gamma = self.decay
        cluster_size = gamma * self.ema_cluster_size + (1.0 - gamma) * counts
        embedding_sum = gamma * self.ema_embedding_sum + (1.0 - gamma) * sums
        total = tf.reduce_sum(cluster_size)
        smoothed = (
            (cluster_size + self.epsilon)
            / (total + self.num_embeddings * self.epsilon)
            * total
        )
        codebook = embedding_sum / smoothed[:, None]
        # NB: a select, not a multiply by 0 (NaN * 0 is NaN). The new values
        # are checked too (a finite batch whose sums overflow).
        keep = tf.logical_or(
            tf.logical_not(finite),
            tf.logical_not(tf.reduce_all(tf.math.is_finite(codebook))),
        )
        self.ema_cluster_size.assign(tf.where(keep, self.ema_cluster_size, cluster_size))
        self.ema_embedding_sum.assign(tf.where(keep, self.ema_embedding_sum, embedding_sum))
        self.codebook.assign(tf.where(keep, self.codebook, codebook))

    def _set_codes(self, mask, vectors):
        """Replaces codes and resets their statistics to N_i = 1, m_i = e_i."""
        super()._set_codes(mask, vectors)
        self.ema_cluster_size.assign(tf.where(mask, 1.0, self.ema_cluster_size))
        self.ema_embedding_sum.assign(
            tf.where(mask[:, None], vectors, self.ema_embedding_sum)
        )

    def get_config(self):
        config = super().get_config()
        del config["codebook_cost"]  # no codebook loss (refused by __init__)
        config.update({"decay": self.decay, "epsilon": self.epsilon})
        return config

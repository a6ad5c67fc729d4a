"""Codebook and image-quality metrics.

* perplexity  exp(−Σ_k p_k log p_k), p_k = share of vectors assigned to code k
              (K when all codes are used equally, 1 when one code takes all).
* usage       100 · #{k : code k chosen at least once} / K, over the epoch.
* dead codes  K − #{k : code k chosen at least once}, over the epoch.

With Q codebooks of K codes (a residual or grouped quantiser), usage and dead
codes are the means over the codebooks: 100 · Σ_q used_q / (Q K) and
K − Σ_q used_q / Q.
* PSNR        10 log10(1 / MSE) for images in [0, 1].
"""

import math

import keras
import tensorflow as tf

from tfvqvae.validation import positive_int


def perplexity_from_counts(counts):
    """exp(−Σ p log p) with p = counts / Σ counts and 0 log 0 = 0."""
    counts = tf.cast(counts, tf.float32)
    probs = counts / tf.maximum(tf.reduce_sum(counts), 1.0)
    entropy = -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(probs), probs))
    return tf.exp(entropy)


def psnr(mse, max_value=1.0):
    """Peak signal-to-noise ratio in dB: 10 log10(max_value² / mse)."""
    if mse <= 0:
        return math.inf
    return 10.0 * math.log10(max_value**2 / mse)


@keras.saving.register_keras_serializable(package="tfvqvae")
class CodebookUsage(keras.metrics.Metric):
    """Share of codes chosen at least once since the last reset.

    Accumulates per-code counts over the epoch (or the whole evaluation set)
    and reports two float32 scalars: ``usage`` (percent of the K codes used)
    and ``dead_codes`` (codes never chosen). With ``num_codebooks`` = Q it
    keeps (Q, K) counts, one row per codebook (the stages of a
    `ResidualVectorQuantizer`, the heads of a `GroupedVectorQuantizer`), and
    reports the means over the Q codebooks: usage = 100 · Σ_q used_q / (Q K)
    and dead_codes = K − Σ_q used_q / Q (so usage = 100 (K − dead) / K).

    Args:
        num_embeddings: K, a positive int.
        prefix: put before the result names (e.g. "top_"). Defaults to "".
        name: metric name. Defaults to "codebook_usage".
        num_codebooks: None (the default: one codebook, counts (K,)) or
            Q, a positive int (counts (Q, K)).

    Raises:
        ValueError: ``num_embeddings`` or ``num_codebooks`` (when not None)
            not a positive int.

    Example:

    >>> m = CodebookUsage(4)
    >>> m.update_state([3.0, 0.0, 1.0, 0.0])
    >>> {k: float(v) for k, v in m.result().items()}
    {'usage': 50.0, 'dead_codes': 2.0}
    >>> m = CodebookUsage(4, num_codebooks=2)
    >>> m.update_state([[3.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    >>> {k: float(v) for k, v in m.result().items()}
    {'usage': 62.5, 'dead_codes': 1.5}
    """

    def __init__(self, num_embeddings, prefix="", name="codebook_usage", num_codebooks=None,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_embeddings = positive_int("num_embeddings", num_embeddings)
        self.num_codebooks = positive_int("num_codebooks", num_codebooks, allow_none=True)
        self.prefix = prefix
        shape = (self.num_embeddings,)
        if self.num_codebooks is not None:
            shape = (self.num_codebooks, self.num_embeddings)
        self.counts = self.add_variable(
            shape=shape,
            initializer="zeros",
            dtype="float32",
            aggregation="sum",
            name="counts",
        )

    def update_state(self, counts):
        """Adds per-code counts: a (K,) vector, or (Q, K) with ``num_codebooks`` = Q."""
        self.counts.assign_add(tf.cast(counts, tf.float32))

    def result(self):
        codebooks = 1 if self.num_codebooks is None else self.num_codebooks
        used = tf.reduce_sum(tf.cast(self.counts > 0, tf.float32)) / codebooks
        return {
            f"{self.prefix}usage": 100.0 * used / self.num_embeddings,
            f"{self.prefix}dead_codes": self.num_embeddings - used,
        }

    def reset_state(self):
        self.counts.assign(tf.zeros_like(self.counts))

    def get_config(self):
        config = {"num_embeddings": self.num_embeddings, "prefix": self.prefix,
                  "name": self.name}
        if self.num_codebooks is not None:
            config["num_codebooks"] = self.num_codebooks
        return config

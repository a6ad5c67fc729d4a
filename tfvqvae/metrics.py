"""Codebook and image-quality metrics.

* perplexity  exp(−Σ_k p_k log p_k), p_k = share of vectors assigned to code k
              (K when all codes are used equally, 1 when one code takes all).
* usage       100 · #{k : code k chosen at least once} / K, over the epoch.
* dead codes  K − #{k : code k chosen at least once}, over the epoch.
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
    and reports two values: ``usage`` (percent of the K codes used) and
    ``dead_codes`` (codes never chosen).

    Args:
        num_embeddings: K.
        prefix: put before the result names (e.g. "top_"). Defaults to "".
        name: metric name. Defaults to "codebook_usage".

    Example:

    >>> m = CodebookUsage(4)
    >>> m.update_state([3.0, 0.0, 1.0, 0.0])
    >>> {k: float(v) for k, v in m.result().items()}
    {'usage': 50.0, 'dead_codes': 2.0}
    """

    def __init__(self, num_embeddings, prefix="", name="codebook_usage", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_embeddings = positive_int("num_embeddings", num_embeddings)
        self.prefix = prefix
        self.counts = self.add_variable(
            shape=(self.num_embeddings,),
            initializer="zeros",
            dtype="float32",
            aggregation="sum",
            name="counts",
        )

    def update_state(self, counts):
        """Adds a (K,) vector of per-code counts."""
        self.counts.assign_add(tf.cast(counts, tf.float32))

    def result(self):
        used = tf.reduce_sum(tf.cast(self.counts > 0, tf.float32))
        return {
            f"{self.prefix}usage": 100.0 * used / self.num_embeddings,
            f"{self.prefix}dead_codes": self.num_embeddings - used,
        }

    def reset_state(self):
        self.counts.assign(tf.zeros_like(self.counts))

    def get_config(self):
        return {"num_embeddings": self.num_embeddings, "prefix": self.prefix, "name": self.name}

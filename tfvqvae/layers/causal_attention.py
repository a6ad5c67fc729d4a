"""Causal multi-head self-attention over a 2-D map in raster order (PixelSNAIL-style).

For a (B, H, W, C) feature map x, flattened to the sequence t = i·W + j of
length N = H·W, with n = ``num_heads`` heads of size d = ``key_dim``:

    a        = LayerNorm(x + P)                P: learned row + column embeddings
    q, k, v  = a W_q, a W_k, a W_v             (B, N, n, d)
    A_t      = softmax_{s ≤ t}(q_t · k_s / √d)  causal: keys at s ≤ t only
    y        = x + Σ_s A_ts v_s W_o            (output projection starts at zero)

Position t attends to itself and everything before it in raster order, so
the layer keeps a prior autoregressive exactly when its input at t depends
only on codes before t — true of the horizontal stack of a gated PixelCNN
(`GatedBlock`), whose output it refines. W_o starts at zero: a freshly
built prior computes what the same prior without attention computes, and
training opens the attention up.

`step` computes one position from key/value caches (cached sampling): the
same numbers as `call` at that position, at O(N) instead of O(N²) cost.

Memory: `call` holds the (B, n, N, N) attention weights; at N = 32·32 and
batch 32 with 4 heads that is 0.5 GiB in float32 — meant for the small top
maps of a hierarchy (VQ-VAE-2 puts attention only in its top prior).

References:
    Chen et al., "PixelSNAIL: An Improved Autoregressive Generative Model",
    ICML 2018, https://arxiv.org/abs/1712.09763;
    Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (eq. 1);
    Razavi et al., "Generating Diverse High-Fidelity Images with VQ-VAE-2",
    NeurIPS 2019, https://arxiv.org/abs/1906.00446 (section 3.2).
"""

import math

import keras
import tensorflow as tf

from tfvqvae import validation
from tfvqvae.validation import positive_int

# Masked scores are set (in float32) to -inf, so their softmax weight is
# exactly 0 whatever the visible scores are; every query sees at least itself,
# so no row is all -inf (no NaN).
MASKED_SCORE = float("-inf")


@keras.saving.register_keras_serializable(package="tfvqvae")
class CausalSelfAttention(keras.layers.Layer):
    """Causal multi-head self-attention with a residual, on (B, H, W, C) maps.

    Args:
        num_heads: n, attention heads. Defaults to 4.
        key_dim: d, size of each head's queries, keys and values, or None for
            C // num_heads (at least 1). Defaults to None.
        map_shape: (H, W), fixed: the learned positional embeddings have one
            row per map row and one per map column.
        **kwargs: base layer arguments (``name``, ``dtype``: a dtype policy,
            given to every sublayer).

    Call arguments:
        x: float (B, H, W, C) features; position (i, j) must depend only on
            what precedes it in raster order for the result to stay causal.

    Returns:
        float (B, H, W, C): x plus the attention output.

    Raises:
        ValueError: from the constructor, ``num_heads`` or ``key_dim`` not a
            positive int, ``map_shape`` not two positive ints; from `build`,
            an input whose (H, W) is not ``map_shape``.
    """

    def __init__(self, num_heads=4, key_dim=None, map_shape=None, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = positive_int("num_heads", num_heads)
        self.key_dim = positive_int("key_dim", key_dim, allow_none=True)
        self.map_shape = validation.map_shape("map_shape", map_shape)

    @property
    def sequence_length(self):
        return self.map_shape[0] * self.map_shape[1]

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if input_shape[1] is not None and tuple(input_shape[1:3]) != self.map_shape:
            raise ValueError(
                f"CausalSelfAttention was made for maps of shape {self.map_shape}. "
                f"Received: input shape {tuple(input_shape)}"
            )
        self.head_dim = self.key_dim or max(1, channels // self.num_heads)
        inner = self.num_heads * self.head_dim
        dtype = self.dtype_policy
        height, width = self.map_shape
        self.row_embedding = self.add_weight(
            name="row_embedding", shape=(height, channels),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        self.column_embedding = self.add_weight(
            name="column_embedding", shape=(width, channels),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5, dtype=dtype, name="norm")
        self.query = keras.layers.Dense(inner, dtype=dtype, name="query")
        self.key = keras.layers.Dense(inner, dtype=dtype, name="key")
        self.value = keras.layers.Dense(inner, dtype=dtype, name="value")
        self.output_projection = keras.layers.Dense(
            channels, kernel_initializer="zeros", dtype=dtype, name="output_projection"
        )
        self.norm.build((None, channels))
        for dense in (self.query, self.key, self.value):
            dense.build((None, channels))
        self.output_projection.build((None, inner))
        super().build(input_shape)

    def positions(self):
        """P: (N, C) positional embedding of every raster position, compute dtype."""
        rows = tf.cast(self.row_embedding, self.compute_dtype)
        columns = tf.cast(self.column_embedding, self.compute_dtype)
        return tf.reshape(rows[:, None, :] + columns[None, :, :], [self.sequence_length, -1])

    def _heads(self, dense, a):
        """(..., C) → (..., n, d)."""
        y = dense(a)
        return tf.reshape(y, tf.concat([tf.shape(y)[:-1], [self.num_heads, self.head_dim]], 0))

    def call(self, x):
        shape = tf.shape(x)
        channels = x.shape[-1]
        sequence = tf.reshape(x, [shape[0], self.sequence_length, channels])
        a = self.norm(sequence + self.positions()[None])
        q = self._heads(self.query, a)  # (B, N, n, d)
        k = self._heads(self.key, a)
        v = self._heads(self.value, a)
        scores = tf.einsum("bsnd,btnd->bnst", q, k) / tf.cast(math.sqrt(self.head_dim), q.dtype)
        n = self.sequence_length
        # (query s, key t): t <= s, the lower triangle.
        causal = tf.cast(tf.linalg.band_part(tf.ones([n, n], tf.int8), -1, 0), tf.bool)
        scores = tf.where(causal, tf.cast(scores, tf.float32), MASKED_SCORE)
        weights = tf.nn.softmax(scores, axis=-1)
        attended = tf.einsum("bnst,btnd->bsnd", tf.cast(weights, v.dtype), v)
        attended = tf.reshape(attended, [shape[0], n, self.num_heads * self.head_dim])
        y = sequence + self.output_projection(attended)
        return tf.reshape(y, shape)

    # ------------------------------------------------ cached sampling step
    def empty_cache(self, batch):
        """Key and value caches, each (N, B, n, d) zeros in the compute dtype."""
        shape = [self.sequence_length, batch, self.num_heads, self.head_dim]
        return tf.zeros(shape, self.compute_dtype), tf.zeros(shape, self.compute_dtype)

    def step(self, x, position, keys, values):
        """The output at one raster position from the caches of the earlier ones.

        Args:
            x: (B, C) input at ``position``.
            position: int32 scalar t = i·W + j.
            keys, values: (N, B, n, d) caches holding positions < t.

        Returns:
            (y, keys, values): y (B, C) equals `call`'s output at t; the
            caches gain position t.
        """
        width = self.map_shape[1]
        position_embedding = (  # the row `positions` holds for t, without building the table
            tf.cast(tf.gather(self.row_embedding, position // width), self.compute_dtype)
            + tf.cast(tf.gather(self.column_embedding, position % width), self.compute_dtype)
        )
        a = self.norm(x + position_embedding[None])
        q = self._heads(self.query, a)  # (B, n, d)
        keys = tf.tensor_scatter_nd_update(keys, [[position]], self._heads(self.key, a)[None])
        values = tf.tensor_scatter_nd_update(
            values, [[position]], self._heads(self.value, a)[None]
        )
        scores = tf.einsum("bnd,tbnd->bnt", q, keys) / tf.cast(math.sqrt(self.head_dim), q.dtype)
        visible = tf.range(self.sequence_length) <= position
        scores = tf.where(visible, tf.cast(scores, tf.float32), MASKED_SCORE)
        weights = tf.nn.softmax(scores, axis=-1)
        attended = tf.einsum("bnt,tbnd->bnd", tf.cast(weights, values.dtype), values)
        attended = tf.reshape(attended, [-1, self.num_heads * self.head_dim])
        return x + self.output_projection(attended), keys, values

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "map_shape": list(self.map_shape),
        })
        return config

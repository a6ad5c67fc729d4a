"""Gated PixelCNN prior over VQ-VAE code maps.

p(z) = Π_{i,j} p(z_ij | z_<ij [, class] [, top codes]) over an (H, W) map of
codes in [0, K), raster order. Codes are categories: each position gets a
K-way softmax, trained by cross-entropy. Reported per code:

    nll           = −(1 / (B·H·W)) Σ log p(z_ij | ·)        (nats)
    bits_per_dim  = nll / ln 2

Architecture: Embedding(K, p) → ``num_blocks`` `GatedBlock`s (the first with
mask A) → Σ skips → ReLU → Dense(p) → ReLU → Dense(K) logits. With
``attention_every`` = N, a `CausalSelfAttention` block (PixelSNAIL-style
causal multi-head self-attention with learned row and column embeddings)
refines the horizontal stack after every N-th gated block except the last:
each position then sees every earlier code, not only those within the
convolutions' receptive field (VQ-VAE-2's top prior, section 3.2).

Codes with a depth axis. A residual or grouped quantizer gives each position
Q codes (code maps (H, W, Q)); its prior has ``code_shape`` (H, W, Q) and
predicts a position's Q codes in order, as PixelCNN predicts a pixel's colour
sub-pixels (van den Oord et al. 2016, section 2; RQ-Transformer, Lee et al.
2022, for the depth-wise factorisation):

    p(z_ij) = Π_q p(z_ijq | z_<ij, z_ij,<q)

The spatial stacks read Σ_q E[q·K + z_ijq] (one embedding row per depth
and code) of the earlier positions; the head then reads, for depth q,

    x_ijq = s_ij + P_q + Σ_{r<q} D[r·K + z_ijr]

(s the summed skips at (i, j), P a learned depth embedding, D the embedding
of the codes already chosen at (i, j)) and gives logits (B, H, W, Q, K).
nll and bits_per_dim are then per code (B·H·W·Q of them): a position costs
Q times ``bits_per_dim``. A conditioning map with a depth axis is embedded as
Σ_q E_c[q·K' + c_q].

Conditioning: ``num_classes`` adds a class label (global). The priors of a
hierarchy (`HierarchicalVQVAE`, `VQVAE2`) form a chain, top first: the top
prior is unconditioned (or class-conditioned) and the prior of each lower
level sets ``condition_num_embeddings`` / ``condition_shape`` to those of
the level *directly above* it (for VQVAE2 the bottom prior reads the top
codes). That code map is embedded, upsampled to (H, W) by repetition and
passed through a 3x3 convolution, then projected into every block. The
levels further up reach a lower level only through the map above it (which
was sampled given them): one conditioning map per prior keeps every prior
the same small network whatever the depth. `tfvqvae.models.sampling.sample_levels`
samples such a chain.

Sampling (``sample``) draws codes with the Gumbel-max trick from noise fixed
by ``seed``: the naive sampler (a full forward pass per position) and the
cached one (Ramachandran et al. 2017) therefore give identical maps.

Reference: van den Oord et al., "Conditional Image Generation with PixelCNN
Decoders", NeurIPS 2016, https://arxiv.org/abs/1606.05328
"""

import math

import keras
import tensorflow as tf

from tfvqvae.distribute import multi_worker_logs
from tfvqvae.layers.causal_attention import CausalSelfAttention
from tfvqvae.layers.gated_block import GatedBlock
from tfvqvae.models.autoencoder import apply_gradients_if_finite
from tfvqvae.validation import code_map_shape
from tfvqvae.validation import odd_positive_int
from tfvqvae.validation import one_of
from tfvqvae.validation import positive_int
from tfvqvae.models.dtype_config import from_config_with_policy
from tfvqvae.models.dtype_config import with_dtype_policy


def prior_inputs(record, level, class_conditional, condition=None):
    """A code-file record -> the input dict of the prior of ``level``.

    ``record``: ``{level: int32 (h, w) or (h, w, Q), ..., "label": int32 ()}`` (what
    `tfvqvae.data.load_codes` yields, or a batch of them); the result is
    ``{"codes": record[level]}``, plus ``"labels": record["label"]`` when
    ``class_conditional`` and ``"condition": record[condition]`` when
    ``condition`` (the level directly above) is given. One definition for
    training a prior and for measuring its rate.
    """
    inputs = {"codes": record[level]}
    if class_conditional:
        inputs["labels"] = record["label"]
    if condition is not None:
        inputs["condition"] = record[condition]
    return inputs


@keras.saving.register_keras_serializable(package="tfvqvae")
class PixelCNNPrior(keras.Model):
    """Autoregressive prior over code maps, trained with ``model.fit``.

    ``fit`` takes dicts ``{"codes": int (B, H, W)[, "labels": int (B,)]
    [, "condition": int (B, h, w)]}`` (a ``y`` is ignored) and reports
    ``loss`` (= ``nll``, nats per code) and ``bits_per_dim``.
    ``model(inputs)`` returns float32 logits (B, H, W, K). With a depth axis
    (``code_shape`` (H, W, Q)) the codes are (B, H, W, Q) and the logits
    (B, H, W, Q, K), the logits of depth q given the codes of depths < q at
    the same position (teacher forcing).

    A training step whose loss or gradients are NaN / Inf (on any replica) is
    skipped: weights, optimizer slots and ``optimizer.iterations`` stay as
    they were, the step adds nothing to the epoch's metrics and its logs
    carry ``nonfinite`` = 1.0 (0.0 otherwise); see
    `tfvqvae.training.checkpoints.StopOnNonFinite`.

    Args:
        num_embeddings: K, codes take values in [0, K).
        code_shape: (H, W) of the code maps, or (H, W, Q) for maps whose
            positions hold Q codes each (residual / grouped quantizers).
        hidden_channels: p, channels of the stacks. Defaults to 64.
        num_blocks: gated blocks. Defaults to 6.
        kernel_size: odd size of the masked convolutions. Defaults to 5.
        num_classes: number of class labels for global conditioning, or
            None. Defaults to None.
        condition_num_embeddings: K of the conditioning code map (the codes
            of the level directly above, for a lower level's prior), or
            None. Defaults to None.
        condition_shape: (h, w) (or (h, w, Q') with a depth axis) of the
            conditioning map; H and W must be multiples of h and w.
            Defaults to None.
        condition_channels: channels of the conditioning features. Defaults
            to 32.
        attention_every: N: a causal self-attention block after every N-th
            gated block (blocks N, 2N, … but never after the last), or None
            for none (a plain gated PixelCNN). Must be < ``num_blocks``.
            Attention costs O((H·W)²) memory per map in training; it is meant
            for a hierarchy's small top map. Defaults to None.
        num_attention_heads: heads of each attention block (key size
            ``max(1, hidden_channels // num_attention_heads)``). Defaults to 4.
        **kwargs: base `keras.Model` arguments (``name``, ``dtype``: a dtype
            policy such as ``"mixed_bfloat16"``, given to every layer).

    Raises:
        ValueError: ``num_embeddings``, ``hidden_channels``, ``num_blocks``,
            ``condition_channels`` (and ``num_classes``,
            ``condition_num_embeddings`` when given) not positive ints; a
            ``kernel_size`` that is not an odd positive int ("`kernel_size`
            must be an odd positive integer. Received: kernel_size=4");
            ``code_shape`` / ``condition_shape`` not (height, width) or
            (height, width, depth) of positive ints; ``condition_num_embeddings`` without
            ``condition_shape`` or the reverse; a ``code_shape`` that is not a
            multiple of ``condition_shape``; ``attention_every`` not None or
            a positive int below ``num_blocks``; ``num_attention_heads`` not
            a positive int.

    Reference:
        https://arxiv.org/abs/1606.05328 (gated PixelCNN);
        https://arxiv.org/abs/1906.00446 (its use as a VQ-VAE-2 prior).
    """

    def __init__(
        self,
        num_embeddings,
        code_shape,
        hidden_channels=64,
        num_blocks=6,
        kernel_size=5,
        num_classes=None,
        condition_num_embeddings=None,
        condition_shape=None,
        condition_channels=32,
        attention_every=None,
        num_attention_heads=4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_embeddings = positive_int("num_embeddings", num_embeddings)
        self.code_shape = code_map_shape("code_shape", code_shape)
        self.hidden_channels = positive_int("hidden_channels", hidden_channels)
        self.num_blocks = positive_int("num_blocks", num_blocks)
        self.kernel_size = odd_positive_int("kernel_size", kernel_size)
        self.num_classes = positive_int("num_classes", num_classes, allow_none=True)
        self.condition_num_embeddings = positive_int(
            "condition_num_embeddings", condition_num_embeddings, allow_none=True
        )
        self.condition_shape = code_map_shape(
            "condition_shape", condition_shape, allow_none=True)
        if (self.condition_num_embeddings is None) != (self.condition_shape is None):
            raise ValueError(
                "`condition_num_embeddings` and `condition_shape` go together. Received: "
                f"condition_num_embeddings={condition_num_embeddings!r}, "
                f"condition_shape={condition_shape!r}"
            )
        if self.condition_shape is not None and (
            self.code_shape[0] % self.condition_shape[0]
            or self.code_shape[1] % self.condition_shape[1]
        ):
            raise ValueError(
                "`code_shape` must be a multiple of `condition_shape` in height and width. "
                f"Received: code_shape={self.code_shape}, condition_shape={self.condition_shape}"
            )
        self.condition_channels = positive_int("condition_channels", condition_channels)
        self.attention_every = positive_int("attention_every", attention_every, allow_none=True)
        if self.attention_every is not None and self.attention_every >= self.num_blocks:
            raise ValueError(
                "`attention_every` must be below `num_blocks`: attention follows a gated block "
                "that has a horizontal output (every block but the last). Received: "
                f"attention_every={attention_every!r}, num_blocks={self.num_blocks}"
            )
        self.num_attention_heads = positive_int("num_attention_heads", num_attention_heads)
        conditioned = self.condition_shape is not None

        p = self.hidden_channels
        dtype = self.dtype_policy  # every layer computes under the model's policy
        depth = self.code_depth or 1
        self.embedding = keras.layers.Embedding(
            depth * self.num_embeddings, p, dtype=dtype, name="code_embedding"
        )
        if self.code_depth is not None:  # the head's inputs for depth q (module docstring)
            self.depth_position = keras.layers.Embedding(
                depth, p, dtype=dtype, name="depth_position")
            self.depth_embedding = keras.layers.Embedding(
                depth * self.num_embeddings, p, dtype=dtype, name="depth_embedding")
        if conditioned:
            self.condition_embedding = keras.layers.Embedding(
                (self.condition_depth or 1) * self.condition_num_embeddings,
                self.condition_channels, dtype=dtype, name="condition_embedding",
            )
            self.condition_conv = keras.layers.Conv2D(
                self.condition_channels, 3, padding="same", activation="relu",
                dtype=dtype, name="condition_conv",
            )
        self.blocks = [
            GatedBlock(
                p, kernel_size, first=i == 0, last=i == self.num_blocks - 1,
                num_classes=self.num_classes,
                condition_channels=self.condition_channels if conditioned else None,
                dtype=dtype, name=f"gated_block{i}",
            )
            for i in range(self.num_blocks)
        ]
        self.attention_blocks = [
            CausalSelfAttention(
                self.num_attention_heads, map_shape=self.map_shape,
                dtype=dtype, name=f"attention{i}",
            )
            for i in self.attention_positions()
        ]
        self.head_hidden = keras.layers.Dense(
            p, activation="relu", dtype=dtype, name="head_hidden"
        )
        self.head_logits = keras.layers.Dense(self.num_embeddings, dtype=dtype, name="head_logits")

        self.embedding.build((None,))
        if self.code_depth is not None:
            self.depth_position.build((None,))
            self.depth_embedding.build((None,))
        if conditioned:
            self.condition_embedding.build((None,))
            self.condition_conv.build((None, None, None, self.condition_channels))
        for block in self.blocks:
            block.build((None, None, None, p))
        for attention in self.attention_blocks:
            attention.build((None, *self.map_shape, p))
        self.head_hidden.build((None, p))
        self.head_logits.build((None, p))
        self._nll = keras.metrics.Mean(name="nll")
        self._bits = keras.metrics.Mean(name="bits_per_dim")
        self.built = True

    # ------------------------------------------------------------ inputs
    def attention_positions(self):
        """Indices of the gated blocks an attention block follows (empty without attention)."""
        if self.attention_every is None:
            return []
        n = self.attention_every
        return list(range(n - 1, self.num_blocks - 1, n))

    @property
    def attention(self):
        """{gated block index: the `CausalSelfAttention` that follows it}."""
        return dict(zip(self.attention_positions(), self.attention_blocks))

    @property
    def is_conditioned(self):
        return self.condition_shape is not None

    @property
    def map_shape(self):
        """(H, W): the code map's positions (``code_shape`` without its depth)."""
        return tuple(self.code_shape[:2])

    @property
    def code_depth(self):
        """Q, the codes per position, or None for maps of one code per position."""
        return self.code_shape[2] if len(self.code_shape) == 3 else None

    @property
    def condition_depth(self):
        """Q' of the conditioning map, or None (no depth axis, or no conditioning map)."""
        shape = self.condition_shape
        return shape[2] if shape is not None and len(shape) == 3 else None

    def check_inputs(self, codes=None, labels=None, condition=None):
        """Validates prior inputs; returns (codes, labels, condition) as tensors.

        Shapes are checked always, value ranges when executing eagerly.

        Raises:
            TypeError: non-integer codes, labels or condition.
            ValueError: a wrong shape; labels for a prior without classes or
                none for a class-conditional one; a condition map for a prior
                without one or none for a conditioned one; inputs of different
                batch sizes; in eager mode values out of range.
        """
        if codes is not None:
            codes = self._check_map("codes", codes, self.code_shape, self.num_embeddings)
        if self.num_classes is None:
            if labels is not None:
                raise ValueError(
                    "This prior has no class conditioning (num_classes=None); do not pass "
                    f"labels. Received: labels of shape {tuple(tf.convert_to_tensor(labels).shape)}"
                )
        else:
            if labels is None:
                raise ValueError(
                    f"This prior is class-conditional (num_classes={self.num_classes}): "
                    "pass labels."
                )
            labels = self._check_integer("labels", labels)
            if labels.shape.rank != 1:
                raise ValueError(f"labels must have shape (batch,). Received: shape={tuple(labels.shape)}")
            self._check_range("labels", labels, self.num_classes)
        if self.is_conditioned:
            if condition is None:
                raise ValueError(
                    "This prior is conditioned on a code map of shape "
                    f"{self.condition_shape} (the codes of the level above): pass condition."
                )
            condition = self._check_map(
                "condition", condition, self.condition_shape, self.condition_num_embeddings
            )
        elif condition is not None:
            raise ValueError(
                "This prior has no spatial conditioning; do not pass condition. Received: "
                f"condition of shape {tuple(tf.convert_to_tensor(condition).shape)}"
            )
        sizes = {
            name: int(t.shape[0])
            for name, t in (("codes", codes), ("labels", labels), ("condition", condition))
            if t is not None and t.shape.rank and t.shape[0] is not None
        }
        if len(set(sizes.values())) > 1:
            raise ValueError(f"Inputs disagree on the batch size. Received: {sizes}")
        return codes, labels, condition

    @staticmethod
    def _check_integer(name, value):
        value = tf.convert_to_tensor(value)
        if not value.dtype.is_integer:
            raise TypeError(f"{name} must be integers. Received: dtype={value.dtype.name}")
        return tf.cast(value, tf.int32)

    @staticmethod
    def _check_range(name, value, limit):
        if tf.executing_eagerly() and tf.size(value) > 0:
            low, high = int(tf.reduce_min(value)), int(tf.reduce_max(value))
            if low < 0 or high >= limit:
                raise ValueError(
                    f"{name} must lie in [0, {limit}). Received: values in [{low}, {high}]"
                )

    def _check_map(self, name, value, shape, limit):
        value = self._check_integer(name, value)
        if value.shape.rank != 1 + len(shape) or tuple(value.shape[1:]) != tuple(shape):
            raise ValueError(
                f"{name} must have shape (batch, {', '.join(str(s) for s in shape)}). "
                f"Received: shape={tuple(value.shape)}"
            )
        self._check_range(name, value, limit)
        return value

    @staticmethod
    def _unpack(inputs):
        if isinstance(inputs, dict):
            return inputs.get("codes"), inputs.get("labels"), inputs.get("condition")
        return inputs, None, None

    # ----------------------------------------------------------- forward
    @staticmethod
    def _embed(embedding, codes, num_embeddings, depth):
        """embedding(codes) (..., p), or Σ_q embedding(q·K + codes[..., q]) with a depth axis."""
        if depth is None:
            return embedding(codes)
        offsets = tf.range(depth, dtype=codes.dtype) * num_embeddings
        return tf.reduce_sum(embedding(codes + offsets), axis=-2)

    def embed_codes(self, codes):
        """(..., p) input features of codes (...) or, with a depth axis, (..., Q)."""
        return self._embed(self.embedding, codes, self.num_embeddings, self.code_depth)

    def condition_features(self, condition):
        """(B, H, W, condition_channels) features of the conditioning code map."""
        x = self._embed(self.condition_embedding, condition, self.condition_num_embeddings,
                        self.condition_depth)
        fh = self.code_shape[0] // self.condition_shape[0]
        fw = self.code_shape[1] // self.condition_shape[1]
        x = tf.repeat(tf.repeat(x, fh, axis=1), fw, axis=2)
        return self.condition_conv(x)

    def head(self, skip):
        """Logits from the summed skip connections (any leading shape)."""
        return self.head_logits(self.head_hidden(tf.nn.relu(skip)))

    def depth_inputs(self, codes):
        """(..., Q, p): P_q + Σ_{r<q} D[r·K + codes[..., r]] for every depth q.

        The head's extra input at depth q given the position's own codes
        ``codes`` (..., Q) (teacher forcing; module docstring).
        """
        depth = self.code_depth
        offsets = tf.range(depth, dtype=codes.dtype) * self.num_embeddings
        before = tf.cumsum(self.depth_embedding(codes + offsets), axis=-2, exclusive=True)
        return before + self.depth_position(tf.range(depth))

    def depth_step_logits(self, skip, q, before):
        """float32 logits (B, K) of depth ``q`` (a Python int) at one position.

        ``skip``: (B, p) the position's summed skips; ``before``: (B, p)
        Σ_{r<q} `depth_code_features` of the codes already chosen there.
        """
        position = self.depth_position(tf.constant([q], tf.int32))
        return tf.cast(self.head(skip + position + before), tf.float32)

    def depth_code_features(self, q, code):
        """(B, p) D[q·K + code]: what code ``code`` (B,) chosen at depth ``q`` adds to `before`."""
        return self.depth_embedding(code + q * self.num_embeddings)

    def call(self, inputs, training=False):
        codes, labels, condition = self.check_inputs(*self._unpack(inputs))
        features = self.condition_features(condition) if self.is_conditioned else None
        x = self.embed_codes(codes)
        v, h, skip = x, x, 0.0
        for i, block in enumerate(self.blocks):
            v, h, s = block(v, h, labels=labels, condition=features)
            skip = skip + s
            if i in self.attention:
                h = self.attention[i](h)
        if self.code_depth is None:
            return tf.cast(self.head(skip), tf.float32)
        return tf.cast(self.head(skip[..., None, :] + self.depth_inputs(codes)), tf.float32)

    # ---------------------------------------------------------- training
    def _objective(self, data, training):
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        codes = tf.cast(self._unpack(inputs)[0], tf.int32)
        # In the graph too (check_inputs checks values only eagerly): with a depth
        # axis an out-of-range code would silently read another depth's embedding.
        in_range = tf.debugging.Assert(
            tf.reduce_all((codes >= 0) & (codes < self.num_embeddings)),
            [f"codes must lie in [0, {self.num_embeddings}). Received min and max:",
             tf.reduce_min(codes), tf.reduce_max(codes)])
        with tf.control_dependencies([in_range]):
            codes = tf.identity(codes)
        inputs = {**inputs, "codes": codes} if isinstance(inputs, dict) else codes
        logits = self(inputs, training=training)
        nll = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(codes, tf.int32), logits=logits
            )
        )
        return nll, tf.shape(codes)[0]

    def _update_metrics(self, nll, batch_size, applied=None):
        weight = tf.cast(batch_size, tf.float32)
        if applied is not None:  # a skipped step adds nothing (NaN * 0 is NaN)
            weight = weight * tf.cast(applied, tf.float32)
            nll = tf.where(applied, nll, tf.zeros_like(nll))
        self._nll.update_state(nll, sample_weight=weight)
        self._bits.update_state(nll / math.log(2.0), sample_weight=weight)
        results = self.get_metrics_result()
        results["loss"] = results["nll"]
        return results

    def train_step(self, data):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            nll, batch_size = self._objective(data, training=True)
            scaled = self.optimizer.scale_loss(nll / replicas)
        gradients = tape.gradient(scaled, self.trainable_weights)
        applied = apply_gradients_if_finite(
            self.optimizer, nll, gradients, self.trainable_weights
        )
        logs = dict(self._update_metrics(nll, batch_size, applied))
        logs["nonfinite"] = 1.0 - tf.cast(applied, tf.float32)
        return multi_worker_logs(logs)

    def test_step(self, data):
        return multi_worker_logs(self._update_metrics(*self._objective(data, training=False)))

    @property
    def metrics(self):
        return [self._nll, self._bits]

    # ---------------------------------------------------------- sampling
    def sample(
        self,
        num_samples=None,
        labels=None,
        condition=None,
        temperature=1.0,
        seed=0,
        method="cached",
    ):
        """Draws code maps, int32 (B, H, W) (or (B, H, W, Q) with a depth axis).

        Args:
            num_samples: B; may be omitted when labels or condition give it.
            labels: int (B,) classes for a class-conditional prior.
            condition: int (B, h, w) (or (B, h, w, Q')) codes of the level
                above, for a conditioned prior.
            temperature: a finite number > 0; logits are divided by it.
                Defaults to 1.0.
            seed: int; the same seed gives the same maps. Defaults to 0.
            method: "cached" (fast), "compiled" (the cached sampler's
                loops compiled by XLA: several times faster again once
                compiled, which takes seconds, once per batch size) or
                "naive" (a full forward pass per position; the reference).
                All three give the same maps. Defaults to "cached".

        Raises:
            ValueError: an unknown ``method``, a temperature that is not a
                finite number > 0 (0, negative, NaN, Inf), a ``num_samples``
                that is not a positive int, bad labels / condition (see
                `check_inputs`), or no way to tell the number of samples.
            TypeError: a temperature that is not a number, non-integer
                labels / condition.
        """
        from tfvqvae.models import sampling

        one_of("method", method, sampling.METHODS)
        temperature = sampling.check_temperature(temperature)
        _, labels, condition = self.check_inputs(labels=labels, condition=condition)
        sizes = {t.shape[0] for t in (labels, condition) if t is not None}
        if num_samples is not None:
            sizes.add(positive_int("num_samples", num_samples))
        if len(sizes) != 1:
            raise ValueError(
                "Give the number of samples (num_samples, or labels / condition of one "
                f"batch size). Received batch sizes: {sorted(sizes)}"
            )
        return sampling.sample(
            self, method, sizes.pop(), labels, condition, temperature, int(seed)
        )

    def get_config(self):
        return with_dtype_policy(self, {
            "name": self.name,
            "num_embeddings": self.num_embeddings,
            "code_shape": list(self.code_shape),
            "hidden_channels": self.hidden_channels,
            "num_blocks": self.num_blocks,
            "kernel_size": self.kernel_size,
            "num_classes": self.num_classes,
            "condition_num_embeddings": self.condition_num_embeddings,
            "condition_shape": None if self.condition_shape is None else list(self.condition_shape),
            "condition_channels": self.condition_channels,
            "attention_every": self.attention_every,
            "num_attention_heads": self.num_attention_heads,
        })

    @classmethod
    def from_config(cls, config):
        return from_config_with_policy(cls, config)


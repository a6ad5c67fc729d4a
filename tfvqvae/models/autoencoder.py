"""What every quantised autoencoder shares: input checks, the levels API, the objective,
train/test steps, metrics.

A model is a list of code levels, top first (`VQVAE`: one level, "top";
`HierarchicalVQVAE` / `VQVAE2`: L levels, see `level_names`). A subclass
builds its networks and quantisers in ``__init__``, then calls
``_init_metrics()``, and defines:

* ``_level_quantizers()`` → {level: quantiser}, top level first;
* ``_level_factors()`` → {level: image size / code-map size};
* ``_encode_codes(images)`` → int32 code maps, a tuple top first
  ((batch, h, w), or (batch, h, w, Q) for a level whose quantiser has a
  ``code_depth`` Q);
* ``_decode_codes(codes)`` → float32 images from such a tuple;
* ``_reconstruct(images, training)`` → (float32 reconstruction,
  {level: `QuantizerOutput`});
* ``size_multiple``: what image height and width must be divisible by.

The levels API is defined here once, from those: ``levels``,
``level_num_embeddings``, ``level_code_depths``, ``code_shapes``,
``encode_levels`` and ``decode_levels`` (what code extraction, priors,
samplers and exporters use).

Codes with a depth axis. A level whose quantiser has a ``code_depth`` Q
(`ResidualVectorQuantizer`: Q stages; `GroupedVectorQuantizer`: Q heads)
codes each position of its map with Q indices in [0, K): its code maps are
int32 (batch, h, w, Q), ``code_shapes`` gives (h, w, Q) and
``level_code_depths`` Q. Every other level (`VectorQuantizer`,
`VectorQuantizerEMA`, `FiniteScalarQuantizer`, `LookupFreeQuantizer`) has
maps (batch, h, w), shape (h, w) and depth None. The quantised latents of a
depth level (its ``lookup``: D-vectors) feed the levels below and the
decoder exactly as a scalar level's do.

Objective per batch (images x in [0, 1], reconstruction x̂):

    L = mean((x − x̂)²) / data_variance + Σ_levels (codebook_loss + commitment_loss)

``data_variance=None`` (the default) estimates the variance from the data:
on the first training step whose batch is finite, the variance of every
pixel value of the global batch (sums all-reduced across replicas, so every
replica stores the same number),

    σ² = Σ x² / n − (Σ x / n)²,   n = pixels · channels · images,

is stored in the non-trainable weight ``estimated_variance`` (saved with
the model) and used from then on; evaluation before any training step uses
the batch's own variance. Dividing by σ² gives Sonnet's normalised MSE
without the user computing it; with 1.0 the reconstruction term of MNIST-like
data (σ² ≈ 0.1) is ten times weaker than the commitment term and the
codebook collapses (bench/codebook_defaults.py).

The quantiser terms are added here, in ``train_step``, rather than with
``add_loss``: this keeps multi-replica training exact. Each replica divides
its loss by the number of replicas because Keras sums the replicas'
gradients, so the update equals a single-device step on the global batch.

Non-finite steps: when the loss or a gradient of a training step is NaN or
Inf on any replica, the step is skipped whole: no optimizer update (weights,
Adam moments and ``optimizer.iterations`` stay as they were) and no EMA
codebook update (`VectorQuantizerEMA` checks its own inputs). The step's
logs carry ``nonfinite`` = 1.0 (0.0 otherwise) and the skipped step adds
nothing to the epoch's metrics; `tfvqvae.training.checkpoints.StopOnNonFinite`
turns the flag into an error that names the step.

Metrics: ``loss``, ``mse`` and, per level, ``commitment_loss``,
``codebook_loss`` (gradient quantisers only; for `LookupFreeQuantizer` its
entropy penalty), ``perplexity`` (per batch),
``usage`` (% of codes used in the epoch) and ``dead_codes``; prefixed with
the level's name and ``_`` (``top_``, ``bottom_``, …) when there is more
than one level. Epoch values are means per image.

For a depth level (Q codebooks of K codes, counts (Q, K)): ``perplexity`` is
the quantiser's own, the mean over the Q stages / heads of each one's
perplexity; ``usage`` and ``dead_codes`` are the means over the Q codebooks
of each codebook's usage and dead codes (`CodebookUsage` with
``num_codebooks=Q``: usage = 100 · Σ_q used_q / (Q K), dead = K − Σ_q used_q / Q,
so usage = 100 (K − dead) / K as for a scalar level). With a shared codebook
(one (K, D) codebook for every stage) the counts are pooled over the stages
first: a code is used when any stage chose it.
"""

import keras
import tensorflow as tf

from tfvqvae.distribute import multi_worker_logs
from tfvqvae.layers.cross_replica import sum_across_replicas
from tfvqvae.layers.finite_scalar_quantizer import FiniteScalarQuantizer
from tfvqvae.layers.grouped_vector_quantizer import GroupedVectorQuantizer
from tfvqvae.layers.lookup_free_quantizer import LookupFreeQuantizer
from tfvqvae.layers.residual_vector_quantizer import ResidualVectorQuantizer
from tfvqvae.layers.vector_quantizer import VectorQuantizer
from tfvqvae.models.dtype_config import from_config_with_policy
from tfvqvae.layers.vector_quantizer_ema import VectorQuantizerEMA
from tfvqvae.metrics import CodebookUsage
from tfvqvae.validation import finite_float
from tfvqvae.validation import positive_int

# Smallest variance the reconstruction term is divided by when it is
# estimated from a batch (a batch of one constant colour has none).
VARIANCE_FLOOR = 1e-6

def unpack_images(data):
    """Images from a batch that is ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, w)``."""
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    return x


# The quantiser classes a model accepts (`VectorQuantizerEMA` is a
# `VectorQuantizer`). Each has ``num_embeddings``, ``embedding_dim``,
# ``quantize_with_losses``, ``indices`` and ``lookup``; the depth quantisers
# also ``code_depth`` (their codes carry a trailing axis of that size).
QUANTIZER_CLASSES = (VectorQuantizer, FiniteScalarQuantizer, LookupFreeQuantizer,
                     ResidualVectorQuantizer, GroupedVectorQuantizer)


def code_depth(quantizer):
    """Q of a quantiser whose codes have a trailing depth axis, or None (scalar codes)."""
    depth = getattr(quantizer, "code_depth", None)
    return None if depth is None else int(depth)


def quantizer_argument(name, value, seed=0, dtype=None):
    """A quantiser from an instance, its serialized config, or None (the default EMA one).

    ``dtype`` is the dtype policy of a default quantiser (the model's);
    an instance or a config keeps its own.

    Raises:
        TypeError: ``value`` (or what its config deserializes to) is not a
            `VectorQuantizer`, `VectorQuantizerEMA`, `FiniteScalarQuantizer`,
            `LookupFreeQuantizer`, `ResidualVectorQuantizer` or
            `GroupedVectorQuantizer`.
    """
    if value is None:
        value = VectorQuantizerEMA(
            num_embeddings=512, embedding_dim=64, seed=seed, dtype=dtype
        )
    elif isinstance(value, dict):
        value = keras.layers.deserialize(value)
    if not isinstance(value, QUANTIZER_CLASSES):
        raise TypeError(
            f"`{name}` must be a tfvqvae VectorQuantizer, VectorQuantizerEMA, "
            "FiniteScalarQuantizer, LookupFreeQuantizer, ResidualVectorQuantizer or "
            f"GroupedVectorQuantizer. Received: {name}={value!r}"
        )
    if not value.built:
        value.build((None, None, None, value.embedding_dim))
    return value


# Eager image checks: values outside [IMAGE_MIN, IMAGE_MAX] are refused.
# The margin around [0, 1] lets through reconstructions (not clipped) and
# slightly augmented images; [0, 255] and [-1, 1] images are refused.
IMAGE_MIN = -0.5
IMAGE_MAX = 1.5


def check_image_values(images, kind):
    """Refuses NaN / Inf pixels and values far outside [0, 1] (eager tensors only).

    Args:
        images: float tensor.
        kind: the model's class name, for the message.

    Raises:
        ValueError: if ``images`` holds NaN or Inf, or a value outside
            [`IMAGE_MIN`, `IMAGE_MAX`] (e.g. images in [0, 255]).

    Inside a ``tf.function`` (``fit``, ``predict``, exported signatures) it
    does nothing: values are not known while tracing.
    """
    if not tf.executing_eagerly() or int(tf.size(images)) == 0:
        return
    values = tf.cast(images, tf.float32)
    finite = tf.math.is_finite(values)
    if not bool(tf.reduce_all(finite)):
        bad = int(tf.reduce_sum(tf.cast(~finite, tf.int32)))
        raise ValueError(
            f"{kind} expects finite images in [0, 1], but the images contain NaN "
            f"or Inf. Received: images with {bad} non-finite value(s) out of "
            f"{int(tf.size(values))}"
        )
    low, high = float(tf.reduce_min(values)), float(tf.reduce_max(values))
    if low < IMAGE_MIN or high > IMAGE_MAX:
        hint = (
            "they look like [0, 255] pixels: divide them by 255"
            if high > IMAGE_MAX
            else "map [-1, 1] images to [0, 1] with (x + 1) / 2"
        )
        raise ValueError(
            f"{kind} expects images in [0, 1] (values in [{IMAGE_MIN}, {IMAGE_MAX}] "
            f"are accepted); {hint}. Received: images with values in [{low:g}, {high:g}]"
        )


def images_finite(images):
    """Scalar bool: this replica's ``images`` hold no NaN or Inf.

    The quantisers gate their state updates on it as well as on their own
    inputs: a backend may map NaN to a finite value inside the encoder (oneDNN's
    fused ReLU returns 0 for NaN), so a bad batch can reach a quantiser as
    finite encoder outputs.
    """
    return tf.reduce_all(tf.math.is_finite(tf.cast(images, tf.float32)))


def apply_gradients_if_finite(optimizer, loss, gradients, variables):
    """Applies ``gradients`` only when they and ``loss`` are finite on every replica.

    Call it in a train step (replica context). A non-finite step is skipped
    whole: the optimizer's slots and ``iterations`` are not touched (scaling
    the gradients by zero would still move Adam's moments). Under a
    `keras.optimizers.LossScaleOptimizer` only the loss is checked: that
    optimizer skips non-finite scaled gradients itself and lowers its scale.

    Args:
        optimizer: a built or unbuilt Keras optimizer.
        loss: float scalar, the replica's loss (unscaled).
        gradients: list of gradients (None entries are ignored).
        variables: the matching variables.

    Returns:
        bool scalar tensor: True when the step was applied (the same on
        every replica).
    """
    checks = [tf.reduce_all(tf.math.is_finite(tf.cast(loss, tf.float32)))]
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        checks += [
            tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None
        ]
    local_bad = 1.0 - tf.cast(tf.reduce_all(tf.stack(checks)), tf.float32)
    finite = tf.equal(sum_across_replicas(local_bad), 0.0)
    if not optimizer.built:  # build outside the cond: no variable creation in a branch
        optimizer.build(variables)

    def apply(gradients):
        optimizer.apply_gradients(zip(gradients, variables))

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, lambda: apply(gradients), lambda: None)
    else:
        # MirroredStrategy: apply_gradients calls merge_call, which TensorFlow
        # refuses inside a replica-context cond; the cond runs in cross-replica
        # context instead (as keras.optimizers.LossScaleOptimizer does). The
        # gradients go through merge_call's args: each replica applies its own.
        def cross_replica(distribution, finite, gradients):
            # Every replica holds the same all-reduced flag: take the first.
            first = distribution.experimental_local_results(finite)[0]

            def apply_on_every_replica():
                distribution.extended.call_for_each_replica(apply, args=(gradients,))

            tf.cond(first, apply_on_every_replica, lambda: None)

        tf.distribute.get_replica_context().merge_call(
            cross_replica, args=(finite, list(gradients))
        )
    return finite


class QuantizedAutoencoder(keras.Model):
    """Base class of `VQVAE` and `HierarchicalVQVAE` (see the module docstring)."""

    size_multiple = 1

    def _init_sizes(self, image_channels, hidden_channels, residual_channels,
                    num_residual_layers, data_variance):
        """Validates and stores the constructor arguments both models share."""
        self.image_channels = positive_int("image_channels", image_channels)
        self.hidden_channels = positive_int("hidden_channels", hidden_channels)
        self.residual_channels = positive_int("residual_channels", residual_channels)
        self.num_residual_layers = positive_int("num_residual_layers", num_residual_layers)
        if data_variance is None:
            self.data_variance = None
            self.estimated_variance = keras.Variable(
                initializer="zeros", shape=(), dtype="float32", trainable=False,
                autocast=False, aggregation="mean", synchronization="on_read",
                name="estimated_variance",
            )
        else:
            self.data_variance = finite_float(
                "data_variance", data_variance, low=0, low_open=True
            )

    @property
    def reconstruction_variance(self):
        """The float the reconstruction MSE is divided by: ``data_variance`` when given,
        else the variance estimated on the first training step (None before it)."""
        if self.data_variance is not None:
            return self.data_variance
        value = float(keras.ops.convert_to_numpy(self.estimated_variance))
        return value if value > 0 else None

    def _variance_for(self, images, training):
        """The divisor of the MSE for this batch (see the module docstring)."""
        if self.data_variance is not None:
            return self.data_variance
        n = tf.cast(tf.size(images), tf.float32)
        sums = sum_across_replicas(tf.stack([
            tf.reduce_sum(images), tf.reduce_sum(tf.square(images)), n]))
        mean = sums[0] / tf.maximum(sums[2], 1.0)
        batch_variance = tf.maximum(
            sums[1] / tf.maximum(sums[2], 1.0) - tf.square(mean), VARIANCE_FLOOR)
        stored = tf.convert_to_tensor(self.estimated_variance)
        if training:
            first = tf.logical_and(
                tf.equal(stored, 0.0),
                tf.reduce_all(tf.math.is_finite(sums)),  # all-reduced: NaN anywhere is NaN here
            )
            stored = tf.where(first, batch_variance, stored)
            self.estimated_variance.assign(stored)
        return tf.where(stored > 0.0, stored, batch_variance)

    def _init_metrics(self):
        quantizers = self._level_quantizers()
        single = len(quantizers) == 1
        self._prefix = {level: "" if single else f"{level}_" for level in quantizers}
        names = ["loss", "mse"]
        for level, quantizer in quantizers.items():
            prefix = self._prefix[level]
            names.append(f"{prefix}commitment_loss")
            # The EMA and FSQ quantizers have no codebook term; LFQ's is its
            # entropy penalty.
            if quantizer.trainable_weights or isinstance(quantizer, LookupFreeQuantizer):
                names.append(f"{prefix}codebook_loss")
            names.append(f"{prefix}perplexity")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self._usage = {
            level: CodebookUsage(
                quantizer.num_embeddings, prefix=self._prefix[level],
                name=f"{self._prefix[level]}codebook_usage",
                num_codebooks=self._usage_codebooks(quantizer),
            )
            for level, quantizer in quantizers.items()
        }

    @staticmethod
    def _usage_codebooks(quantizer):
        """``num_codebooks`` of a level's `CodebookUsage`: None for scalar codes and for
        a depth quantiser with one shared codebook (its counts are pooled), else Q."""
        depth = code_depth(quantizer)
        if depth is None or getattr(quantizer, "shared_codebook", False):
            return None
        return depth

    def _usage_counts(self, level, counts):
        """A level's counts as its `CodebookUsage` takes them: (K,), or (Q, K) per codebook.

        A shared codebook's (Q, K) stage counts are summed into (K,).
        """
        quantizer = self._level_quantizers()[level]
        if code_depth(quantizer) is not None and self._usage_codebooks(quantizer) is None:
            return tf.reduce_sum(counts, axis=0)
        return counts

    # ------------------------------------------------------------ checks
    def _check_images(self, images):
        """``images`` as a float tensor (batch, H, W, image_channels), checked.

        Raises:
            TypeError: non-float images.
            ValueError: a wrong rank, channel count or size; in eager mode
                also NaN / Inf values or values outside [-0.5, 1.5]
                (`check_image_values`).
        """
        images = tf.convert_to_tensor(images)
        kind = type(self).__name__
        if not images.dtype.is_floating:
            raise TypeError(
                f"{kind} expects float images in [0, 1]. "
                f"Received: images with dtype={images.dtype.name}"
            )
        shape = tuple(images.shape)
        if len(shape) != 4 or shape[-1] != self.image_channels:
            raise ValueError(
                f"{kind} expects images of shape (batch, height, width, "
                f"{self.image_channels}). Received: images with shape={shape}"
            )
        for size in shape[1:3]:
            if size is not None and size % self.size_multiple:
                raise ValueError(
                    f"Image height and width must be divisible by {self.size_multiple} "
                    f"({self._size_reason}). Received: images with shape={shape}"
                )
        check_image_values(images, kind)
        return images

    @staticmethod
    def _check_codes(codes, name="codes", depth=None):
        """``codes`` as an integer tensor of rank 3, or of rank 4 with a last axis of ``depth``.

        Raises:
            TypeError: non-integer codes.
            ValueError: a rank other than 3 (``depth`` None), or other than 4
                or a last axis other than ``depth``.
        """
        codes = tf.convert_to_tensor(codes)
        if not codes.dtype.is_integer:
            raise TypeError(
                f"Codes must be integers. Received: {name} with dtype={codes.dtype.name}"
            )
        shape = tuple(codes.shape)
        if depth is None:
            if codes.shape.rank != 3:
                raise ValueError(
                    "Codes must have shape (batch, height, width). "
                    f"Received: {name} with shape={shape}"
                )
        elif codes.shape.rank != 4 or shape[-1] != depth:
            raise ValueError(
                f"Codes of a level with a depth axis must have shape (batch, height, width, "
                f"{depth}): {depth} codes per position (the quantiser's code_depth). "
                f"Received: {name} with shape={shape}"
            )
        return codes

    # ----------------------------------------------------------- forward
    def call(self, inputs, training=False):
        return self._reconstruct(inputs, training)[0]

    # ------------------------------------------------------ levels API
    # One definition for every model, so code extraction, priors, samplers
    # and exporters treat a VQVAE (one level, "top") and a hierarchy alike.
    @property
    def levels(self):
        """Names of the code levels, top first (``("top",)``, ``("top", "bottom")``, …)."""
        return tuple(self._level_quantizers())

    @property
    def level_num_embeddings(self):
        """{level: K} of each code level (K per stage / head for a depth level)."""
        return {level: q.num_embeddings for level, q in self._level_quantizers().items()}

    @property
    def level_code_depths(self):
        """{level: Q or None}, top first: Q, the codes per position of a level whose
        quantiser has a ``code_depth`` (`ResidualVectorQuantizer`,
        `GroupedVectorQuantizer`), None for a level of one code per position."""
        return {level: code_depth(q) for level, q in self._level_quantizers().items()}

    def code_shapes(self, image_size):
        """{level: shape of one image's code map} for images of ``image_size`` (H, W), top first.

        The shape is (h, w), or (h, w, Q) for a level with a depth axis
        (``level_code_depths``): a tuple of ints.
        """
        height, width = image_size
        depths = self.level_code_depths
        return {
            level: (height // factor, width // factor)
            + (() if depths[level] is None else (depths[level],))
            for level, factor in self._level_factors().items()
        }

    def _check_level_codes(self, level, codes, name=None):
        """One level's codes checked for dtype and rank (and depth): `_check_codes`."""
        return self._check_codes(codes, name or f"{level}_codes", self.level_code_depths[level])

    def encode_levels(self, images):
        """{level: int32 code map} of ``images``, top first.

        A map is (batch, h, w), or (batch, h, w, Q) for a level with a depth
        axis (``code_shapes`` gives the shape after the batch axis).

        Raises:
            TypeError: non-float images.
            ValueError: a wrong shape; in eager mode also NaN / Inf values or
                values outside [-0.5, 1.5] (`check_image_values`).
        """
        shape = getattr(images, "shape", None)
        if shape is not None and len(shape) == 4 and shape[0] == 0 and None not in shape[1:3]:
            # An empty batch has empty code maps. Not run through the encoder:
            # oneDNN's convolutions (TF on x86 CPUs) fail on a batch of 0.
            self._check_images(images)
            return {level: tf.zeros((0, *size), tf.int32)
                    for level, size in self.code_shapes(tuple(shape[1:3])).items()}
        return dict(zip(self.levels, self._encode_codes(images)))

    def decode_levels(self, codes):
        """float32 images (batch, H, W, image_channels) from ``{level: integer code map}``.

        Every level's map is (batch, h, w), or (batch, h, w, Q) for a level
        with a depth axis (as ``encode_levels`` gives them), values in [0, K).

        Raises:
            KeyError: a level of the model is missing from ``codes``.
            TypeError: non-integer codes.
            ValueError: a wrong rank or shape (a missing or wrong depth axis
                included); in eager mode codes out of range.
        """
        return self._decode_codes(tuple(codes[level] for level in self.levels))

    # ---------------------------------------------------------- training
    def _objective(self, images, training):
        images = tf.cast(self._check_images(images), tf.float32)
        reconstruction, outputs = self._reconstruct(images, training)
        mse = tf.reduce_mean(tf.square(images - reconstruction))
        loss = mse / self._variance_for(images, training)
        for output in outputs.values():
            loss = loss + output.codebook_loss + output.commitment_loss
        return loss, mse, outputs

    def _update_metrics(self, images, loss, mse, outputs, applied=None):
        # Weighted by batch size: epoch values are per-image means even when
        # the last batch is smaller. A skipped step (applied False) adds
        # nothing: weight 0 and its values replaced by 0 (NaN * 0 is NaN).
        batch_size = tf.cast(tf.shape(images)[0], tf.float32)
        if applied is not None:
            batch_size = batch_size * tf.cast(applied, tf.float32)
        values = {"loss": loss, "mse": mse}
        for level, output in outputs.items():
            prefix = self._prefix[level]
            values[f"{prefix}commitment_loss"] = output.commitment_loss
            values[f"{prefix}codebook_loss"] = output.codebook_loss
            values[f"{prefix}perplexity"] = output.perplexity
            counts = self._usage_counts(level, output.counts)
            if applied is not None:
                counts = tf.where(applied, counts, tf.zeros_like(counts))
            self._usage[level].update_state(counts)
        for name, tracker in self._trackers.items():
            value = values[name]
            if applied is not None:
                value = tf.where(applied, value, tf.zeros_like(value))
            tracker.update_state(value, sample_weight=batch_size)
        return self.get_metrics_result()

    def train_step(self, data):
        images = unpack_images(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss, mse, outputs = self._objective(images, training=True)
            # Keras sums gradients over replicas: scale so the sum is the
            # gradient of the global-batch mean.
            scaled_loss = self.optimizer.scale_loss(loss / replicas)
        gradients = tape.gradient(scaled_loss, self.trainable_weights)
        # A NaN / Inf loss or gradient never reaches the weights or the
        # optimizer state (the EMA quantizer guards its own update).
        applied = apply_gradients_if_finite(
            self.optimizer, loss, gradients, self.trainable_weights
        )
        logs = dict(self._update_metrics(images, loss, mse, outputs, applied))
        logs["nonfinite"] = 1.0 - tf.cast(applied, tf.float32)
        return multi_worker_logs(logs)

    def test_step(self, data):
        images = unpack_images(data)
        loss, mse, outputs = self._objective(images, training=False)
        return multi_worker_logs(self._update_metrics(images, loss, mse, outputs))

    @property
    def metrics(self):
        return list(self._trackers.values()) + list(self._usage.values())

    @classmethod
    def from_config(cls, config):
        return from_config_with_policy(cls, config)

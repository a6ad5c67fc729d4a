"""Finite scalar quantisation (FSQ): a fixed grid of codes instead of a learned codebook.

Each of the D = len(levels) channels is bounded so that it can take exactly
L_i values, then rounded with a straight-through gradient (Mentzer et al.
2023, section 3 and the code of their appendix A.1), here with
ε = `BOUND_EPSILON` = 1e-3:

    h_i      = (L_i − 1)(1 − ε) / 2
    o_i      = 1/2 if L_i is even, else 0            (the half-offset of even L_i)
    s_i      = tan(o_i / h_i)
    f(z)_i   = tanh(z_i + s_i) · h_i − o_i            (the bound)
    ẑ_i      = round(f(z)_i)   ∈ {−⌊L_i/2⌋, …, L_i − 1 − ⌊L_i/2⌋}
    output_i = (f + sg[ẑ − f])_i / ⌊L_i/2⌋            (forward ẑ_i / ⌊L_i/2⌋, in [−1, 1])

so d output_i / d z_i = h_i (1 − tanh²(z_i + s_i)) / ⌊L_i/2⌋: the rounding is
straight-through, the bound is differentiated. ``round`` is round-half-to-even
(as ``jnp.round`` and TFLite's and ONNX's ROUND). s_i is the paper's: with
tan, f(0) = −0.0004 for L = 4, −0.00005 for L = 6 and less for larger even L
(atanh(o_i / h_i) would give f(0) = 0 exactly); for L = 2, s = tan(1.001)
puts the one threshold at z = −s ≈ −1.56, not 0 (`LookupFreeQuantizer` is
the symmetric two-level choice).

The implied codebook is the product C = C_1 × … × C_D of the per-channel
values, K = Π L_i codes, and a code's index is mixed-radix with channel 0 the
least significant digit (the paper's ``codes_to_indexes``):

    d_i   = ẑ_i + ⌊L_i/2⌋ ∈ [0, L_i)
    index = Σ_i d_i · b_i,   b_i = Π_{j<i} L_j

There are no weights and no codebook or commitment loss: both loss terms of
the `QuantizerOutput` are zeros, and the layer has no state a training step
(finite or not) could change.

Reference: Mentzer, Minnen, Agustsson, Tschannen, "Finite Scalar Quantization:
VQ-VAE Made Simple", ICLR 2024, https://arxiv.org/abs/2309.15505
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfvqvae.layers.cross_replica import sum_across_replicas
from tfvqvae.layers.kmeans import segment_sum
from tfvqvae.layers.vector_quantizer import QuantizerOutput
from tfvqvae.layers.vector_quantizer import check_code_range
from tfvqvae.metrics import perplexity_from_counts
from tfvqvae.validation import float_vectors
from tfvqvae.validation import integer_indices
from tfvqvae.validation import is_int
from tfvqvae.validation import vectors_shape

# ε of the bound (the paper's appendix A.1): keeps f(z) strictly inside the
# rounding range, so no value rounds to an (L_i + 1)-th level.
BOUND_EPSILON = 1e-3

# Codes are int32: K may be at most 2**31 − 1.
MAX_NUM_EMBEDDINGS = 2**31 - 1

# Table 1 of the FSQ paper: the levels it recommends per target codebook size.
RECOMMENDED_LEVELS = {
    2**8: (8, 6, 5),
    2**10: (8, 5, 5, 5),
    2**12: (7, 5, 5, 5, 5),
    2**14: (8, 8, 8, 6, 5),
    2**16: (8, 8, 8, 5, 5, 5),
}

# NB: a divisor that leaves every int32 quotient unchanged: the most
# significant digit is not reduced, so an index >= K (or < 0) gives a digit
# outside its channel's range, which `ProductQuantizer.lookup` turns into a
# failing gather (in TFLite and ONNX too, where assertions are dropped).
_NO_MODULUS = 2**31 - 1


class ProductQuantizer(keras.layers.Layer):
    """Base of the scalar quantisers: codebook C = C_1 × … × C_D, one value set per channel.

    A subclass calls ``_init_product(levels)`` in ``__init__`` and defines
    ``_quantize(z)`` → (float32 straight-through output, int32 digits
    (…, D)), ``_digit_values(digits)`` → float32 code vectors,
    ``_code_digits(codes)`` → int32 digits of code vectors, and
    ``_loss_terms(z, quantized)`` → (codebook_loss, commitment_loss). This
    class gives everything the models use: ``num_embeddings``,
    ``embedding_dim``, ``quantize_with_losses``, ``indices``, ``lookup``,
    ``codes_to_indices``, ``call`` and ``compute_output_shape``. Indices are
    mixed-radix with channel 0 the least significant digit:
    index = Σ_i d_i Π_{j<i} L_j.

    ``quantize_with_losses`` returns per-code ``counts``, a (K,) float32
    vector (and the models' usage metric holds another): 4 K bytes each.
    """

    def _init_product(self, levels):
        """Sets K, D and the radix basis from the per-channel value counts L_i."""
        levels = [int(level) for level in levels]
        self.embedding_dim = len(levels)
        self.num_embeddings = math.prod(levels)
        self._sizes = np.asarray(levels, np.int32)
        self._basis = np.cumprod([1] + levels[:-1]).astype(np.int32)  # b_i = Π_{j<i} L_j
        self._moduli = np.asarray(levels[:-1] + [_NO_MODULUS], np.int32)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    # ----------------------------------------------------------------- build
    def build(self, input_shape):
        input_shape = vectors_shape(
            type(self).__name__, input_shape, self.embedding_dim, received="input_shape"
        )
        super().build(input_shape)

    # ---------------------------------------------------------------- public
    def call(self, inputs, training=None):
        outputs = self.quantize_with_losses(inputs, training=training)
        if getattr(self, "add_losses", False):
            self.add_loss(outputs.loss)
        return outputs.quantized

    def quantize_with_losses(self, inputs, training=False, batch_finite=None):
        """Quantises ``inputs`` and returns a `QuantizerOutput`.

        The layer has no state, so ``training`` and ``batch_finite`` change
        nothing (they are accepted so the models call every quantiser alike).
        ``counts`` (float32, (K,)) are summed across the replicas of a
        multi-replica strategy.

        Args:
            inputs: float (…, D) encoder outputs.
            training: unused (no state).
            batch_finite: unused (no state to protect from a non-finite batch).
        """
        del training, batch_finite  # no state
        inputs = self._check_inputs(inputs)
        z = tf.cast(inputs, tf.float32)
        quantized, digits = self._quantize(z)
        flat_indices = tf.reshape(self._digits_to_indices(digits), [-1])  # (N,)
        counts = sum_across_replicas(
            segment_sum(tf.ones_like(flat_indices, tf.float32), flat_indices, self.num_embeddings)
        )
        codebook_loss, commitment_loss = self._loss_terms(z, quantized)
        return QuantizerOutput(
            quantized=tf.cast(quantized, inputs.dtype),
            indices=tf.reshape(flat_indices, tf.shape(z)[:-1]),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            counts=counts,
            perplexity=perplexity_from_counts(counts),
        )

    def indices(self, inputs):
        """int32 codes of ``inputs``: shape ``inputs.shape[:-1]``, values in [0, K).

        Non-finite inputs give in-range codes (each channel's digit is
        clipped to [0, L_i)). One loop-free graph of elementwise ops and a
        sum, which SavedModel, TFLite (built-in ops) and ONNX export.

        Raises:
            TypeError: for non-floating inputs.
            ValueError: when the last axis is not ``embedding_dim`` or the
                rank is below 2.
        """
        inputs = self._check_inputs(inputs)
        _, digits = self._quantize(tf.cast(inputs, tf.float32))
        return self._digits_to_indices(digits)

    def lookup(self, indices, validate=True):
        """float32 code vectors for integer ``indices``: shape ``indices.shape + (D,)``.

        Digit i of an index is ``(index // b_i) mod L_i``, mapped to its
        channel's value. The last digit is not reduced, and a one-entry
        gather at ``last digit // L_{D−1}`` guards the result: an index
        outside [0, K) makes that gather fail in every runtime (SavedModel,
        TFLite, ONNX), as a codebook lookup does, instead of wrapping round
        to a valid code.

        Args:
            indices: integer tensor with values in [0, K).
            validate: check the range (an eager ``ValueError``, a graph-mode
                ``InvalidArgumentError``). Defaults to True.

        Raises:
            TypeError: non-integer indices.
            ValueError: (eager, ``validate``) an index outside [0, K),
                naming the smallest and largest received.
        """
        indices = integer_indices(tf.convert_to_tensor(indices))
        if validate:  # before the cast: int64 values beyond int32 must not wrap
            indices = self._check_range(indices)
        digits = tf.math.floormod(
            tf.math.floordiv(tf.cast(indices, tf.int32)[..., None], self._basis), self._moduli
        )  # (…, D)
        # 1.0 for every index in [0, K); any other fails the gather.
        guard = tf.gather(tf.ones([1], tf.float32), digits[..., -1] // self._sizes[-1])
        return self._digit_values(digits) * guard[..., None]

    def codes_to_indices(self, codes):
        """int32 indices of code vectors ``codes`` (…, D), the inverse of ``lookup``.

        ``codes`` should be points of the codebook (``lookup``'s or the
        quantised output's values); any other vector is mapped to a nearby
        code (each channel rounded to its nearest value, then clipped).

        Raises:
            TypeError: for non-floating codes.
            ValueError: when the last axis is not ``embedding_dim`` or the
                rank is below 2.
        """
        codes = self._check_inputs(codes, name="codes")
        return self._digits_to_indices(self._code_digits(tf.cast(codes, tf.float32)))

    # --------------------------------------------------------------- helpers
    def _digits_to_indices(self, digits):
        """Σ_i d_i b_i in int32 (exact: K <= 2**31 − 1)."""
        return tf.reduce_sum(digits * self._basis, axis=-1)

    def _clip_digits(self, digits):
        # NaN cast to int32 is platform-defined: the clip keeps every digit, so
        # every index, in range whatever the inputs held.
        return tf.clip_by_value(digits, 0, self._sizes - 1)

    def _check_inputs(self, inputs, name="inputs"):
        return float_vectors(
            type(self).__name__, tf.convert_to_tensor(inputs), self.embedding_dim, name
        )

    def _check_range(self, indices):
        return check_code_range(indices, self.num_embeddings)

    def compute_output_shape(self, input_shape):
        return input_shape


def _check_levels(levels):
    fail = ValueError(
        "`levels` must be a non-empty list of integers >= 2 (the number of values "
        f"of each channel) whose product is at most {MAX_NUM_EMBEDDINGS} (codes are "
        f"int32). Received: levels={levels!r}"
    )
    if not isinstance(levels, (list, tuple)) or not levels:
        raise fail
    if not all(is_int(level, 2) for level in levels):
        raise fail
    if math.prod(levels) > MAX_NUM_EMBEDDINGS:
        raise fail
    return [int(level) for level in levels]


@keras.saving.register_keras_serializable(package="tfvqvae")
class FiniteScalarQuantizer(ProductQuantizer):
    """Finite scalar quantiser: bound each channel, round it (straight-through).

    A drop-in replacement for `VectorQuantizer` in the models
    (``VQVAE(quantizer=FiniteScalarQuantizer([8, 5, 5, 5]))``) with no
    codebook to learn or collapse: the codes are the fixed grid of the
    module docstring, K = Π levels, D = len(levels). The encoder's last
    layer must output D channels.

    Computed in float32 under a mixed-precision policy; the output has the
    inputs' dtype (the layer's compute dtype inside a model).

    Args:
        levels: list of ints L_i >= 2, the number of values of channel i
            (e.g. ``[8, 5, 5, 5]``, K = 1000; see `recommended_levels`).
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: float tensor (..., D).
        training: unused (no state).

    Input shape:
        (..., D) with rank >= 2, e.g. (batch, height, width, D).

    Output shape:
        Same as the input: the normalised codes ẑ_i / ⌊L_i/2⌋ in [−1, 1].

    Attributes:
        num_embeddings: K = Π L_i.
        embedding_dim: D = len(levels).
        levels: the levels, a list of ints.

    Raises:
        ValueError: from the constructor, for ``levels`` that is not a
            non-empty list of ints >= 2 with product <= 2**31 − 1, naming
            the value ("... Received: levels=[8, 1]"). From a call: inputs
            of rank < 2 or whose last axis is not D.
        TypeError: from a call, for non-floating inputs.

    Example:

    >>> import numpy as np
    >>> fsq = FiniteScalarQuantizer([8, 5, 5, 5])
    >>> fsq.num_embeddings, fsq.embedding_dim
    (1000, 4)
    >>> z = np.random.rand(2, 3, 3, 4).astype("float32")
    >>> fsq.indices(z).shape
    TensorShape([2, 3, 3])

    Reference:
        Mentzer, Minnen, Agustsson, Tschannen, "Finite Scalar Quantization:
        VQ-VAE Made Simple", ICLR 2024, section 3 and appendix A.1,
        https://arxiv.org/abs/2309.15505
    """

    def __init__(self, levels=(8, 5, 5, 5), **kwargs):
        super().__init__(**kwargs)
        self.levels = _check_levels(levels)
        levels = np.asarray(self.levels, np.float64)
        self._half_width = np.floor(levels / 2)  # ⌊L/2⌋
        self._init_product(self.levels)
        half_l = (levels - 1) * (1 - BOUND_EPSILON) / 2  # h
        offset = np.where(self._sizes % 2 == 0, 0.5, 0.0)  # o
        self._half_l = half_l.astype(np.float32)
        self._offset = offset.astype(np.float32)
        self._shift = np.tan(offset / half_l).astype(np.float32)  # s = tan(o / h)
        self._half_width_i = self._half_width.astype(np.int32)
        self._half_width_f = self._half_width.astype(np.float32)

    @classmethod
    def recommended_levels(cls, codebook_size):
        """The levels Table 1 of the FSQ paper recommends for a codebook of about ``codebook_size``.

        Args:
            codebook_size: one of 2**8, 2**10, 2**12, 2**14, 2**16.

        Returns:
            A list of ints: [8, 6, 5] (K = 240), [8, 5, 5, 5] (1000),
            [7, 5, 5, 5, 5] (4375), [8, 8, 8, 6, 5] (15360) or
            [8, 8, 8, 5, 5, 5] (64000).

        Raises:
            ValueError: for any other size, naming it and the sizes the table has.
        """
        if not is_int(codebook_size) or codebook_size not in RECOMMENDED_LEVELS:
            sizes = ", ".join(f"2**{int(math.log2(k))}" for k in RECOMMENDED_LEVELS)
            raise ValueError(
                f"`codebook_size` must be one of the sizes of the FSQ paper's Table 1 "
                f"({sizes}). Received: codebook_size={codebook_size!r}"
            )
        return list(RECOMMENDED_LEVELS[codebook_size])

    def bound(self, inputs):
        """f(z) = tanh(z + s) · h − o per channel (module docstring): float32, same shape.

        Raises:
            TypeError / ValueError: as ``indices``.
        """
        z = tf.cast(self._check_inputs(inputs), tf.float32)
        return tf.tanh(z + self._shift) * self._half_l - self._offset

    def _quantize(self, z):
        bounded = tf.tanh(z + self._shift) * self._half_l - self._offset  # f(z)
        rounded = tf.round(bounded)  # ẑ: half to even
        straight_through = bounded + tf.stop_gradient(rounded - bounded)
        digits = self._clip_digits(tf.cast(rounded, tf.int32) + self._half_width_i)
        return straight_through / self._half_width_f, digits

    def _digit_values(self, digits):
        # Channel i's value of digit d: (d − ⌊L/2⌋) / ⌊L/2⌋, the quantised output's.
        return tf.cast(digits - self._half_width_i, tf.float32) / self._half_width_f

    def _code_digits(self, codes):
        rounded = tf.round(codes * self._half_width_f)
        return self._clip_digits(tf.cast(rounded, tf.int32) + self._half_width_i)

    def _loss_terms(self, z, quantized):
        zero = tf.zeros([], tf.float32)
        return zero, zero

    def get_config(self):
        config = super().get_config()
        config.update({"levels": list(self.levels)})
        return config

"""Masked 2-D convolutions of PixelCNN (van den Oord et al. 2016).

A k×k kernel (k odd, centre c = k // 2) is multiplied by a fixed 0/1 mask so
that the output at (i, j) only sees inputs that come earlier in raster order:

    "A"           rows < c, and row c at columns < c   (excludes the centre)
    "B"           rows < c, and row c at columns ≤ c   (includes the centre)
    "vertical"    rows ≤ c, every column                (the vertical stack)
    "horizontal_A"  row c at columns < c                (horizontal stack, first layer)
    "horizontal_B"  row c at columns ≤ c                (horizontal stack, later layers)

The vertical mask sees the current row; the gated block shifts its output
down by one row before the horizontal stack reads it, which is what removes
the blind spot of the original PixelCNN (see `GatedBlock`).

Example (k = 3):

    A          B          vertical   horizontal_A   horizontal_B
    1 1 1      1 1 1      1 1 1      0 0 0          0 0 0
    1 0 0      1 1 0      1 1 1      1 0 0          1 1 0
    0 0 0      0 0 0      0 0 0      0 0 0          0 0 0

References: van den Oord, Kalchbrenner, Kavukcuoglu, "Pixel Recurrent Neural
Networks", ICML 2016, https://arxiv.org/abs/1601.06759 (masks A and B);
van den Oord et al., "Conditional Image Generation with PixelCNN Decoders",
NeurIPS 2016, https://arxiv.org/abs/1606.05328 (vertical and horizontal stacks).
"""

import keras
import numpy as np
import tensorflow as tf

from tfvqvae.validation import odd_positive_int
from tfvqvae.validation import one_of
from tfvqvae.validation import positive_int

MASK_TYPES = ("A", "B", "vertical", "horizontal_A", "horizontal_B")


def causal_mask(kernel_size, mask_type):
    """The (k, k) float32 0/1 mask of ``mask_type`` (see the module docstring).

    Raises:
        ValueError: for a ``mask_type`` not in `MASK_TYPES` or a
            ``kernel_size`` that is not an odd positive int.
    """
    one_of("mask_type", mask_type, MASK_TYPES)
    k = odd_positive_int("kernel_size", kernel_size)
    c = k // 2
    mask = np.zeros((k, k), np.float32)
    if mask_type in ("A", "B"):
        mask[:c, :] = 1.0
        mask[c, : c + (mask_type == "B")] = 1.0
    elif mask_type == "vertical":
        mask[: c + 1, :] = 1.0
    else:
        mask[c, : c + (mask_type == "horizontal_B")] = 1.0
    return mask


@keras.saving.register_keras_serializable(package="tfvqvae")
class MaskedConv2D(keras.layers.Layer):
    """A 'same'-padded 2-D convolution whose kernel is multiplied by a causal mask.

    output[b, i, j] = bias + Σ_{u, v} (mask ⊙ W)[u, v] · input[b, i + u − c, j + v − c]

    Args:
        filters: output channels.
        kernel_size: odd int k (the kernel is k×k).
        mask_type: "A", "B", "vertical", "horizontal_A" or "horizontal_B".
            Defaults to "B".
        use_bias: add a bias. Defaults to True.
        kernel_initializer: Defaults to "glorot_uniform".
        **kwargs: base layer arguments.

    Input shape:
        (batch, height, width, channels).

    Output shape:
        (batch, height, width, filters).

    Raises:
        ValueError: from the constructor, naming the argument and its value:
            ``filters`` not a positive int, ``kernel_size`` not an odd
            positive int, ``mask_type`` not one of `MASK_TYPES`.

    Reference:
        van den Oord et al., "Conditional Image Generation with PixelCNN
        Decoders", NeurIPS 2016, https://arxiv.org/abs/1606.05328
    """

    def __init__(
        self,
        filters,
        kernel_size,
        mask_type="B",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = positive_int("filters", filters)
        self.kernel_size = odd_positive_int("kernel_size", kernel_size)
        self.mask = causal_mask(kernel_size, mask_type)
        self.mask_type = mask_type
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        k = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel",
            shape=(k, k, input_shape[-1], self.filters),
            initializer=self.kernel_initializer,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
            if self.use_bias
            else None
        )
        super().build(input_shape)

    def masked_kernel(self):
        """mask ⊙ W, shape (k, k, in, out), in the compute dtype."""
        # NB: cast explicitly: `call_window` runs outside `__call__`, where
        # Keras would auto-cast the variable under mixed precision.
        kernel = tf.cast(self.kernel, self.compute_dtype)
        return kernel * tf.constant(self.mask[:, :, None, None], kernel.dtype)

    @property
    def window_rows(self):
        """How many input rows ending at the current one the mask can see.

        c + 1 (rows i − c .. i) for "A", "B" and "vertical"; 1 (row i) for the
        horizontal masks.
        """
        return 1 if self.mask_type.startswith("horizontal") else self.kernel_size // 2 + 1

    def _convolve(self, inputs, kernel, padding):
        outputs = tf.nn.conv2d(inputs, kernel, strides=1, padding=padding)
        if self.bias is not None:
            outputs = outputs + tf.cast(self.bias, self.compute_dtype)
        return outputs

    def _visible_kernel(self):
        c = self.kernel_size // 2
        return self.masked_kernel()[c + 1 - self.window_rows : c + 1]

    def call(self, inputs):
        # NB: the rows below the centre are all masked, so only the visible
        # rows are convolved (padding rows above and columns at both sides):
        # the same output as a 'same' convolution with the full masked
        # kernel, at (c + 1) / k (or 1 / k for horizontal masks) of the cost.
        c = self.kernel_size // 2
        padded = tf.pad(inputs, [[0, 0], [self.window_rows - 1, 0], [c, c], [0, 0]])
        return self._convolve(padded, self._visible_kernel(), "VALID")

    def call_window(self, window):
        """Outputs along one row from only the input rows the mask can see.

        ``window`` is (batch, window_rows, n + k − 1, channels): the input rows
        i − window_rows + 1 .. i, from column j − c to column j + n − 1 + c
        (zero outside the image; masked-out entries may hold anything).
        Returns (batch, n, filters), the outputs at (i, j .. j + n − 1). With
        n = 1 this is one position (cached sampling's per-step work); with
        n = width and c columns of zero padding each side, a whole row.
        """
        return self._convolve(window, self._visible_kernel(), "VALID")[:, 0, :, :]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "mask_type": self.mask_type,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config

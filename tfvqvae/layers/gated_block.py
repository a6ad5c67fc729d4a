"""One gated PixelCNN layer: vertical and horizontal stacks (van den Oord et al. 2016).

With p = ``channels``, k = ``kernel_size``, gate(a) = tanh(a[:p]) ⊙ σ(a[p:]):

    v      = VConv(v_in)                                  vertical mask: rows ≤ i
    h      = HConv(h_in) + Dense(shift_down(v))           horizontal mask: row i, cols < j
                                                          (first block) or ≤ j
    v_out  = gate(v + c_v)
    g      = gate(h + c_h)
    skip   = Dense_skip(g)
    h_out  = Dense_res(g) + h_in                          (no residual in the first block)

shift_down moves the vertical features one row down (row 0 gets zeros), so
the horizontal stack at (i, j) sees every input of rows < i within the
receptive field (no blind spot) and, on row i, only columns before j (first
block) — the model stays autoregressive in raster order.

Conditioning adds c_v and c_h (each 2p channels, per block): a learned vector
per class (global conditioning, ``num_classes``) and/or a 1x1 projection of a
spatial feature map (``condition_channels``; e.g. the embedded top codes of
VQ-VAE-2, resized to this map's size).

Reference: van den Oord et al., "Conditional Image Generation with PixelCNN
Decoders", NeurIPS 2016, https://arxiv.org/abs/1606.05328 (figure 2).
"""

import keras
import tensorflow as tf

from tfvqvae.layers.masked_conv import MaskedConv2D
from tfvqvae.validation import odd_positive_int
from tfvqvae.validation import positive_int


def gate(x):
    """tanh(first half of the channels) ⊙ sigmoid(second half)."""
    a, b = tf.split(x, 2, axis=-1)
    return tf.tanh(a) * tf.sigmoid(b)


def shift_down(x):
    """(B, H, W, C) → the same map moved one row down, row 0 zero."""
    return tf.pad(x, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1]


@keras.saving.register_keras_serializable(package="tfvqvae")
class GatedBlock(keras.layers.Layer):
    """A gated PixelCNN block with vertical and horizontal stacks.

    Args:
        channels: p, the channels of both stacks.
        kernel_size: odd k of the masked convolutions.
        first: the first block (horizontal mask "A", no residual). Defaults
            to False.
        last: the last block: only its skip output is used, so it computes
            neither v_out nor h_out (and has no weights for them). Defaults
            to False.
        num_classes: classes of the global conditioning, or None. Defaults
            to None.
        condition_channels: channels of a spatial conditioning map, or None.
            Defaults to None.
        **kwargs: base layer arguments.

    Call arguments:
        v_in, h_in: (batch, height, width, channels) stack inputs.
        labels: int (batch,) class labels when ``num_classes`` is set.
        condition: (batch, height, width, condition_channels) map when
            ``condition_channels`` is set.

    Returns:
        (v_out, h_out, skip), each (batch, height, width, channels); v_out
        and h_out are None for the last block.

    Raises:
        ValueError: from the constructor, naming the argument and its value:
            ``channels`` not a positive int, ``kernel_size`` not an odd
            positive int, ``num_classes`` or ``condition_channels`` neither
            None nor a positive int.
    """

    def __init__(
        self,
        channels,
        kernel_size,
        first=False,
        last=False,
        num_classes=None,
        condition_channels=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.channels = positive_int("channels", channels)
        self.kernel_size = odd_positive_int("kernel_size", kernel_size)
        self.first = bool(first)
        self.last = bool(last)
        self.num_classes = positive_int("num_classes", num_classes, allow_none=True)
        self.condition_channels = positive_int(
            "condition_channels", condition_channels, allow_none=True
        )
        two_p = 2 * channels
        # Every sublayer takes this layer's dtype policy (keras-hub style), so
        # GatedBlock(..., dtype="mixed_float16") is mixed precision throughout.
        dtype = self.dtype_policy
        self.v_conv = MaskedConv2D(two_p, kernel_size, "vertical", dtype=dtype, name="v_conv")
        self.h_conv = MaskedConv2D(
            two_p,
            kernel_size,
            "horizontal_A" if first else "horizontal_B",
            dtype=dtype,
            name="h_conv",
        )
        self.v_to_h = keras.layers.Dense(two_p, dtype=dtype, name="v_to_h")
        self.h_skip = keras.layers.Dense(channels, dtype=dtype, name="h_skip")
        if not self.last:
            self.h_res = keras.layers.Dense(channels, dtype=dtype, name="h_res")
        if num_classes is not None:
            self.class_h = keras.layers.Embedding(
                num_classes, two_p, dtype=dtype, name="class_h"
            )
            if not self.last:
                self.class_v = keras.layers.Embedding(
                    num_classes, two_p, dtype=dtype, name="class_v"
                )
        if condition_channels is not None:
            self.condition_h = keras.layers.Dense(
                two_p, use_bias=False, dtype=dtype, name="condition_h"
            )
            if not self.last:
                self.condition_v = keras.layers.Dense(
                    two_p, use_bias=False, dtype=dtype, name="condition_v"
                )

    def build(self, input_shape):
        c = input_shape[-1]
        two_p = 2 * self.channels
        self.v_conv.build((None, None, None, c))
        self.h_conv.build((None, None, None, c))
        self.v_to_h.build((None, two_p))
        self.h_skip.build((None, self.channels))
        if self.num_classes is not None:
            self.class_h.build((None,))
        if self.condition_channels is not None:
            self.condition_h.build((None, self.condition_channels))
        if not self.last:
            self.h_res.build((None, self.channels))
            if self.num_classes is not None:
                self.class_v.build((None,))
            if self.condition_channels is not None:
                self.condition_v.build((None, self.condition_channels))
        super().build(input_shape)

    def condition_biases(self, labels=None, condition=None):
        """(c_v, c_h): the conditioning terms, broadcastable to (B, H, W, 2p), or zeros.

        c_v is always zeros for the last block (it has no v_out).
        """
        c_v = c_h = tf.zeros([], self.compute_dtype)
        if self.num_classes is not None:
            c_h = c_h + self.class_h(labels)[:, None, None, :]
            if not self.last:
                c_v = c_v + self.class_v(labels)[:, None, None, :]
        if self.condition_channels is not None:
            c_h = c_h + self.condition_h(condition)
            if not self.last:
                c_v = c_v + self.condition_v(condition)
        return c_v, c_h

    def call(self, v_in, h_in, labels=None, condition=None):
        c_v, c_h = self.condition_biases(labels, condition)
        v = self.v_conv(v_in)
        h = self.h_conv(h_in) + self.v_to_h(shift_down(v))
        g = gate(h + c_h)
        skip = self.h_skip(g)
        if self.last:
            return None, None, skip
        v_out = gate(v + c_v)
        h_out = self.h_res(g)
        if not self.first:
            h_out = h_out + h_in
        return v_out, h_out, skip

    # ---------------------------------------------- cached sampling steps
    def horizontal_kernel(self):
        """The horizontal mask's visible taps as (columns, C, 2p), and the bias (2p,).

        columns = c + 1 (columns j − c .. j) or c for the first block (mask
        "A": j − c .. j − 1; none when k = 1). Cached sampling contracts the
        last ``columns`` inputs of the row with it: one matrix product per
        position instead of a convolution.
        """
        c = self.kernel_size // 2
        columns = c if self.first else c + 1
        kernel = self.h_conv.masked_kernel()[c, :columns]
        return kernel, tf.cast(self.h_conv.bias, self.compute_dtype)

    def horizontal_gate(self, h, h_in, v_to_h, c_h):
        """(h_out, skip) at one position from its horizontal convolution output.

        Args:
            h: (B, 2p) HConv(h_in) at (i, j), bias included.
            h_in: (B, C) h_in at (i, j) (for the residual).
            v_to_h: (B, 2p) Dense(v) of row i − 1 at column j (`vertical_row`).
            c_h: (B, 2p) conditioning at (i, j).
        """
        g = gate(h + v_to_h + c_h)
        if self.last:
            return None, self.h_skip(g)
        h_out = self.h_res(g)
        if not self.first:
            h_out = h_out + h_in
        return h_out, self.h_skip(g)

    def horizontal_step(self, h_window, h_in, v_to_h, c_h):
        """(h_out, skip) at one position: the horizontal stack only.

        Args:
            h_window: (B, 1, k, C) row i of h_in, columns j − c .. j + c.
            h_in: (B, C) h_in at (i, j) (for the residual).
            v_to_h: (B, 2p) Dense(v) of row i − 1 at column j (`vertical_row`).
            c_h: (B, 2p) conditioning at (i, j).
        """
        return self.horizontal_gate(
            self.h_conv.call_window(h_window)[:, 0], h_in, v_to_h, c_h
        )

    def vertical_row(self, v_window, c_v):
        """(v_out row, v_to_h for the next row) from the rows the mask sees.

        Args:
            v_window: (B, c + 1, W + 2c, C) rows i − c .. i of v_in, zero
                padded by c columns each side.
            c_v: (B, W, 2p) conditioning on row i.

        Returns:
            v_out of row i (B, W, p; None for the last block) and Dense(v)
            of row i (B, W, 2p), which the horizontal stack of row i + 1 adds
            (the shift down).
        """
        v = self.v_conv.call_window(v_window)
        return (None if self.last else gate(v + c_v)), self.v_to_h(v)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "channels": self.channels,
                "kernel_size": self.kernel_size,
                "first": self.first,
                "last": self.last,
                "num_classes": self.num_classes,
                "condition_channels": self.condition_channels,
            }
        )
        return config

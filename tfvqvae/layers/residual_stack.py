"""Residual stack of the VQ-VAE encoder and decoder."""

import keras

from tfvqvae.validation import positive_int


@keras.saving.register_keras_serializable(package="tfvqvae")
class ResidualStack(keras.layers.Layer):
    """``num_layers`` residual blocks followed by a ReLU.

    Each block is, as in the VQ-VAE paper (ReLU, 3x3 conv, ReLU, 1x1 conv):

        x ← x + Conv1x1_C(ReLU(Conv3x3_R(ReLU(x))))

    with C = ``channels`` and R = ``residual_channels``; the stack ends with
    ReLU(x). The spatial size and the channel count are unchanged.

    Args:
        channels: C, channels of the input and output.
        residual_channels: R, channels inside each block.
        num_layers: number of blocks. Defaults to 2.
        **kwargs: base layer arguments.

    Input shape:
        (batch, height, width, C).

    Output shape:
        Same as the input.

    Raises:
        ValueError: from the constructor, when ``channels``,
            ``residual_channels`` or ``num_layers`` is not a positive int
            (naming the argument and its value); from ``build``, when the
            input's last axis is not ``channels``.

    Reference:
        van den Oord, Vinyals, Kavukcuoglu, "Neural Discrete Representation
        Learning", NeurIPS 2017, section 4.1, https://arxiv.org/abs/1711.00937
    """

    def __init__(self, channels, residual_channels, num_layers=2, **kwargs):
        super().__init__(**kwargs)
        self.channels = positive_int("channels", channels)
        self.residual_channels = positive_int("residual_channels", residual_channels)
        self.num_layers = positive_int("num_layers", num_layers)
        self.blocks = [
            (
                keras.layers.Conv2D(
                    residual_channels,
                    3,
                    padding="same",
                    dtype=self.dtype_policy,
                    name=f"block{i}_conv3x3",
                ),
                keras.layers.Conv2D(
                    channels, 1, dtype=self.dtype_policy, name=f"block{i}_conv1x1"
                ),
            )
            for i in range(num_layers)
        ]

    def build(self, input_shape):
        if input_shape[-1] != self.channels:
            raise ValueError(
                f"ResidualStack expects {self.channels} input channels. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        inner_shape = tuple(input_shape[:-1]) + (self.residual_channels,)
        for conv3x3, conv1x1 in self.blocks:
            conv3x3.build(input_shape)
            conv1x1.build(inner_shape)
        super().build(input_shape)

    def call(self, inputs):
        x = inputs
        for conv3x3, conv1x1 in self.blocks:
            # NB: max(x, 0) rather than relu(x) on the block input. TF 2.21's
            # grappler remapper tries to fuse "conv + bias + add + Relu" across
            # two blocks, fails on the add's second consumer and logs an
            # error; max(x, 0) is the same function but no fusion candidate.
            h = conv1x1(keras.ops.relu(conv3x3(keras.ops.maximum(x, 0.0))))
            x = x + h
        return keras.ops.relu(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "channels": self.channels,
                "residual_channels": self.residual_channels,
                "num_layers": self.num_layers,
            }
        )
        return config

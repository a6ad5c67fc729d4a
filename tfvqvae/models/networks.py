"""Convolutional encoder and decoder of the VQ-VAE paper (section 4.1).

Encoder, for ``num_downsamples`` = n (spatial size divided by 2**n):

    x in [0, 1] → x − 0.5
    n × [Conv 4x4, stride 2, ReLU]   (C/2 channels, the last one C)
    Conv 3x3 (C) → ResidualStack(C, R, L) → Conv 1x1 (D)         = z_e

Decoder, the mirror image:

    Conv 3x3 (C) → ResidualStack(C, R, L)
    n × [ConvTranspose 4x4, stride 2]  (C/2 channels + ReLU, the last one
                                        image_channels, linear) → + 0.5

C = ``hidden_channels``, R = ``residual_channels``, L = ``num_residual_layers``,
D = ``embedding_dim``. Both are fully convolutional: any height and width
divisible by 2**n works.
"""

import keras

from tfvqvae.layers.residual_stack import ResidualStack


def _strided_channels(hidden_channels, num_downsamples, last_channels):
    return [hidden_channels // 2] * (num_downsamples - 1) + [last_channels]


def build_encoder(
    image_channels,
    hidden_channels,
    residual_channels,
    num_residual_layers,
    num_downsamples,
    embedding_dim,
    name="encoder",
):
    """Functional encoder: (B, H, W, image_channels) → (B, H/2**n, W/2**n, D)."""
    inputs = keras.Input((None, None, image_channels), name="images")
    x = keras.layers.Rescaling(1.0, offset=-0.5, name="center")(inputs)
    for i, channels in enumerate(
        _strided_channels(hidden_channels, num_downsamples, hidden_channels)
    ):
        x = keras.layers.Conv2D(
            channels, 4, strides=2, padding="same", activation="relu",
            name=f"downsample{i}",
        )(x)
    x = keras.layers.Conv2D(hidden_channels, 3, padding="same", name="conv3x3")(x)
    x = ResidualStack(
        hidden_channels, residual_channels, num_residual_layers, name="residual_stack"
    )(x)
    z_e = keras.layers.Conv2D(embedding_dim, 1, name="pre_quantization")(x)
    return keras.Model(inputs, z_e, name=name)


def build_decoder(
    image_channels,
    hidden_channels,
    residual_channels,
    num_residual_layers,
    num_downsamples,
    embedding_dim,
    name="decoder",
):
    """Functional decoder: (B, h, w, D) → (B, h·2**n, w·2**n, image_channels)."""
    inputs = keras.Input((None, None, embedding_dim), name="latents")
    x = keras.layers.Conv2D(hidden_channels, 3, padding="same", name="conv3x3")(inputs)
    x = ResidualStack(
        hidden_channels, residual_channels, num_residual_layers, name="residual_stack"
    )(x)
    channels = _strided_channels(hidden_channels, num_downsamples, image_channels)
    for i, filters in enumerate(channels):
        last = i == len(channels) - 1
        x = keras.layers.Conv2DTranspose(
            filters, 4, strides=2, padding="same",
            activation=None if last else "relu", name=f"upsample{i}",
        )(x)
    outputs = keras.layers.Rescaling(1.0, offset=0.5, name="uncenter")(x)
    return keras.Model(inputs, outputs, name=name)

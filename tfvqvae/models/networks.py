"""Convolutional encoders and decoders of VQ-VAE (section 4.1) and VQ-VAE-2 (Algorithm 1).

VQ-VAE encoder, for ``num_downsamples`` = n (spatial size divided by 2**n):

    x in [0, 1] → x − 0.5
    n × [Conv 4x4, stride 2, ReLU]   (C/2 channels, the last one C)
    Conv 3x3 (C) → ResidualStack(C, R, L) → Conv 1x1 (D)         = z_e

VQ-VAE decoder, the mirror image:

    Conv 3x3 (C) → ResidualStack(C, R, L)
    n × [ConvTranspose 4x4, stride 2]  (C/2 channels + ReLU, the last one
                                        image_channels, linear) → + 0.5

C = ``hidden_channels``, R = ``residual_channels``, L = ``num_residual_layers``,
D = ``embedding_dim``. Both are fully convolutional: any height and width
divisible by 2**n works.

The hierarchy (`HierarchicalVQVAE`, levels numbered 1 = bottom at /4 up to
the top at /2**(L+1); D_n the embedding size of level n) is built from four
kinds of networks, one of each per level where it applies:

    level encoder n      n = 1: the VQ-VAE encoder with n = 2 and no Conv 1x1
                         n ≥ 2: Conv 4x4/2 (C, ReLU) → Conv 3x3 (C)
                                → ResidualStack                    = f_n
                         the top level ends with Conv 1x1 (D_top)   = h_top
    condition decoder    merge(e_top, …, e_n) → Conv 3x3 (C) → ResidualStack
      (of level n > 1)   → ConvTranspose 4x4/2 (D_n, linear)        = d_n  (at level n − 1)
    pre-quantization     [d_{n+1}, f_n] → Conv 1x1 (D_n)            = h_n
      (of level n < top)
    decoder              merge(e_top, …, e_1) → the VQ-VAE decoder with n = 2

where merge(e_top, …, e_m) starts from the top latents and, one level down at a
time, doubles the size with ConvTranspose 4x4/2 (D of the level it comes
from, linear) and concatenates the next level's latents. With two levels these
are exactly VQVAE2's networks (the top encoder, the top decoder, the bottom
pre-quantization and the decoder of Algorithm 1); with one level the level
encoder and the decoder are `build_encoder` / `build_decoder` with n = 2.

Every layer gets ``dtype`` (a dtype policy) by argument; the models pass
their own ``dtype_policy``, so no global policy is needed.
"""

import keras

from tfvqvae.layers.residual_stack import ResidualStack


def _strided_channels(hidden_channels, num_downsamples, last_channels):
    return [hidden_channels // 2] * (num_downsamples - 1) + [last_channels]


def _functional(inputs, outputs, name, dtype):
    model = keras.Model(inputs, outputs, name=name)
    if dtype is not None:
        # NB: keras.Model(inputs, outputs) drops a ``dtype`` argument; the
        # network's own policy is what its ``compute_dtype`` reports.
        model.dtype_policy = dtype
    return model


def _image_trunk(inputs, hidden_channels, residual_channels, num_residual_layers,
                 num_downsamples, dtype):
    """x − 0.5 → n strided convolutions → Conv 3x3 → ResidualStack (the encoder body)."""
    x = keras.layers.Rescaling(1.0, offset=-0.5, dtype=dtype, name="center")(inputs)
    for i, channels in enumerate(
        _strided_channels(hidden_channels, num_downsamples, hidden_channels)
    ):
        x = keras.layers.Conv2D(
            channels, 4, strides=2, padding="same", activation="relu",
            dtype=dtype, name=f"downsample{i}",
        )(x)
    x = keras.layers.Conv2D(hidden_channels, 3, padding="same", dtype=dtype, name="conv3x3")(x)
    return ResidualStack(
        hidden_channels, residual_channels, num_residual_layers, dtype=dtype,
        name="residual_stack",
    )(x)


def _decoder_tail(x, image_channels, hidden_channels, residual_channels,
                  num_residual_layers, num_downsamples, dtype):
    """Conv 3x3 → ResidualStack → n transposed convolutions → + 0.5 (the decoder body)."""
    x = keras.layers.Conv2D(hidden_channels, 3, padding="same", dtype=dtype, name="conv3x3")(x)
    x = ResidualStack(
        hidden_channels, residual_channels, num_residual_layers, dtype=dtype,
        name="residual_stack",
    )(x)
    channels = _strided_channels(hidden_channels, num_downsamples, image_channels)
    for i, filters in enumerate(channels):
        last = i == len(channels) - 1
        x = keras.layers.Conv2DTranspose(
            filters, 4, strides=2, padding="same",
            activation=None if last else "relu", dtype=dtype, name=f"upsample{i}",
        )(x)
    return keras.layers.Rescaling(1.0, offset=0.5, dtype=dtype, name="uncenter")(x)


# ------------------------------------------------------------------ VQ-VAE
def build_encoder(
    image_channels,
    hidden_channels,
    residual_channels,
    num_residual_layers,
    num_downsamples,
    embedding_dim,
    name="encoder",
    dtype=None,
):
    """Functional encoder: (B, H, W, image_channels) → (B, H/2**n, W/2**n, D)."""
    inputs = keras.Input((None, None, image_channels), name="images")
    x = _image_trunk(inputs, hidden_channels, residual_channels, num_residual_layers,
                     num_downsamples, dtype)
    z_e = keras.layers.Conv2D(embedding_dim, 1, dtype=dtype, name="pre_quantization")(x)
    return _functional(inputs, z_e, name, dtype)


def build_decoder(
    image_channels,
    hidden_channels,
    residual_channels,
    num_residual_layers,
    num_downsamples,
    embedding_dim,
    name="decoder",
    dtype=None,
):
    """Functional decoder: (B, h, w, D) → (B, h·2**n, w·2**n, image_channels)."""
    inputs = keras.Input((None, None, embedding_dim), name="latents")
    outputs = _decoder_tail(inputs, image_channels, hidden_channels, residual_channels,
                            num_residual_layers, num_downsamples, dtype)
    return _functional(inputs, outputs, name, dtype)


# ---------------------------------------------------------------- hierarchy
def build_level_encoder(
    input_channels,
    hidden_channels,
    residual_channels,
    num_residual_layers,
    bottom,
    embedding_dim=None,
    name="encoder",
    dtype=None,
):
    """Encoder of one level of the hierarchy.

    Args:
        input_channels: channels of the images (``bottom``) or of the level
            below's features (C).
        hidden_channels, residual_channels, num_residual_layers: C, R, L.
        bottom: True for level 1: images → features at /4; else the level
            below's features → features at half their size.
        embedding_dim: D of the top level (adds the Conv 1x1 → h_top), or
            None for a level with its own pre-quantization network.
        name: the network's name.
        dtype: dtype policy of every layer. Defaults to None (the global one).

    Returns:
        A functional `keras.Model`: (B, h, w, input_channels) →
        (B, h/4 or h/2, w/4 or w/2, C or D).
    """
    if bottom:
        inputs = keras.Input((None, None, input_channels), name="images")
        x = _image_trunk(inputs, hidden_channels, residual_channels, num_residual_layers,
                         2, dtype)
    else:
        inputs = keras.Input((None, None, input_channels), name="features")
        x = keras.layers.Conv2D(
            hidden_channels, 4, strides=2, padding="same", activation="relu",
            dtype=dtype, name="downsample",
        )(inputs)
        x = keras.layers.Conv2D(
            hidden_channels, 3, padding="same", dtype=dtype, name="conv3x3")(x)
        x = ResidualStack(
            hidden_channels, residual_channels, num_residual_layers, dtype=dtype,
            name="residual_stack",
        )(x)
    if embedding_dim is not None:
        x = keras.layers.Conv2D(embedding_dim, 1, dtype=dtype, name="pre_quantization")(x)
    return _functional(inputs, x, name, dtype)


def _merge_levels(latents, names, embedding_dims, dtype):
    """Top latents upsampled level by level and concatenated with the next level's."""
    x = latents[0]
    for above, below, dim in zip(names, latents[1:], embedding_dims):
        x = keras.layers.Conv2DTranspose(
            dim, 4, strides=2, padding="same", dtype=dtype, name=f"upsample_{above}"
        )(x)
        concat = "concat" if len(latents) == 2 else f"concat_{above}"
        x = keras.layers.Concatenate(dtype=dtype, name=concat)([x, below])
    return x


def _latent_inputs(levels, embedding_dims):
    inputs = [
        keras.Input((None, None, dim), name=f"{level}_latents")
        for level, dim in zip(levels, embedding_dims)
    ]
    return inputs


def build_condition_decoder(
    levels,
    embedding_dims,
    hidden_channels,
    residual_channels,
    num_residual_layers,
    name="decoder",
    dtype=None,
):
    """Decodes the latents of ``levels`` (top first) to the size of the level below them.

    The result d is what the level below is conditioned on (E_bottom(x, e_top)
    of Algorithm 1, for any number of levels above).

    Args:
        levels: names of the levels read, top first (at least one).
        embedding_dims: their D, in the same order.
        hidden_channels, residual_channels, num_residual_layers: C, R, L.
        name: the network's name.
        dtype: dtype policy of every layer. Defaults to None (the global one).

    Returns:
        A functional `keras.Model`: latents [(B, h, w, D_top), …,
        (B, h·2**m, w·2**m, D_last)] (a single tensor for one level) →
        (B, h·2**(m+1), w·2**(m+1), D_last).
    """
    inputs = _latent_inputs(levels, embedding_dims)
    x = _merge_levels(inputs, levels, embedding_dims, dtype)
    x = keras.layers.Conv2D(hidden_channels, 3, padding="same", dtype=dtype, name="conv3x3")(x)
    x = ResidualStack(
        hidden_channels, residual_channels, num_residual_layers, dtype=dtype,
        name="residual_stack",
    )(x)
    d = keras.layers.Conv2DTranspose(
        embedding_dims[-1], 4, strides=2, padding="same", dtype=dtype, name="upsample"
    )(x)
    return _functional(inputs[0] if len(inputs) == 1 else inputs, d, name, dtype)


def build_pre_quantization(
    hidden_channels, condition_channels, embedding_dim, name="pre_quantization", dtype=None,
):
    """[features f (C), condition d] → Conv 1x1 → (B, h, w, D) = h of a lower level."""
    features = keras.Input((None, None, hidden_channels), name="features")
    condition = keras.Input((None, None, condition_channels), name="condition")
    x = keras.layers.Concatenate(dtype=dtype, name="concat")([condition, features])
    h = keras.layers.Conv2D(embedding_dim, 1, dtype=dtype, name="pre_quantization")(x)
    return _functional([features, condition], h, name, dtype)


def build_hierarchical_decoder(
    levels,
    embedding_dims,
    image_channels,
    hidden_channels,
    residual_channels,
    num_residual_layers,
    name="decoder",
    dtype=None,
):
    """Decoder of every level: latents [top, …, bottom] → (B, H, W, image_channels).

    The bottom latents are at /4 (the level above at /8, and so on); with one
    level this is `build_decoder` with n = 2.
    """
    inputs = _latent_inputs(levels, embedding_dims)
    x = _merge_levels(inputs, levels, embedding_dims, dtype)
    outputs = _decoder_tail(x, image_channels, hidden_channels, residual_channels,
                            num_residual_layers, 2, dtype)
    return _functional(inputs[0] if len(inputs) == 1 else inputs, outputs, name, dtype)

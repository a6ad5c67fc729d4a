"""Every layer refuses a bad constructor argument in one style, and passes its dtype on.

The message is Keras' own: "`name` must be <what>. Received: name=<value>"
(issue 18: non-finite hyper-parameters such as ``commitment_cost=inf`` used
to be accepted).
"""

import re

import keras
import numpy as np
import pytest

from tfvqvae import VectorQuantizer
from tfvqvae import VectorQuantizerEMA
from tfvqvae.layers import GatedBlock
from tfvqvae.layers import MaskedConv2D
from tfvqvae.layers import ResidualStack

INF = float("inf")
NAN = float("nan")
# Values no float hyper-parameter accepts, whatever its range.
NOT_FINITE_NUMBERS = [INF, -INF, NAN, True, False, "0.5", None, [0.5]]


def _received(name, value):
    return re.escape(f"Received: {name}={value!r}")


# (class, fixed arguments, name, what the message says, out-of-range values)
FLOAT_ARGUMENTS = [
    (VectorQuantizer, {}, "commitment_cost", "a finite number >= 0", [-1, -1e-9]),
    (VectorQuantizer, {}, "codebook_cost", "a finite number >= 0", [-0.5, -1e-9]),
    (VectorQuantizerEMA, {}, "commitment_cost", "a finite number >= 0", [-1]),
    (VectorQuantizerEMA, {}, "decay", "a finite number in (0, 1)", [0, 0.0, 1, 1.0, -0.5, 2.0]),
    (VectorQuantizerEMA, {}, "epsilon", "a finite number > 0", [0, 0.0, -1e-5]),
]


def _float_cases():
    for cls, fixed, name, what, out_of_range in FLOAT_ARGUMENTS:
        for value in NOT_FINITE_NUMBERS + out_of_range:
            yield pytest.param(cls, fixed, name, what, value, id=f"{cls.__name__}-{name}={value!r}")


@pytest.mark.parametrize("cls, fixed, name, what, value", list(_float_cases()))
def test_float_hyper_parameters_refuse_non_finite_and_out_of_range(cls, fixed, name, what, value):
    args = {"num_embeddings": 4, "embedding_dim": 2, **fixed, name: value}
    with pytest.raises(
        ValueError, match=re.escape(f"`{name}` must be {what}. ") + _received(name, value)
    ):
        cls(**args)


@pytest.mark.parametrize(
    "cls, name, value, stored",
    [
        (VectorQuantizer, "commitment_cost", 0, 0.0),
        (VectorQuantizer, "commitment_cost", np.float32(0.5), 0.5),
        (VectorQuantizer, "codebook_cost", 0, 0.0),
        (VectorQuantizer, "codebook_cost", 3, 3.0),
        (VectorQuantizerEMA, "decay", np.float64(0.9), 0.9),
        (VectorQuantizerEMA, "epsilon", 1, 1.0),
    ],
)
def test_float_hyper_parameters_are_stored_as_python_floats(cls, name, value, stored):
    layer = cls(4, 2, **{name: value})
    assert type(getattr(layer, name)) is float and getattr(layer, name) == stored
    config = layer.get_config()
    assert type(config[name]) is float
    assert cls.from_config(config).get_config() == config


BAD_INTS = [0, -1, 2.0, 1.5, True, "3", INF, NAN]


def _int_cases():
    quantizer = {"num_embeddings": 4, "embedding_dim": 2}
    stack = {"channels": 4, "residual_channels": 2}
    for cls, fixed, names in [
        (VectorQuantizer, quantizer, ["num_embeddings", "embedding_dim", "kmeans_iterations",
                                      "restart_unused_after"]),
        (VectorQuantizerEMA, quantizer, ["num_embeddings", "kmeans_iterations"]),
        (ResidualStack, stack, ["channels", "residual_channels", "num_layers"]),
        (MaskedConv2D, {"filters": 2, "kernel_size": 3}, ["filters"]),
        (GatedBlock, {"channels": 2, "kernel_size": 3}, ["channels", "num_classes",
                                                          "condition_channels"]),
    ]:
        for name in names:
            for value in BAD_INTS:
                yield pytest.param(cls, fixed, name, value, id=f"{cls.__name__}-{name}={value!r}")


@pytest.mark.parametrize("cls, fixed, name, value", list(_int_cases()))
def test_integer_arguments_refuse_non_positive_and_non_int(cls, fixed, name, value):
    with pytest.raises(
        ValueError,
        match=re.escape(f"`{name}` must be a positive integer. ") + _received(name, value),
    ):
        cls(**{**fixed, name: value})


@pytest.mark.parametrize("cls", [MaskedConv2D, GatedBlock])
@pytest.mark.parametrize("value", [0, 2, 4, -3, 3.0, True, "3"])
def test_kernel_size_must_be_odd_positive_int(cls, value):
    first = {"filters": 2} if cls is MaskedConv2D else {"channels": 2}
    with pytest.raises(
        ValueError,
        match=re.escape("`kernel_size` must be an odd positive integer. ")
        + _received("kernel_size", value),
    ):
        cls(**first, kernel_size=value)


@pytest.mark.parametrize("cls", [VectorQuantizer, VectorQuantizerEMA])
@pytest.mark.parametrize("value", [1.5, True, "0", None])
def test_seed_must_be_an_int(cls, value):
    with pytest.raises(
        ValueError, match=re.escape("`seed` must be an integer. ") + _received("seed", value)
    ):
        cls(4, 2, seed=value)


def test_gated_block_accepts_none_for_optional_conditioning():
    block = GatedBlock(2, 3, num_classes=None, condition_channels=None)
    assert block.num_classes is None and block.condition_channels is None


# ------------------------------------------------- dtype by argument (keras-hub)
def _sublayers(block):
    names = ["v_conv", "h_conv", "v_to_h", "h_skip", "h_res", "class_h", "class_v",
             "condition_h", "condition_v"]
    return [getattr(block, name) for name in names]


@pytest.mark.parametrize("dtype", ["mixed_float16", "mixed_bfloat16", "float64"])
def test_gated_block_dtype_policy_reaches_every_sublayer(dtype):
    block = GatedBlock(2, 3, num_classes=3, condition_channels=2, dtype=dtype)
    policy = keras.DTypePolicy(dtype)
    for layer in _sublayers(block):
        assert layer.dtype_policy.name == policy.name, layer.name
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 4, 4, 2)).astype(np.float32)
    labels = np.array([1])
    condition = rng.normal(size=(1, 4, 4, 2)).astype(np.float32)
    v_out, h_out, skip = block(x, x, labels=labels, condition=condition)
    for out in (v_out, h_out, skip):
        assert out.dtype == policy.compute_dtype
    for weight in block.weights:
        assert weight.dtype == policy.variable_dtype, weight.path

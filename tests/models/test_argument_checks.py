"""The models' argument checks speak tfvqvae.validation's words, and their docstrings say so."""

import inspect
import math
import re

import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae.models import sampling
from tfvqvae.models.sampling import check_temperature


def _tiny(**kwargs):
    return tfvqvae.VQVAE(image_channels=1, hidden_channels=4, residual_channels=2,
                         num_residual_layers=1, quantizer=tfvqvae.VectorQuantizerEMA(4, 2, kmeans_init=False, restart_unused_after=None),
                         **kwargs)


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan, True, "1.0"])  # None: estimated (issue 13)
def test_data_variance_must_be_a_finite_number_above_zero(value):
    with pytest.raises(ValueError, match=re.escape(
            f"`data_variance` must be a finite number > 0. Received: data_variance={value!r}")):
        _tiny(data_variance=value)


def test_data_variance_accepts_numpy_reals_as_a_python_float():
    model = _tiny(data_variance=np.float32(0.25))
    assert model.data_variance == 0.25 and type(model.data_variance) is float
    assert model.get_config()["data_variance"] == 0.25


@pytest.mark.parametrize("size", [4, 0, -3, 3.0, True])
def test_kernel_size_must_be_an_odd_positive_int(size):
    with pytest.raises(ValueError, match=re.escape(
            f"`kernel_size` must be an odd positive integer. Received: kernel_size={size!r}")):
        tfvqvae.PixelCNNPrior(4, (2, 2), kernel_size=size)


def test_shape_and_multiple_messages_name_the_values():
    with pytest.raises(ValueError, match=re.escape(
            "`code_shape` must be (height, width) or (height, width, depth), positive "
            "integers. Received: code_shape=(5,)")):
        tfvqvae.PixelCNNPrior(4, (5,))
    with pytest.raises(ValueError, match=re.escape("Received: condition_shape='ab'")):
        tfvqvae.PixelCNNPrior(4, (4, 4), condition_num_embeddings=2, condition_shape="ab")
    with pytest.raises(ValueError, match=re.escape(
            "`code_shape` must be a multiple of `condition_shape` in height and width. "
            "Received: code_shape=(5, 6), condition_shape=(2, 3)")):
        tfvqvae.PixelCNNPrior(4, (5, 6), condition_num_embeddings=4, condition_shape=(2, 3))


def test_method_is_one_of_the_samplers():
    prior = tfvqvae.PixelCNNPrior(4, (2, 2), hidden_channels=4, num_blocks=1, kernel_size=3)
    message = re.escape("`method` must be one of ('cached', 'compiled', 'naive'). Received: method='beam'")
    with pytest.raises(ValueError, match=message):
        prior.sample(2, method="beam")
    with pytest.raises(ValueError, match=message):
        sampling.levels_sampler({"top": prior}, 2, method="beam")


@pytest.mark.parametrize(
    "value,expected",
    [(1, 1.0), (0.5, 0.5), (np.float32(2.0), 2.0), (tf.constant(0.25), 0.25),
     (np.array(3.0), 3.0)],
)
def test_temperature_accepts_real_scalars(value, expected):
    result = check_temperature(value)
    assert result == expected and type(result) is float


@pytest.mark.parametrize(
    "value,error,shown",
    [(0, ValueError, "0"), (-1.0, ValueError, "-1.0"), (math.inf, ValueError, "inf"),
     (tf.constant(0.0), ValueError, "0.0"), (True, TypeError, "True"),
     ("1.0", TypeError, "'1.0'"), (None, TypeError, "None"), ([1.0], TypeError, "[1.0]")],
)
def test_temperature_refusals_share_one_message(value, error, shown):
    with pytest.raises(error, match=re.escape(
            f"`temperature` must be a finite number > 0. Received: temperature={shown}")):
        check_temperature(value)


PUBLIC = [
    tfvqvae.VQVAE, tfvqvae.VQVAE2, tfvqvae.HierarchicalVQVAE, tfvqvae.PixelCNNPrior,
    tfvqvae.VQVAE.encode, tfvqvae.VQVAE.decode, tfvqvae.VQVAE2.decode,
    tfvqvae.HierarchicalVQVAE.encode, tfvqvae.HierarchicalVQVAE.decode,
    tfvqvae.VQVAE.encode_levels, tfvqvae.VQVAE.decode_levels,
    tfvqvae.PixelCNNPrior.sample, tfvqvae.PixelCNNPrior.check_inputs,
    sampling.check_temperature, sampling.sample, sampling.check_chain,
    sampling.sample_levels, sampling.levels_sampler,
]


@pytest.mark.parametrize("obj", PUBLIC, ids=lambda o: o.__qualname__)
def test_public_docstrings_have_a_raises_section(obj):
    doc = inspect.getdoc(obj)
    assert "\nRaises:\n" in doc, obj.__qualname__


def test_model_docstrings_cite_papers_not_files():
    for module in ("vqvae", "vqvae2", "hierarchical", "pixelcnn_prior", "sampling",
                   "autoencoder", "networks"):
        source = inspect.getsource(getattr(tfvqvae.models, module))
        assert not re.search(r"STACK-NOTES|shared/|\.\./|FengHZ", source), module
